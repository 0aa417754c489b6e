"""The object types of the public schema, each mapped from a domain record."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Generic, Self, TypeVar

import strawberry
from strawberry.types.nodes import SelectedField, Selection

from inmail.domain import access, billing, credits, model, notifications, plans, rules
from inmail.domain import money as money_domain
from inmail.domain.access import DEFAULT_PAGE_SIZE, NodeView
from inmail.domain.conversations import ConversationFilter
from inmail.domain.profiles import PublicProfile
from inmail.schema.context import GraphInfo, Listing, reads
from inmail.schema.enums import (
    ConversationEventKind,
    ConversationKind,
    ConversationRole,
    ConversationState,
    CreditLotStatus,
    CreditSource,
    ErrorCode,
    InMailResponse,
    LedgerEntryKind,
    NotificationKind,
    PlanType,
    PurchaseStatus,
    SubscriptionStatus,
)
from inmail.schema.errors import bad_input

__all__ = ["GraphInfo"]

N = TypeVar("N")
R = TypeVar("R")
T = TypeVar("T")
Rec = TypeVar("Rec")


_INIT_FIELDS: dict[type, tuple[str, ...]] = {}


def _init_fields(cls: type) -> tuple[str, ...]:
    """The names a schema type is made with, listed once per type."""
    names = _INIT_FIELDS.get(cls)
    if names is None:
        fields = dataclasses.fields(cls)
        names = _INIT_FIELDS[cls] = tuple(f.name for f in fields if f.init)
    return names


def _mapped(cls: type[T], record: object, **values: object) -> T:
    """An object of the schema type `cls` whose fields not given in `values` take the record's
    attributes of the same name (a field the record lacks is a mistake, and raises)."""
    for name in _init_fields(cls):
        if name not in values:
            values[name] = getattr(record, name)
    return cls(**values)


async def _linked(
    record_id: str | None, read: Callable[[str], Awaitable[R | None]], to_node: Callable[[R], N]
) -> N | None:
    """The object a record links to by id: none where it links to none, or to none that the
    viewer may see."""
    if record_id is None:
        return None
    found = await read(record_id)
    return None if found is None else to_node(found)


def _selected_names(selections: Sequence[Selection]) -> set[str]:
    """The names of every field selected below these, fragments included."""
    names: set[str] = set()
    for selection in selections:
        if isinstance(selection, SelectedField):
            names.add(selection.name)
        names |= _selected_names(selection.selections)
    return names


@strawberry.interface(description="An object with a global id: fetch any of them with Query.node.")
class Node:
    id: strawberry.ID


@strawberry.type
class _RecordNode(Node, Generic[Rec]):
    """A node that keeps the whole domain record it was mapped from: its fields that read
    further (links, lists) start from that record."""

    _record: strawberry.Private[Rec]

    @classmethod
    def from_domain(cls, record: Rec) -> Self:
        return _mapped(cls, record, _record=record)


@strawberry.type
class PageInfo:
    has_next_page: bool
    start_cursor: str | None
    end_cursor: str | None
    _previous: strawberry.Private[Callable[[], Awaitable[bool]]]

    @strawberry.field(
        description="Whether items precede this page: an `after` cursor was given and the "
        "list holds items at or before it (asked of the database only when selected)."
    )
    async def has_previous_page(self) -> bool:
        return await self._previous()


@strawberry.type(
    description="An amount of money in the currency's minor unit (cents), never a float."
)
class Money:
    amount: int = strawberry.field(description="In the currency's minor unit (cents).")
    currency: str = strawberry.field(description="ISO 4217, for example USD.")

    @classmethod
    def from_domain(cls, money: money_domain.Money) -> Money:
        return cls(amount=money.amount, currency=money.currency)


@strawberry.type
class Plan:
    type: PlanType
    can_send_in_mail: bool = strawberry.field(name="canSendInMail")
    monthly_allotment: int
    max_balance: int
    can_purchase_credits: bool
    monthly_price: Money
    credit_price: Money | None = strawberry.field(
        description="The price of one extra credit, for plans that can buy them."
    )

    @classmethod
    def from_domain(cls, policy: plans.PlanPolicy) -> Plan:
        return _mapped(
            cls,
            policy,
            can_send_in_mail=policy.can_send_inmail,
            can_purchase_credits=policy.can_purchase,
            monthly_price=Money.from_domain(policy.monthly_price),
            credit_price=Money.from_domain(policy.credit_price)
            if policy.can_purchase and policy.credit_price
            else None,
        )


@strawberry.type
class Purchase(Node):
    id: strawberry.ID
    quantity: int
    amount: Money
    status: PurchaseStatus
    at: datetime
    _lot_id: strawberry.Private[str | None]

    @classmethod
    def from_domain(cls, purchase: model.Purchase) -> Purchase:
        return _mapped(
            cls,
            purchase,
            amount=Money.from_domain(purchase.amount),
            _lot_id=purchase.lot_id,
        )

    @strawberry.field(description="The lot it granted; none once refunded.")
    async def lot(self, info: GraphInfo) -> CreditLot | None:
        return await _linked(self._lot_id, reads(info).lot, CreditLot.from_domain)


@strawberry.type
class PaymentMethod:
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_expired: bool

    @classmethod
    def from_domain(cls, card: billing.PaymentMethod, now: datetime) -> PaymentMethod:
        return _mapped(cls, card, is_expired=card.is_expired(now))


@strawberry.type
class PremiumSubscription:
    plan: Plan
    status: SubscriptionStatus
    billing_day: int = strawberry.field(
        description="Day of month (1-31) on which each billing cycle starts."
    )
    current_period_start: datetime
    next_renewal_at: datetime | None
    payment_method: PaymentMethod | None
    started_at: datetime

    @classmethod
    def from_domain(
        cls, member: model.Member, table: plans.PlanTable, now: datetime
    ) -> PremiumSubscription | None:
        sub = member.subscription
        if sub is None:
            return None
        card = member.payment_method
        return _mapped(
            cls,
            sub,
            plan=Plan.from_domain(table.policy(sub.plan, sub.monthly_allotment)),
            current_period_start=sub.period_start,
            payment_method=PaymentMethod.from_domain(card, now) if card else None,
        )


@strawberry.type
class CreditLot(_RecordNode[credits.CreditLot]):
    id: strawberry.ID
    source: CreditSource
    quantity: int
    remaining: int
    granted_at: datetime
    expires_at: datetime
    status: CreditLotStatus

    @strawberry.field(
        description="For a CREDIT_BACK lot: the conversation whose response earned it."
    )
    async def conversation(self, info: GraphInfo) -> Conversation | None:
        return await _linked(
            self._record.conversation_id, reads(info).conversation, Conversation.from_domain
        )

    @strawberry.field(description="For a PURCHASE lot: the purchase that bought it.")
    async def purchase(self, info: GraphInfo) -> Purchase | None:
        return await _linked(self._record.purchase_id, reads(info).purchase, Purchase.from_domain)


def _cursor_text(root: Edge[object]) -> str:
    """An edge's cursor, written out only for a client that asks for it."""
    return str(root._cursor)


@strawberry.type
class Edge(Generic[N]):
    cursor: str = strawberry.field(resolver=_cursor_text)
    node: N
    _cursor: strawberry.Private[object]


@strawberry.type
class Connection(Generic[N]):
    edges: list[Edge[N]]
    page_info: PageInfo
    _count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field
    def nodes(self) -> list[N]:
        return [edge.node for edge in self.edges]

    @strawberry.field
    async def total_count(self) -> int:
        return await self._count()

    @classmethod
    def build(cls, listing: Listing[R], to_node: Callable[[R], N]) -> Connection[N]:
        return cls(
            edges=[Edge(node=to_node(item), _cursor=cursor) for cursor, item in listing.items],
            page_info=PageInfo(
                has_next_page=listing.has_next,
                _previous=listing.has_previous,
                start_cursor=listing.start_cursor,
                end_cursor=listing.end_cursor,
            ),
            _count=listing.total_count,
        )


@strawberry.type
class LedgerEntry(_RecordNode[model.LedgerEntry]):
    id: strawberry.ID
    at: datetime
    kind: LedgerEntryKind
    delta: int
    balance_after: int
    requested: int | None = strawberry.field(
        description="For a grant: what it would have been before the cap clamped it."
    )

    @strawberry.field
    async def lot(self, info: GraphInfo) -> CreditLot | None:
        return await _linked(self._record.lot_id, reads(info).lot, CreditLot.from_domain)

    @strawberry.field
    async def conversation(self, info: GraphInfo) -> Conversation | None:
        return await _linked(
            self._record.conversation_id, reads(info).conversation, Conversation.from_domain
        )

    @strawberry.field(
        description="The purchase whose credits a grant added, or an EXPIRE or FORFEIT took away."
    )
    async def purchase(self, info: GraphInfo) -> Purchase | None:
        return await _linked(self._record.purchase_id, reads(info).purchase, Purchase.from_domain)


def _member_plan(self: Member, info: GraphInfo) -> Plan:
    """Member.plan: a resolver of its own, so that the fields keep their order in the schema
    (`isConnection` after it) while `isConnection` is a plain field."""
    return Plan.from_domain(self._profile.policy(reads(info).plans))


@strawberry.type
class Member(Node):
    """A member as the viewer is shown it: its public profile (SPEC 8), whoever the viewer is.
    Every other field reads by the member's id, and the reads refuse it to all but the member
    and admins."""

    id: strawberry.ID
    name: str
    headline: str | None
    _profile: strawberry.Private[PublicProfile]

    @classmethod
    def from_domain(cls, member: PublicProfile | model.Member) -> Member:
        """The member from its profile (the reads'), or from a whole record a mutation hands
        its owner or an admin, of which it keeps the profile alone."""
        profile = access.own_profile(member) if isinstance(member, model.Member) else member
        return _mapped(cls, profile, _profile=profile)

    @classmethod
    async def load(cls, info: GraphInfo, member_id: str) -> Member:
        profile = await reads(info).profile(member_id)
        if profile is None:  # pragma: no cover - conversations only name existing members
            raise bad_input("A referenced member no longer exists.")
        return cls.from_domain(profile)

    @classmethod
    def known_or_load(cls, info: GraphInfo, member_id: str) -> Member | Awaitable[Member]:
        """The member at once if this request has read it already, else its read."""
        known = reads(info).known_profile(member_id)
        return cls.from_domain(known) if known is not None else cls.load(info, member_id)

    plan: Plan = strawberry.field(resolver=_member_plan)
    # The profile's own: a plain field, read without a resolver call.
    is_connection: bool = strawberry.field(
        description="Whether this member is a 1st-degree connection of the viewer."
    )

    @strawberry.field(description="The fields below are visible to the member and to admins only.")
    async def subscription(self, info: GraphInfo) -> PremiumSubscription | None:
        r = reads(info)
        member = await r.current(self.id)
        return None if member is None else PremiumSubscription.from_domain(member, r.plans, r.now())

    @strawberry.field(description="Credits left now: what the InMail compose window shows.")
    async def inmail_balance(self, info: GraphInfo) -> int | None:
        return await reads(info).balance(self.id)

    @strawberry.field
    async def credit_lots(
        self,
        info: GraphInfo,
        status: list[CreditLotStatus] | None = None,
        first: int | None = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Connection[CreditLot] | None:
        listing = await reads(info).credit_lots(self.id, status, first, after)
        return Connection.build(listing, CreditLot.from_domain)

    @strawberry.field
    async def ledger(
        self, info: GraphInfo, first: int | None = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[LedgerEntry] | None:
        listing = await reads(info).ledger(self.id, first, after)
        return Connection.build(listing, LedgerEntry.from_domain)

    @strawberry.field
    async def conversations(
        self,
        info: GraphInfo,
        state: ConversationState | None = None,
        role: ConversationRole | None = None,
        first: int | None = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Connection[Conversation] | None:
        r = reads(info)
        which = ConversationFilter(self.id, state, role)
        listing = await r.conversations(which, first, after)
        asked = _selected_names(info.selected_fields)
        # A message's author is one of its conversation's parties.
        parties = not asked.isdisjoint(("sender", "recipient", "author"))
        if parties or "messages" in asked:
            records = [c for _, c in listing.items]
            await r.read_ahead(records, parties=parties, messages="messages" in asked)
        return Connection.build(listing, Conversation.from_domain)

    @strawberry.field(description="The member's notifications, newest first.")
    async def notifications(
        self,
        info: GraphInfo,
        unread_only: bool | None = False,
        first: int | None = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Connection[Notification] | None:
        return await notification_connection(info, self.id, bool(unread_only), first, after)

    @strawberry.field(description="Credits bought, newest first.")
    async def purchases(
        self, info: GraphInfo, first: int | None = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[Purchase] | None:
        listing = await reads(info).purchases(self.id, first, after)
        return Connection.build(listing, Purchase.from_domain)


@strawberry.type
class Message(Node):
    id: strawberry.ID
    body: str
    sent_at: datetime
    _author_id: strawberry.Private[str]

    @classmethod
    def from_domain(cls, message: model.Message) -> Message:
        return _mapped(cls, message, _author_id=message.author_id)

    @strawberry.field(graphql_type=Member)
    def author(self, info: GraphInfo) -> Member | Awaitable[Member]:
        return Member.known_or_load(info, self._author_id)


@strawberry.type
class Conversation(_RecordNode[model.Conversation]):
    id: strawberry.ID
    kind: ConversationKind
    subject: str
    state: ConversationState
    sent_at: datetime
    responded_at: datetime | None
    response: InMailResponse | None
    credited_back: bool
    reminder_sent_at: datetime | None

    # Sender, recipient and messages answer at once when the page that listed the
    # conversation read them ahead (`Member.conversations`), and wait for their read if not.

    @strawberry.field(graphql_type=Member)
    def sender(self, info: GraphInfo) -> Member | Awaitable[Member]:
        return Member.known_or_load(info, self._record.sender_id)

    @strawberry.field(graphql_type=Member)
    def recipient(self, info: GraphInfo) -> Member | Awaitable[Member]:
        return Member.known_or_load(info, self._record.recipient_id)

    @strawberry.field(
        description="The latest 100 messages, oldest first.", graphql_type=list[Message]
    )
    def messages(self, info: GraphInfo) -> list[Message] | Awaitable[list[Message]]:
        known = reads(info).known_latest_messages(self._record)
        if known is not None:
            return [Message.from_domain(m) for m in known]
        return self._latest_messages(info)

    async def _latest_messages(self, info: GraphInfo) -> list[Message]:
        authors = "author" in _selected_names(info.selected_fields)
        found = await reads(info).latest_messages(self._record, authors=authors)
        return [Message.from_domain(m) for m in found]

    @strawberry.field(description="Every message, oldest first.")
    async def message_connection(
        self, info: GraphInfo, first: int | None = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[Message]:
        authors = "author" in _selected_names(info.selected_fields)
        listing = await reads(info).messages(self._record, first, after, authors=authors)
        return Connection.build(listing, Message.from_domain)


@strawberry.type(
    description="What the InMail compose window needs before the viewer writes to a recipient."
)
class ComposeInfo:
    can_send: bool
    reason: ErrorCode | None = strawberry.field(
        description="Why the viewer cannot send an InMail to this recipient, when they cannot."
    )
    credits_left: int
    recipient_is_connection: bool
    retry_after_seconds: int | None = strawberry.field(
        default=None,
        description="With reason RATE_LIMITED: the seconds until sendInMail would take this "
        "InMail, the `retryAfterSeconds` a send now would be refused with; null otherwise.",
    )

    @classmethod
    def from_domain(cls, window: rules.ComposeInfo) -> ComposeInfo:
        return _mapped(cls, window)


@strawberry.type
class BalanceUpdate:
    member_id: strawberry.ID
    balance: int
    delta: int
    reason: LedgerEntryKind
    at: datetime


@strawberry.type(description="A record of one event for one member (SPEC 5a).")
class Notification(_RecordNode[notifications.Notification]):
    id: strawberry.ID
    kind: NotificationKind
    at: datetime
    read_at: datetime | None

    @strawberry.field
    async def conversation(self, info: GraphInfo) -> Conversation | None:
        return await _linked(
            self._record.conversation_id, reads(info).conversation, Conversation.from_domain
        )

    @strawberry.field
    async def lot(self, info: GraphInfo) -> CreditLot | None:
        return await _linked(self._record.lot_id, reads(info).lot, CreditLot.from_domain)

    @strawberry.field
    async def purchase(self, info: GraphInfo) -> Purchase | None:
        return await _linked(self._record.purchase_id, reads(info).purchase, Purchase.from_domain)


def node_from_domain(record: NodeView) -> Node:
    """The schema's object for any record with an id (the answer of `node` and `nodes`)."""
    match record:
        case PublicProfile():
            return Member.from_domain(record)
        case model.Conversation():
            return Conversation.from_domain(record)
        case model.Message():
            return Message.from_domain(record)
        case credits.CreditLot():
            return CreditLot.from_domain(record)
        case model.LedgerEntry():
            return LedgerEntry.from_domain(record)
        case model.Purchase():
            return Purchase.from_domain(record)
        case notifications.Notification():
            return Notification.from_domain(record)


async def notification_connection(
    info: GraphInfo, member_id: str, unread_only: bool, first: int | None, after: str | None
) -> Connection[Notification]:
    listing = await reads(info).notifications(member_id, unread_only, first, after)
    return Connection.build(listing, Notification.from_domain)


@strawberry.type(description="Something that happened in one of the viewer's conversations.")
class ConversationEvent:
    kind: ConversationEventKind
    at: datetime
    _e: strawberry.Private[notifications.ConversationEvent]

    @classmethod
    def for_member(
        cls, event: notifications.ConversationEvent, member_id: str
    ) -> ConversationEvent:
        return cls(kind=event.kind_for(member_id), at=event.at, _e=event)

    @strawberry.field
    async def conversation(self, info: GraphInfo) -> Conversation:
        found = await reads(info).conversation(self._e.conversation_id)
        if found is None:  # pragma: no cover - a conversation is never deleted
            raise bad_input("The conversation no longer exists.")
        return Conversation.from_domain(found)

    @strawberry.field
    def message(self) -> Message | None:
        return Message.from_domain(self._e.message) if self._e.message is not None else None
