"""The Reader applies SPEC 8 itself: what a caller may read, refused or hidden without GraphQL.

Storage here is a few dicts that count their calls: the rules under test never reach
MongoDB (tests/api/test_access.py and tests/reliability/test_access_table.py prove the same
rules through the running service).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Generic, TypeVar

import pytest

import inmail
from inmail.auth import Role, Viewer
from inmail.domain.access import ReadRefused, Refusal
from inmail.domain.conversations import ConversationFilter, ConversationState
from inmail.domain.credits import CreditLot, CreditSource, LedgerKind, LotFilter, LotStatus
from inmail.domain.model import (
    Conversation,
    ConversationKind,
    LedgerEntry,
    Member,
    Message,
    Purchase,
)
from inmail.domain.notifications import Notification
from inmail.domain.pages import BadCursor, CursorText, Page
from inmail.domain.plans import DEFAULT_PLAN_TABLE, PlanType
from inmail.domain.profiles import PublicProfile
from inmail.schema.errors import refused
from inmail.services.reads import Reader, _Shared
from support import imported_modules

NOON = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
R = TypeVar("R")


def member(member_id: str, name: str, *connections: str) -> Member:
    return Member(
        id=member_id,
        name=name,
        headline=f"{name}, at work on the Analytical Engine",
        plan=PlanType.PREMIUM_CAREER,
        created_at=NOON,
        connections=frozenset(connections),
    )


ADA = member("ada-lovelace", "Ada Lovelace", "charles-babbage")
DAN = member("dan-dreyfus", "Dan Dreyfus")
CHARLES = member("charles-babbage", "Charles Babbage", "ada-lovelace")
ADA_LOT = CreditLot(
    id="lot-ada-spring",
    member_id=ADA.id,
    source=CreditSource.MONTHLY_ALLOTMENT,
    quantity=5,
    remaining=4,
    granted_at=NOON,
    expires_at=NOON + timedelta(days=90),
    status=LotStatus.ACTIVE,
)
ADA_TO_CHARLES = Conversation(
    id="inmail-difference-engine",
    kind=ConversationKind.INMAIL,
    sender_id=ADA.id,
    recipient_id=CHARLES.id,
    subject="The Difference Engine",
    state=ConversationState.AWAITING_RESPONSE,
    sent_at=NOON,
)
ADA_NOTE = Message("note-1", ADA.id, "May I see the engine's notes?", NOON)
ADA_DEBIT = LedgerEntry(
    id="entry-ada-debit",
    member_id=ADA.id,
    seq=2,
    at=NOON,
    kind=LedgerKind.DEBIT,
    delta=-1,
    balance_after=4,
    lot_id=ADA_LOT.id,
    conversation_id=ADA_TO_CHARLES.id,
)


@dataclass
class Calls:
    made: list[str] = field(default_factory=list)


def _listed(items: Sequence[tuple[CursorText, R]], *, total: int) -> Page[R]:
    """One page of a list of `total` items."""

    async def count() -> int:
        return total

    return Page(items, has_next=False, count=count)


@dataclass
class Collection(Generic[R]):
    """One collection of the store: the records it knows by id, its calls counted by name."""

    calls: Calls
    name: str
    known: dict[str, R]

    def called(self, method: str) -> None:
        self.calls.made.append(f"{self.name}.{method}")

    async def get_many(self, ids: Iterable[str]) -> dict[str, R]:
        self.called("get_many")
        return {i: self.known[i] for i in ids if i in self.known}


class Members(Collection[Member]):
    async def get_many_with_lots(
        self, ids: Iterable[str], own: str
    ) -> tuple[dict[str, Member], list[CreditLot]]:
        self.called("get_many_with_lots")
        lots = [ADA_LOT] if own == ADA.id else []
        return {i: self.known[i] for i in [*ids, own] if i in self.known}, lots

    async def get_many_with_own_lots_and_awaiting(
        self, ids: Iterable[str], own: str, recipients: Sequence[str]
    ) -> tuple[dict[str, Member], list[CreditLot], set[str]]:
        self.called("get_many_with_own_lots_and_awaiting")
        members, lots = await self.get_many_with_lots(ids, own)
        self.calls.made.pop()
        return members, lots, {r for r in recipients if _awaits(own, r)}


class Lots(Collection[CreditLot]):
    async def active_for_many(self, member_ids: Sequence[str]) -> dict[str, list[CreditLot]]:
        self.called("active_for_many")
        return {i: [ADA_LOT] if i == ADA.id else [] for i in member_ids}

    async def page(self, which: LotFilter, first: int, after: str | None) -> Page[CreditLot]:
        self.called("page")
        if after is not None:
            raise BadCursor("the cursor is not valid")
        mine = [("c1", ADA_LOT)] if which.member_id == ADA.id else []
        return _listed(mine[:first], total=len(mine))


class MembersRecords(Collection[R]):
    """A member's records, listed newest first: here none, whoever the member."""

    async def page(self, member_id: str, first: int, after: str | None) -> Page[R]:
        self.called("page")
        return _listed([], total=0)


class Conversations(Collection[Conversation]):
    async def page(
        self, which: ConversationFilter, first: int, after: str | None
    ) -> Page[Conversation]:
        self.called("page")
        theirs = ADA_TO_CHARLES.has_party(which.member_id)
        return _listed([("c1", ADA_TO_CHARLES)] if theirs else [], total=int(theirs))

    async def awaiting_between(self, sender_id: str, recipient_id: str) -> bool:
        self.called("awaiting_between")
        return _awaits(sender_id, recipient_id)


def _awaits(sender_id: str, recipient_id: str) -> bool:
    """Whether the sender's InMail to the recipient awaits a response: only Ada's to Charles."""
    return (sender_id, recipient_id) == (ADA_TO_CHARLES.sender_id, ADA_TO_CHARLES.recipient_id)


class Messages(Collection[tuple[Conversation, Message]]):
    async def latest_for_many(
        self, conversations: Iterable[Conversation]
    ) -> dict[str, list[Message]]:
        self.called("latest_for_many")
        return {c.id: [ADA_NOTE] for c in conversations if c.id == ADA_TO_CHARLES.id}

    async def page(
        self, conversation: Conversation, first: int, after: str | None
    ) -> Page[Message]:
        self.called("page")
        return _listed([("m1", ADA_NOTE)][:first], total=1)


class Notifications(Collection[Notification]):
    async def page(
        self, member_id: str, unread_only: bool, first: int, after: str | None
    ) -> Page[Notification]:
        self.called("page")
        return _listed([], total=0)

    async def count(self, member_id: str, unread_only: bool) -> int:
        return 0


class Store:
    def __init__(self) -> None:
        self.calls = calls = Calls()
        self.members = Members(calls, "members", {m.id: m for m in (ADA, DAN, CHARLES)})
        self.lots = Lots(calls, "lots", {ADA_LOT.id: ADA_LOT})
        self.ledger = MembersRecords[LedgerEntry](calls, "ledger", {ADA_DEBIT.id: ADA_DEBIT})
        self.conversations = Conversations(
            calls, "conversations", {ADA_TO_CHARLES.id: ADA_TO_CHARLES}
        )
        self.messages = Messages(calls, "messages", {ADA_NOTE.id: (ADA_TO_CHARLES, ADA_NOTE)})
        self.notifications = Notifications(calls, "notifications", {})
        self.purchases = MembersRecords[Purchase](calls, "purchases", {})


def reader_for(
    viewer: Viewer | None, store: Store | None = None, *, caller_id: str | None = None
) -> Reader:
    return Reader(
        lambda: viewer,
        store or Store(),
        clock=lambda: NOON,
        plans=DEFAULT_PLAN_TABLE,
        max_page_size=100,
        caller_id=lambda: caller_id,
    )


AS_ADA = Viewer(ADA.id, Role.MEMBER)
AS_DAN = Viewer(DAN.id, Role.MEMBER)
AS_ADMIN = Viewer("admin-grace", Role.ADMIN)


async def refusal_from(call: Awaitable[object]) -> Refusal:
    try:
        await call
    except ReadRefused as refusal:
        return refusal.refusal
    raise AssertionError("the read was served")


async def test_another_member_sees_adas_public_profile_but_none_of_her_private_records() -> None:
    dan = reader_for(AS_DAN)

    profile = await dan.member(ADA.id)
    assert profile is not None
    assert profile.name == "Ada Lovelace"
    assert await refusal_from(dan.balance(ADA.id)) is Refusal.OWNER_OR_ADMIN
    assert await refusal_from(dan.credit_lots(ADA.id, None, 20, None)) is Refusal.OWNER_OR_ADMIN
    assert await refusal_from(dan.ledger(ADA.id, 20, None)) is Refusal.OWNER_OR_ADMIN
    assert (
        await refusal_from(dan.conversations(ConversationFilter(ADA.id), 20, None))
        is Refusal.OWNER_OR_ADMIN
    )
    assert await refusal_from(dan.watched_member(ADA.id)) is Refusal.OWNER_OR_ADMIN


async def test_an_inmail_and_a_lot_of_someone_else_read_as_unknown_not_as_refused() -> None:
    dan = reader_for(AS_DAN)

    assert await dan.conversation(ADA_TO_CHARLES.id) is None
    assert await dan.lot(ADA_LOT.id) is None
    assert await reader_for(AS_ADA).conversation(ADA_TO_CHARLES.id) == ADA_TO_CHARLES
    assert await reader_for(Viewer(CHARLES.id, Role.MEMBER)).conversation(ADA_TO_CHARLES.id)
    assert await reader_for(AS_ADA).lot(ADA_LOT.id) == ADA_LOT


async def test_ada_and_an_admin_read_everything_of_hers() -> None:
    for viewer in (AS_ADA, AS_ADMIN):
        reader = reader_for(viewer)
        assert await reader.balance(ADA.id) == 4
        lots = await reader.credit_lots(ADA.id, None, 20, None)
        assert [lot for _, lot in lots.items] == [ADA_LOT]
        assert await lots.total_count() == 1
        conversations = await reader.conversations(ConversationFilter(ADA.id), 20, None)
        assert [c for _, c in conversations.items] == [ADA_TO_CHARLES]
        assert await reader.conversation(ADA_TO_CHARLES.id) == ADA_TO_CHARLES
        assert await reader.watched_member(ADA.id) == ADA.id


async def test_nothing_is_read_for_a_caller_without_a_token() -> None:
    anonymous = reader_for(None)

    with pytest.raises(ReadRefused) as caught:
        anonymous.member(ADA.id)  # refused when asked, before any load is queued
    assert caught.value.refusal is Refusal.SIGN_IN
    assert await refusal_from(anonymous.viewer_member()) is Refusal.SIGN_IN
    assert await refusal_from(anonymous.conversation(ADA_TO_CHARLES.id)) is Refusal.SIGN_IN
    assert await refusal_from(anonymous.balance(ADA.id)) is Refusal.SIGN_IN
    with pytest.raises(ReadRefused):
        anonymous.profile(CHARLES.id)


async def test_an_admin_has_no_lots_of_their_own_and_must_name_whose_balance_to_watch() -> None:
    admin = reader_for(AS_ADMIN)

    assert await admin.viewer_member() is None
    assert await refusal_from(admin.credit_lots(None, None, 20, None)) is Refusal.MEMBERS_ONLY
    assert await refusal_from(admin.watched_member(None)) is Refusal.WATCHED_MEMBER_REQUIRED
    assert await refusal_from(admin.watched_member("nobody")) is Refusal.NO_SUCH_MEMBER


async def test_a_refused_read_sends_no_query_at_all() -> None:
    store = Store()
    dan = reader_for(AS_DAN, store)

    for call in (
        dan.balance(ADA.id),
        dan.credit_lots(ADA.id, None, 20, None),
        dan.ledger(ADA.id, 20, None),
        dan.conversations(ConversationFilter(ADA.id), 20, None),
    ):
        assert await refusal_from(call) is Refusal.OWNER_OR_ADMIN
    assert store.calls.made == []


async def test_bad_page_sizes_and_cursors_are_refused_with_their_data() -> None:
    ada = reader_for(AS_ADA)

    with pytest.raises(ReadRefused) as too_many:
        await ada.ledger(ADA.id, 101, None)
    assert (too_many.value.refusal, too_many.value.data) == (Refusal.PAGE_SIZE, {"maximum": 100})
    with pytest.raises(ReadRefused) as forged:
        await ada.credit_lots(ADA.id, None, 20, "forged-cursor")
    assert forged.value.refusal is Refusal.BAD_CURSOR


async def test_loads_of_one_kind_in_the_same_tick_are_one_storage_call() -> None:
    store = Store()
    charles = reader_for(Viewer(CHARLES.id, Role.MEMBER), store)

    found = await asyncio.gather(
        charles.member(ADA.id), charles.member(DAN.id), charles.member(CHARLES.id)
    )
    assert [m.name if m else None for m in found] == [
        "Ada Lovelace",
        "Dan Dreyfus",
        "Charles Babbage",
    ]
    ada_shown, dan_shown = await asyncio.gather(charles.profile(ADA.id), charles.profile(DAN.id))
    assert [ada_shown and ada_shown.is_connection, dan_shown and dan_shown.is_connection] == [
        True,
        False,
    ]
    assert store.calls.made == ["members.get_many"]


async def test_a_listed_conversation_is_not_read_again_by_id() -> None:
    store = Store()
    ada = reader_for(AS_ADA, store)

    await ada.conversations(ConversationFilter(ADA.id), 20, None)
    assert await ada.conversation(ADA_TO_CHARLES.id) == ADA_TO_CHARLES
    assert store.calls.made == ["conversations.page"]


def test_every_refusal_is_worded_with_the_code_clients_already_know() -> None:
    codes = {
        Refusal.SIGN_IN: "UNAUTHENTICATED",
        Refusal.MEMBERS_ONLY: "FORBIDDEN",
        Refusal.ADMINS_ONLY: "FORBIDDEN",
        Refusal.OWNER_OR_ADMIN: "FORBIDDEN",
        Refusal.PAGE_SIZE: "BAD_USER_INPUT",
        Refusal.BAD_CURSOR: "BAD_USER_INPUT",
        Refusal.WATCHED_MEMBER_REQUIRED: "BAD_USER_INPUT",
        Refusal.NO_SUCH_MEMBER: "BAD_USER_INPUT",
        Refusal.TOO_MANY_IDS: "BAD_USER_INPUT",
    }
    data = {"maximum": 100, "reason": "the cursor is not valid", "member_id": "nobody"}
    assert set(codes) == set(Refusal)
    for refusal, code in codes.items():
        error = refused(ReadRefused(refusal, **data))
        assert error.extensions == {"code": code}
        assert error.message
    assert refused(ReadRefused(Refusal.OWNER_OR_ADMIN)).message == (
        "Only this member (or an admin) can see this."
    )
    assert refused(ReadRefused(Refusal.PAGE_SIZE, maximum=100)).message == (
        "first must be between 0 and 100."
    )


async def test_any_record_by_id_reads_as_its_fields_do_and_anothers_as_if_unknown() -> None:
    ids = [ADA_NOTE.id, "no-such-record", ADA_LOT.id, DAN.id, ADA_DEBIT.id, ADA_TO_CHARLES.id]

    dan = PublicProfile.of(DAN, is_connection=False)  # a member is shown as its profile

    as_ada = await reader_for(AS_ADA).node_views(ids)
    assert as_ada == [ADA_NOTE, None, ADA_LOT, dan, ADA_DEBIT, ADA_TO_CHARLES]
    as_charles = await reader_for(Viewer(CHARLES.id, Role.MEMBER)).node_views(ids)
    assert as_charles == [ADA_NOTE, None, None, dan, None, ADA_TO_CHARLES]
    as_dan = await reader_for(AS_DAN).node_views(ids)
    assert as_dan == [None, None, None, dan, None, None]
    assert await reader_for(AS_ADMIN).node_views(ids) == as_ada
    assert await refusal_from(reader_for(None).node_views(ids)) is Refusal.SIGN_IN


async def test_many_ids_are_one_storage_call_per_kind_and_too_many_are_refused_unread() -> None:
    store = Store()
    ada = reader_for(AS_ADA, store)

    found = await ada.node_views([ADA_NOTE.id, *(f"unknown-{i}" for i in range(99))])
    assert found[0] == ADA_NOTE
    assert sorted(store.calls.made) == [
        "conversations.get_many",  # the ids
        "ledger.get_many",
        "lots.get_many",
        "members.get_many",
        "messages.get_many",  # with the note's conversation, to know who may read it
        "notifications.get_many",
        "purchases.get_many",
    ]
    store.calls.made.clear()
    with pytest.raises(ReadRefused) as too_many:
        await ada.node_views([ADA_NOTE.id] * 101)
    assert (too_many.value.refusal, too_many.value.data) == (
        Refusal.TOO_MANY_IDS,
        {"maximum": 100},
    )
    assert store.calls.made == []


def test_the_schema_reaches_neither_resolvers_nor_repositories_even_through_other_modules() -> None:
    package = Path(inmail.__file__).parent
    reached: set[str] = set()
    todo = [f"inmail.schema.{p.stem}" for p in (package / "schema").glob("*.py")]
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        relative = Path(*module.split(".")[1:])
        path = package / relative.with_suffix(".py")
        if not path.exists():
            path = package / relative / "__init__.py"
        if path.exists():
            todo.extend(m for m in imported_modules(path) if m.startswith("inmail."))
    upward = sorted(m for m in reached if m.startswith(("inmail.resolvers", "inmail.repositories")))
    assert upward == []
    assert "inmail.schema.types" in reached


async def test_asked_before_her_record_is_read_adas_awaiting_inmails_come_with_it() -> None:
    store = Store()
    ada = reader_for(AS_ADA, store, caller_id=ADA.id)
    to_charles, to_dan = (
        ada.awaiting_response(ADA.id, CHARLES.id),
        ada.awaiting_response(ADA.id, DAN.id),
    )
    charles, balance = ada.member(CHARLES.id), ada.balance(ADA.id)
    assert list(await asyncio.gather(to_charles, to_dan, charles, balance)) == [
        True,
        False,
        CHARLES,
        4,
    ]
    assert store.calls.made == ["members.get_many_with_own_lots_and_awaiting"]

    store.calls.made.clear()  # her record is read now: a question of its own
    assert await ada.awaiting_response(ADA.id, CHARLES.id) is True
    assert store.calls.made == ["conversations.awaiting_between"]


async def test_asked_after_her_record_was_read_the_answer_is_a_query_of_its_own() -> None:
    store = Store()
    ada = reader_for(AS_ADA, store, caller_id=ADA.id)
    assert await ada.member(ADA.id) == ADA
    assert await ada.awaiting_response(ADA.id, CHARLES.id) is True
    assert store.calls.made == ["members.get_many_with_lots", "conversations.awaiting_between"]


async def test_no_one_learns_what_awaits_another_members_answer() -> None:
    store = Store()
    dan = reader_for(AS_DAN, store, caller_id=DAN.id)
    with pytest.raises(ReadRefused) as caught:
        dan.awaiting_response(ADA.id, CHARLES.id).close()
    assert caught.value.refusal is Refusal.OWNER_OR_ADMIN
    assert store.calls.made == []


class Credentials:
    """The caller a reader asks for, which the test can withdraw; counts how often it is asked."""

    def __init__(self, viewer: Viewer | None) -> None:
        self.viewer = viewer
        self.asked = 0

    def __call__(self) -> Viewer | None:
        self.asked += 1
        return self.viewer


def reader_asking(credentials: Credentials) -> Reader:
    return Reader(
        credentials, Store(), clock=lambda: NOON, plans=DEFAULT_PLAN_TABLE, max_page_size=100
    )


async def test_the_caller_is_asked_on_every_check_and_a_withdrawn_one_is_refused_at_once() -> None:
    credentials = Credentials(AS_ADA)
    reader = reader_asking(credentials)

    assert reader.signed_in() is AS_ADA
    assert await reader.member(CHARLES.id) == CHARLES
    credentials.viewer = None  # a token that expired mid-connection, or a member that is gone
    assert await refusal_from(reader.viewer_member()) is Refusal.SIGN_IN
    assert credentials.asked == 3


# --- one read shared by a request's callers -----------------------------------------------------


async def test_a_shared_read_runs_once_and_ends_when_every_caller_waiting_on_it_has_gone() -> None:
    """A page asked for twice is read once; when every operation waiting on it is cancelled
    (a websocket `complete`), the read is cancelled too, and the next caller reads afresh."""
    started, cancelled = 0, 0
    release = asyncio.Event()

    async def read() -> int:
        nonlocal started, cancelled
        started += 1
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise
        return started

    shared = _Shared(read)
    one, two = asyncio.ensure_future(shared.get()), asyncio.ensure_future(shared.get())
    await asyncio.sleep(0)
    one.cancel()
    await asyncio.sleep(0)
    assert (started, cancelled) == (1, 0), "another caller still waits on it"
    two.cancel()
    await asyncio.gather(one, two, return_exceptions=True)
    await asyncio.sleep(0)
    assert (started, cancelled) == (1, 1), "nobody waits on it: it ends"

    release.set()
    assert list(await asyncio.gather(shared.get(), shared.get())) == [2, 2]
    assert await shared.get() == 2  # kept once read


class GrowingPurchases:
    """A member's purchases whose number grows with each write: a page's count is as of its own
    snapshot. A page read waits on `gate` when one is set."""

    def __init__(self) -> None:
        self.total = 3
        self.gate: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def page(self, member_id: str, first: int, after: str | None) -> Page[Purchase]:
        at = self.total
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()

        async def count() -> int:
            return at

        return Page([], has_next=False, count=count)


async def test_a_lists_count_is_shared_by_its_pages_and_forgotten_with_what_was_read() -> None:
    """Pages of one list in one request (another size, another cursor) share its count, read
    once. A read still under way when the reader is cleared (another operation of the same
    socket starts) keeps its count to itself: the next read of another page counts afresh."""
    store = Store()
    purchases = GrowingPurchases()
    store.purchases = purchases  # type: ignore[assignment]
    reader = reader_for(AS_ADA, store, caller_id=ADA.id)

    first = await reader.purchases(ADA.id, 10, None)
    purchases.total = 4
    second = await reader.purchases(ADA.id, 20, None)
    assert (await first.total_count(), await second.total_count()) == (3, 3)

    reader.clear()
    purchases.gate, purchases.reading = asyncio.Event(), asyncio.Event()
    straddling = asyncio.create_task(reader.purchases(ADA.id, 10, None))
    await purchases.reading.wait()
    purchases.total = 5
    reader.clear()
    purchases.gate.set()
    old = await straddling
    purchases.gate = None
    fresh = await reader.purchases(ADA.id, 5, None)

    assert (await old.total_count(), await fresh.total_count()) == (4, 5)


async def test_an_operation_cancelled_while_a_record_is_read_leaves_the_read_to_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A socket's operations share its reader: one ended (a websocket `complete`) while a
    record it shares with another is read must not end that read for the other."""
    store = Store()
    release = asyncio.Event()
    real_get_many = store.members.get_many

    async def slow_get_many(ids: Iterable[str]) -> dict[str, Member]:
        await release.wait()
        return await real_get_many(ids)

    monkeypatch.setattr(store.members, "get_many", slow_get_many)
    reader = reader_for(AS_ADMIN, store)
    ended = asyncio.ensure_future(reader.member(CHARLES.id))
    staying = asyncio.ensure_future(reader.member(CHARLES.id))
    await asyncio.sleep(0.01)  # both wait on the one read of Charles
    ended.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await staying == CHARLES
    with pytest.raises(asyncio.CancelledError):
        await ended
    # The next operation reads Charles as well, without reading him again.
    assert await reader.member(CHARLES.id) == CHARLES
    assert store.calls.made.count("members.get_many") == 1


async def test_a_read_every_operation_left_that_fails_leaves_no_error_unretrieved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its error is taken: the event loop would otherwise log it as never retrieved."""
    store = Store()
    release = asyncio.Event()

    async def failing_get_many(ids: Iterable[str]) -> dict[str, Member]:
        await release.wait()
        raise RuntimeError("the database went away")

    monkeypatch.setattr(store.members, "get_many", failing_get_many)
    unretrieved: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))
    reader = reader_for(AS_ADMIN, store)
    left = [asyncio.ensure_future(reader.member(CHARLES.id)) for _ in range(2)]
    await asyncio.sleep(0.01)
    for operation in left:
        operation.cancel()
    await asyncio.gather(*left, return_exceptions=True)
    release.set()
    await asyncio.sleep(0.01)
    del reader, left
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert unretrieved == []
