"""A webhook receiver for the tests: a small HTTP/1.1 server on 127.0.0.1 that records every
request, answers what the test tells it to, and counts requests in flight per event id."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from inmail.processes import free_port


@dataclass
class Received:
    event_id: str
    headers: dict[str, str]
    body: bytes
    answered: int | None = None

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class Receiver:
    """Answers `status`; with `hang`, holds each request until its client goes away."""

    port: int = field(default_factory=free_port)
    status: int = 200
    hang: bool = False
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    in_flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/inmail"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def delivered_ids(self) -> Counter[str]:
        return Counter(r.event_id for r in self.requests if r.answered == 200)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        received = Received(headers.get("inmail-event-id", ""), headers, body)
        self.requests.append(received)
        event_id = received.event_id
        self.in_flight[event_id] += 1
        self.most_in_flight[event_id] = max(self.most_in_flight[event_id], self.in_flight[event_id])
        self.arrived.set()
        try:
            if self.hang:
                await reader.read()  # until the client goes away
                return
            if self.delay:
                await asyncio.sleep(self.delay)
            received.answered = self.status
            answer = f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            writer.write(answer.encode())
            await writer.drain()
        finally:
            self.in_flight[event_id] -= 1
