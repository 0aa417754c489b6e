from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice, pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inmail.domain.billing import (
    PaymentMethod,
    cycle_containing,
    cycle_start_in_month,
    cycle_starts,
    next_cycle_after,
    validate_anchor_day,
    validate_payment_method,
)
from support import check_bounded, refused_as_invalid_input


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_a_cycle_starts_at_midnight_utc_on_the_anchor_day() -> None:
    assert cycle_start_in_month(2025, 5, 14) == utc(2025, 5, 14)


def test_an_anchor_of_31_starts_on_the_last_day_of_a_shorter_month() -> None:
    assert cycle_start_in_month(2025, 4, 31) == utc(2025, 4, 30)
    assert cycle_start_in_month(2025, 2, 31) == utc(2025, 2, 28)
    assert cycle_start_in_month(2024, 2, 30) == utc(2024, 2, 29)


def test_an_anchor_of_31_returns_to_the_31st_after_february_without_drifting() -> None:
    starts = list(cycle_starts(utc(2024, 1, 1), utc(2024, 5, 31), anchor_day=31))
    assert starts == [
        utc(2024, 1, 31),
        utc(2024, 2, 29),
        utc(2024, 3, 31),
        utc(2024, 4, 30),
        utc(2024, 5, 31),
    ]


def test_the_cycle_containing_a_moment_is_the_latest_start_at_or_before_it() -> None:
    assert cycle_containing(utc(2025, 3, 10, 9, 30), anchor_day=15) == utc(2025, 2, 15)
    assert cycle_containing(utc(2025, 3, 15), anchor_day=15) == utc(2025, 3, 15)
    assert cycle_containing(utc(2025, 1, 5), anchor_day=20) == utc(2024, 12, 20)


def test_the_next_cycle_is_strictly_after_the_moment_given() -> None:
    assert next_cycle_after(utc(2025, 3, 15), anchor_day=15) == utc(2025, 4, 15)
    assert next_cycle_after(utc(2025, 3, 14, 23, 59), anchor_day=15) == utc(2025, 3, 15)
    assert next_cycle_after(utc(2025, 12, 31), anchor_day=31) == utc(2026, 1, 31)


def test_cycle_starts_excludes_the_lower_bound_and_includes_the_upper_bound() -> None:
    assert list(cycle_starts(utc(2025, 1, 10), utc(2025, 3, 10), anchor_day=10)) == [
        utc(2025, 2, 10),
        utc(2025, 3, 10),
    ]


def test_cycle_starts_is_empty_when_no_cycle_begins_in_the_interval() -> None:
    assert list(cycle_starts(utc(2025, 1, 10), utc(2025, 2, 9), anchor_day=10)) == []
    assert list(cycle_starts(utc(2025, 6, 1), utc(2025, 1, 1), anchor_day=10)) == []


def test_catching_up_after_years_of_downtime_yields_every_missed_cycle() -> None:
    starts = list(cycle_starts(utc(2000, 1, 1), utc(2030, 1, 1), anchor_day=1))
    assert len(starts) == 30 * 12
    assert starts[-1] == utc(2030, 1, 1)


def test_cycle_starts_is_lazy_and_has_no_upper_limit_on_its_own() -> None:
    far_future = datetime.max.replace(tzinfo=UTC) - timedelta(days=62)
    first_three = list(islice(cycle_starts(utc(2025, 1, 1), far_future, anchor_day=29), 3))
    assert first_three == [utc(2025, 1, 29), utc(2025, 2, 28), utc(2025, 3, 29)]


def test_moments_in_other_zones_are_read_as_the_same_instant_in_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    # 08:00 on the 15th in Tokyo is still the 14th in UTC.
    assert cycle_containing(datetime(2025, 3, 15, 8, tzinfo=tokyo), 15) == utc(2025, 2, 15)


def test_naive_moments_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cycle_containing(datetime(2025, 3, 15), 15)


@pytest.mark.parametrize(
    ("day", "within"),
    [
        *[(day, True) for day in (1, 15, 28, 29, 30, 31)],
        *[(day, False) for day in (0, -1, 32)],
    ],
)
def test_an_anchor_day_is_accepted_within_a_month_and_invalid_input_on_billing_day_outside(
    day: int, within: bool
) -> None:
    check_bounded(validate_anchor_day, day, within=within, field="billingDay")


anchors = st.integers(min_value=1, max_value=31)
moments = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
)


@given(t=moments, anchor=anchors)
def test_a_moment_lies_in_its_cycle_and_before_the_next(t: datetime, anchor: int) -> None:
    start = cycle_containing(t, anchor)
    following = next_cycle_after(t, anchor)
    assert start <= t < following
    assert next_cycle_after(start, anchor) == following
    assert list(cycle_starts(start, following, anchor)) == [following]


@given(after=moments, months=st.integers(min_value=0, max_value=400), anchor=anchors)
def test_cycle_starts_increase_strictly_and_never_drift_from_the_anchor(
    after: datetime, months: int, anchor: int
) -> None:
    starts = list(cycle_starts(after, after + timedelta(days=31 * months), anchor))
    assert all(after < start for start in starts)
    assert all(earlier < later for earlier, later in pairwise(starts))
    for start in starts:
        last_day = calendar.monthrange(start.year, start.month)[1]
        assert start.day == min(anchor, last_day)
        assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    for earlier, later in pairwise(starts):
        assert (later.year * 12 + later.month) - (earlier.year * 12 + earlier.month) == 1


@given(after=moments, until=moments, anchor=anchors)
def test_cycle_starts_are_exactly_the_cycle_starts_in_the_interval(
    after: datetime, until: datetime, anchor: int
) -> None:
    starts = list(cycle_starts(after, until, anchor))
    if after >= until:
        assert starts == []
        return
    expected_first = next_cycle_after(after, anchor)
    if expected_first > until:
        assert starts == []
    else:
        assert starts[0] == expected_first
        assert starts[-1] == cycle_containing(until, anchor)


def a_card(exp_month: int, exp_year: int) -> PaymentMethod:
    return PaymentMethod(brand="Visa", last4="4242", exp_month=exp_month, exp_year=exp_year)


def test_a_card_is_good_through_the_last_instant_of_its_expiry_month() -> None:
    card = a_card(exp_month=2, exp_year=2028)
    assert not card.is_expired(datetime(2028, 2, 29, 23, 59, 59, 999999, tzinfo=UTC))
    assert card.is_expired(utc(2028, 3, 1))


def test_a_card_expiring_in_december_lapses_at_new_year() -> None:
    card = a_card(exp_month=12, exp_year=2027)
    assert not card.is_expired(utc(2027, 12, 31, 23, 59))
    assert card.is_expired(utc(2028, 1, 1))


def test_a_valid_payment_method_is_returned_trimmed() -> None:
    card = validate_payment_method("  Mastercard ", "0005", 9, 2031)
    assert card == PaymentMethod(brand="Mastercard", last4="0005", exp_month=9, exp_year=2031)


@pytest.mark.parametrize(
    ("brand", "last4", "exp_month", "exp_year", "field"),
    [
        ("   ", "4242", 1, 2030, "brand"),
        ("V" * 31, "4242", 1, 2030, "brand"),
        ("\u200b", "4242", 1, 2030, "brand"),  # shows nothing
        ("Vi\x00sa", "4242", 1, 2030, "brand"),  # a control character
        ("Visa \u202e2424", "4242", 1, 2030, "brand"),  # shows what follows reversed
        ("\u2067Visa\u2069", "4242", 1, 2030, "brand"),  # an isolate
        ("Visa\u200f", "4242", 1, 2030, "brand"),  # a direction mark
        ("Visa", "424", 1, 2030, "last4"),
        ("Visa", "42424", 1, 2030, "last4"),
        ("Visa", "42a2", 1, 2030, "last4"),
        ("Visa", "\uff14\uff12\uff14\uff12", 1, 2030, "last4"),
        ("Visa", "4242", 0, 2030, "expMonth"),
        ("Visa", "4242", 13, 2030, "expMonth"),
        ("Visa", "4242", 1, 1999, "expYear"),
        ("Visa", "4242", 1, 2101, "expYear"),
    ],
)
def test_an_invalid_payment_method_is_refused_on_the_offending_field(
    brand: str, last4: str, exp_month: int, exp_year: int, field: str
) -> None:
    with refused_as_invalid_input(field):
        validate_payment_method(brand, last4, exp_month, exp_year)
