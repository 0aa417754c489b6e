"""The object types of the public schema, each mapped from a domain record."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Generic, TypeVar

import strawberry
from strawberry.types import Info

from inmail.domain import billing, credits, model, plans
from inmail.domain import money as money_domain
from inmail.repositories.pages import BadCursor, Page
from inmail.schema.enums import (
    ConversationKind,
    ConversationState,
    CreditLotStatus,
    CreditSource,
    ErrorCode,
    InMailResponse,
    LedgerEntryKind,
    PlanType,
    SubscriptionStatus,
)
from inmail.schema.errors import bad_input

if TYPE_CHECKING:
    from inmail.resolvers.context import Context

    GraphInfo = Info[Context, None]
else:
    GraphInfo = Info

N = TypeVar("N")
R = TypeVar("R")


def ctx(info: GraphInfo) -> Context:
    return info.context


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


async def _paged(fetch: Callable[[], Awaitable[Page[R]]]) -> Page[R]:
    try:
        return await fetch()
    except BadCursor as exc:
        raise bad_input(f"after: {exc}.") from None


@strawberry.type
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
        return cls(
            type=policy.type,
            can_send_in_mail=policy.can_send_inmail,
            monthly_allotment=policy.monthly_allotment,
            max_balance=policy.max_balance,
            can_purchase_credits=policy.can_purchase,
            monthly_price=Money.from_domain(policy.monthly_price),
            credit_price=Money.from_domain(policy.credit_price)
            if policy.can_purchase and policy.credit_price
            else None,
        )


@strawberry.enum
class PurchaseStatus(Enum):
    COMPLETED = "COMPLETED"
    REFUNDED = "REFUNDED"


@strawberry.type
class Purchase:
    id: strawberry.ID
    quantity: int
    amount: Money
    status: PurchaseStatus
    at: datetime
    _lot_id: strawberry.Private[str | None]

    @classmethod
    def from_domain(cls, purchase: model.Purchase) -> Purchase:
        return cls(
            id=strawberry.ID(purchase.id),
            quantity=purchase.quantity,
            amount=Money.from_domain(purchase.amount),
            status=PurchaseStatus(purchase.status),
            at=purchase.at,
            _lot_id=purchase.lot_id,
        )

    @strawberry.field(description="The lot it granted; none once refunded.")
    async def lot(self, info: GraphInfo) -> CreditLot | None:
        if self._lot_id is None:
            return None
        lots = await ctx(info).deps.reads.lots.get_many([self._lot_id])
        found = lots.get(self._lot_id)
        return CreditLot.from_domain(found) if found else None


@strawberry.type
class PaymentMethod:
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_expired: bool

    @classmethod
    def from_domain(cls, card: billing.PaymentMethod, now: datetime) -> PaymentMethod:
        return cls(
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            is_expired=card.is_expired(now),
        )


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
        return cls(
            plan=Plan.from_domain(table.policy(sub.plan, sub.monthly_allotment)),
            status=sub.status,
            billing_day=sub.billing_day,
            current_period_start=sub.period_start,
            next_renewal_at=sub.next_renewal_at,
            payment_method=PaymentMethod.from_domain(card, now) if card else None,
            started_at=sub.started_at,
        )


@strawberry.type
class CreditLot:
    id: strawberry.ID
    source: CreditSource
    quantity: int
    remaining: int
    granted_at: datetime
    expires_at: datetime
    status: CreditLotStatus

    @classmethod
    def from_domain(cls, lot: credits.CreditLot) -> CreditLot:
        return cls(
            id=strawberry.ID(lot.id),
            source=lot.source,
            quantity=lot.quantity,
            remaining=lot.remaining,
            granted_at=lot.granted_at,
            expires_at=lot.expires_at,
            status=lot.status,
        )


@strawberry.type
class Edge(Generic[N]):
    cursor: str
    node: N


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
    def build(
        cls, page: Page[R], to_node: Callable[[R], N], count: Callable[[], Awaitable[int]]
    ) -> Connection[N]:
        return cls(
            edges=[Edge(cursor=cursor, node=to_node(item)) for cursor, item in page.items],
            page_info=PageInfo(has_next_page=page.has_next, end_cursor=page.end_cursor),
            _count=count,
        )


async def credit_lot_connection(
    info: GraphInfo,
    member_id: str,
    status: list[credits.LotStatus] | None,
    first: int | None,
    after: str | None,
) -> Connection[CreditLot]:
    c = ctx(info)
    size = c.page_size(first)
    lots = c.deps.reads.lots
    page = await _paged(lambda: lots.page(member_id, status, size, after))
    return Connection.build(page, CreditLot.from_domain, lambda: lots.count(member_id, status))


@strawberry.type
class LedgerEntry:
    id: strawberry.ID
    at: datetime
    kind: LedgerEntryKind
    delta: int
    balance_after: int
    requested: int | None = strawberry.field(
        description="For a grant: what it would have been before the cap clamped it."
    )
    _entry: strawberry.Private[model.LedgerEntry]

    @classmethod
    def from_domain(cls, entry: model.LedgerEntry) -> LedgerEntry:
        return cls(
            id=strawberry.ID(entry.id),
            at=entry.at,
            kind=entry.kind,
            delta=entry.delta,
            balance_after=entry.balance_after,
            requested=entry.requested,
            _entry=entry,
        )

    @strawberry.field
    async def lot(self, info: GraphInfo) -> CreditLot | None:
        if self._entry.lot_id is None:
            return None
        lot = await ctx(info).loaders.lot.load(self._entry.lot_id)
        return CreditLot.from_domain(lot) if lot else None

    @strawberry.field
    async def conversation(self, info: GraphInfo) -> Conversation | None:
        if self._entry.conversation_id is None:
            return None
        found = await ctx(info).loaders.conversation.load(self._entry.conversation_id)
        return Conversation.from_domain(found) if found else None


@strawberry.type
class Message:
    id: strawberry.ID
    body: str
    sent_at: datetime
    _author_id: strawberry.Private[str]

    @classmethod
    def from_domain(cls, message: model.Message) -> Message:
        return cls(
            id=strawberry.ID(message.id),
            body=message.body,
            sent_at=message.sent_at,
            _author_id=message.author_id,
        )

    @strawberry.field
    async def author(self, info: GraphInfo) -> Member:
        return await Member.load(info, self._author_id)


@strawberry.type
class Conversation:
    id: strawberry.ID
    kind: ConversationKind
    subject: str
    state: ConversationState
    sent_at: datetime
    responded_at: datetime | None
    response: InMailResponse | None
    credited_back: bool
    reminder_sent_at: datetime | None
    _c: strawberry.Private[model.Conversation]

    @classmethod
    def from_domain(cls, c: model.Conversation) -> Conversation:
        return cls(
            id=strawberry.ID(c.id),
            kind=c.kind,
            subject=c.subject,
            state=c.state,
            sent_at=c.sent_at,
            responded_at=c.responded_at,
            response=c.response,
            credited_back=c.credited_back,
            reminder_sent_at=c.reminder_sent_at,
            _c=c,
        )

    @strawberry.field
    async def sender(self, info: GraphInfo) -> Member:
        return await Member.load(info, self._c.sender_id)

    @strawberry.field
    async def recipient(self, info: GraphInfo) -> Member:
        return await Member.load(info, self._c.recipient_id)

    @strawberry.field
    def messages(self) -> list[Message]:
        return [Message.from_domain(m) for m in self._c.messages]


@strawberry.type
class Member:
    id: strawberry.ID
    name: str
    headline: str | None
    _m: strawberry.Private[model.Member]

    @classmethod
    def from_domain(cls, member: model.Member) -> Member:
        return cls(
            id=strawberry.ID(member.id), name=member.name, headline=member.headline, _m=member
        )

    @classmethod
    async def load(cls, info: GraphInfo, member_id: str) -> Member:
        member = await ctx(info).loaders.member.load(member_id)
        if member is None:  # pragma: no cover - conversations only name existing members
            raise bad_input("A referenced member no longer exists.")
        return cls.from_domain(member)

    @strawberry.field
    def plan(self, info: GraphInfo) -> Plan:
        return Plan.from_domain(self._m.policy(ctx(info).deps.plans))

    @strawberry.field(description="Whether this member is a 1st-degree connection of the viewer.")
    async def is_connection(self, info: GraphInfo) -> bool:
        viewer = ctx(info).viewer()
        if viewer is None or viewer.member_id is None:
            return False
        return viewer.member_id in self._m.connections

    @strawberry.field(description="The fields below are visible to the member and to admins only.")
    def subscription(self, info: GraphInfo) -> PremiumSubscription | None:
        c = ctx(info)
        c.require_owner_or_admin(self._m.id)
        return PremiumSubscription.from_domain(self._m, c.deps.plans, c.deps.now())

    @strawberry.field(description="Credits left now: what the InMail compose window shows.")
    async def inmail_balance(self, info: GraphInfo) -> int | None:
        c = ctx(info)
        c.require_owner_or_admin(self._m.id)
        return await c.loaders.balance.load(self._m.id)

    @strawberry.field
    async def credit_lots(
        self,
        info: GraphInfo,
        status: list[CreditLotStatus] | None = None,
        first: int | None = 20,
        after: str | None = None,
    ) -> Connection[CreditLot] | None:
        ctx(info).require_owner_or_admin(self._m.id)
        return await credit_lot_connection(info, self._m.id, status, first, after)

    @strawberry.field
    async def ledger(
        self, info: GraphInfo, first: int | None = 20, after: str | None = None
    ) -> Connection[LedgerEntry] | None:
        c = ctx(info)
        c.require_owner_or_admin(self._m.id)
        size = c.page_size(first)
        repo, member_id = c.deps.reads.ledger, self._m.id
        page = await _paged(lambda: repo.page(member_id, size, after))
        return Connection.build(page, LedgerEntry.from_domain, lambda: repo.count(member_id))

    @strawberry.field
    async def conversations(
        self,
        info: GraphInfo,
        state: ConversationState | None = None,
        first: int | None = 20,
        after: str | None = None,
    ) -> Connection[Conversation] | None:
        c = ctx(info)
        c.require_owner_or_admin(self._m.id)
        size = c.page_size(first)
        repo, member_id = c.deps.reads.conversations, self._m.id
        page = await _paged(lambda: repo.page_for(member_id, state, size, after))
        for _, conversation in page.items:
            c.loaders.conversation.prime(conversation.id, conversation)
        return Connection.build(
            page, Conversation.from_domain, lambda: repo.count_for(member_id, state)
        )

    @strawberry.field(description="Credits bought, newest first.")
    async def purchases(
        self, info: GraphInfo, first: int | None = 20, after: str | None = None
    ) -> Connection[Purchase] | None:
        c = ctx(info)
        c.require_owner_or_admin(self._m.id)
        size = c.page_size(first)
        repo, member_id = c.deps.reads.purchases, self._m.id
        page = await _paged(lambda: repo.page(member_id, size, after))
        return Connection.build(page, Purchase.from_domain, lambda: repo.count(member_id))


@strawberry.type(description="What the InMail compose window needs before the viewer writes.")
class ComposeInfo:
    can_send: bool
    reason: ErrorCode | None = strawberry.field(
        description="Why the viewer cannot send an InMail to this recipient, when they cannot."
    )
    credits_left: int
    recipient_is_connection: bool


@strawberry.type
class BalanceUpdate:
    member_id: strawberry.ID
    balance: int
    delta: int
    reason: LedgerEntryKind
    at: datetime
