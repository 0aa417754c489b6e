"""Where no mongod can run, the service still starts, in memory, and says so loudly.

This is the one place the suite uses mongomock: to show the fallback works at all. Nothing
that must hold under concurrency or crashes is tested on it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import httpx
import pytest

from inmail.app import app_from_env
from inmail.bootstrap import build_container
from inmail.domain.conversations import ConversationState
from inmail.domain.credits import LedgerKind
from inmail.domain.model import Conversation, ConversationKind, LedgerEntry
from inmail.domain.plans import PlanType
from inmail.repositories.conversations import conversation_to_doc
from inmail.repositories.memory import InMemoryMongo
from inmail.repositories.messages import MessageReader
from inmail.repositories.mongo import DuplicateKeyError, Mongo
from inmail.repositories.unit_of_work import MongoUnitOfWork, Transaction
from inmail.services.members import NewMember, create_member
from support import START, TEST_SECRET, Api
from support import test_settings as settings_with

MINUTE = timedelta(minutes=1)


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_without_a_database_the_service_runs_in_memory_and_warns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("INMAIL_MONGODB_URI", "INMAIL_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INMAIL_JWT_SECRET", TEST_SECRET)
    monkeypatch.setenv("INMAIL_SCHEDULER_ENABLED", "false")
    app = app_from_env()
    assert "NOTHING WILL PERSIST" in capsys.readouterr().err

    container = app.state.container
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            api = Api(client, container)
            ada = await api.create_member("Ada Lovelace")
            grace = await api.create_member("Grace Hopper")
            alan = await api.create_member("Alan Turing")
            assert await api.balance(ada) == 5
            assert (await api.send(ada, grace))["errors"] == []
            assert (await api.send(ada, alan))["errors"] == []
            assert (await api.purchase(ada, 2))["errors"] == []
            assert await api.balance(ada) == 5


async def test_the_fallback_says_itself_what_it_lacks_one_process_and_no_webhooks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_with(
        webhook_url="https://hooks.example/inmail", webhook_secret="w" * 32, scheduler_enabled=True
    )
    mongo: Mongo = InMemoryMongo("what_it_lacks")
    with caplog.at_level(logging.WARNING, logger="inmail"):
        container = build_container(settings, mongo)
    assert container.scheduler is not None
    assert container.webhooks is None
    assert "webhooks: not delivered on the in-memory database (no leases there)" in caplog.text
    # Nor enqueued, to wait for a delivery that never comes: a new member's first allotment is
    # a notification, and no outbox event.
    await create_member(container.deps, NewMember("Ada Lovelace", PlanType.PREMIUM_CAREER))
    assert await mongo.c.notifications.count_documents({}) == 1
    assert await mongo.c.webhook_outbox.count_documents({}) == 0
    leases = mongo.lease_store()
    assert await leases.acquire("scheduler", "this process", MINUTE)
    assert await leases.acquire("scheduler", "any other", MINUTE)


async def test_a_mongod_carries_changes_and_leases_across_processes(mongo: Mongo) -> None:
    assert mongo.ledger_changes() is not None
    assert mongo.inbox_changes() is not None
    assert mongo.webhook_outbox() is not None
    leases = mongo.lease_store()
    assert await leases.acquire("scheduler", "one process", MINUTE)
    assert not await leases.acquire("scheduler", "another", MINUTE)


async def test_the_fallback_hands_back_times_with_their_zone_as_the_server_does() -> None:
    mongo = InMemoryMongo("zoned_times")
    await mongo.c.members.insert_one({"_id": "ada", "inmailSends": [START]})
    found = await mongo.c.members.find_one({"_id": "ada"})
    assert found is not None
    (sent,) = found["inmailSends"]
    assert sent.utcoffset() == timedelta(0)
    assert sent == START


def _entry(seq: int, attempt: int = 1) -> LedgerEntry:
    return LedgerEntry(f"e-{seq}-{attempt}", "ada", seq, START, LedgerKind.GRANT, 5, 5 * seq)


async def test_the_fallback_s_ledger_feed_hands_out_what_each_committed_transaction_wrote() -> None:
    """One transaction's entries come out together, after it ends; a transaction that raised
    hands out nothing, and one run again hands out its last attempt's entries once."""
    mongo = InMemoryMongo("ledger_feed")
    uow = MongoUnitOfWork(mongo)
    feed = mongo.ledger_changes()()
    await feed.open()
    attempts = 0

    async def raced_once(tx: Transaction) -> None:
        nonlocal attempts
        attempts += 1
        await tx.ledger.append([_entry(3, attempts)])  # each attempt makes its own ids
        if attempts == 1:
            raise DuplicateKeyError("another request won the first attempt")

    async def refused(tx: Transaction) -> None:
        await tx.ledger.append([_entry(9)])
        raise ValueError("refused after writing")

    try:
        async with uow.transaction() as tx:
            await tx.ledger.append([_entry(1), _entry(2)])
        with pytest.raises(ValueError, match="refused after writing"):
            await uow.run(refused)
        await uow.run(raced_once)

        first = await asyncio.wait_for(feed.next(), 1)
        second = await asyncio.wait_for(feed.next(), 1)
        assert [e.seq for e in first.entries] == [1, 2]
        assert attempts == 2
        assert [e.id for e in second.entries] == ["e-3-2"]  # the attempt that ended, once
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(feed.next(), 0.05)
    finally:
        await feed.close()


async def test_in_memory_a_message_is_found_by_id_with_its_conversation_after_any_read() -> None:
    """mongomock writes into a projection it is given; the fallback gives it copies, so the
    projection the conversations' reads share still leaves each conversation whole."""
    memory = InMemoryMongo("messages-by-id")
    at = START
    first = {"_id": "first-1", "authorId": "ada", "body": "Hello", "sentAt": at}
    thread = {"kind": "INMAIL", "senderId": "ada", "recipientId": "bob", "subject": "Hi"}
    await memory.c.conversations.insert_many(
        [
            {"_id": "c-1", **thread, "state": "ACCEPTED", "sentAt": at},
            {"_id": "c-2", **thread, "state": "ACCEPTED", "sentAt": at, "first": first},
        ]
    )
    await memory.c.messages.insert_one(
        {"_id": "reply-1", "conversationId": "c-1", "authorId": "bob", "body": "Yes", "sentAt": at}
    )
    reader = MessageReader(memory, None)

    threads = {"reply-1": "c-1", "first-1": "c-2"}
    for ids in (["reply-1"], ["first-1"], ["reply-1"], ["reply-1", "first-1"]):
        found = await reader.get_many(ids)
        placed = {i: conversation.id for i, (conversation, _) in found.items()}
        assert placed == {i: threads[i] for i in ids}


async def test_in_memory_a_thread_gives_each_message_a_time_after_its_latest() -> None:
    """On a stopped clock each message of a thread still gets its own time, after the last:
    the fallback runs `take_message_time`'s $max and its read-back as mongod does."""
    memory = InMemoryMongo("thread-times")
    await memory.c.conversations.insert_one(conversation_to_doc(THREAD))
    units = MongoUnitOfWork(memory)

    times = [await units.run(_message_time, START) for _ in range(3)]
    later = await units.run(_message_time, START + timedelta(hours=1))

    assert times == [START + timedelta(milliseconds=ms) for ms in (1, 2, 3)]
    assert later == START + timedelta(hours=1)
    stored = await memory.c.conversations.find_one({"_id": "c-1"})
    assert stored is not None
    assert stored["lastMessageAt"] == later


THREAD = Conversation(
    id="c-1",
    kind=ConversationKind.DIRECT,
    sender_id="bob",
    recipient_id="ada",
    subject="",
    state=ConversationState.ACCEPTED,
    sent_at=START,
)


async def _message_time(tx: Transaction, now: datetime) -> datetime:
    return await tx.conversations.take_message_time(THREAD, now)
