"""A list's reads meeting a primary that steps down or a connection that drops are tried once
more, as the driver tries its own reads: the answer comes, late, instead of an error.

The failures are MongoDB's `failCommand` fail point (a test command) on a replica set of one,
limited to the service's client by its application name.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from inmail.repositories.ledger import NEWEST_FIRST
from inmail.repositories.mongo import Mongo
from reliability.replicaset import ReplicaSet
from support import open_api

INTERRUPTED_BY_STEP_DOWN = 11602  # InterruptedDueToReplStateChange
SHUTTING_DOWN = 91  # ShutdownInProgress
FAILURES = [
    pytest.param({"errorCode": INTERRUPTED_BY_STEP_DOWN}, id="step-down"),
    pytest.param({"errorCode": SHUTTING_DOWN}, id="shutdown"),
    pytest.param({"closeConnection": True}, id="connection-closed"),
]


@pytest.fixture(scope="module")
def replica_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaSet]:
    with ReplicaSet(tmp_path_factory.mktemp("read-retries"), name="rsr", size=1) as members:
        yield members


@contextlib.contextmanager
def failing_once(uri: str, command: str, failure: dict[str, Any]) -> Iterator[None]:
    """The service's next `command` fails as `failure` says; the ones after it do not."""
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    data = {"failCommands": [command], "appName": "inmail", **failure}
    try:
        on = client.admin.command("configureFailPoint", "failCommand", mode={"times": 1}, data=data)
        yield
        off = client.admin.command("configureFailPoint", "failCommand", mode="off")
        # `count`: the times the fail point acted since the server started.
        assert off["count"] - on["count"] == 1, "the fail point made no command fail"
    finally:
        client.close()


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_page_its_count_and_what_precedes_it_are_read_through_a_failure(
    replica_set: ReplicaSet, failure: dict[str, Any]
) -> None:
    mongo = Mongo.connect(replica_set.uri, f"r_{uuid.uuid4().hex[:12]}")
    try:
        ledger = mongo.c.ledger
        await ledger.insert_many([{"_id": f"e{n}", "memberId": "ada", "seq": n} for n in range(5)])
        query, sort = {"memberId": "ada"}, list(NEWEST_FIRST)

        with failing_once(replica_set.uri, "find", failure):
            docs, at = await mongo.read_page(ledger, query, projection=None, sort=sort, limit=2)
        assert [doc["_id"] for doc in docs] == ["e4", "e3"]
        assert at is not None
        with failing_once(replica_set.uri, "aggregate", failure):
            assert await mongo.count_at(ledger, query, at) == 5
        with failing_once(replica_set.uri, "find", failure):
            assert await mongo.any_at(ledger, {"memberId": "ada", "seq": {"$gt": 3}}, sort, at)
    finally:
        await mongo.close()


async def test_a_list_asked_for_through_a_step_down_is_answered(
    replica_set: ReplicaSet, tmp_path: Path
) -> None:
    async with open_api(replica_set.uri, f"r_{uuid.uuid4().hex[:12]}") as api:
        ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
        query = "{ viewer { ledger(first: 5) { totalCount nodes { kind delta } } } }"
        before = await api.gql(query, token=ada.token)
        with failing_once(replica_set.uri, "find", {"errorCode": INTERRUPTED_BY_STEP_DOWN}):
            assert await api.gql(query, token=ada.token) == before
