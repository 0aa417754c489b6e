"""The load generator: a closed loop of concurrent clients, each on its own kept-alive connection.

The default client speaks just enough HTTP/1.1 over asyncio streams to POST a prepared request
and read the reply (Content-Length or chunked), so that on a 2-core machine the client takes as
little CPU as possible from the server it measures. `--client httpx` runs the same loop through
one `httpx.AsyncClient` (keep-alive, a pool as large as the concurrency) for comparison. Every
reply is checked: a failed operation fails the run rather than flattering it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

Check = Callable[[dict[str, Any]], None]
"""Raises if a decoded reply is not the success the workload expects."""


class LoadError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Call:
    """One GraphQL request, prepared before the clock starts."""

    body: bytes
    token: str | None = None


@dataclass
class LoadResult:
    ops: int
    seconds: float
    latencies: list[float]
    client_cpu: float

    @property
    def throughput(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """The p-th percentile latency in seconds (nearest rank)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank]


def graphql_call(query: str, variables: dict[str, Any] | None, token: str | None) -> Call:
    payload: dict[str, Any] = {"query": query}
    if variables:
        payload["variables"] = variables
    return Call(json.dumps(payload, separators=(",", ":")).encode(), token)


class _Transport(Protocol):
    async def post(self, call: Call) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class RawConnection:
    """One HTTP/1.1 keep-alive connection that POSTs to one path."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._path = parts.path or "/"
        self._prefix = (
            f"POST {self._path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            "Content-Type: application/json\r\nAccept: application/json\r\n"
        ).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, call: Call) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        auth = f"Authorization: Bearer {call.token}\r\n".encode() if call.token else b""
        self._writer.write(
            b"".join(
                (self._prefix, auth, b"Content-Length: %d\r\n\r\n" % len(call.body), call.body)
            )
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length: int | None = None
        chunked = closing = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                closing = b"close" in value.lower()
        if chunked:
            body = await self._read_chunked()
        elif length is not None:
            body = await self._reader.readexactly(length)
        else:
            body = await self._reader.read()
            closing = True
        if closing:
            await self.close()
        return status, body

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


class HttpxConnection:
    """The same through a shared httpx.AsyncClient (keep-alive, pooled)."""

    def __init__(self, client: Any, url: str) -> None:
        self._client = client
        self._url = url

    async def post(self, call: Call) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if call.token:
            headers["Authorization"] = f"Bearer {call.token}"
        response = await self._client.post(self._url, content=call.body, headers=headers)
        return int(response.status_code), bytes(response.content)

    async def close(self) -> None:
        return None


async def run_http(
    url: str,
    calls: Sequence[Call],
    *,
    concurrency: int,
    check: Check,
    client: str = "raw",
) -> LoadResult:
    """POST every call, `concurrency` at a time; each reply is decoded and checked."""
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=60.0) as shared:
            transports: list[_Transport] = [
                HttpxConnection(shared, url) for _ in range(concurrency)
            ]
            return await _drive(transports, calls, check)
    transports = [RawConnection(url) for _ in range(concurrency)]
    try:
        # Connect before the clock starts: a load test measures requests, not handshakes.
        await asyncio.gather(*(t.post(Call(b'{"query":"{__typename}"}')) for t in transports))
        return await _drive(transports, calls, check)
    finally:
        await asyncio.gather(*(t.close() for t in transports))


async def _drive(
    transports: Sequence[_Transport], calls: Sequence[Call], check: Check
) -> LoadResult:
    latencies: list[float] = []
    pending = iter(calls)

    async def worker(transport: _Transport) -> None:
        for call in pending:
            started = time.perf_counter()
            status, body = await transport.post(call)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise LoadError(f"HTTP {status}: {body[:300]!r}")
            reply = json.loads(body)
            if reply.get("errors"):
                raise LoadError(f"GraphQL errors: {reply['errors']!r:.300}")
            check(reply["data"])

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(t) for t in transports))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return LoadResult(len(latencies), wall, latencies, cpu)


async def run_calls(
    calls: Sequence[Callable[[], Awaitable[object]]], *, concurrency: int
) -> LoadResult:
    """The in-process counterpart: await every call, `concurrency` at a time."""
    latencies: list[float] = []
    pending = iter(calls)

    async def worker() -> None:
        for call in pending:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return LoadResult(len(latencies), wall, latencies, cpu)
