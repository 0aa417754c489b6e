"""The start-up move of conversation events from their old collection into `notifications`.

A database written by an earlier version keeps its events in `conversation_events`, unique per
event key. Start-up (Mongo.create_indexes) copies each into `notifications` under the same id,
marked with the event kind, then drops the old collection; a run cut short and run again, or
two at once, copies each event once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import ASCENDING, IndexModel
from pymongo.errors import OperationFailure

from inmail.domain.notifications import ConversationChange, ConversationEvent
from inmail.domain.plans import DEFAULT_PLAN_TABLE
from inmail.repositories.migrations import BATCH, EVENT_KEYS, EVENTS, migrate
from inmail.repositories.mongo import Collection, Doc, Mongo, new_id
from inmail.repositories.notifications import EVENT_KIND, NotificationReader
from inmail.repositories.unit_of_work import MongoUnitOfWork
from stored import events_of, notifications_of
from support import migrate_from_two_processes

AT = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
FIRST_ID = "0" * 24  # sorts before every id: the catch-up reads from the start
ADA, GRACE = new_id(), new_id()


def _old_event(change: str, conversation_id: str, at: datetime, body: str | None) -> Doc:
    """An event as the earlier version wrote it into `conversation_events`."""
    message = (
        {"_id": new_id(), "authorId": ADA, "body": body, "sentAt": at} if body is not None else None
    )
    key = f"{change}:{message['_id'] if message and change == 'MESSAGE' else conversation_id}"
    return {
        "_id": new_id(),
        "eventKey": key,
        "change": change,
        "conversationId": conversation_id,
        "senderId": ADA,
        "recipientId": GRACE,
        "at": at,
        "message": message,
    }


async def _old_database(mongo: Mongo) -> tuple[str, list[Doc]]:
    """One InMail thread with its events and notification, and many other threads' events."""
    thread = new_id()
    events = [
        _old_event("INMAIL", thread, AT, "Shall we build the Difference Engine?"),
        _old_event("RESPONDED", thread, AT + timedelta(hours=2), None),
        _old_event("MESSAGE", thread, AT + timedelta(hours=3), "Splendid."),
    ]
    # More than one batch of the migration's scan.
    events += [
        _old_event("INMAIL", new_id(), AT + timedelta(minutes=i), f"Note {i}")
        for i in range(BATCH + 5)
    ]
    old = mongo.db["conversation_events"]
    await old.create_indexes(
        [IndexModel([("eventKey", ASCENDING)], unique=True, name="one_per_event")]
    )
    await old.insert_many(events)
    await mongo.c.notifications.create_indexes(
        [
            IndexModel(
                [("kind", ASCENDING), ("eventKey", ASCENDING)], unique=True, name="one_per_event"
            )
        ]
    )
    await mongo.c.notifications.insert_one(
        {
            "_id": new_id(),
            "kind": "INMAIL_RECEIVED",
            "eventKey": thread,
            "memberId": GRACE,
            "conversationId": thread,
            "at": AT,
            "readAt": None,
        }
    )
    # A run cut short had copied the first event already.
    await mongo.c.notifications.insert_one(events[0] | {"kind": EVENT_KIND})
    return thread, events


async def test_old_events_are_moved_into_notifications_once_however_often_start_up_runs(
    mongodb_uri: str, db_name: str
) -> None:
    mongo = Mongo.connect(mongodb_uri, db_name)
    try:
        thread, events = await _old_database(mongo)

        await migrate_from_two_processes(mongo, mongodb_uri, db_name, DEFAULT_PLAN_TABLE)
        for _ in range(2):
            await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
            # The marker is what skips the work; without it the migration runs again and
            # changes nothing.
            await mongo.c.migrations.delete_one({"_id": EVENTS})
        await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)

        assert "conversation_events" not in await mongo.db.list_collection_names()
        assert await mongo.c.notifications.count_documents({"kind": EVENT_KIND}) == len(events)
        assert await mongo.c.notifications.count_documents({}) == len(events) + 1
        copied = await mongo.c.notifications.find_one({"_id": events[1]["_id"]})
        assert copied == events[1] | {"kind": EVENT_KIND}
        assert await mongo.c.migrations.find_one({"_id": EVENTS}) is not None

        reads = NotificationReader(mongo, None)
        told = await events_of(mongo, thread)
        assert [e.change for e in told] == [
            ConversationChange.INMAIL,
            ConversationChange.RESPONDED,
            ConversationChange.MESSAGE,
        ]
        assert [e.message.body if e.message else None for e in told] == [
            "Shall we build the Difference Engine?",
            None,
            "Splendid.",
        ]
        assert len(await reads.events_since([GRACE], FIRST_ID, timedelta(0))) == len(events)
        # Members see their notifications, never the moved events.
        assert [n.conversation_id for n in await notifications_of(mongo, GRACE)] == [thread]
        assert await reads.count(GRACE, unread_only=False) == 1
        assert await notifications_of(mongo, ADA) == []

        # A moved event is still recorded once: told again, it is not written twice.
        again = ConversationEvent(ConversationChange.RESPONDED, thread, ADA, GRACE, AT)
        async with MongoUnitOfWork(mongo).transaction() as tx:
            await tx.notifications.record([], again)
        assert len(await events_of(mongo, thread)) == 3
    finally:
        await mongo.close()


OldEventsRead = Callable[
    [Collection, Mapping[str, object], Mapping[str, Any]], Awaitable[list[Doc]]
]


def _reading_old_events(mongo: Mongo, monkeypatch: pytest.MonkeyPatch, read: OldEventsRead) -> None:
    """`mongo`'s reads of `conversation_events` made by `read`; its other reads as they are."""
    read_whole = mongo.find_all

    async def find_all(collection: Collection, query: Mapping[str, object], **kw: Any) -> list[Doc]:
        if collection.name != "conversation_events":
            return await read_whole(collection, query, **kw)
        return await read(collection, query, kw)

    monkeypatch.setattr(mongo, "find_all", find_all)


async def test_a_start_up_reading_events_another_finished_moving_and_dropped_starts_too(
    mongodb_uri: str, db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers start together: one finishes the move and drops the old collection while
    another is between a batch's first reply and the rest of it (its `getMore` then finds the
    cursor killed). The second start-up carries on: every event was moved by the first."""
    mongo = Mongo.connect(mongodb_uri, db_name)
    other = Mongo.connect(mongodb_uri, db_name)
    try:
        _, events = await _old_database(mongo)

        async def dropped_mid_batch(
            collection: Collection, query: Mapping[str, object], kw: Mapping[str, Any]
        ) -> list[Doc]:
            cursor = collection.find(query, kw.get("projection")).sort([("_id", 1)])
            docs = [await anext(cursor.limit(kw["limit"]))]  # the first reply only, so far
            await migrate(other, DEFAULT_PLAN_TABLE)  # another worker moves every event
            assert "conversation_events" not in await mongo.db.list_collection_names()
            return docs + [doc async for doc in cursor]

        _reading_old_events(mongo, monkeypatch, dropped_mid_batch)
        await migrate(mongo, DEFAULT_PLAN_TABLE)
        monkeypatch.undo()

        assert await mongo.c.notifications.count_documents({"kind": EVENT_KIND}) == len(events)
        assert await mongo.c.migrations.find_one({"_id": EVENTS}) is not None
    finally:
        await asyncio.gather(mongo.close(), other.close())


async def test_a_read_refused_while_the_old_collection_stays_is_not_taken_for_a_finished_move(
    mongodb_uri: str, db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mongo = Mongo.connect(mongodb_uri, db_name)
    try:
        await _old_database(mongo)

        async def killed(*_: object) -> list[Doc]:
            raise OperationFailure("cursor killed", code=175)

        _reading_old_events(mongo, monkeypatch, killed)
        with pytest.raises(OperationFailure):
            await migrate(mongo, DEFAULT_PLAN_TABLE)
        assert await mongo.c.migrations.find_one({"_id": EVENTS}) is None
        assert "conversation_events" in await mongo.db.list_collection_names()
    finally:
        await mongo.close()


async def test_a_new_database_records_the_move_and_has_no_old_events_collection(
    mongo: Mongo,
) -> None:
    assert await mongo.c.migrations.find_one({"_id": EVENTS}) is not None
    assert "conversation_events" not in await mongo.db.list_collection_names()
    indexes = await mongo.c.notifications.index_information()
    assert "one_per_event" in indexes
    assert "event_conversation_order" not in indexes  # no read of the service's needs it


async def test_start_up_drops_the_index_no_read_of_the_service_s_used(mongo: Mongo) -> None:
    """Earlier versions kept conversation events in order by conversation; nothing reads them
    so, and an index costs every event's write."""
    await mongo.c.notifications.create_indexes(
        [
            IndexModel(
                [("conversationId", ASCENDING), ("_id", ASCENDING)],
                partialFilterExpression={"kind": EVENT_KIND},
                name="event_conversation_order",
            )
        ]
    )
    assert "event_conversation_order" in await mongo.c.notifications.index_information()

    await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)

    assert "event_conversation_order" not in await mongo.c.notifications.index_information()


async def test_reminders_stored_without_an_event_key_get_one_and_the_indexes_build(
    mongodb_uri: str, db_name: str
) -> None:
    """Early versions wrote each reminder as {kind: INMAIL_REMINDER, conversationId}, with no
    event key: two of them were one null key to the unique index {kind, eventKey}, and start-up
    failed building it."""
    mongo = Mongo.connect(mongodb_uri, db_name)
    try:
        threads = [new_id() for _ in range(3)]
        await mongo.c.notifications.insert_many(
            [
                {
                    "_id": new_id(),
                    "kind": "INMAIL_REMINDER",
                    "memberId": GRACE,
                    "conversationId": thread,
                    "at": AT + timedelta(hours=i),
                    "readAt": None,
                }
                for i, thread in enumerate(threads)
            ]
        )

        await migrate_from_two_processes(mongo, mongodb_uri, db_name, DEFAULT_PLAN_TABLE)
        await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)

        keys = {doc["eventKey"] async for doc in mongo.c.notifications.find({})}
        assert keys == set(threads)
        told = await notifications_of(mongo, GRACE)
        assert sorted((n.kind, n.conversation_id) for n in told) == sorted(
            ("REMINDER", thread) for thread in threads
        )
        assert await mongo.c.migrations.find_one({"_id": EVENT_KEYS}) is not None
    finally:
        await mongo.close()
