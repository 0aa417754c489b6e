"""The ledger's change feed on a real mongod: transactions whole, in order, each exactly once,
across dropped streams and restarts; and the broker that opens it only while someone listens."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from inmail.domain.credits import LedgerKind
from inmail.domain.feeds import ChangesLost
from inmail.domain.model import LedgerEntry
from inmail.repositories.changes import LedgerChanges
from inmail.repositories.ledger import LedgerReader
from inmail.repositories.mongo import Mongo
from inmail.repositories.unit_of_work import MongoUnitOfWork
from inmail.services.live import Broker, Subscriber
from support import drop_stream_once, opened

AT = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
WAIT = 20.0
_ids = itertools.count(1)


class Ledgers:
    """Writes ledger entries the way the services do: one transaction per change."""

    def __init__(self, mongo: Mongo) -> None:
        self.uow = MongoUnitOfWork(mongo)
        self.seqs: dict[str, int] = {}

    async def commit(self, member_id: str, *deltas: int) -> list[tuple[str, int]]:
        entries = []
        for delta in deltas:
            seq = self.seqs[member_id] = self.seqs.get(member_id, 0) + 1
            kind = LedgerKind.GRANT if delta > 0 else LedgerKind.FORFEIT
            entries.append(LedgerEntry(f"e{next(_ids)}", member_id, seq, AT, kind, delta, 0))

        async with self.uow.transaction() as tx:
            await tx.ledger.append(entries)
        return [(e.member_id, e.seq) for e in entries]


@pytest.fixture
def ledgers(mongo: Mongo) -> Ledgers:
    return Ledgers(mongo)


async def next_batch(feed: LedgerChanges) -> list[tuple[str, int]]:
    committed = await asyncio.wait_for(feed.next(), WAIT)
    return [(e.member_id, e.seq) for e in committed.entries]


async def test_each_transaction_arrives_whole_in_commit_order(
    mongo: Mongo, ledgers: Ledgers
) -> None:
    async with opened(LedgerChanges(mongo)) as feed:
        written = [
            await ledgers.commit("ada", -3, -1, -2),
            await ledgers.commit("grace", 5),
            await ledgers.commit("ada", 15),
            await ledgers.commit("grace", -1, -1),
        ]
        assert [await next_batch(feed) for _ in written] == written


async def test_a_new_feed_resumes_right_after_the_last_batch_handed_out(
    mongo: Mongo, ledgers: Ledgers
) -> None:
    first = LedgerChanges(mongo)
    await first.open()
    one = await ledgers.commit("ada", 5)
    two = await ledgers.commit("ada", -1)
    await ledgers.commit("ada", -1)  # read by nobody before the restart
    assert await next_batch(first) == one
    assert await next_batch(first) == two
    token = first.resume_token
    await first.close()
    written_while_down = [await ledgers.commit("grace", 5), await ledgers.commit("ada", 2, -7)]

    async with opened(LedgerChanges(mongo, resume_after=token)) as second:
        assert await next_batch(second) == [("ada", 3)]
        for batch in written_while_down:
            assert await next_batch(second) == batch
        sentinel = await ledgers.commit("ada", 1)
        assert await next_batch(second) == sentinel  # and nothing came twice before it


async def _change_stream_cursor_ids(mongo: Mongo) -> list[int]:
    """The server-side cursors of change streams on the ledger, idle or in a getMore."""
    cursor = await mongo.client.admin.aggregate(
        [
            {"$currentOp": {"idleCursors": True, "allUsers": True}},
            {"$match": {"ns": f"{mongo.db.name}.ledger", "cursor.cursorId": {"$exists": True}}},
        ]
    )
    return [row["cursor"]["cursorId"] async for row in cursor]


async def test_a_stream_killed_on_the_server_resumes_without_losing_or_repeating(
    mongo: Mongo,
    ledgers: Ledgers,
) -> None:
    async with opened(LedgerChanges(mongo, max_await_ms=200, retry_delay=0.01)) as feed:
        before = await ledgers.commit("ada", 5)
        assert await next_batch(feed) == before
        cursors = await _change_stream_cursor_ids(mongo)
        assert cursors
        await mongo.db.command("killCursors", "ledger", cursors=cursors)
        after = [await ledgers.commit("ada", -1), await ledgers.commit("ada", -1, -1)]
        assert [await next_batch(feed) for _ in after] == after
        sentinel = await ledgers.commit("grace", 5)
        assert await next_batch(feed) == sentinel


async def test_a_dropped_connection_is_resumed_from_the_last_batch_handed_out(
    mongo: Mongo, ledgers: Ledgers, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(LedgerChanges(mongo, retry_delay=0.01)) as feed:
        one = await ledgers.commit("ada", 5)
        two = await ledgers.commit("ada", -1, -1)
        assert await next_batch(feed) == one
        stream = drop_stream_once(feed, monkeypatch)
        three = await ledgers.commit("grace", 5)
        assert await next_batch(feed) == two
        assert feed._stream is not stream  # it was reopened, at the token of batch one
        assert await next_batch(feed) == three


async def test_a_dropped_ledger_ends_the_stream_and_a_new_one_sees_the_next_inserts(
    mongo: Mongo,
    ledgers: Ledgers,
) -> None:
    async with opened(LedgerChanges(mongo, max_await_ms=100)) as feed:
        before = await ledgers.commit("ada", 5)
        await mongo.c.ledger.drop()
        assert await next_batch(feed) == before
        later = await ledgers.commit("grace", 5)
        assert await next_batch(feed) == later


async def test_a_feed_that_cannot_resume_starts_from_now_and_says_changes_were_lost(
    mongo: Mongo, ledgers: Ledgers, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(LedgerChanges(mongo)) as first:
        token = first.resume_token
    await ledgers.commit("ada", 5)  # after the token: lost with the history
    collection: Any = mongo.c.ledger
    real_watch = collection.watch

    async def watch(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("resume_after") is not None:
            raise OperationFailure("resume point no longer in the oplog", code=286)
        return await real_watch(*args, **kwargs)

    monkeypatch.setattr(collection, "watch", watch)
    feed = LedgerChanges(mongo, resume_after=token)
    try:
        with pytest.raises(ChangesLost):
            await feed.open()
        later = await ledgers.commit("grace", 5)
        assert await next_batch(feed) == later
    finally:
        await feed.close()


async def test_changes_lost_are_said_though_the_stream_from_now_fails_to_open_at_first(
    mongo: Mongo, ledgers: Ledgers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history is gone (the resume is refused), and the first stream from now fails too (a
    primary stepping down): the feed says changes were lost once a stream opens, so that its
    readers catch up, rather than going on as if nothing had been missed."""
    collection: Any = mongo.c.ledger
    real_watch = collection.watch
    fresh: list[object] = []

    async def watch(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("resume_after") is not None:
            raise OperationFailure("resume point no longer in the oplog", code=286)
        fresh.append(kwargs)
        if len(fresh) == 2:  # the stream from now, once the resume was refused
            raise AutoReconnect("not primary")
        return await real_watch(*args, **kwargs)

    monkeypatch.setattr(collection, "watch", watch)
    async with opened(LedgerChanges(mongo, retry_delay=0.01)) as feed:
        drop_stream_once(feed, monkeypatch)
        await ledgers.commit("ada", 5)  # lost with the history
        with pytest.raises(ChangesLost):
            await next_batch(feed)
        later = await ledgers.commit("grace", 5)
        assert await next_batch(feed) == later
    assert len(fresh) == 3


# --- the broker opens the feed only while someone subscribes ------------------------------


def lingering_broker(mongo: Mongo) -> Broker:
    return Broker(
        LedgerReader(mongo, None), lambda: LedgerChanges(mongo), now=lambda: AT, linger=0.05
    )


async def next_update(subscriber: Subscriber) -> tuple[int, int]:
    update = await asyncio.wait_for(anext(subscriber), WAIT)
    return (update.seq, update.delta)


async def closed_within_wait(broker: Broker, mongo: Mongo) -> bool:
    """Whether the broker closed its feed, and the server its cursor, within the wait (a
    getMore cut short by the close still runs out its await on the server)."""
    for _ in range(int(WAIT / 0.02)):
        if not broker.listening and not await _change_stream_cursor_ids(mongo):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_the_broker_reads_the_ledger_only_while_someone_subscribes(
    mongo: Mongo, ledgers: Ledgers
) -> None:
    broker = lingering_broker(mongo)
    await broker.start()
    try:
        await ledgers.commit("ada", 5)
        assert not broker.listening
        assert await _change_stream_cursor_ids(mongo) == []

        async with broker.subscribe("ada") as ada:
            assert broker.listening
            assert len(await _change_stream_cursor_ids(mongo)) == 1
            assert await next_update(ada) == (1, 5)  # the latest, read once listening
            await ledgers.commit("ada", -1)
            assert await next_update(ada) == (2, -1)
        assert await closed_within_wait(broker, mongo)

        await ledgers.commit("ada", -1)  # while nobody listens: the next subscriber's first
        async with broker.subscribe("ada") as again:
            assert await next_update(again) == (3, -1)
            await ledgers.commit("ada", 2)
            assert await next_update(again) == (4, 2)
    finally:
        await broker.stop()
    assert await closed_within_wait(broker, mongo)


async def test_subscribers_arriving_together_share_one_feed_and_leaving_one_keeps_it(
    mongo: Mongo, ledgers: Ledgers
) -> None:
    broker = lingering_broker(mongo)
    try:
        async with contextlib.AsyncExitStack() as stack:
            ada, grace = await asyncio.gather(
                stack.enter_async_context(broker.subscribe("ada")),
                stack.enter_async_context(broker.subscribe("grace")),
            )
            assert len(await _change_stream_cursor_ids(mongo)) == 1
            async with broker.subscribe("ada") as brief:
                assert await next_update(brief) == (0, 0)
            await asyncio.sleep(0.2)  # past the linger: the others still subscribe
            assert broker.listening
            await ledgers.commit("ada", 5)
            await ledgers.commit("grace", 3)
            assert await next_update(ada) == (0, 0)
            assert await next_update(ada) == (1, 5)
            assert await next_update(grace) == (0, 0)
            assert await next_update(grace) == (1, 3)
        assert await closed_within_wait(broker, mongo)
    finally:
        await broker.stop()


async def test_a_stopped_broker_refuses_new_subscribers_and_closes_its_feed(
    mongo: Mongo,
) -> None:
    broker = lingering_broker(mongo)
    async with broker.subscribe("ada"):
        assert broker.listening
        await broker.stop()
        assert not broker.listening
        with pytest.raises(RuntimeError):
            async with broker.subscribe("grace"):
                pass
    assert await closed_within_wait(broker, mongo)
