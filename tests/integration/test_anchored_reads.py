"""One record with others of its kind and what belongs to it, in one read (`find_anchored`), on
the real mongod, inside a transaction and out, and on the in-memory fallback alike."""

from __future__ import annotations

import pytest

from inmail.repositories.memory import InMemoryMongo
from inmail.repositories.mongo import Doc, Mongo, Session, TransactionSession

MEMBERS: list[Doc] = [{"_id": "ada"}, {"_id": "grace"}, {"_id": "alan"}]
LOTS: list[Doc] = [
    {"_id": "l1", "memberId": "ada", "status": "ACTIVE"},
    {"_id": "l2", "memberId": "ada", "status": "SPENT"},
    {"_id": "l3", "memberId": "grace", "status": "ACTIVE"},
]
RECORDS: list[Doc] = [{"_id": "r1", "memberId": "ada", "key": "k"}]


@pytest.fixture(params=["mongod", "in-memory"])
async def store(request: pytest.FixtureRequest, mongo: Mongo) -> Mongo:
    chosen = mongo if request.param == "mongod" else InMemoryMongo("anchored")
    await chosen.c.members.insert_many([dict(d) for d in MEMBERS])
    await chosen.c.credit_lots.insert_many([dict(d) for d in LOTS])
    await chosen.c.idempotency.insert_many([dict(d) for d in RECORDS])
    return chosen


async def _read(
    store: Mongo, anchor: str, others: list[str], session: Session = None
) -> tuple[list[str], list[list[str]]]:
    docs, joined = await store.find_anchored(
        store.c.members,
        anchor,
        others,
        [
            (store.c.credit_lots, {"memberId": anchor, "status": "ACTIVE"}),
            (store.c.idempotency, {"memberId": anchor, "key": "k"}),
        ],
        session,
    )
    return sorted(d["_id"] for d in docs), [sorted(d["_id"] for d in j) for j in joined]


async def test_the_anchor_comes_with_the_others_and_each_part_of_its_own(store: Mongo) -> None:
    assert await _read(store, "ada", ["grace"]) == (["ada", "grace"], [["l1"], ["r1"]])
    assert await _read(store, "grace", []) == (["grace"], [["l3"], []])
    assert await _read(store, "ada", ["nobody"]) == (["ada"], [["l1"], ["r1"]])


async def test_without_its_anchor_the_others_are_still_read_and_the_parts_are_empty(
    store: Mongo,
) -> None:
    assert await _read(store, "nobody", ["grace", "alan"]) == (["alan", "grace"], [[], []])
    assert await _read(store, "nobody", []) == ([], [[], []])


async def test_inside_a_transaction_it_reads_the_transaction_s_snapshot(mongo: Mongo) -> None:
    await mongo.c.members.insert_many([dict(d) for d in MEMBERS])
    await mongo.c.credit_lots.insert_many([dict(d) for d in LOTS])

    async def read_after_a_write_of_its_own(
        session: TransactionSession,
    ) -> tuple[list[str], list[list[str]]]:
        await mongo.c.credit_lots.insert_one(
            {"_id": "l4", "memberId": "ada", "status": "ACTIVE"}, session=session.driver
        )
        return await _read(mongo, "ada", ["alan"], session.driver)

    found = await mongo.run_transaction(read_after_a_write_of_its_own)
    assert found == (["ada", "alan"], [["l1", "l4"], []])
