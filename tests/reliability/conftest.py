"""Fixtures of the reliability tests: a fleet of real service processes on one database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import AsyncMongoClient, MongoClient

from reliability.remote import Fleet
from reliability.servers import Server, running

FLEET_SIZE = 3


def drop_database(uri: str, name: str) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(uri)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture(scope="module")
def fleet_db(mongodb_uri: str) -> Iterator[str]:
    name = f"r_{uuid.uuid4().hex[:16]}"
    yield name
    drop_database(mongodb_uri, name)


@pytest.fixture(scope="module")
def fleet_servers(
    mongodb_uri: str, fleet_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Server]]:
    logs = tmp_path_factory.mktemp("fleet")
    with running(FLEET_SIZE, mongodb_uri, fleet_db, logs) as servers:
        yield servers
    # A connection a server dropped for a failure of its own shows here, whether or not its
    # client's retry (`fleet`) then got an answer.
    for server in servers:
        assert "Traceback" not in server.log(), server.log()[-5000:]


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(120.0),
        limits=httpx.Limits(max_connections=400, max_keepalive_connections=400),
    )


@pytest.fixture
async def fleet(fleet_servers: list[Server]) -> AsyncIterator[Fleet]:
    async with http_client() as client:
        yield Fleet(client, [server.url for server in fleet_servers], retries=2)


@pytest.fixture
async def fleet_mongo(mongodb_uri: str) -> AsyncIterator[AsyncMongoClient[dict[str, object]]]:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path
