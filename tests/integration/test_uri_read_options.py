"""What a connection string may and may not change about the service's reads.

Every read must show the writes committed before it (SPEC 3), so reads go to the primary even
when `INMAIL_MONGODB_URI` names another read preference: a secondary may lag behind. A read
concern named there holds for every read outside a transaction, the reads the service sends as
commands of its own (the compose window's aggregate, the awaiting check) as well as the
driver's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pymongo import ReadPreference
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from inmail.domain.plans import DEFAULT_PLAN_TABLE
from inmail.repositories.mongo import NO_TRANSACTION, Doc, Mongo

URI_OPTIONS = "readPreference=secondaryPreferred&readConcernLevel=majority"
READS = ("find", "aggregate")


class Reads(CommandListener):
    def __init__(self) -> None:
        self.commands: list[Doc] = []

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name in READS:
            self.commands.append(dict(event.command))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def heard(mongodb_uri: str, db_name: str) -> AsyncIterator[tuple[Mongo, Reads]]:
    reads = Reads()
    joiner = "&" if "?" in mongodb_uri else "/?"
    mongo = Mongo.connect(f"{mongodb_uri}{joiner}{URI_OPTIONS}", db_name, listeners=[reads])
    try:
        await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
        reads.commands.clear()  # start-up's own reads
        yield mongo, reads
    finally:
        await mongo.close()


async def test_reads_go_to_the_primary_whatever_the_uri_prefers(
    heard: tuple[Mongo, Reads],
) -> None:
    mongo, reads = heard
    assert mongo.client.read_preference == ReadPreference.PRIMARY
    await mongo.c.members.insert_one({"_id": "m1", "name": "Ada"})
    await mongo.find_all(mongo.c.members, {"_id": "m1"}, session=NO_TRANSACTION)
    await mongo.find_anchored(mongo.c.members, "m1", [], [], session=NO_TRANSACTION)
    assert [command.get("$readPreference", {"mode": "primary"}) for command in reads.commands] == [
        {"mode": "primary"},
        {"mode": "primary"},
    ]


async def test_every_read_outside_a_transaction_keeps_the_uris_read_concern(
    heard: tuple[Mongo, Reads],
) -> None:
    mongo, reads = heard
    await mongo.c.members.insert_one({"_id": "m1", "name": "Ada"})
    found = await mongo.find_all(mongo.c.members, {"_id": "m1"}, session=NO_TRANSACTION)
    anchored, _ = await mongo.find_anchored(
        mongo.c.members, "m1", [], [(mongo.c.credit_lots, {"memberId": "m1"})], NO_TRANSACTION
    )
    assert [doc["_id"] for doc in found] == [doc["_id"] for doc in anchored] == ["m1"]
    assert [(next(iter(c)), c.get("readConcern")) for c in reads.commands] == [
        ("find", {"level": "majority"}),
        ("aggregate", {"level": "majority"}),
    ]
