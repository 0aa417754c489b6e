"""Live balance updates: the broker between committed ledger entries and subscribers.

The broker follows the feed of committed ledger entries that the database gives
(`Mongo.ledger_changes`): on a replica set the ledger's change stream, in every process, so a
change made through any process reaches the subscribers of all of them exactly once. The feed
is open only while someone subscribes (and a few seconds after): a process nobody watches reads
no changes.

Every subscriber has a small queue of its own. Handing it an update never waits: when the
queue is full, its two oldest updates are merged into one (the later balance, the summed
delta), so a subscriber that does not read keeps the latest balance in bounded memory and
never holds anyone else up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Generic, Protocol, Self, TypeVar

from inmail import metrics
from inmail.domain.credits import LedgerKind
from inmail.domain.feeds import ChangesLost, CommittedEntries, Feed, InboxChange
from inmail.domain.model import LedgerEntry
from inmail.domain.notifications import ConversationEvent, Notification
from inmail.repositories.ledger import LedgerReader
from inmail.repositories.notifications import NotificationReader
from inmail.services.events import BalanceUpdate
from inmail.services.unit_of_work import new_id

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 16
# Seconds a broker's source stays open after its last subscriber left.
DEFAULT_LINGER = 5.0
CATCH_UP_MARGIN = timedelta(minutes=2)
"""How long before the last item handed out a catch-up looks back, by the time ids were made:
longer than a write's transaction runs between making an id and committing it."""

Item = TypeVar("Item")


def merge(earlier: BalanceUpdate, later: BalanceUpdate) -> BalanceUpdate:
    """One update that says what two consecutive ones said: where it ended, and how far it moved."""
    return replace(later, delta=earlier.delta + later.delta, first_seq=earlier.starts)


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

    __slots__ = ("_started", "capacity", "last_balance", "last_seq", "merged")

    def __init__(self, member_id: str, capacity: int = DEFAULT_QUEUE_SIZE) -> None:
        if capacity < 1:
            raise ValueError("a subscriber's queue holds at least one update")
        super().__init__(member_id)
        self.capacity = capacity
        self.last_seq = 0
        self.last_balance = 0  # as of last_seq
        self._started = False  # start_from has given the first update
        self.merged = 0  # updates folded into others because this subscriber fell behind

    def offer(self, update: BalanceUpdate) -> None:
        """Take an update without ever waiting; an update already seen is ignored, and one
        partly seen (or after changes unseen) says only what moved since the last one taken:
        the deltas a subscriber gets add up to its balance."""
        if self._closed or update.seq <= self.last_seq:
            return
        if self._started:
            update = update.following(self.last_seq, self.last_balance)
        self.last_seq, self.last_balance = update.seq, update.balance
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
            if self._queue:  # a change that arrived meanwhile follows it
                self._queue[0] = self._queue[0].following(latest.seq, latest.balance)
            self._queue.appendleft(latest)
            if len(self._queue) > self.capacity:
                oldest = self._queue.popleft()
                self._queue[0] = merge(oldest, self._queue[0])
                self.merged += 1
        if latest.seq >= self.last_seq:
            self.last_seq, self.last_balance = latest.seq, latest.balance
        self._started = True
        self._ready.set()

    @property
    def pending(self) -> int:
        return len(self._queue)


class Broker:
    """Routes balance updates to the subscribers of each member; a Background of the app."""

    def __init__(
        self,
        ledger: LedgerReader,
        changes: Callable[[], Feed[CommittedEntries]],
        *,
        now: Callable[[], datetime],
        queue_size: int = DEFAULT_QUEUE_SIZE,
        unwritten: Callable[[str], Awaitable[Sequence[LedgerEntry]]] | None = None,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        """`changes` opens a feed of the ledger's committed changes. `unwritten` tells what a
        member's next write would record first as of now (lapsed lots, started cycles), so the
        first update is the balance now, not as last written. The source is open only while
        someone subscribes, and `linger` seconds after."""
        self._ledger = ledger
        self._now = now
        self._unwritten = unwritten
        self._changes = changes
        self._queue_size = queue_size
        self._by_member: dict[str, set[Subscriber]] = {}
        self._pump = _Pump(self._open_source, linger=linger)

    @property
    def listening(self) -> bool:
        """Whether the source is open now (it is while anyone subscribes)."""
        return self._pump.open

    @property
    def subscriber_count(self) -> int:
        return sum(len(subs) for subs in self._by_member.values())

    async def start(self) -> None:
        self._pump.start()

    async def stop(self) -> None:
        await self._pump.stop()
        _close_all(self._by_member)

    async def _open_source(self) -> Callable[[], Awaitable[None]]:
        return await _follow_feed(
            self._changes(),
            "live updates",
            lambda committed: self.dispatch(coalesce(committed.entries)),
            self._catch_up,
        )

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
        async with self._pump.in_use():
            subscriber = Subscriber(member_id, self._queue_size)
            with _registered(self._by_member, subscriber):
                # Listening first, registered second, read third: a change committed in between
                # is not missed, and the sequence numbers drop whichever copy comes second.
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
        """The last of the changes the member's next write will record first (None: none), as
        the latest recorded change reads once that write is done: whether or not anything has
        written them yet, a first update says the same (SPEC 3).

        It carries the sequence number that write will give that entry, so when the write
        comes its updates up to there are repeats and dropped, and what follows is delivered.
        """
        if self._unwritten is None:
            return None
        unwritten = await self._unwritten(member_id)
        return BalanceUpdate.from_entry(unwritten[-1]) if unwritten else None

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
SETTLE_TIMEOUT = 10.0
"""The longest a balance subscription's first update waits for its member's inbox ones."""
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
        # Set once the source is open for it (or it ended): from then on it misses nothing.
        self.settled = asyncio.Event()

    def close(self) -> None:
        super().close()
        self.settled.set()

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

    def __init__(self, pump: _Pump) -> None:
        self.by_member: dict[str, set[InboxSubscriber[Item]]] = {}
        self._pump = pump

    def dispatch(self, member_id: str, item_id: str, item: Item) -> None:
        for subscriber in self.by_member.get(member_id, ()):
            subscriber.offer(item_id, item)

    @contextlib.asynccontextmanager
    async def subscribe(self, member_id: str) -> AsyncIterator[InboxSubscriber[Item]]:
        """Items committed once the source is open. The subscriber is counted at once, and
        `settled` once the source is open: the member's balance subscription waits for that
        before its first update (`InboxBroker.settled`)."""
        with _registered(self.by_member, InboxSubscriber[Item](member_id)) as subscriber:
            async with self._pump.in_use():
                subscriber.settled.set()
                yield subscriber

    async def settled(self, member_id: str) -> None:
        for subscriber in list(self.by_member.get(member_id, ())):
            await subscriber.settled.wait()

    def close_all(self) -> None:
        _close_all(self.by_member)


class InboxBroker:
    """Routes new notifications and conversation events to their members' subscribers.

    Its source is the feed of the `notifications` collection, which holds both, that the
    database gives (`Mongo.inbox_changes`): on a replica set its change stream, so what any
    process commits reaches the subscribers of all of them.
    """

    def __init__(
        self,
        reads: NotificationReader,
        changes: Callable[[], Feed[InboxChange]],
        *,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        self._reads = reads
        self._changes = changes
        self._pump = _Pump(self._open_source, linger=linger)
        self.notifications: _Topic[Notification] = _Topic(self._pump)
        self.conversations: _Topic[ConversationEvent] = _Topic(self._pump)
        # The newest id handed out since the source opened, or one made at its opening.
        self._last_seen = new_id()

    @property
    def listening(self) -> bool:
        """Whether the source is open now (it is while anyone subscribes)."""
        return self._pump.open

    async def settled(self, member_id: str) -> None:
        """Once the member's subscriptions asked for so far (on this process) are live, or
        SETTLE_TIMEOUT has passed. A client reads its lists once its balance subscription
        answers: that first answer waits for this, so that nothing committed after the lists
        are read falls between them and the inbox subscriptions it asked for before."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SETTLE_TIMEOUT):
                await self.notifications.settled(member_id)
                await self.conversations.settled(member_id)

    async def start(self) -> None:
        self._pump.start()

    async def stop(self) -> None:
        await self._pump.stop()
        self.notifications.close_all()
        self.conversations.close_all()

    async def _open_source(self) -> Callable[[], Awaitable[None]]:
        # Everything written from now on is newer than this id: where a catch-up goes back to
        # if no item was seen since.
        self._last_seen = new_id()
        return await _follow_feed(self._changes(), "inbox updates", self.dispatch, self._catch_up)

    def dispatch(self, change: InboxChange) -> None:
        """Hand a new item to its subscribers: a notification to its member's, a conversation
        event to both parties'."""
        self._seen(change.id)
        item = change.item
        if isinstance(item, ConversationEvent):
            for party in dict.fromkeys(item.parties):
                self.conversations.dispatch(party, item.id, item)
        elif isinstance(item, Notification):
            self.notifications.dispatch(item.member_id, item.id, item)

    def _seen(self, document_id: str) -> None:
        if document_id > self._last_seen:
            self._last_seen = document_id

    async def _catch_up(self) -> None:
        """After a gap, hand out what the subscribed members got since the last item seen
        was written, less a transaction's length (`CATCH_UP_MARGIN`): by when it was written,
        not by its `at` (the subscribers drop the ones they already had)."""
        since = self._last_seen
        members = list(self.notifications.by_member)
        try:
            for notification in await self._reads.since(members, since, CATCH_UP_MARGIN):
                self.notifications.dispatch(notification.member_id, notification.id, notification)
            parties = list(self.conversations.by_member)
            for event in await self._reads.events_since(parties, since, CATCH_UP_MARGIN):
                for party in dict.fromkeys(event.parties):
                    self.conversations.dispatch(party, event.id, event)
        except Exception:
            log.exception("inbox updates: catching up failed")


class _Registrable(Protocol):
    """What `_registered` uses of a subscriber (a `_Mailbox`)."""

    @property
    def member_id(self) -> str: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=_Registrable)


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


async def _follow_feed(
    feed: Feed[Item],
    what: str,
    dispatch: Callable[[Item], object],
    catch_up: Callable[[], Awaitable[None]],
) -> Callable[[], Awaitable[None]]:
    """Open the feed, then hand out each change it reads (`_follow`) in a task of its own;
    returns what stops the task and closes the feed."""
    try:
        await feed.open()
    except BaseException:  # failed or cancelled: whatever it opened is closed
        await feed.close()
        raise
    task = asyncio.create_task(
        _follow(what, feed.next, dispatch, catch_up), name=f"inmail-{what.replace(' ', '-')}"
    )
    stop_task = _cancelling(task)

    async def stop() -> None:
        await stop_task()
        await feed.close()

    return stop


def _cancelling(task: asyncio.Task[None]) -> Callable[[], Awaitable[None]]:
    async def cancel() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return cancel


class _Pump:
    """A broker's source, open only while someone subscribes.

    `opener` opens it (a change feed and the task that hands out what it reads) and returns what
    closes it. The first subscriber opens it, and
    the subscription starts once it is open; it closes `linger` seconds after the last
    subscriber left, so a process nobody watches reads and decodes no changes, and a client
    that subscribes again at once does not reopen it.
    """

    def __init__(
        self, opener: Callable[[], Awaitable[Callable[[], Awaitable[None]]]], *, linger: float
    ) -> None:
        self._opener = opener
        self._linger = linger
        self._close: Callable[[], Awaitable[None]] | None = None
        self._lock = asyncio.Lock()
        self._users = 0
        self._last_left = 0.0
        self._idle: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def open(self) -> bool:
        return self._close is not None

    def start(self) -> None:
        self._stopped = False

    @contextlib.asynccontextmanager
    async def in_use(self) -> AsyncIterator[None]:
        """The source, open for the block (opened first if it was not)."""
        self._users += 1
        try:
            async with self._lock:
                if self._stopped:
                    raise RuntimeError("live updates have stopped")
                if self._close is None:
                    self._close = await self._opener()
            yield
        finally:
            self._users -= 1
            if self._users == 0:
                self._last_left = asyncio.get_running_loop().time()
                if self._close is not None and self._idle is None and not self._stopped:
                    self._idle = asyncio.create_task(self._close_when_idle())

    async def _close_when_idle(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._stopped and self._users == 0:
                wait = self._last_left + self._linger - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                async with self._lock:
                    if self._users == 0 and not self._stopped:
                        await self._shut()
                return
        finally:
            self._idle = None

    async def _shut(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            await close()

    async def stop(self) -> None:
        """Close the source, and open it no more."""
        self._stopped = True
        async with self._lock:
            await self._shut()
        idle = self._idle
        if idle is not None:
            idle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await idle
