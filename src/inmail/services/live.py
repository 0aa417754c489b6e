"""Live balance updates: the broker between committed ledger entries and subscribers.

On a replica set the ledger's change stream is the one source of updates, in every process, so
a change made through any process reaches the subscribers of all of them exactly once. Where
there is no change stream (the in-memory fallback: one process) the composition root gives the
broker none, and it listens to the process's own FanOut instead.

Every subscriber has a small queue of its own. Handing it an update never waits: when the
queue is full, its two oldest updates are merged into one (the later balance, the summed
delta), so a subscriber that does not read keeps the latest balance in bounded memory and
never holds anyone else up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, Self, TypeVar

from inmail import metrics
from inmail.domain.credits import LedgerKind
from inmail.domain.model import LedgerEntry
from inmail.domain.notifications import ConversationEvent, Notification
from inmail.repositories.changes import ChangesLost, InboxChange, InboxChanges, LedgerChanges
from inmail.repositories.ledger import LedgerReader
from inmail.repositories.mongo import new_id
from inmail.repositories.notifications import (
    NotificationReader,
    event_from_doc,
    notification_from_doc,
)
from inmail.services.events import BalanceUpdate, FanOut

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 16

Item = TypeVar("Item")
Item_co = TypeVar("Item_co", covariant=True)


def merge(earlier: BalanceUpdate, later: BalanceUpdate) -> BalanceUpdate:
    """One update that says what two consecutive ones said: where it ended, and how far it moved."""
    return replace(later, delta=earlier.delta + later.delta)


def coalesce(entries: Iterable[LedgerEntry]) -> list[BalanceUpdate]:
    """The updates of one transaction's entries: consecutive entries of one kind make one update.

    A cancellation that forfeits three lots is one FORFEIT to zero; a plan change is a FORFEIT
    and then a GRANT; a send that first expires a lapsed lot is an EXPIRE and then a DEBIT.
    """
    updates: list[BalanceUpdate] = []
    for entry in entries:
        update = BalanceUpdate.from_entry(entry)
        last = updates[-1] if updates else None
        if (
            last is not None
            and last.member_id == update.member_id
            and last.reason is update.reason
            and update.seq == last.seq + 1
        ):
            updates[-1] = merge(last, update)
        else:
            updates.append(update)
    return updates


class _Mailbox(Generic[Item]):
    """A member's subscription queue: read in order, waiting while empty, ended by `close`."""

    __slots__ = ("_closed", "_queue", "_ready", "member_id")

    def __init__(self, member_id: str) -> None:
        self.member_id = member_id
        self._queue: deque[Item] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Item:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()


class Subscriber(_Mailbox[BalanceUpdate]):
    """One subscription's updates for one member: in ledger order, each once, bounded."""

    __slots__ = ("capacity", "last_seq", "merged")

    def __init__(self, member_id: str, capacity: int = DEFAULT_QUEUE_SIZE) -> None:
        if capacity < 1:
            raise ValueError("a subscriber's queue holds at least one update")
        super().__init__(member_id)
        self.capacity = capacity
        self.last_seq = 0
        self.merged = 0  # updates folded into others because this subscriber fell behind

    def offer(self, update: BalanceUpdate) -> None:
        """Take an update without ever waiting; an update already seen is ignored."""
        if self._closed or update.seq <= self.last_seq:
            return
        self.last_seq = update.seq
        if len(self._queue) >= self.capacity:
            oldest = self._queue.popleft()
            if self._queue:
                self._queue[0] = merge(oldest, self._queue[0])
            else:
                update = merge(oldest, update)
            self.merged += 1
        self._queue.append(update)
        self._ready.set()

    def start_from(self, latest: BalanceUpdate) -> None:
        """Put the member's latest recorded change first, unless a newer one already arrived."""
        while self._queue and self._queue[0].seq < latest.seq:
            self._queue.popleft()
        if not self._queue or self._queue[0].seq > latest.seq:
            self._queue.appendleft(latest)
            if len(self._queue) > self.capacity:
                oldest = self._queue.popleft()
                self._queue[0] = merge(oldest, self._queue[0])
                self.merged += 1
        self.last_seq = max(self.last_seq, latest.seq)
        self._ready.set()

    @property
    def pending(self) -> int:
        return len(self._queue)


class _LocalSource:
    """The in-memory fallback's source: this process's own committed entries."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    async def publish(self, entries: Sequence[LedgerEntry]) -> None:
        self._broker.dispatch(coalesce(entries))


class Broker:
    """Routes balance updates to the subscribers of each member; a Background of the app."""

    def __init__(
        self,
        ledger: LedgerReader,
        events: FanOut,
        changes: Callable[[], LedgerChanges] | None,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        unwritten: Callable[[str], Awaitable[Sequence[LedgerEntry]]] | None = None,
    ) -> None:
        """`changes` opens a feed of the ledger's committed changes; None: this process only.
        `unwritten` tells what a member's next write would record first as of now (lapsed lots,
        started cycles), so the first update is the balance now, not as last written."""
        self._ledger = ledger
        self._now = now
        self._unwritten = unwritten
        self._events = events
        self._changes = changes
        self._queue_size = queue_size
        self._by_member: dict[str, set[Subscriber]] = {}
        self._local: _LocalSource | None = None
        self._pump = _Pump()

    @property
    def source(self) -> str:
        """Where updates come from: "change stream", "in-process" or "stopped"."""
        if self._pump.feed is not None:
            return "change stream"
        return "in-process" if self._local is not None else "stopped"

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._by_member.values())

    async def start(self) -> None:
        if self._changes is None:
            self._local = _LocalSource(self)
            self._events.listeners.append(self._local)
            return
        await self._pump.follow(
            self._changes(),
            "live updates",
            lambda committed: self.dispatch(coalesce(committed.entries)),
            self._catch_up,
        )

    async def stop(self) -> None:
        await self._pump.stop()
        local, self._local = self._local, None
        if local is not None:
            self._events.listeners.remove(local)
        _close_all(self._by_member)

    def dispatch(self, updates: Iterable[BalanceUpdate]) -> None:
        """Hand updates to their members' subscribers; never waits."""
        for update in updates:
            for subscriber in self._by_member.get(update.member_id, ()):
                subscriber.offer(update)

    @contextlib.asynccontextmanager
    async def subscribe(self, member_id: str) -> AsyncIterator[Subscriber]:
        """A subscription to a member's balance, released when the block ends however it ends.

        It starts with the member's balance as of now: the latest recorded change, brought up to
        now by what the next write would record first (credits that lapsed since, a cycle that
        started), and for a member with no change yet balance 0, delta 0, now. From there on it
        gets every change, in order, each once.
        """
        with _registered(self._by_member, Subscriber(member_id, self._queue_size)) as subscriber:
            # Registered first, read second: a change committed in between is not missed, and
            # the sequence numbers drop whichever copy comes second.
            latest, projected = await asyncio.gather(
                self._latest(member_id), self._projected(member_id)
            )
            if projected is not None:
                latest = projected if latest is None or projected.seq > latest.seq else latest
            if latest is not None:
                subscriber.start_from(latest)
            elif not subscriber.pending:  # no history, and no first change arrived meanwhile
                subscriber.start_from(self._nothing_yet(member_id))
            yield subscriber

    def _nothing_yet(self, member_id: str) -> BalanceUpdate:
        """The first update of a member with no ledger history: no credits, as of now.

        Its seq is 0, before any entry's, so the member's first change still follows it.
        """
        return BalanceUpdate(
            member_id=member_id,
            balance=0,
            delta=0,
            reason=LedgerKind.GRANT,
            at=self._now(),
            seq=0,
        )

    async def _projected(self, member_id: str) -> BalanceUpdate | None:
        """The changes the member's next write will record first, as one update (None: none).

        It carries the sequence number that write will give its last entry, so when the write
        comes its updates up to there are repeats and dropped, and what follows is delivered.
        """
        if self._unwritten is None:
            return None
        updates = coalesce(await self._unwritten(member_id))
        return functools.reduce(merge, updates) if updates else None

    async def _latest(self, member_id: str) -> BalanceUpdate | None:
        page = await self._ledger.page(member_id, 1, None)
        return BalanceUpdate.from_entry(page.items[0][1]) if page.items else None

    async def _catch_up(self) -> None:
        """After a gap, give every subscriber its member's latest change (seq drops repeats)."""
        for member_id in list(self._by_member):
            try:
                latest = await self._latest(member_id)
            except Exception:
                log.exception("live updates: catching up member %s failed", member_id)
                continue
            if latest is not None:
                self.dispatch([latest])


# The inbox: new notifications (notificationReceived) and conversation events
# (conversationUpdated), from the change stream on their collection, in every process.

INBOX_QUEUE_SIZE = 256
_SEEN_IDS = 1024


class InboxSubscriber(_Mailbox[Item]):
    """One subscription's items for one member: in commit order, each once.

    Ids already handed out are remembered (the latest `_SEEN_IDS`), so an item seen twice (a
    catch-up after a gap) is given once. A subscriber that stops reading while more than its
    queue holds arrive is closed with `overflowed` set: the client reads the list and resubscribes.
    """

    def __init__(self, member_id: str, capacity: int = INBOX_QUEUE_SIZE) -> None:
        super().__init__(member_id)
        self.capacity = capacity
        self.overflowed = False
        self._seen: deque[str] = deque(maxlen=_SEEN_IDS)
        self._seen_set: set[str] = set()

    def offer(self, item_id: str, item: Item) -> None:
        if self._closed or item_id in self._seen_set:
            return
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(item_id)
        self._seen_set.add(item_id)
        if len(self._queue) >= self.capacity:
            self.overflowed = True
            self.close()
            return
        self._queue.append(item)
        self._ready.set()


class _Topic(Generic[Item]):
    """The subscribers of one kind of item, by member."""

    def __init__(self) -> None:
        self.by_member: dict[str, set[InboxSubscriber[Item]]] = {}

    def dispatch(self, member_id: str, item_id: str, item: Item) -> None:
        for subscriber in self.by_member.get(member_id, ()):
            subscriber.offer(item_id, item)

    @contextlib.asynccontextmanager
    async def subscribe(self, member_id: str) -> AsyncIterator[InboxSubscriber[Item]]:
        with _registered(self.by_member, InboxSubscriber[Item](member_id)) as subscriber:
            yield subscriber

    def close_all(self) -> None:
        _close_all(self.by_member)


class InboxBroker:
    """Routes new notifications and conversation events to their members' subscribers.

    On a replica set the source is the change stream of the `notifications` collection, which
    holds both, so what any process commits reaches the subscribers of all of them. Without one
    (the in-memory fallback, one process) it polls that collection for documents newer than the
    last seen.
    """

    def __init__(
        self,
        reads: NotificationReader,
        changes: Callable[[], InboxChanges] | None,
        *,
        poll_interval: float = 0.25,
    ) -> None:
        self._reads = reads
        self._changes = changes
        self._poll_interval = poll_interval
        self.notifications: _Topic[Notification] = _Topic()
        self.conversations: _Topic[ConversationEvent] = _Topic()
        self._pump = _Pump()
        self._last_seen: datetime | None = None

    async def start(self) -> None:
        if self._changes is None:
            # Everything written from now on is newer than this id, the poll's starting point.
            self._pump.task = asyncio.create_task(self._poll(new_id()), name="inmail-inbox-poll")
            return
        await self._pump.follow(self._changes(), "inbox updates", self.dispatch, self._catch_up)

    async def stop(self) -> None:
        await self._pump.stop()
        self.notifications.close_all()
        self.conversations.close_all()

    def dispatch(self, change: InboxChange) -> None:
        """Hand a new document to its subscribers: a notification to its member's, a
        conversation event to both parties' (each document is one or the other, by kind)."""
        event = event_from_doc(change.document)
        if event is not None:
            self._last_seen = event.at
            for party in dict.fromkeys(event.parties):
                self.conversations.dispatch(party, event.id, event)
            return
        notification = notification_from_doc(change.document)
        if notification is not None:
            self._last_seen = notification.at
            self.notifications.dispatch(notification.member_id, notification.id, notification)

    async def _catch_up(self) -> None:
        """After a gap, hand out what the subscribed members got since the last item seen
        (the subscribers drop the ones they already had)."""
        since = self._last_seen
        if since is None:
            return
        members = list(self.notifications.by_member)
        try:
            for notification in await self._reads.since(members, since):
                self.notifications.dispatch(notification.member_id, notification.id, notification)
            parties = list(self.conversations.by_member)
            for event in await self._reads.events_since(parties, since):
                for party in dict.fromkeys(event.parties):
                    self.conversations.dispatch(party, event.id, event)
        except Exception:
            log.exception("inbox updates: catching up failed")

    async def _poll(self, last: str) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                for document in await self._reads.newer_docs(last):
                    last = str(document["_id"])
                    self.dispatch(InboxChange("notifications", document))
            except Exception:
                log.exception("inbox updates: polling failed; retrying")


S = TypeVar("S", bound=_Mailbox[Any])


@contextlib.contextmanager
def _registered(by_member: dict[str, set[S]], subscriber: S) -> Iterator[S]:
    """A subscriber counted among its member's for the block, closed and removed after it."""
    member_id = subscriber.member_id
    by_member.setdefault(member_id, set()).add(subscriber)
    metrics.SUBSCRIBERS.inc()
    try:
        yield subscriber
    finally:
        subscriber.close()
        subscribers = by_member.get(member_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del by_member[member_id]
        metrics.SUBSCRIBERS.dec()


def _close_all(by_member: dict[str, set[S]]) -> None:
    for subscribers in list(by_member.values()):
        for subscriber in list(subscribers):
            subscriber.close()


async def _follow(
    what: str,
    next_change: Callable[[], Awaitable[Item]],
    dispatch: Callable[[Item], object],
    catch_up: Callable[[], Awaitable[None]],
) -> None:
    """Hand out each change a feed reads, for ever: after a gap the broker catches up, and a
    failed read is retried a second later."""
    while True:
        try:
            change = await next_change()
        except ChangesLost as exc:
            log.warning("%s missed changes (%s); catching up", what, exc)
            await catch_up()
            continue
        except Exception:
            log.exception("%s: reading the changes failed; retrying", what)
            await asyncio.sleep(1.0)
            continue
        dispatch(change)


class _Feed(Protocol[Item_co]):
    async def open(self) -> None: ...

    async def next(self) -> Item_co: ...

    async def close(self) -> None: ...


class _Pump:
    """A broker's source: a change feed and the task that hands out what it reads, or a task
    of its own (a poll) where there is no feed."""

    def __init__(self) -> None:
        self.feed: _Feed[object] | None = None
        self.task: asyncio.Task[None] | None = None

    async def follow(
        self,
        feed: _Feed[Item],
        what: str,
        dispatch: Callable[[Item], object],
        catch_up: Callable[[], Awaitable[None]],
    ) -> None:
        """Open the feed, then hand out each change it reads (`_follow`) in a task of its own."""
        await feed.open()
        self.feed = feed
        self.task = asyncio.create_task(
            _follow(what, feed.next, dispatch, catch_up), name=f"inmail-{what.replace(' ', '-')}"
        )

    async def stop(self) -> None:
        """Stop the task, then close the change stream it read."""
        task, self.task = self.task, None
        feed, self.feed = self.feed, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if feed is not None:
            await feed.close()
