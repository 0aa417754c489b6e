"""Real `uvicorn` processes of the service on one test database, reached over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from harness.servers import ServiceProcess, service_env, start_all
from support import START, TEST_SECRET

Server = ServiceProcess


def server_env(
    mongodb_uri: str, db_name: str, clock_start: datetime = START, **extra: str
) -> dict[str, str]:
    return service_env(
        INMAIL_MONGODB_URI=mongodb_uri,
        INMAIL_DB_NAME=db_name,
        INMAIL_JWT_SECRET=TEST_SECRET,
        INMAIL_CLOCK="manual",
        INMAIL_CLOCK_START=clock_start.isoformat().replace("+00:00", "Z"),
        INMAIL_SCHEDULER_ENABLED="false",
        INMAIL_LOG_LEVEL="WARNING",
        **extra,
    )


def uvicorn_server(env: dict[str, str], log_path: Path) -> Server:
    return Server.uvicorn(
        env,
        log_path,
        "--no-access-log",
        # Idle keep-alive connections outlive a test: a connection the server closes while the
        # client reuses it is a client-side race, not the service's.
        "--timeout-keep-alive",
        "300",
    )


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
    servers = [uvicorn_server(env, log_dir / f"uvicorn-{i}.log") for i in range(count)]
    try:
        start_all(servers)
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
