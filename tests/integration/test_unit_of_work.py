"""The unit of work on a real mongod: all of a transaction or none, reruns after a race."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from inmail.domain.model import Member
from inmail.domain.plans import PlanType
from inmail.repositories.members import StaleMember
from inmail.repositories.mongo import Mongo, WriteWindowClosed
from inmail.repositories.unit_of_work import MongoUnitOfWork, Transaction
from support import open_transactions

JOINED = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


@pytest.fixture
def uow(mongo: Mongo) -> MongoUnitOfWork:
    return MongoUnitOfWork(mongo)


def ada() -> Member:
    return Member("ada-lovelace", "Ada Lovelace", "Analyst", PlanType.BASIC, JOINED)


async def test_a_transaction_that_raises_leaves_nothing_written(uow: MongoUnitOfWork) -> None:
    async def insert_then_fail() -> None:
        async with uow.transaction() as tx:
            await tx.members.insert(ada())
            assert await tx.members.get("ada-lovelace") is not None  # its own snapshot
            raise RuntimeError("the engine jammed")

    with pytest.raises(RuntimeError, match="the engine jammed"):
        await insert_then_fail()
    assert await uow.reads.members.get("ada-lovelace") is None


async def test_plain_reads_offer_no_way_to_write(uow: MongoUnitOfWork) -> None:
    for name in ("insert", "commit", "commit_many", "connect", "set_payment_method"):
        assert not hasattr(uow.reads.members, name)
    assert not hasattr(uow.reads.lots, "write")
    assert not hasattr(uow.reads.ledger, "append")
    assert not hasattr(uow.reads.idempotency, "insert")


async def test_a_step_that_met_a_moved_member_is_run_again_from_the_start(
    uow: MongoUnitOfWork,
) -> None:
    async with uow.transaction() as tx:
        await tx.members.insert(ada())
    runs: list[int] = []

    async def rename(tx: Transaction, name: str) -> str:
        member = await tx.members.get("ada-lovelace")
        assert member is not None
        runs.append(member.ledger_seq)
        if len(runs) == 1:
            raise StaleMember("ada-lovelace")  # as if another request committed first
        return name

    assert await uow.run(rename, "Countess of Lovelace") == "Countess of Lovelace"
    assert runs == [0, 0]


async def test_a_step_that_keeps_racing_gives_up_after_the_last_retry(
    uow: MongoUnitOfWork,
) -> None:
    attempts = 0

    async def always_stale(tx: Transaction) -> None:
        nonlocal attempts
        attempts += 1
        raise StaleMember("grace-hopper")

    with pytest.raises(StaleMember):
        await uow.run(always_stale)
    assert attempts == 8


@pytest.mark.parametrize("entry", ["run", "transaction"])
async def test_a_transaction_still_running_when_its_writes_must_end_is_rolled_back_not_left_open(
    uow: MongoUnitOfWork, mongo: Mongo, entry: str
) -> None:
    """A websocket's operation may write until its token's exp: a transaction that wrote before
    then but would commit after is rolled back at once, and none is left open on the server
    (where it would hold what it wrote until its lifetime ends)."""

    exp = time.time() + 1.0
    wrote_at: list[float] = []

    async def write_then_dawdle(tx: Transaction) -> None:
        await tx.members.insert(ada())
        wrote_at.append(time.time())
        await asyncio.sleep(1.5)  # exp passes meanwhile

    async def once() -> None:
        if entry == "run":
            await uow.run(write_then_dawdle)
        else:
            async with uow.transaction() as tx:
                await write_then_dawdle(tx)

    with uow.deadline(ends_by=exp), pytest.raises(WriteWindowClosed):
        await once()
    left_open = await open_transactions(mongo)

    [written] = wrote_at
    assert written < exp, "the write was to come before exp"
    assert left_open == []
    assert await uow.reads.members.get("ada-lovelace") is None
    async with uow.transaction() as tx:  # the member's next write is not held up
        await tx.members.insert(ada())
    assert await uow.reads.members.get("ada-lovelace") is not None
