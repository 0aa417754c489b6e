"""Credit lots and the balance: what is spendable now, which lot pays, how much a grant may add,
when a lot's member is told it expires."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

LOT_LIFETIME: timedelta = timedelta(days=90)


class CreditSource(StrEnum):
    MONTHLY_ALLOTMENT = "MONTHLY_ALLOTMENT"
    PURCHASE = "PURCHASE"
    CREDIT_BACK = "CREDIT_BACK"


class LotStatus(StrEnum):
    ACTIVE = "ACTIVE"
    DEPLETED = "DEPLETED"
    EXPIRED = "EXPIRED"
    FORFEITED = "FORFEITED"


class LedgerKind(StrEnum):
    GRANT = "GRANT"
    DEBIT = "DEBIT"
    CREDIT_BACK = "CREDIT_BACK"
    EXPIRE = "EXPIRE"
    FORFEIT = "FORFEIT"


@dataclass(frozen=True, slots=True)
class LotFilter:
    """Which of a member's lots a listing shows (and its count counts): those in one of
    `statuses` (all of them when None; none when empty), as of `now`: a lot LAPSED by then
    (past its expiry, not yet written EXPIRED) counts as EXPIRED. Without `now`, as stored."""

    member_id: str
    statuses: tuple[LotStatus, ...] | None = None
    now: datetime | None = None


@dataclass(frozen=True, slots=True)
class CreditLot:
    id: str
    member_id: str
    source: CreditSource
    quantity: int
    remaining: int
    granted_at: datetime
    expires_at: datetime
    status: LotStatus
    # What the lot came from, which its later entries (EXPIRE, FORFEIT) name too: the
    # conversation whose response earned a CREDIT_BACK, the purchase that bought a PURCHASE.
    conversation_id: str | None = None
    purchase_id: str | None = None

    def __post_init__(self) -> None:
        if self.quantity < 0:
            raise ValueError(f"lot {self.id}: quantity cannot be negative ({self.quantity})")
        if not 0 <= self.remaining <= self.quantity:
            raise ValueError(
                f"lot {self.id}: remaining ({self.remaining}) must be within 0..{self.quantity}"
            )
        # Naive datetimes would only fail later, deep inside a comparison, far from the cause.
        if self.granted_at.utcoffset() is None or self.expires_at.utcoffset() is None:
            raise ValueError(f"lot {self.id}: granted_at and expires_at must be timezone-aware")

    def is_spendable(self, now: datetime) -> bool:
        return SPENDABLE.matches(self, now)


@dataclass(frozen=True, slots=True)
class LotRule:
    """Which lots a rule counts at an instant: in `status`, holding credits, and either past
    their expiry (`expires_at <= now`) or not yet (`now < expires_at`).

    The rule's one definition: the database's queries (repositories/credit_lots.py) are
    translated from these fields, so what the API serves and what the wallet computes agree.
    """

    status: LotStatus
    past_expiry: bool

    def matches(self, lot: CreditLot, now: datetime) -> bool:
        return (
            lot.status is self.status
            and lot.remaining > 0
            and (lot.expires_at <= now) is self.past_expiry
        )


SPENDABLE = LotRule(LotStatus.ACTIVE, past_expiry=False)
"""Spendable now: ACTIVE, credits left, not yet expired (SPEC 3)."""
LAPSED = LotRule(LotStatus.ACTIVE, past_expiry=True)
"""Lapsed: still ACTIVE with credits left, but past its expiry; the expiry job's work (SPEC 3)."""


@dataclass(frozen=True, slots=True)
class ExpiryNoticeRule:
    """When a lot's CREDITS_EXPIRING notice is due (SPEC 5a): the lot is one `lots` counts
    (spendable: ACTIVE, credits left, not yet expired), its member was not told yet, and it
    expires within `lead` of now (the notice, configurable; from `lead` before its expiry).

    The rule's one definition: the scheduler's queries for the lots due a notice, its next
    notice time and the conditional mark that tells a lot's member once
    (repositories/notifications.py) are translated from it. Whether a lot was noticed is kept
    with the lot by the notifications' repository, so it is passed in.
    """

    lots: LotRule

    def __post_init__(self) -> None:
        if self.lots.past_expiry:
            raise ValueError("a lot's expiry notice is given before it expires")

    def awaits(self, lot: CreditLot, *, noticed: bool, now: datetime) -> bool:
        """Its member may still be told: the lot counts now and was not noticed."""
        return not noticed and self.lots.matches(lot, now)

    def due_at(self, expires_at: datetime, lead: timedelta) -> datetime:
        """When the notice of a lot expiring at `expires_at` falls due."""
        return expires_at - lead

    def latest_expiry_due(self, now: datetime, lead: timedelta) -> datetime:
        """The latest expiry of a lot whose notice is due at `now`."""
        return now + lead

    def is_due(self, lot: CreditLot, *, noticed: bool, now: datetime, lead: timedelta) -> bool:
        latest = self.latest_expiry_due(now, lead)
        return self.awaits(lot, noticed=noticed, now=now) and lot.expires_at <= latest


DEFAULT_EXPIRY_NOTICE = timedelta(days=7)
"""How long before its expiry a lot's notice is due, unless configured otherwise."""

EXPIRY_NOTICE_DUE = ExpiryNoticeRule(SPENDABLE)
"""A lot's CREDITS_EXPIRING notice is due (SPEC 5a)."""


# A grant key names what a grant is for, so that the ledger's unique index writes it once.
CYCLE_GRANT = "cycle"
PURCHASE_GRANT = "purchase"
CREDIT_BACK_GRANT = "credit-back"


def cycle_grant_key(subscription_id: str, cycle_start: datetime) -> str:
    """The identity of one cycle's allotment: granted at most once, whoever writes it."""
    return f"{CYCLE_GRANT}:{subscription_id}:{cycle_start.isoformat()}"


def purchase_grant_key(charge_id: str) -> str:
    """A purchase's lot is granted at most once per charge."""
    return f"{PURCHASE_GRANT}:{charge_id}"


def credit_back_grant_key(conversation_id: str) -> str:
    """An InMail earns its sender at most one credit back."""
    return f"{CREDIT_BACK_GRANT}:{conversation_id}"


def expiry_for(granted_at: datetime) -> datetime:
    return granted_at + LOT_LIFETIME


def spend_order_key(lot: CreditLot) -> tuple[datetime, datetime, str]:
    return (lot.expires_at, lot.granted_at, lot.id)


def pick_lot(lots: Iterable[CreditLot], now: datetime) -> CreditLot | None:
    return min((lot for lot in lots if lot.is_spendable(now)), key=spend_order_key, default=None)


def clamp_grant(quantity: int, current_balance: int, cap: int) -> int:
    if quantity < 0:
        raise ValueError(f"a grant cannot be negative ({quantity})")
    return max(0, min(quantity, cap - current_balance))


LapsedKey = tuple[datetime, str]
"""A lapsed lot's place in the expiry job's walk: (expiresAt, _id)."""


@dataclass(frozen=True, slots=True)
class LapsedMember:
    """A member holding lapsed lots, and where the walk that found it stands: the last lot its
    batch read (the next batch reads after it)."""

    member_id: str
    walked: LapsedKey


@dataclass(frozen=True, slots=True)
class ExpiringLot:
    """A live lot whose member is due a CREDITS_EXPIRING notice."""

    lot_id: str
    member_id: str
    expires_at: datetime
