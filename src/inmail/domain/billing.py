"""Billing cycles from an anchor day, and the card on file.

A cycle starts on the anchor day at 00:00 UTC, or on the month's last day when the month
is shorter. Every start is derived from (year, month, anchor) alone, never from the
previous start, which is what keeps 31 Jan -> 29 Feb -> 31 Mar free of drift.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from inmail.domain.errors import DomainError, ErrorCode, Reason, whole_number_within
from inmail.domain.money import Money
from inmail.domain.text import shows_something, without_controls, without_direction_controls

ANCHOR_DAY_MIN = 1
ANCHOR_DAY_MAX = 31
BRAND_MAX = 30
EXP_YEAR_MIN = 2000
EXP_YEAR_MAX = 2100
_ASCII_DIGITS = frozenset("0123456789")


def validate_anchor_day(day: int) -> int:
    return whole_number_within(
        day,
        ANCHOR_DAY_MIN,
        ANCHOR_DAY_MAX,
        reason=Reason.BILLING_DAY_OUT_OF_RANGE,
        field="billingDay",
    )


def cycle_start_in_month(year: int, month: int, anchor_day: int) -> datetime:
    _require_anchor(anchor_day)
    last_day = calendar.monthrange(year, month)[1]
    return datetime(year, month, min(anchor_day, last_day), tzinfo=UTC)


def cycle_containing(t: datetime, anchor_day: int) -> datetime:
    t = _as_utc(t)
    start = cycle_start_in_month(t.year, t.month, anchor_day)
    if start <= t:
        return start
    return cycle_start_in_month(*_previous_month(t.year, t.month), anchor_day)


def next_cycle_after(t: datetime, anchor_day: int) -> datetime:
    t = _as_utc(t)
    start = cycle_start_in_month(t.year, t.month, anchor_day)
    if start > t:
        return start
    return cycle_start_in_month(*_next_month(t.year, t.month), anchor_day)


def cycle_starts(after: datetime, until: datetime, anchor_day: int) -> Iterator[datetime]:
    until = _as_utc(until)
    start = next_cycle_after(after, anchor_day)
    while start <= until:
        yield start
        start = cycle_start_in_month(*_next_month(start.year, start.month), anchor_day)


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    brand: str
    last4: str
    exp_month: int
    exp_year: int

    def is_expired(self, now: datetime) -> bool:
        # A card is good through the last instant of its expiry month.
        first_invalid_instant = datetime(*_next_month(self.exp_year, self.exp_month), 1, tzinfo=UTC)
        return now >= first_invalid_instant


def validate_payment_method(brand: str, last4: str, exp_month: int, exp_year: int) -> PaymentMethod:
    brand = brand.strip()
    if not 1 <= len(brand) <= BRAND_MAX:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.BRAND_LENGTH, "brand", maximum=BRAND_MAX)
    brand = without_direction_controls(without_controls(brand, "brand"), "brand")
    if not shows_something(brand):
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.BLANK, "brand")
    last4 = last4.strip()
    if len(last4) != 4 or not set(last4) <= _ASCII_DIGITS:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.LAST4_NOT_FOUR_DIGITS, "last4")
    if isinstance(exp_month, bool) or not 1 <= exp_month <= 12:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.EXP_MONTH_OUT_OF_RANGE, "expMonth")
    whole_number_within(
        exp_year, EXP_YEAR_MIN, EXP_YEAR_MAX, reason=Reason.EXP_YEAR_OUT_OF_RANGE, field="expYear"
    )
    return PaymentMethod(brand=brand, last4=last4, exp_month=exp_month, exp_year=exp_year)


def _require_anchor(anchor_day: int) -> None:
    # Callers validate user input with validate_anchor_day; reaching here out of range is a bug.
    if not ANCHOR_DAY_MIN <= anchor_day <= ANCHOR_DAY_MAX:
        raise ValueError(
            f"anchor day must be within {ANCHOR_DAY_MIN}..{ANCHOR_DAY_MAX}, got {anchor_day}"
        )


def _as_utc(t: datetime) -> datetime:
    if t.utcoffset() is None:
        raise ValueError(f"billing times must be timezone-aware, got naive {t!r}")
    return t.astimezone(UTC)


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


class ChargeStatus(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    REFUNDED = "REFUNDED"


@dataclass(frozen=True, slots=True)
class ChargeRecord:
    """A card charge as the payment gateway made it, and whether it was refunded."""

    id: str
    member_id: str
    idempotency_key: str
    amount: Money
    description: str
    card_last4: str
    at: datetime
    status: ChargeStatus
    refunded_at: datetime | None = None
