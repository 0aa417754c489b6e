"""The service's records: members, subscriptions, conversations, ledger entries, purchases."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from inmail.domain.billing import PaymentMethod, cycle_containing, next_cycle_after
from inmail.domain.conversations import ConversationState, InMailResponse
from inmail.domain.credits import LedgerKind
from inmail.domain.money import Money
from inmail.domain.plans import PlanPolicy, PlanTable, PlanType


class SubscriptionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    CANCELED = "CANCELED"


class ConversationKind(StrEnum):
    INMAIL = "INMAIL"
    DIRECT = "DIRECT"


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    plan: PlanType
    status: SubscriptionStatus
    billing_day: int
    started_at: datetime
    period_start: datetime
    next_renewal_at: datetime | None
    monthly_allotment: int | None = None  # LEGACY_PREMIUM's grandfathered terms

    @classmethod
    def start(
        cls,
        subscription_id: str,
        plan: PlanType,
        at: datetime,
        billing_day: int,
        monthly_allotment: int | None = None,
    ) -> Subscription:
        return cls(
            id=subscription_id,
            plan=plan,
            status=SubscriptionStatus.ACTIVE,
            billing_day=billing_day,
            started_at=at,
            period_start=cycle_containing(at, billing_day),
            next_renewal_at=next_cycle_after(at, billing_day),
            monthly_allotment=monthly_allotment,
        )

    @property
    def is_active(self) -> bool:
        return self.status is SubscriptionStatus.ACTIVE

    def renewed(self, cycle_start: datetime) -> Subscription:
        return replace(
            self,
            period_start=cycle_start,
            next_renewal_at=next_cycle_after(cycle_start, self.billing_day),
        )

    def canceled(self) -> Subscription:
        return replace(self, status=SubscriptionStatus.CANCELED, next_renewal_at=None)


@dataclass(frozen=True, slots=True)
class RenewalRule:
    """When a subscription has a cycle to grant: in this status, its next cycle already begun.

    The scheduler's query for members due (repositories/members.py) is derived from it.
    """

    status: SubscriptionStatus

    def is_due(self, subscription: Subscription | None, now: datetime) -> bool:
        return (
            subscription is not None
            and subscription.status is self.status
            and subscription.next_renewal_at is not None
            and subscription.next_renewal_at <= now
        )


RENEWAL_DUE = RenewalRule(SubscriptionStatus.ACTIVE)


@dataclass(frozen=True, slots=True)
class RecentSends:
    """When a member made its latest sends of one kind, as many as its limit counts (oldest
    first): enough to tell how many fall in any minute."""

    times: tuple[datetime, ...] = ()


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str
    headline: str | None
    plan: PlanType
    created_at: datetime
    subscription: Subscription | None = None
    payment_method: PaymentMethod | None = None
    connections: frozenset[str] = field(default_factory=frozenset)
    ledger_seq: int = 0
    recent_inmails: RecentSends = RecentSends()  # services/rate_limits.py
    # When its latest ledger entry is dated (None before its first, and for a member last
    # written before this was kept): a later change of its credits is dated after it, unless it
    # is far ahead of the clock (services/base.py, `change_time`).
    ledger_at: datetime | None = None

    def policy(self, plans: PlanTable) -> PlanPolicy:
        allotment = self.subscription.monthly_allotment if self.subscription else None
        return plans.policy(self.plan, allotment)

    def is_connected_to(self, other_id: str) -> bool:
        return other_id in self.connections

    @property
    def terms(self) -> str:
        """Which subscription the member is on, and whether it runs: a paid plan change asked
        for on these terms is applied only while they hold (SPEC 2: a later change or a
        cancellation is not undone by an earlier request's charge)."""
        subscription = self.subscription
        return "none" if subscription is None else f"{subscription.id}:{subscription.status}"


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    author_id: str
    body: str
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class Conversation:
    """An InMail, or the direct thread of two connections; its messages are kept apart from it.

    `sender_id` started it (sent the InMail, or wrote the thread's first message).
    `first_message` is the InMail's own message when it is kept with the conversation (one
    write sends both); it is the oldest of the thread, and the thread's other messages, like
    every message of a conversation stored before, are kept apart.
    """

    id: str
    kind: ConversationKind
    sender_id: str
    recipient_id: str
    subject: str
    state: ConversationState
    sent_at: datetime
    responded_at: datetime | None = None
    response: InMailResponse | None = None
    credited_back: bool = False
    reminder_sent_at: datetime | None = None
    reminder_due_at: datetime | None = None
    first_message: Message | None = None

    def has_party(self, member_id: str) -> bool:
        return member_id in (self.sender_id, self.recipient_id)


@dataclass(frozen=True, slots=True)
class ReminderRule:
    """When an InMail's reminder is due (SPEC 5): still in this state, not reminded yet, and its
    reminder time reached.

    The scheduler's queries for reminders due (repositories/conversations.py) and the index
    that serves them are derived from it.
    """

    state: ConversationState

    def is_due(self, conversation: Conversation, now: datetime) -> bool:
        return (
            conversation.state is self.state
            and conversation.reminder_sent_at is None
            and conversation.reminder_due_at is not None
            and conversation.reminder_due_at <= now
        )


REMINDER_DUE = ReminderRule(ConversationState.AWAITING_RESPONSE)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: str
    member_id: str
    seq: int
    at: datetime
    kind: LedgerKind
    delta: int
    balance_after: int
    lot_id: str | None = None
    conversation_id: str | None = None
    purchase_id: str | None = None
    grant_key: str | None = None
    requested: int | None = None  # for a grant: what it would have been before the cap


class PurchaseStatus(StrEnum):
    COMPLETED = "COMPLETED"  # its lot granted
    REFUNDED = "REFUNDED"  # its charge given back


@dataclass(frozen=True, slots=True)
class Purchase:
    """Extra credits bought: COMPLETED (its lot granted) or REFUNDED (its charge given back)."""

    id: str
    member_id: str
    quantity: int
    charge_id: str
    lot_id: str | None
    at: datetime
    idempotency_key: str
    amount: Money
    status: PurchaseStatus = PurchaseStatus.COMPLETED
