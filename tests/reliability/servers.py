"""Real `uvicorn` processes of the service on one test database, reached over loopback HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from support import START, TEST_SECRET

READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(
    mongodb_uri: str, db_name: str, clock_start: datetime = START, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INMAIL_")}
    env.update(
        INMAIL_MONGODB_URI=mongodb_uri,
        INMAIL_DB_NAME=db_name,
        INMAIL_JWT_SECRET=TEST_SECRET,
        INMAIL_CLOCK="manual",
        INMAIL_CLOCK_START=clock_start.isoformat().replace("+00:00", "Z"),
        INMAIL_SCHEDULER_ENABLED="false",
        INMAIL_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


class Server:
    """One `uvicorn --factory inmail.app:app_from_env` process; its log goes to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "inmail.app:app_from_env",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                    # Idle keep-alive connections outlive a test: a connection the server closes
                    # while the client reuses it is a client-side race, not the service's.
                    "--timeout-keep-alive",
                    "300",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"uvicorn exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"uvicorn did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no lifespan shutdown, no draining, open transactions left behind."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


def start_servers(servers: Sequence[Server]) -> None:
    for server in servers:
        server.launch()
    for server in servers:
        server.wait_ready()


@contextmanager
def running(
    count: int,
    mongodb_uri: str,
    db_name: str,
    log_dir: Path,
    clock_start: datetime = START,
    **extra: str,
) -> Iterator[list[Server]]:
    env = server_env(mongodb_uri, db_name, clock_start, **extra)
    servers = [Server(env, log_dir / f"uvicorn-{i}.log") for i in range(count)]
    try:
        start_servers(servers)
        yield servers
    finally:
        for server in servers:
            server.stop()


def gql_body(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, f"{response.status_code}: {response.text}"
    body: dict[str, Any] = response.json()
    return body


async def abort_orphaned_transactions(mongodb_uri: str) -> int:
    """Kill the server sessions of transactions a killed process left open; how many there were.

    MongoDB keeps an abandoned transaction (and its locks) until transactionLifetimeLimitSeconds
    (60 s by default) runs out; dropping the test database would wait for that. Only call this
    once every service process on the database has stopped: then every open transaction is an
    orphan.
    """
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    try:
        cursor = await client.admin.aggregate(
            [
                {"$currentOp": {"idleSessions": True, "allUsers": True}},
                {"$match": {"type": "idleSession", "transaction": {"$exists": True}}},
            ]
        )
        lsids = [{"id": op["lsid"]["id"]} async for op in cursor]
        if lsids:
            await client.admin.command("killSessions", lsids)
        return len(lsids)
    finally:
        await client.close()


@asynccontextmanager
async def transaction_lifetime(mongodb_uri: str, seconds: int) -> AsyncIterator[None]:
    """Abandoned transactions are aborted after `seconds` instead of the server's 60.

    A process killed mid-transaction leaves its transactions open on the server, holding their
    locks, until transactionLifetimeLimitSeconds runs out; requests of other processes on the
    same documents wait that long (the driver retries the conflict). The wait proves nothing
    but patience, so the crash test shortens it; the original value comes back afterwards.
    """
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
    try:
        reply = await client.admin.command(
            {"getParameter": 1, "transactionLifetimeLimitSeconds": 1}
        )
        original = reply["transactionLifetimeLimitSeconds"]
        await client.admin.command({"setParameter": 1, "transactionLifetimeLimitSeconds": seconds})
        try:
            yield
        finally:
            await client.admin.command(
                {"setParameter": 1, "transactionLifetimeLimitSeconds": original}
            )
    finally:
        await client.close()
