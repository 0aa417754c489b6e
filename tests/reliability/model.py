"""A small reference model of InMail credits, written from SPEC.md alone (sections 1-7).

It knows nothing of the service's code: plans are SPEC's table, cycles are computed from the
anchor day, lots and the ledger are kept the way SPEC describes them, and time moves the way a
scheduler that never missed a beat would move it (every grant and expiry at its own instant,
an expiry before a grant at the same instant, since a credit is spendable only while
now < expiresAt). Where SPEC leaves an order of checks open, the model says which it expects.
"""

from __future__ import annotations

import calendar
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

LIFETIME = timedelta(days=90)
CREDIT_BACK_WINDOW = timedelta(days=90)
REMINDER_DELAY = timedelta(hours=48)
MAX_PURCHASE = 10
LEGACY_DEFAULT_ALLOTMENT = 10
LEGACY_CAP_MULTIPLIER = 3

# SPEC 1: can send, monthly allotment, cap, can buy.
PLANS: dict[str, tuple[bool, int, int, bool]] = {
    "BASIC": (False, 0, 0, False),
    "PREMIUM_CAREER": (True, 5, 15, True),
    "PREMIUM_BUSINESS": (True, 15, 45, True),
    "SALES_NAVIGATOR": (True, 20, 60, False),
    "RECRUITER_LITE": (True, 30, 90, False),
    "LEGACY_PREMIUM": (True, LEGACY_DEFAULT_ALLOTMENT, 0, True),
}

_order = itertools.count()


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def cycle_start(year: int, month: int, anchor: int) -> datetime:
    """The anchor day at 00:00, or the month's last day when the month is shorter (SPEC 2)."""
    return datetime(year, month, min(anchor, calendar.monthrange(year, month)[1]), tzinfo=UTC)


def cycle_containing(t: datetime, anchor: int) -> datetime:
    start = cycle_start(t.year, t.month, anchor)
    return start if start <= t else cycle_start(*_previous_month(t.year, t.month), anchor)


def next_cycle_after(t: datetime, anchor: int) -> datetime:
    start = cycle_start(t.year, t.month, anchor)
    return start if start > t else cycle_start(*_next_month(t.year, t.month), anchor)


def card_expired(card: tuple[int, int] | None, now: datetime) -> bool:
    """A card is good through its expiry month (SPEC 2: "expiry month passed")."""
    if card is None:
        return False
    month, year = card
    return now >= datetime(*_next_month(year, month), 1, tzinfo=UTC)


def terms(plan: str, legacy_allotment: int | None) -> tuple[int, int]:
    """(monthly allotment, cap) of a plan; LEGACY_PREMIUM's come from the subscription."""
    _, allotment, cap, _ = PLANS[plan]
    if plan == "LEGACY_PREMIUM":
        allotment = legacy_allotment or LEGACY_DEFAULT_ALLOTMENT
        cap = LEGACY_CAP_MULTIPLIER * allotment
    return allotment, cap


@dataclass
class Lot:
    source: str
    quantity: int
    remaining: int
    granted_at: datetime
    status: str = "ACTIVE"
    order: int = field(default_factory=lambda: next(_order))

    @property
    def expires_at(self) -> datetime:
        return self.granted_at + LIFETIME

    def spend_key(self) -> tuple[datetime, datetime, int]:
        return (self.expires_at, self.granted_at, self.order)

    def view(self) -> tuple[object, ...]:
        return (
            self.source,
            self.quantity,
            self.remaining,
            iso(self.granted_at),
            iso(self.expires_at),
            self.status,
        )


@dataclass
class Entry:
    at: datetime
    kind: str
    delta: int
    balance_after: int

    def view(self) -> tuple[object, ...]:
        return (iso(self.at), self.kind, self.delta, self.balance_after)


@dataclass
class Subscription:
    plan: str
    active: bool
    anchor: int
    period_start: datetime
    legacy_allotment: int | None


@dataclass
class Member:
    name: str
    plan: str
    subscription: Subscription | None
    card: tuple[int, int] | None
    lots: list[Lot] = field(default_factory=list)
    ledger: list[Entry] = field(default_factory=list)
    connections: set[int] = field(default_factory=set)

    @property
    def legacy_allotment(self) -> int | None:
        return self.subscription.legacy_allotment if self.subscription else None

    @property
    def cap(self) -> int:
        return terms(self.plan, self.legacy_allotment)[1]

    @property
    def held(self) -> int:
        return sum(lot.remaining for lot in self.lots if lot.status == "ACTIVE")

    def balance(self, now: datetime) -> int:
        return sum(
            lot.remaining for lot in self.lots if lot.status == "ACTIVE" and now < lot.expires_at
        )

    @property
    def active(self) -> bool:
        return self.subscription is not None and self.subscription.active

    def next_renewal(self) -> datetime | None:
        if not self.active:
            return None
        assert self.subscription is not None
        return next_cycle_after(self.subscription.period_start, self.subscription.anchor)


@dataclass
class Conversation:
    sender: int
    recipient: int
    sent_at: datetime
    state: str = "AWAITING_RESPONSE"
    responded_at: datetime | None = None
    credited_back: bool = False
    reminder_sent_at: datetime | None = None


class Refused(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Model:
    def __init__(self, now: datetime) -> None:
        self.now = now
        self.members: list[Member] = []
        self.conversations: list[Conversation] = []
        # (member, key) -> what the first successful request under the key did
        self.sends: dict[tuple[int, str], tuple[int, int, int]] = {}  # recipient, conv, left
        self.purchases: dict[tuple[int, str], tuple[int, int]] = {}  # quantity, credits left
        self.charges: dict[int, int] = {}
        self.plan_charges: dict[int, int] = {}  # paid plan changes, each charged once

    # Time.

    def advance(self, delta: timedelta) -> None:
        target = self.now + delta
        for member in self.members:
            self._bring_up_to(member, target)
        for conversation in self.conversations:
            due = conversation.sent_at + REMINDER_DELAY
            if (
                conversation.reminder_sent_at is None
                and due <= target
                and (conversation.responded_at is None or conversation.responded_at > due)
            ):
                conversation.reminder_sent_at = due
        self.now = target

    def _bring_up_to(self, member: Member, until: datetime) -> None:
        """Every expiry and cycle start up to `until`, in time order; an expiry goes first."""
        while True:
            lapsed = [
                lot
                for lot in member.lots
                if lot.status == "ACTIVE" and lot.remaining > 0 and lot.expires_at <= until
            ]
            expiring = min(lapsed, key=Lot.spend_key, default=None)
            renewal = member.next_renewal()
            if renewal is not None and renewal > until:
                renewal = None
            if expiring is not None and (renewal is None or expiring.expires_at <= renewal):
                remaining, expiring.remaining, expiring.status = expiring.remaining, 0, "EXPIRED"
                member.ledger.append(Entry(expiring.expires_at, "EXPIRE", -remaining, member.held))
            elif renewal is not None:
                assert member.subscription is not None
                allotment, cap = terms(member.plan, member.legacy_allotment)
                self._grant(member, "MONTHLY_ALLOTMENT", allotment, renewal, cap)
                member.subscription.period_start = renewal
            else:
                return

    def _grant(self, member: Member, source: str, quantity: int, at: datetime, cap: int) -> int:
        granted = max(0, min(quantity, cap - member.held))
        if granted:
            member.lots.append(Lot(source, granted, granted, at))
        kind = "CREDIT_BACK" if source == "CREDIT_BACK" else "GRANT"
        member.ledger.append(Entry(at, kind, granted, member.held))
        return granted

    def _forfeit_all(self, member: Member) -> None:
        holding = sorted(
            (lot for lot in member.lots if lot.status == "ACTIVE" and lot.remaining > 0),
            key=Lot.spend_key,
        )
        for lot in holding:
            remaining, lot.remaining, lot.status = lot.remaining, 0, "FORFEITED"
            member.ledger.append(Entry(self.now, "FORFEIT", -remaining, member.held))

    def _start(self, member: Member, plan: str, anchor: int, legacy: int | None) -> None:
        member.plan = plan
        member.subscription = Subscription(
            plan, True, anchor, cycle_containing(self.now, anchor), legacy
        )
        allotment, cap = terms(plan, legacy)
        self._grant(member, "MONTHLY_ALLOTMENT", allotment, self.now, cap)

    # Use cases.

    def create_member(
        self,
        name: str,
        plan: str,
        anchor: int | None,
        card: tuple[int, int] | None,
        legacy: int | None,
    ) -> int:
        member = Member(name, plan, None, card)
        self.members.append(member)
        if plan != "BASIC":
            self._start(member, plan, anchor or self.now.day, legacy)
        return len(self.members) - 1

    def connect(self, a: int, b: int) -> None:
        if a == b:
            raise Refused("INVALID_INPUT")
        self.members[a].connections.add(b)
        self.members[b].connections.add(a)

    def _awaiting(self, sender: int, recipient: int) -> bool:
        return any(
            c.sender == sender and c.recipient == recipient and c.state == "AWAITING_RESPONSE"
            for c in self.conversations
        )

    def send(self, sender_index: int, recipient_index: int, key: str) -> tuple[int, int, bool]:
        """(conversation, credits left, replayed); Refused with SPEC 4's code otherwise."""
        previous = self.sends.get((sender_index, key))
        if previous is not None or (sender_index, key) in self.purchases:
            if previous is None or previous[0] != recipient_index:
                raise Refused("IDEMPOTENCY_KEY_REUSED")
            return previous[1], previous[2], True
        sender = self.members[sender_index]
        if recipient_index == sender_index:
            raise Refused("CANNOT_MESSAGE_SELF")
        if recipient_index in sender.connections:
            raise Refused("RECIPIENT_IS_CONNECTION")
        if not PLANS[sender.plan][0]:
            raise Refused("UPGRADE_REQUIRED")
        if not sender.active:
            raise Refused("SUBSCRIPTION_INACTIVE")
        if card_expired(sender.card, self.now):
            raise Refused("PAYMENT_METHOD_EXPIRED")
        if self._awaiting(sender_index, recipient_index):
            raise Refused("AWAITING_RESPONSE")
        spendable = [
            lot
            for lot in sender.lots
            if lot.status == "ACTIVE" and lot.remaining > 0 and self.now < lot.expires_at
        ]
        if not spendable:
            raise Refused("INSUFFICIENT_CREDITS")
        lot = min(spendable, key=Lot.spend_key)
        lot.remaining -= 1
        if lot.remaining == 0:
            lot.status = "DEPLETED"
        sender.ledger.append(Entry(self.now, "DEBIT", -1, sender.held))
        self.conversations.append(Conversation(sender_index, recipient_index, self.now))
        conversation = len(self.conversations) - 1
        left = sender.balance(self.now)
        self.sends[(sender_index, key)] = (recipient_index, conversation, left)
        return conversation, left, False

    def respond(self, conversation_index: int, responder: int, response: str) -> bool:
        conversation = self.conversations[conversation_index]
        if responder not in (conversation.sender, conversation.recipient):
            raise Refused("NOT_FOUND")
        if responder != conversation.recipient:
            raise Refused("NOT_RECIPIENT")
        if conversation.responded_at is not None:
            raise Refused("ALREADY_RESPONDED")
        conversation.state = "DECLINED" if response == "NOT_INTERESTED" else "ACCEPTED"
        conversation.responded_at = self.now
        sender = self.members[conversation.sender]
        if sender.active and self.now < conversation.sent_at + CREDIT_BACK_WINDOW:
            granted = self._grant(sender, "CREDIT_BACK", 1, self.now, sender.cap)
            conversation.credited_back = granted == 1
        return conversation.credited_back

    def send_message(
        self, author: int, recipient: int | None, conversation_index: int | None
    ) -> None:
        if conversation_index is not None:
            conversation = self.conversations[conversation_index]
            if author not in (conversation.sender, conversation.recipient):
                raise Refused("NOT_FOUND")
            if conversation.state == "AWAITING_RESPONSE":
                raise Refused("AWAITING_RESPONSE")
            return
        assert recipient is not None
        if recipient == author:
            raise Refused("CANNOT_MESSAGE_SELF")
        if recipient not in self.members[author].connections:
            raise Refused("NOT_CONNECTED")

    def purchase(self, member_index: int, quantity: int, key: str) -> tuple[int, bool]:
        """(credits left, replayed); Refused with SPEC 6's code otherwise."""
        if not 1 <= quantity <= MAX_PURCHASE:
            raise Refused("INVALID_INPUT")
        previous = self.purchases.get((member_index, key))
        if previous is not None or (member_index, key) in self.sends:
            if previous is None or previous[0] != quantity:
                raise Refused("IDEMPOTENCY_KEY_REUSED")
            return previous[1], True
        member = self.members[member_index]
        if not PLANS[member.plan][3]:
            raise Refused("PURCHASE_NOT_ALLOWED")
        if not member.active:
            raise Refused("SUBSCRIPTION_INACTIVE")
        if member.card is None or card_expired(member.card, self.now):
            raise Refused("PAYMENT_METHOD_EXPIRED")
        if member.balance(self.now) + quantity > member.cap:
            raise Refused("CAP_EXCEEDED")
        self._grant(member, "PURCHASE", quantity, self.now, member.cap)
        left = member.balance(self.now)
        self.purchases[(member_index, key)] = (quantity, left)
        self.charges[member_index] = self.charges.get(member_index, 0) + 1
        return left, False

    def update_card(self, member_index: int, card: tuple[int, int]) -> None:
        if card_expired(card, self.now):
            raise Refused("INVALID_INPUT")
        self.members[member_index].card = card

    def change_plan(self, member_index: int, plan: str, legacy: int | None) -> None:
        member = self.members[member_index]
        if legacy is not None or plan == "LEGACY_PREMIUM":  # SPEC 2: an admin's choice only
            raise Refused("PLAN_NOT_AVAILABLE")
        if plan == "BASIC":  # SPEC 2: changing to BASIC is a cancellation
            if member.active:
                self._forfeit_all(member)
                assert member.subscription is not None
                member.subscription.active = False
            member.plan = "BASIC"
            return
        current = member.subscription
        if (
            current is not None
            and current.active
            and member.plan == plan
            and legacy in (None, current.legacy_allotment)
        ):
            return  # already on this plan
        if member.card is None or card_expired(member.card, self.now):
            raise Refused("PAYMENT_METHOD_EXPIRED")  # SPEC 2: paid before anything changes
        self.plan_charges[member_index] = self.plan_charges.get(member_index, 0) + 1
        self._forfeit_all(member)
        if legacy is None and plan == "LEGACY_PREMIUM" and current is not None:
            legacy = current.legacy_allotment
        self._start(member, plan, self.now.day, legacy)

    def cancel(self, member_index: int) -> None:
        member = self.members[member_index]
        if not member.active:
            raise Refused("SUBSCRIPTION_INACTIVE")
        self._forfeit_all(member)
        assert member.subscription is not None
        member.subscription.active = False
