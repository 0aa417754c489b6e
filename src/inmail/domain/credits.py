"""Credit lots and the balance: what is spendable now, which lot pays, how much a grant may add."""

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
class CreditLot:
    id: str
    member_id: str
    source: CreditSource
    quantity: int
    remaining: int
    granted_at: datetime
    expires_at: datetime
    status: LotStatus

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
        return self.status is LotStatus.ACTIVE and self.remaining > 0 and now < self.expires_at

    def has_lapsed(self, now: datetime) -> bool:
        return self.status is LotStatus.ACTIVE and self.remaining > 0 and now >= self.expires_at


def expiry_for(granted_at: datetime) -> datetime:
    return granted_at + LOT_LIFETIME


def spend_order_key(lot: CreditLot) -> tuple[datetime, datetime, str]:
    return (lot.expires_at, lot.granted_at, lot.id)


def balance(lots: Iterable[CreditLot], now: datetime) -> int:
    return sum(lot.remaining for lot in lots if lot.is_spendable(now))


def pick_lot(lots: Iterable[CreditLot], now: datetime) -> CreditLot | None:
    return min((lot for lot in lots if lot.is_spendable(now)), key=spend_order_key, default=None)


def clamp_grant(quantity: int, current_balance: int, cap: int) -> int:
    if quantity < 0:
        raise ValueError(f"a grant cannot be negative ({quantity})")
    return max(0, min(quantity, cap - current_balance))
