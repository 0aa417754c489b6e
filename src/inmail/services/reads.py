"""Reads for one caller: every record the API shows passes here, and SPEC 8's rules with it.

A `Reader` lives as long as a request (or, on a websocket, until the next event clears it):
its DataLoaders batch every to-one lookup into one query per kind, so a query's round trips
do not grow with the number of items it returns.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Generic, Protocol, TypeVar, cast

from strawberry.dataloader import DataLoader

from inmail.auth import Viewer
from inmail.domain import access
from inmail.domain.access import DEFAULT_PAGE_SIZE, NodeRecord, NodeView, ReadRefused, Refusal
from inmail.domain.conversations import ConversationFilter
from inmail.domain.credits import CreditLot, LotFilter, LotStatus
from inmail.domain.model import Conversation, LedgerEntry, Member, Message, Purchase
from inmail.domain.notifications import Notification
from inmail.domain.pages import BadCursor, CursorText, Ends, Page
from inmail.domain.plans import PlanTable
from inmail.domain.profiles import PublicProfile
from inmail.domain.wallet import Wallet
from inmail.heap import weakly_bound
from inmail.services.base import Account

T = TypeVar("T")
K = TypeVar("K")
T_co = TypeVar("T_co", covariant=True)

MAX_NODE_IDS: Final = 100
"""The most ids one `nodes(ids:)` asks for; more is refused before any read."""


class MemberReads(Protocol):
    async def get_many(self, ids: Iterable[str]) -> dict[str, Member]: ...

    async def get_many_with_lots(
        self, ids: Iterable[str], own: str
    ) -> tuple[dict[str, Member], list[CreditLot]]: ...

    async def get_many_with_own_lots_and_awaiting(
        self, ids: Iterable[str], own: str, recipients: Sequence[str]
    ) -> tuple[dict[str, Member], list[CreditLot], set[str]]: ...


class LotReads(Protocol):
    async def get_many(self, ids: Iterable[str]) -> dict[str, CreditLot]: ...

    async def active_for_many(self, member_ids: Sequence[str]) -> dict[str, list[CreditLot]]: ...

    async def page(self, which: LotFilter, first: int, after: str | None) -> Page[CreditLot]: ...


class LedgerReads(Protocol):
    async def get_many(self, ids: Iterable[str]) -> dict[str, LedgerEntry]: ...

    async def page(self, member_id: str, first: int, after: str | None) -> Page[LedgerEntry]: ...


class ConversationReads(Protocol):
    async def get_many(self, ids: Iterable[str]) -> dict[str, Conversation]: ...

    async def page(
        self, which: ConversationFilter, first: int, after: str | None
    ) -> Page[Conversation]: ...

    async def awaiting_between(self, sender_id: str, recipient_id: str) -> bool: ...


class MessageReads(Protocol):
    async def get_many(self, ids: Iterable[str]) -> dict[str, tuple[Conversation, Message]]: ...

    async def latest_for_many(
        self, conversations: Iterable[Conversation]
    ) -> dict[str, list[Message]]: ...

    async def page(
        self, conversation: Conversation, first: int, after: str | None
    ) -> Page[Message]: ...


class NotificationReads(Protocol):
    async def get_many(self, ids: Iterable[str]) -> dict[str, Notification]: ...

    async def page(
        self, member_id: str, unread_only: bool, first: int, after: str | None
    ) -> Page[Notification]: ...

    async def count(self, member_id: str, unread_only: bool) -> int: ...


class PurchaseReads(Protocol):
    async def get_many(self, ids: Iterable[str]) -> dict[str, Purchase]: ...

    async def page(self, member_id: str, first: int, after: str | None) -> Page[Purchase]: ...


class ReadStore(Protocol):
    """What the reads need from storage: lookups by id, balances, pages and counts."""

    @property
    def members(self) -> MemberReads: ...

    @property
    def lots(self) -> LotReads: ...

    @property
    def ledger(self) -> LedgerReads: ...

    @property
    def conversations(self) -> ConversationReads: ...

    @property
    def messages(self) -> MessageReads: ...

    @property
    def notifications(self) -> NotificationReads: ...

    @property
    def purchases(self) -> PurchaseReads: ...


@dataclass(frozen=True, slots=True)
class Listing(Ends, Generic[T_co]):
    """One page of a list, with its cursors, and the size of the whole list on demand."""

    items: Sequence[tuple[CursorText, T_co]]  # (cursor, item)
    has_next: bool
    previous: Callable[[], Awaitable[bool]]
    counter: Callable[[], Awaitable[int]]

    async def has_previous(self) -> bool:
        return await self.previous()

    async def total_count(self) -> int:
        return await self.counter()


class _SharedLoader(DataLoader[K, T]):
    """A DataLoader whose reads its callers share safely: a websocket's operations share its
    reader, and an operation ended while it waits on a record (a `complete`, a closed socket)
    would cancel the loader's one future of that record, and with it every other operation
    waiting on the same read. Each waits here behind a shield of its own: the read goes on for
    the others, and the record is kept for whoever asks next. A read all its callers left still
    runs to its end (one bounded query, under the request's deadline); should it fail then, its
    error is taken (`_taken`), not left for the event loop to log as never retrieved."""

    def load(self, key: K) -> Awaitable[T]:
        future = cast("asyncio.Future[T]", super().load(key))  # Strawberry's is a Future
        if future.done():
            return future
        future.add_done_callback(_taken)
        return asyncio.shield(future)


def _taken(read: asyncio.Future[T]) -> None:
    """Take a finished read's error, if any: every caller that still waits gets it anyway."""
    if not read.cancelled():
        read.exception()


class _ById(Protocol[T_co]):
    async def get_many(self, ids: Iterable[str]) -> Mapping[str, T_co]: ...


def _loader_by_id(
    kind: Callable[[ReadStore], _ById[T]],
) -> functools.cached_property[DataLoader[str, T | None]]:
    """A reader's DataLoader of one kind of record by id, made on its first use."""

    def make(reader: Reader) -> DataLoader[str, T | None]:
        records = kind(reader._store)

        async def load(ids: list[str]) -> list[T | None]:
            found = await records.get_many(ids)
            return [found.get(i) for i in ids]

        return _SharedLoader(load)

    return functools.cached_property(make)


def _keep_refusal(refused: ReadRefused) -> Exception:
    return refused


class Reader:
    """The records one caller may see, read in batches.

    `viewer` is asked on each check (a websocket's caller can lose its token mid-connection);
    `refuse` turns a refusal into the exception the entrypoint's clients understand;
    `caller_id` names the member the credentials are for (checked or not): it decides only
    what is read together, never what may be seen.
    """

    def __init__(
        self,
        viewer: Callable[[], Viewer | None],
        store: ReadStore,
        *,
        clock: Callable[[], datetime],
        plans: PlanTable,
        max_page_size: int,
        refuse: Callable[[ReadRefused], Exception] = _keep_refusal,
        caller_id: Callable[[], str | None] = lambda: None,
        bring_up_to_date: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._viewer = viewer
        self._caller_id = caller_id
        self._store = store
        self._clock = clock
        self.plans = plans
        self._max_page_size = max_page_size
        self._refuse = refuse
        self._live_lots: dict[str, list[CreditLot]] = {}
        # Members the caller asked whether an InMail to them awaits a response, to be answered
        # by the read of the caller's own record (`_load_members`).
        self._asked_awaiting: dict[str, asyncio.Future[bool]] = {}
        # Writes what a member's stored lots and ledger lack as of now, before they are listed:
        # once per member and request (`_as_of_now`).
        self._bring_up_to_date = bring_up_to_date
        self._brought_up: dict[str, asyncio.Task[None]] = {}
        # Each page of a list read once per request (see `_listed`), by what names it.
        self._listings: dict[tuple[object, ...], _Shared[Listing[object]]] = {}
        self._counters: dict[tuple[object, ...], Callable[[], Awaitable[int]]] = {}
        # Each member's profile as last shown, with the viewer and record it was worked out for
        # (`_shown_profile`).
        self._profiles: dict[str, tuple[Viewer, Member, PublicProfile]] = {}
        # The live event the reads were last forgotten for (`fresh_for`), held so that its
        # identity is never another's.
        self._fresh_for: object = None

    # The loaders, each made on its first use: a request reads few kinds of record. A loader
    # that calls back into this reader holds it weakly: the reader owns it, and a cycle
    # between them would keep a request's records alive until the garbage collector ran.

    @functools.cached_property
    def _members(self) -> DataLoader[str, Member | None]:
        """The caller's own record comes with its live lots: the balance most screens show."""
        return _SharedLoader(weakly_bound(self._load_members))

    _lots = _loader_by_id(lambda store: store.lots)
    _conversations = _loader_by_id(lambda store: store.conversations)
    _purchases = _loader_by_id(lambda store: store.purchases)
    _entries = _loader_by_id(lambda store: store.ledger)
    _notifications = _loader_by_id(lambda store: store.notifications)
    # Each message with its conversation, whose parties alone may read it.
    _messages = _loader_by_id(lambda store: store.messages)

    @functools.cached_property
    def _accounts(self) -> DataLoader[str, Account | None]:
        """Each member brought up to now in memory, as a write would (nothing is written)."""
        return _SharedLoader(weakly_bound(self._load_accounts))

    @functools.cached_property
    def _latest_messages(self) -> DataLoader[Conversation, list[Message]]:
        """The latest messages of each conversation: one query for a page of conversations.
        Each is asked with the conversation as read, which may carry its first message."""
        return _SharedLoader(
            weakly_bound(self._load_latest_messages),
            max_batch_size=100,
            cache_key_fn=_conversation_id,
        )

    def now(self) -> datetime:
        return self._clock()

    def fresh_for(self, event: object) -> None:
        """Forget what was read, before a websocket subscription shows `event`, unless it was
        forgotten for this very event already: a socket's subscriptions are handed the same
        event, and each would otherwise read the same records again, one after the other.
        What they read was read after the event came, as before."""
        if event is not self._fresh_for:
            self.clear()
            self._fresh_for = event

    def clear(self) -> None:
        """Forget what was read: after a write, or before a websocket's next event."""
        for loader in _LOADERS:
            self.__dict__.pop(loader, None)
        self._live_lots.clear()
        self._asked_awaiting.clear()
        self._brought_up.clear()
        self._profiles.clear()
        # New maps, not emptied ones: a read still under way when the reader is cleared (another
        # operation of the same socket) keeps what it read in the old ones, never in these.
        self._listings = {}
        self._counters = {}

    # Who is asking: the checks every entrypoint shares.

    def signed_in(self) -> Viewer:
        # Asked for every record a request shows: written out rather than through `_checked`.
        try:
            return access.signed_in(self._viewer())
        except ReadRefused as refused:
            raise self._refuse(refused) from None

    def acting_member(self) -> str:
        return self._checked(lambda: access.acting_member(self._viewer()))

    def owner_or_admin(self, member_id: str) -> Viewer:
        return self._checked(lambda: access.owner_or_admin(self._viewer(), member_id))

    # Members: a public profile for anyone signed in, the rest for its owner and admins. The
    # schema is handed profiles only; it asks for the rest by the member's id.

    def profile(self, member_id: str) -> Awaitable[PublicProfile | None]:
        """The member's public profile, as this caller is shown it; the load is asked at once,
        to join the batch about to be read (as `member`)."""
        viewer = self.signed_in()
        return self._profile_once_read(viewer, self._members.load(member_id))

    def known_profile(self, member_id: str) -> PublicProfile | None:
        """The profile of a member already read for this caller, without waiting; None if not
        read yet."""
        viewer = self.signed_in()
        known = _ready(self._members, member_id)
        return None if known is None else self._shown_profile(viewer, known)

    async def viewer_profile(self) -> PublicProfile | None:
        """The caller's own profile; an admin is no member."""
        member = await self.viewer_member()
        return None if member is None else access.profile_for(self._viewer(), member)

    async def viewer_member(self) -> Member | None:
        """The caller's own record; an admin is no member."""
        member_id = self.signed_in().member_id
        return None if member_id is None else await self._members.load(member_id)

    def member(self, member_id: str) -> Awaitable[Member | None]:
        """The member's whole record, for the services' own rules (the compose window's), never
        to be shown: as soon as asked, the load joins the batch about to be read (a coroutine
        would join only when it first runs, after that read went out)."""
        self.signed_in()
        return self._members.load(member_id)

    async def load_member(self, member_id: str) -> Member | None:
        """A member's record with no check of who asks: for authentication itself."""
        return await self._members.load(member_id)

    def found_missing(self, member_id: str) -> bool:
        """Whether this request's reads looked for the member's record and found none (for
        authentication: a record erased since this process last found it)."""
        read = _finished(self._members, member_id)
        return read is not None and read.result() is None

    def awaiting_response(
        self, sender_id: str, recipient_id: str
    ) -> Coroutine[object, object, bool]:
        """Whether the sender's InMail to the recipient awaits a response.

        Asked about the caller's own InMails before the caller's record is read (the compose
        window), it is answered by that same read: one round trip for both. Otherwise, or if
        that read went out before the question, it is one query of its own (after that read,
        in the one case).
        """
        self.owner_or_admin(sender_id)
        if sender_id != self._caller_id() or sender_id in self._live_lots:
            return self._store.conversations.awaiting_between(sender_id, recipient_id)
        answer = self._asked_awaiting.get(recipient_id)
        if answer is None:
            answer = asyncio.get_running_loop().create_future()
            self._asked_awaiting[recipient_id] = answer
        return self._answered(sender_id, recipient_id, answer)

    async def _answered(
        self, sender_id: str, recipient_id: str, answer: asyncio.Future[bool]
    ) -> bool:
        await self._members.load(sender_id)
        if answer.done():
            return answer.result()
        self._asked_awaiting.pop(recipient_id, None)
        return await self._store.conversations.awaiting_between(sender_id, recipient_id)

    async def balance(self, member_id: str) -> int:
        """Credits spendable now: due cycles granted and lapsed lots expired, even unwritten."""
        self.owner_or_admin(member_id)
        account = await self._account(member_id)
        return account.balance if account is not None else 0

    async def current(self, member_id: str) -> Member | None:
        """The member's whole record as of now (its subscription renewed through every started
        cycle), for its owner or an admin."""
        self.owner_or_admin(member_id)
        account = await self._account(member_id)
        return account.updated() if account is not None else None

    async def watched_member(self, member_id: str | None) -> str:
        """Whose balance the caller may watch: their own, or any one member's for an admin."""
        viewer = self.signed_in()
        target = member_id if member_id is not None else viewer.member_id
        if target is None:
            raise self._refuse(ReadRefused(Refusal.WATCHED_MEMBER_REQUIRED))
        self.owner_or_admin(target)
        if await self._members.load(target) is None:
            raise self._refuse(ReadRefused(Refusal.NO_SUCH_MEMBER, member_id=target))
        return target

    # Lists: private to their member.

    async def credit_lots(
        self,
        member_id: str | None,
        statuses: Sequence[LotStatus] | None,
        first: int | None,
        after: str | None,
    ) -> Listing[CreditLot]:
        """A member's lots; `member_id=None` is the caller's own."""
        target = member_id if member_id is not None else self.signed_in().member_id
        if target is None:
            target = self.acting_member()
        self.owner_or_admin(target)
        size = self._page_size(first)
        if member_id is not None and await self._members.load(target) is None:
            # An admin's typo is said so, not answered as a member without lots.
            raise self._refuse(ReadRefused(Refusal.NO_SUCH_MEMBER, member_id=target))
        asked = None if statuses is None else tuple(statuses)

        async def listed() -> Listing[CreditLot]:
            lots, now = self._store.lots, self._clock()
            which = LotFilter(target, asked, now)
            page = await self._as_of_now(
                target, lambda: self._page(lambda: lots.page(which, size, after))
            )
            return self._listing(page.map(lambda lot: _lot_as_of(lot, now)))

        # Statuses in any order, or named twice, are one list.
        the_list = ("lots", target, None if asked is None else frozenset(asked))
        return await self._listed(the_list, size, after, listed)

    async def ledger(
        self, member_id: str, first: int | None, after: str | None
    ) -> Listing[LedgerEntry]:
        self.owner_or_admin(member_id)
        size = self._page_size(first)
        ledger = self._store.ledger

        async def listed() -> Listing[LedgerEntry]:
            return self._listing(
                await self._as_of_now(
                    member_id, lambda: self._page(lambda: ledger.page(member_id, size, after))
                )
            )

        return await self._listed(("ledger", member_id), size, after, listed)

    async def _as_of_now(self, member_id: str, read: Callable[[], Awaitable[T]]) -> T:
        """What `read` reads of the member's stored lots, ledger or notifications, as of now:
        the cycles that started granted and lapsed lots expired (SPEC 3: every read shows the
        state as of now) are written first, as the member's next write or the scheduler would
        write them.

        The read goes out with the member's account (read once per request anyway): when
        nothing is due, which is nearly always, it is the answer, and this costs nothing more.
        Otherwise what is due is written (once per member and request) and the list read again.
        """
        if self._bring_up_to_date is None:
            return await read()
        account, found = await asyncio.gather(self._account(member_id), read())
        if account is None or not account.changed:
            return found
        writing = self._brought_up.get(member_id)
        if writing is None:
            writing = asyncio.ensure_future(self._bring_up_to_date(member_id))
            self._brought_up[member_id] = writing
        await asyncio.shield(writing)
        return await read()

    async def conversations(
        self, which: ConversationFilter, first: int | None, after: str | None
    ) -> Listing[Conversation]:
        """A member's conversations: all, or those in a state, or the ones they received (the
        inbox) or sent."""
        self.owner_or_admin(which.member_id)
        size = self._page_size(first)
        conversations = self._store.conversations

        async def listed() -> Listing[Conversation]:
            page = await self._page(lambda: conversations.page(which, size, after))
            for _, conversation in page.items:
                self._conversations.prime(conversation.id, conversation)
            return self._listing(page)

        return await self._listed(("conversations", which), size, after, listed)

    async def notifications(
        self, member_id: str, unread_only: bool, first: int | None, after: str | None
    ) -> Listing[Notification]:
        """A member's notifications, newest first, as of now (a cycle that started is granted,
        and its RENEWED written, before they are read)."""
        self.owner_or_admin(member_id)
        size = self._page_size(first)
        notifications = self._store.notifications

        async def listed() -> Listing[Notification]:
            return self._listing(
                await self._as_of_now(
                    member_id,
                    lambda: self._page(
                        lambda: notifications.page(member_id, unread_only, size, after)
                    ),
                )
            )

        return await self._listed(("notifications", member_id, unread_only), size, after, listed)

    async def purchases(
        self, member_id: str, first: int | None, after: str | None
    ) -> Listing[Purchase]:
        """A member's purchases, newest first."""
        self.owner_or_admin(member_id)
        size = self._page_size(first)
        purchases = self._store.purchases

        async def listed() -> Listing[Purchase]:
            return self._listing(await self._page(lambda: purchases.page(member_id, size, after)))

        return await self._listed(("purchases", member_id), size, after, listed)

    # A thread's messages, for its two parties and admins.

    async def latest_messages(
        self, conversation: Conversation, *, authors: bool = False
    ) -> list[Message]:
        """The latest 100, oldest first; with `authors`, handed back once their authors are read
        too (`_read_authors`)."""
        self._sees(conversation)
        found = await self._latest_messages.load(conversation)
        if authors:
            await self._read_authors(found)
        return found

    def known_latest_messages(self, conversation: Conversation) -> list[Message] | None:
        """A thread's latest messages already read, without waiting; None if not read yet."""
        self._sees(conversation)
        return _ready(self._latest_messages, conversation)

    async def read_ahead(
        self, conversations: Sequence[Conversation], *, parties: bool, messages: bool
    ) -> None:
        """Read the parties and the latest messages of a page of conversations now, together,
        so that the fields which show them answer at once: the same queries their fields
        would send, sent before the fields are asked for."""
        for conversation in conversations:
            self._sees(conversation)
        loads: list[Awaitable[object]] = []
        if parties:
            ids = {c.sender_id for c in conversations} | {c.recipient_id for c in conversations}
            loads.append(self._members.load_many(sorted(ids)))
        if messages:
            loads.append(self._latest_messages.load_many(conversations))
        await asyncio.gather(*loads)

    async def messages(
        self,
        conversation: Conversation,
        first: int | None,
        after: str | None,
        *,
        authors: bool = False,
    ) -> Listing[Message]:
        """Every message, oldest first, a page at a time; with `authors`, handed back once their
        authors are read too (`_read_authors`)."""
        self._sees(conversation)
        size = self._page_size(first)
        messages = self._store.messages

        async def listed() -> Listing[Message]:
            return self._listing(await self._page(lambda: messages.page(conversation, size, after)))

        listing = await self._listed(("messages", conversation.id), size, after, listed)
        if authors:
            await self._read_authors([message for _, message in listing.items])
        return listing

    async def _read_authors(self, messages: Sequence[Message]) -> None:
        """Read together the authors of `messages` this request has not read yet, so that each
        message's author answers at once: one read, where each author's field would otherwise
        await its own (20,000 awaits for `nodes` of a 100-message thread named 100 times)."""
        unread = {m.author_id for m in messages if _finished(self._members, m.author_id) is None}
        if unread:
            await self._members.load_many(sorted(unread))

    # Single records: another's is as if unknown.

    async def conversation(self, conversation_id: str) -> Conversation | None:
        """An InMail or thread, for its two parties and admins only."""
        viewer = self.signed_in()
        found = await self._conversations.load(conversation_id)
        return found if found is not None and access.sees_conversation(viewer, found) else None

    async def purchase(self, purchase_id: str) -> Purchase | None:
        viewer = self.signed_in()
        found = await self._purchases.load(purchase_id)
        return found if found is not None and access.owns(viewer, found.member_id) else None

    async def lot(self, lot_id: str) -> CreditLot | None:
        viewer = self.signed_in()
        found = await self._lots.load(lot_id)
        if found is None or not access.sees_lot(viewer, found):
            return None
        return _lot_as_of(found, self._clock())

    # Any record by its id (the schema's `node` and `nodes`), under the rules above.

    async def node(self, node_id: str) -> NodeView | None:
        [found] = await self.node_views([node_id])
        return found

    async def node_views(self, ids: Sequence[str]) -> list[NodeView | None]:
        """What the caller is shown of the records these ids name (`nodes`): each member as
        its public profile."""
        viewer = self.signed_in()
        found = await self._nodes(viewer, ids)
        return [None if record is None else access.node_view(viewer, record) for record in found]

    async def _nodes(self, viewer: Viewer, ids: Sequence[str]) -> list[NodeRecord | None]:
        """The records these ids name, in order; None for an id that names nothing the caller
        may see: an unknown id and another member's private record read alike.

        Every id is an ObjectId the service made (`new_id`), unique across every collection,
        so an id names one record of one kind; each kind is asked in one query for all the ids.
        """
        if len(ids) > MAX_NODE_IDS:
            raise self._refuse(ReadRefused(Refusal.TOO_MANY_IDS, maximum=MAX_NODE_IDS))
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        named = await self._named_by(wanted)
        now = self._clock()
        found = {node_id: named.seen_by(viewer, i, now) for i, node_id in enumerate(wanted)}
        return [found[node_id] for node_id in ids]

    async def _named_by(self, ids: list[str]) -> _Named:
        """What each id names, whatever its kind, with the conversations of the messages."""
        # One batch per kind, sent together, whatever the number of ids; nothing is read after
        # them (each message comes with its conversation), so what an id names and whose it is
        # take the same time to answer.
        (
            (members, conversations, messages, lots, entries, purchases),
            notifications,
        ) = await asyncio.gather(
            asyncio.gather(
                self._members.load_many(ids),
                self._conversations.load_many(ids),
                self._messages.load_many(ids),
                self._lots.load_many(ids),
                self._entries.load_many(ids),
                self._purchases.load_many(ids),
            ),
            self._notifications.load_many(ids),
        )
        return _Named(members, conversations, messages, lots, entries, purchases, notifications)

    # Internals.

    def _checked(self, rule: Callable[[], T]) -> T:
        try:
            return rule()
        except ReadRefused as refused:
            raise self._refuse(refused) from None

    def _sees(self, conversation: Conversation) -> None:
        viewer = self.signed_in()
        if not access.sees_conversation(viewer, conversation):
            raise self._refuse(ReadRefused(Refusal.OWNER_OR_ADMIN))

    def _page_size(self, first: int | None) -> int:
        maximum = self._max_page_size
        if first is None:
            return min(DEFAULT_PAGE_SIZE, maximum)
        if not 0 <= first <= maximum:
            raise self._refuse(ReadRefused(Refusal.PAGE_SIZE, maximum=maximum))
        return first

    async def _page(self, fetch: Callable[[], Awaitable[Page[T]]]) -> Page[T]:
        try:
            return await fetch()
        except BadCursor as exc:
            raise self._refuse(ReadRefused(Refusal.BAD_CURSOR, reason=str(exc))) from None

    async def _listed(
        self,
        which: tuple[object, ...],
        size: int,
        after: str | None,
        read: Callable[[], Awaitable[Listing[T]]],
    ) -> Listing[T]:
        """The page of the list `which` names, of `size` after `after`, read once per request:
        asked again (an id repeated in `nodes`, an alias), it is the same page, and whether
        anything precedes it is read once too. The list's count is read once per request,
        whatever page of it is asked (another size, another cursor): a count reads the list's
        whole range, and a document asking for the count of one long list a thousand times,
        each time by another page of it, would otherwise read it a thousand times. The count is
        read at the snapshot of the first page of the list read: a write landing between two
        pages' reads can leave the other page's items one off it."""
        key = (*which, size, after)
        listings, counters = self._listings, self._counters  # as they are now (see `clear`)
        shared = listings.get(key)
        if shared is None:

            async def reading() -> Listing[object]:
                return await read()

            shared = listings[key] = _Shared(reading)
        # Under its key, the page `read` returns: a Listing[T].
        listing = cast("Listing[T]", await shared.get())
        counter = counters.setdefault(which, listing.counter)
        return listing if counter is listing.counter else replace(listing, counter=counter)

    @staticmethod
    def _listing(page: Page[T]) -> Listing[T]:
        return Listing(
            items=page.items,
            has_next=page.has_next,
            previous=_once(page.previous),
            counter=_once(page.count),
        )

    async def _profile_once_read(
        self, viewer: Viewer, loading: Awaitable[Member | None]
    ) -> PublicProfile | None:
        member = await loading
        return None if member is None else self._shown_profile(viewer, member)

    def _shown_profile(self, viewer: Viewer, member: Member) -> PublicProfile:
        """What the viewer is shown of the member (`access.profile_for`), worked out once for
        each record and viewer: a page of conversations names the same few members (the
        caller, their correspondents) as sender, recipient and author many times over."""
        held = self._profiles.get(member.id)
        if held is not None and held[0] is viewer and held[1] is member:
            return held[2]
        profile = access.profile_for(viewer, member)
        self._profiles[member.id] = (viewer, member, profile)
        return profile

    async def _load_latest_messages(self, conversations: list[Conversation]) -> list[list[Message]]:
        found = await self._store.messages.latest_for_many(conversations)
        return [found.get(c.id, []) for c in conversations]

    async def _load_members(self, ids: list[str]) -> list[Member | None]:
        """Members by id, in one read; the caller's own record with its live lots (kept for
        `_load_accounts`), so that the caller's balance costs no read of its own."""
        own = self._caller_id()
        if own is not None and own in ids and own not in self._live_lots:
            asked, self._asked_awaiting = self._asked_awaiting, {}
            if asked:
                (
                    found,
                    own_lots,
                    awaiting,
                ) = await self._store.members.get_many_with_own_lots_and_awaiting(
                    ids, own, list(asked)
                )
                for recipient_id, answer in asked.items():
                    if not answer.done():
                        answer.set_result(recipient_id in awaiting)
                self._live_lots[own] = own_lots
            else:
                found, own_lots = await self._store.members.get_many_with_lots(ids, own)
                self._live_lots[own] = own_lots
        else:
            found = await self._store.members.get_many(ids)
        return [found.get(i) for i in ids]

    def _account(self, member_id: str) -> Awaitable[Account | None]:
        """The member brought up to now, once per request. When the request already holds the
        member's record and live lots (the caller's own come together), it is worked out at
        once, as `_load_accounts` would: no batch to wait for."""
        accounts = self._accounts
        if accounts.cache_map.get(member_id) is None:
            member, lots = _ready(self._members, member_id), self._live_lots.get(member_id)
            if member is not None and lots is not None:
                now = self._clock()
                accounts.prime(member_id, Account.brought_up_to(self.plans, member, lots, now))
        return accounts.load(member_id)

    async def _load_accounts(self, ids: list[str]) -> list[Account | None]:
        """The members and their ACTIVE lots (one read for the caller's own, two sent together
        for any number of others), brought up to now by the domain code the writes use."""
        now = self._clock()
        own = self._caller_id()
        others = [i for i in ids if i != own and i not in self._live_lots]
        if others:
            members, lots = await asyncio.gather(
                self._members.load_many(ids), self._store.lots.active_for_many(others)
            )
            self._live_lots.update(lots)
        else:  # the caller's own, whose lots come with its record
            members = await self._members.load_many(ids)
        late = [m.id for m in members if m is not None and m.id not in self._live_lots]
        if late:  # the caller's record was read before, without its lots
            self._live_lots.update(await self._store.lots.active_for_many(late))
        return [
            None
            if member is None
            else Account.brought_up_to(self.plans, member, self._live_lots[member.id], now)
            for member in members
        ]


class _Shared(Generic[T]):
    """One read, shared by every caller that asks for it while it runs or after: started by
    the first, its answer kept. When every caller waiting on it has been cancelled (their
    operation ended: a websocket `complete`, a closed socket) the read is cancelled too, and
    the next caller starts it again: an abandoned read never runs on alone."""

    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read: Callable[[], Awaitable[T]] | None = read
        self._task: asyncio.Future[T] | None = None
        self._waiting = 0

    async def get(self) -> T:
        if self._task is None:
            assert self._read is not None, "a read that ended is never started again"
            self._task = asyncio.ensure_future(self._read())
        task = self._task
        self._waiting += 1
        try:
            return await asyncio.shield(task)
        finally:
            self._waiting -= 1
            if task.done():
                # Answered (or failed): kept as it is, and the read let go of. It may close
                # over the reader that holds this: kept, they would be a cycle that outlives
                # the request until the garbage collector runs.
                self._read = None
            elif self._waiting == 0:
                task.cancel()
                self._task = None


def _once(read: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    """`read`, run once for every call (see `_Shared`)."""
    return _Shared(read).get


_LOADERS: Final = tuple(
    name for name, attr in vars(Reader).items() if isinstance(attr, functools.cached_property)
)
"""The names of the reader's loaders (its cached properties): forgetting them forgets what was
read, and a loader added to the class is forgotten with the rest."""


@dataclass(frozen=True, slots=True)
class _Named:
    """What a list of ids names: for each kind of record, the one each id names, in the ids'
    order (None where it names none of that kind); each message with its conversation."""

    members: list[Member | None]
    conversations: list[Conversation | None]
    messages: list[tuple[Conversation, Message] | None]  # each with its conversation
    lots: list[CreditLot | None]
    entries: list[LedgerEntry | None]
    purchases: list[Purchase | None]
    notifications: list[Notification | None]

    def seen_by(self, viewer: Viewer, i: int, now: datetime) -> NodeRecord | None:
        """The record the `i`th id names, if the viewer may see it."""
        # A member's public profile is anyone's (signed in) to see; the rest, as their fields.
        if (member := self.members[i]) is not None:
            return member
        if (conversation := self.conversations[i]) is not None:
            return conversation if access.sees_conversation(viewer, conversation) else None
        if (placed := self.messages[i]) is not None:
            thread, message = placed
            return message if access.sees_message(viewer, thread) else None
        if (lot := self.lots[i]) is not None:
            return _lot_as_of(lot, now) if access.sees_lot(viewer, lot) else None
        for record in (self.entries[i], self.purchases[i], self.notifications[i]):
            if record is not None:
                return record if access.owns(viewer, record.member_id) else None
        return None


def _finished(loader: DataLoader[K, T], key: K) -> asyncio.Future[T] | None:
    """A DataLoader's read of `key` once it has finished well; None before (or if the read
    failed: the field that awaits it then reports the failure)."""
    held = loader.cache_map.get(key)
    if held is None or not held.done() or held.cancelled() or held.exception() is not None:
        return None
    return held


def _ready(loader: DataLoader[K, T], key: K) -> T | None:
    """What a DataLoader holds for `key` once its read has finished; None before, or if it
    failed (`_finished`)."""
    read = _finished(loader, key)
    return None if read is None else read.result()


def _conversation_id(conversation: Conversation) -> str:
    return conversation.id


def _no_entry_id() -> str:
    return ""


def _lot_as_of(lot: CreditLot, now: datetime) -> CreditLot:
    """The lot as the wallet leaves it at `now`: a lapsed one reads EXPIRED, nothing left."""
    wallet = Wallet(lot.member_id, [lot], 0, _no_entry_id)
    wallet.expire_lapsed(now)
    changed = wallet.updated_lots
    return changed[0] if changed else lot
