"""Conversation events stored beside the notifications they are written with, on a real mongod.

An operation's notifications and its event are one command into `notifications`; an event is
never read as a notification nor a notification as an event; the live inbox feed (its change
stream, its catch-up after a gap, and the in-memory fallback's polling) hands out both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inmail.domain.feeds import ChangesLost, InboxChange
from inmail.domain.model import Message
from inmail.domain.notifications import (
    ConversationChange,
    ConversationEvent,
    Notification,
    NotificationKind,
)
from inmail.domain.plans import DEFAULT_PLAN_TABLE
from inmail.repositories.changes import InboxChanges
from inmail.repositories.memory import InMemoryMongo
from inmail.repositories.mongo import NO_TRANSACTION, Mongo, new_id
from inmail.repositories.notifications import (
    EVENT_KIND,
    NoticeOptions,
    NotificationReader,
    NotificationRepository,
    event_from_doc,
    inbox_change,
    notification_from_doc,
)
from inmail.repositories.unit_of_work import MongoUnitOfWork
from inmail.services import live
from inmail.services.live import InboxBroker, InboxSubscriber
from stored import events_of, notifications_of
from support import drop_stream_once, opened

AT = datetime(2026, 2, 2, 10, 30, tzinfo=UTC)
WAIT = 20.0
ADA, GRACE, ALAN = "ada-lovelace", "grace-hopper", "alan-turing"


def inmail(sender: str, recipient: str, at: datetime, body: str) -> tuple[Notification, Any]:
    """A new InMail's notification for its recipient and its conversation event."""
    conversation_id = new_id()
    event = ConversationEvent(
        ConversationChange.INMAIL,
        conversation_id,
        sender,
        recipient,
        at,
        Message(new_id(), sender, body, at),
    )
    notification = Notification(
        NotificationKind.INMAIL_RECEIVED, recipient, at, conversation_id, conversation_id
    )
    return notification, event


async def record(mongo: Mongo, notification: Notification, event: ConversationEvent) -> int:
    async with MongoUnitOfWork(mongo).transaction() as tx:
        return await tx.notifications.record([notification], event)


async def next_of(subscriber: InboxSubscriber[Any]) -> Any:
    return await asyncio.wait_for(anext(subscriber), WAIT)


async def test_an_event_is_recorded_once_and_never_read_as_a_notification(mongo: Mongo) -> None:
    notification, event = inmail(ADA, GRACE, AT, "Shall we talk about the Engine?")
    assert await record(mongo, notification, event) == 1
    assert await record(mongo, notification, event) == 0  # the same event, reported again

    reads = NotificationReader(mongo, None)
    [stored] = await notifications_of(mongo, GRACE)
    assert (stored.kind, stored.conversation_id) == (
        NotificationKind.INMAIL_RECEIVED,
        event.conversation_id,
    )
    assert await reads.count(GRACE, unread_only=False) == 1
    assert [n.id for _, n in (await reads.page(GRACE, False, 10, None)).items] == [stored.id]
    assert [n.id for n in await reads.since([ADA, GRACE], stored.id, timedelta(0))] == [stored.id]
    assert await notifications_of(mongo, ADA) == []

    [told] = await events_of(mongo, event.conversation_id)
    assert (told.change, told.sender_id, told.recipient_id) == (
        ConversationChange.INMAIL,
        ADA,
        GRACE,
    )
    assert told.message is not None
    assert told.message.body == "Shall we talk about the Engine?"
    assert [e.id for e in await reads.events_since([ADA], told.id, timedelta(0))] == [told.id]
    # By id, as `node` reads one: an event's id names no notification.
    assert await reads.get_many([told.id, stored.id]) == {stored.id: stored}

    docs = await mongo.find_all(
        mongo.c.notifications, {}, sort=[("_id", 1)], session=NO_TRANSACTION
    )
    assert len(docs) == 2
    event_doc = next(d for d in docs if d["kind"] == EVENT_KIND)
    notification_doc = next(d for d in docs if d["kind"] != EVENT_KIND)
    assert "memberId" not in event_doc
    assert notification_from_doc(event_doc) is None
    assert event_from_doc(notification_doc) is None


async def test_an_event_of_its_own_and_a_response_with_two_notifications_are_one_write_each(
    mongo: Mongo,
) -> None:
    notification, sent = inmail(ADA, GRACE, AT, "Compilers?")
    await record(mongo, notification, sent)
    later = AT + timedelta(hours=1)
    responded = ConversationEvent(
        ConversationChange.RESPONDED, sent.conversation_id, ADA, GRACE, later
    )
    thanks = Message(new_id(), ADA, "Thank you!", later + timedelta(minutes=1))
    message = ConversationEvent(
        ConversationChange.MESSAGE, sent.conversation_id, ADA, GRACE, thanks.sent_at, thanks
    )
    notices = [
        Notification(NotificationKind.RESPONSE_RECEIVED, ADA, later, sent.conversation_id),
        Notification(NotificationKind.CREDITED_BACK, ADA, later, sent.conversation_id),
    ]
    async with MongoUnitOfWork(mongo).transaction() as tx:
        assert await tx.notifications.record(notices, responded) == 2
        await tx.notifications.add_event(message)
        await tx.notifications.add_event(message)  # once per message however often told

    changes = [e.change for e in await events_of(mongo, sent.conversation_id)]
    assert changes == [
        ConversationChange.INMAIL,
        ConversationChange.RESPONDED,
        ConversationChange.MESSAGE,
    ]
    kinds = {n.kind for n in await notifications_of(mongo, ADA)}
    assert kinds == {NotificationKind.RESPONSE_RECEIVED, NotificationKind.CREDITED_BACK}


async def next_change(feed: InboxChanges) -> tuple[str, str]:
    """The next change as (collection, what it holds: a notification's kind or the event's)."""
    change = await asyncio.wait_for(feed.next(), WAIT)
    if isinstance(change.item, ConversationEvent):
        return "notifications", f"event {change.item.change}"
    assert isinstance(change.item, Notification)
    return "notifications", f"notification {change.item.kind}"


async def test_the_inbox_feed_hands_out_the_notification_and_the_event_of_one_write(
    mongo: Mongo,
) -> None:
    async with opened(InboxChanges(mongo)) as feed:
        await record(mongo, *inmail(ADA, GRACE, AT, "Hello from the Analytical Engine"))
        assert await next_change(feed) == ("notifications", "notification INMAIL_RECEIVED")
        assert await next_change(feed) == ("notifications", "event INMAIL")


async def test_a_dropped_inbox_stream_resumes_after_the_last_change_handed_out(
    mongo: Mongo, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(InboxChanges(mongo, retry_delay=0.01)) as feed:
        await record(mongo, *inmail(ADA, GRACE, AT, "One"))
        assert await next_change(feed) == ("notifications", "notification INMAIL_RECEIVED")
        stream = drop_stream_once(feed, monkeypatch)
        await record(mongo, *inmail(GRACE, ALAN, AT + timedelta(minutes=1), "Two"))
        # The first write's event, then the second write's two: none lost, none twice.
        assert await next_change(feed) == ("notifications", "event INMAIL")
        assert feed._stream is not stream
        assert await next_change(feed) == ("notifications", "notification INMAIL_RECEIVED")
        assert await next_change(feed) == ("notifications", "event INMAIL")


class GappyFeed:
    """A feed that hands out the changes put into it, and says changes were lost on None."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[InboxChange | None] = asyncio.Queue()

    async def open(self) -> None:
        return None

    async def next(self) -> InboxChange:
        change = await self.queue.get()
        if change is None:
            raise ChangesLost("the oplog rolled over")
        return change

    async def close(self) -> None:
        return None


@contextlib.asynccontextmanager
async def gappy_broker(mongo: Mongo) -> AsyncIterator[tuple[InboxBroker, GappyFeed]]:
    """An inbox broker whose feed hands out only what a test puts into it."""
    feed = GappyFeed()
    broker = InboxBroker(NotificationReader(mongo, None), lambda: feed)
    await broker.start()
    try:
        yield broker, feed
    finally:
        await broker.stop()


async def handed_out_before_the_gap(
    mongo: Mongo, feed: GappyFeed, grace_notes: InboxSubscriber[Notification]
) -> Notification:
    """Ada's InMail to Grace, written, and its notification handed out by the feed: the last
    item seen before the gap."""
    first, first_event = inmail(ADA, GRACE, AT, "Before the gap")
    await record(mongo, first, first_event)
    [first_doc] = await mongo.find_all(
        mongo.c.notifications, {"memberId": GRACE}, session=NO_TRANSACTION
    )
    await feed.queue.put(inbox_change(first_doc))
    seen: Notification = await next_of(grace_notes)
    assert seen.conversation_id == first.conversation_id
    return seen


async def caught_up_after_the_gap(
    mongo: Mongo,
    feed: GappyFeed,
    grace_notes: InboxSubscriber[Notification],
    sender: str,
    at: datetime,
) -> None:
    """An InMail to Grace written while the stream was down (the feed never hands it out), then
    the gap: Grace's subscriber gets it from the catch-up, and not the one seen before again."""
    missed, missed_event = inmail(sender, GRACE, at, "In the gap")
    await record(mongo, missed, missed_event)
    await feed.queue.put(None)

    caught = await next_of(grace_notes)
    assert caught.conversation_id == missed.conversation_id


@pytest.mark.parametrize(
    "written_at",
    [
        AT + timedelta(minutes=5),
        # Written after the one seen, but dated a month before it (as a billing cycle caught
        # up late is dated at the cycle's start): found by when it was written all the same.
        AT - timedelta(days=30),
    ],
    ids=["dated-after-the-last-seen", "dated-before-the-last-seen"],
)
async def test_after_a_gap_the_inbox_catches_up_on_notifications_and_events_from_the_database(
    mongo: Mongo, written_at: datetime
) -> None:
    async with (
        gappy_broker(mongo) as (broker, feed),
        broker.notifications.subscribe(GRACE) as grace_notes,
        broker.conversations.subscribe(GRACE) as grace_events,
        broker.conversations.subscribe(ADA) as ada_events,
    ):
        await handed_out_before_the_gap(mongo, feed, grace_notes)
        await caught_up_after_the_gap(mongo, feed, grace_notes, ADA, written_at)
        for subscriber in (grace_events, ada_events):
            bodies = [(await next_of(subscriber)).message.body for _ in range(2)]
            # Events written since the last item seen: the first event (never handed out by
            # the feed) and the missed one.
            assert bodies == ["Before the gap", "In the gap"]


async def test_after_a_gap_before_any_item_was_seen_the_inbox_still_catches_up(
    mongo: Mongo,
) -> None:
    """The feed opened, handed out nothing, and lost its history: what was written since it
    opened is found all the same (the catch-up used to go back to the last item seen, and with
    none seen did nothing)."""
    async with (
        gappy_broker(mongo) as (broker, feed),
        broker.notifications.subscribe(GRACE) as grace_notes,
    ):
        await caught_up_after_the_gap(mongo, feed, grace_notes, ADA, AT)


class HeldOpen(GappyFeed):
    """A feed whose opening waits until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.opening = asyncio.Event()
        self.release = asyncio.Event()

    async def open(self) -> None:
        self.opening.set()
        await self.release.wait()


async def test_a_member_s_inbox_is_settled_once_the_subscriptions_asked_for_are_live(
    mongo: Mongo,
) -> None:
    """A subscriber is counted as it asks, and the member's inbox is `settled` only once the
    source is open for it: the balance subscription's first update, after which clients read
    their lists, waits for that, so nothing is written between the lists and the live feed."""
    feed = HeldOpen()
    broker = InboxBroker(NotificationReader(mongo, None), lambda: feed)
    await broker.start()
    got: list[Notification] = []

    async def grace_subscribes() -> None:
        async with broker.notifications.subscribe(GRACE) as grace_notes:
            got.append(await next_of(grace_notes))

    subscribing = asyncio.create_task(grace_subscribes())
    try:
        await asyncio.wait_for(feed.opening.wait(), WAIT)
        await asyncio.wait_for(broker.settled(ALAN), WAIT)  # no subscription to wait for
        settling = asyncio.create_task(broker.settled(GRACE))
        for _ in range(10):
            await asyncio.sleep(0)
        waited = not settling.done()
        feed.release.set()
        await asyncio.wait_for(settling, WAIT)
        note, note_event = inmail(ADA, GRACE, AT, "Once Grace was settled")
        await record(mongo, note, note_event)
        [doc] = await mongo.find_all(
            mongo.c.notifications, {"memberId": GRACE}, session=NO_TRANSACTION
        )
        await feed.queue.put(inbox_change(doc))
        await asyncio.wait_for(subscribing, WAIT)
    finally:
        feed.release.set()
        subscribing.cancel()
        await broker.stop()

    assert waited
    assert [n.conversation_id for n in got] == [note.conversation_id]


class FailsToOpen(HeldOpen):
    """A feed whose opening fails once `release` is set."""

    async def open(self) -> None:
        await super().open()
        raise ConnectionError("the server went away")


async def test_an_inbox_subscription_whose_source_fails_to_open_holds_nothing_up(
    mongo: Mongo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A balance subscription waiting for it answers once it failed, not at the wait's bound."""
    monkeypatch.setattr(live, "SETTLE_TIMEOUT", 10 * WAIT)
    feed = FailsToOpen()
    broker = InboxBroker(NotificationReader(mongo, None), lambda: feed)
    await broker.start()

    async def grace_subscribes() -> None:
        async with broker.notifications.subscribe(GRACE):
            pass

    subscribing = asyncio.create_task(grace_subscribes())
    try:
        await asyncio.wait_for(feed.opening.wait(), WAIT)
        settling = asyncio.create_task(broker.settled(GRACE))
        feed.release.set()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(subscribing, WAIT)
        await asyncio.wait_for(settling, WAIT)
        assert GRACE not in broker.notifications.by_member
    finally:
        await broker.stop()


async def test_the_in_memory_inbox_polls_one_collection_for_notifications_and_events() -> None:
    mongo = InMemoryMongo("inbox_poll")
    mongo.poll_interval = 0.01
    await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
    broker = InboxBroker(NotificationReader(mongo, None), mongo.inbox_changes())
    await broker.start()
    try:
        async with (
            broker.notifications.subscribe(GRACE) as grace_notes,
            broker.conversations.subscribe(ADA) as ada_events,
        ):
            notification, event = inmail(ADA, GRACE, AT, "Held in memory")
            async with mongo.session_transaction() as session:
                repository = NotificationRepository(mongo, session, NoticeOptions(webhooks=False))
                assert await repository.record([notification], event) == 1
            assert (await next_of(grace_notes)).conversation_id == notification.conversation_id
            told = await next_of(ada_events)
            assert (told.change, told.message.body) == (ConversationChange.INMAIL, "Held in memory")
    finally:
        await broker.stop()
        await mongo.close()


async def listening_within_wait(broker: InboxBroker, expected: bool) -> bool:
    for _ in range(int(WAIT / 0.02)):
        if broker.listening is expected:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.parametrize("source", ["change stream", "poll"])
async def test_the_inbox_reads_changes_only_while_someone_subscribes(
    mongo: Mongo, source: str
) -> None:
    store: Mongo = mongo if source == "change stream" else InMemoryMongo("inbox_on_demand")
    if isinstance(store, InMemoryMongo):
        store.poll_interval = 0.01
        await store.create_indexes(plans=DEFAULT_PLAN_TABLE)
    broker = InboxBroker(NotificationReader(store, None), store.inbox_changes(), linger=0.05)
    await broker.start()
    try:
        await record(store, *inmail(ADA, GRACE, AT, "Before anyone listened"))
        assert not broker.listening
        for round_ in range(2):  # opened, closed when idle, and opened again
            async with (
                broker.notifications.subscribe(GRACE) as grace_notes,
                broker.conversations.subscribe(ADA) as ada_events,
            ):
                assert broker.listening
                body = f"Round {round_}"
                written = inmail(ADA, GRACE, AT, body)
                await record(store, *written)
                assert (await next_of(grace_notes)).conversation_id == written[0].conversation_id
                assert (await next_of(ada_events)).message.body == body  # nothing from before
            assert await listening_within_wait(broker, False)
    finally:
        await broker.stop()
        if store is not mongo:
            await store.close()


class FailingOnce(GappyFeed):
    """A feed whose first opening fails; it records each opening and closing."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    async def open(self) -> None:
        self.events.append("open")
        if self.events.count("open") == 1:
            raise ConnectionError("the server went away")

    async def close(self) -> None:
        self.events.append("close")


async def test_a_feed_that_fails_to_open_is_closed_and_the_next_subscriber_opens_it_again(
    mongo: Mongo,
) -> None:
    events: list[str] = []
    broker = InboxBroker(NotificationReader(mongo, None), lambda: FailingOnce(events), linger=0.05)
    await broker.start()
    try:
        with pytest.raises(ConnectionError):
            async with broker.notifications.subscribe(GRACE):
                pass
        assert events == ["open", "close"]
        assert not broker.listening
        async with broker.notifications.subscribe(GRACE):
            assert broker.listening
        assert await listening_within_wait(broker, False)
    finally:
        await broker.stop()
    assert events == ["open", "close", "open", "close"]
