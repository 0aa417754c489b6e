from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit import held
from inmail.domain.credits import (
    LAPSED,
    LOT_LIFETIME,
    SPENDABLE,
    CreditLot,
    CreditSource,
    LotStatus,
    clamp_grant,
    expiry_for,
    pick_lot,
    spend_order_key,
)

JAN_1 = datetime(2025, 1, 1, tzinfo=UTC)


def a_lot(
    lot_id: str = "lot-ada-1",
    *,
    granted_at: datetime = JAN_1,
    remaining: int = 5,
    quantity: int | None = None,
    status: LotStatus = LotStatus.ACTIVE,
    source: CreditSource = CreditSource.MONTHLY_ALLOTMENT,
    expires_at: datetime | None = None,
) -> CreditLot:
    return CreditLot(
        id=lot_id,
        member_id="ada-lovelace",
        source=source,
        quantity=remaining if quantity is None else quantity,
        remaining=remaining,
        granted_at=granted_at,
        expires_at=expiry_for(granted_at) if expires_at is None else expires_at,
        status=status,
    )


def test_a_lot_lives_ninety_days_from_its_grant() -> None:
    assert expiry_for(JAN_1) == datetime(2025, 4, 1, tzinfo=UTC)
    assert timedelta(days=90) == LOT_LIFETIME


def test_a_credit_is_never_spent_after_it_expires() -> None:
    lot = a_lot()
    assert lot.is_spendable(lot.expires_at - timedelta(microseconds=1))
    assert not lot.is_spendable(lot.expires_at)
    assert pick_lot([lot], lot.expires_at) is None


def test_a_lot_past_expiry_that_still_holds_credits_is_due_to_expire() -> None:
    lot = a_lot()
    assert not LAPSED.matches(lot, lot.expires_at - timedelta(microseconds=1))
    assert LAPSED.matches(lot, lot.expires_at)


@pytest.mark.parametrize("status", [LotStatus.DEPLETED, LotStatus.EXPIRED, LotStatus.FORFEITED])
def test_a_lot_that_is_no_longer_active_is_neither_spendable_nor_due_to_expire(
    status: LotStatus,
) -> None:
    lot = a_lot(status=status)
    assert not lot.is_spendable(JAN_1)
    assert not LAPSED.matches(lot, lot.expires_at)


def test_an_empty_lot_is_neither_spendable_nor_due_to_expire() -> None:
    lot = a_lot(remaining=0, quantity=5)
    assert not lot.is_spendable(JAN_1)
    assert not LAPSED.matches(lot, lot.expires_at)


def test_the_balance_counts_only_what_is_spendable_now_even_before_the_expiry_job_runs() -> None:
    old = a_lot("old", granted_at=JAN_1, remaining=3)
    new = a_lot("new", granted_at=JAN_1 + timedelta(days=30), remaining=4)
    forfeited = a_lot("gone", remaining=9, status=LotStatus.FORFEITED)
    lots = [old, new, forfeited]
    assert held(SPENDABLE, lots, JAN_1) == 7
    assert held(SPENDABLE, lots, old.expires_at) == 4
    assert held(SPENDABLE, lots, new.expires_at) == 0


def test_spending_takes_the_lot_that_expires_soonest() -> None:
    purchase = a_lot(
        "purchase", granted_at=JAN_1 + timedelta(days=10), source=CreditSource.PURCHASE
    )
    allotment = a_lot("allotment", granted_at=JAN_1 + timedelta(days=20))
    credit_back = a_lot(
        "credit-back",
        granted_at=JAN_1 + timedelta(days=40),
        expires_at=JAN_1 + timedelta(days=5),
        source=CreditSource.CREDIT_BACK,
    )
    assert pick_lot([allotment, purchase, credit_back], JAN_1) == credit_back


def test_when_two_lots_expire_together_the_oldest_grant_is_spent_first() -> None:
    expires = JAN_1 + timedelta(days=90)
    older = a_lot("b-older", granted_at=JAN_1, expires_at=expires)
    newer = a_lot("a-newer", granted_at=JAN_1 + timedelta(days=1), expires_at=expires)
    assert pick_lot([newer, older], JAN_1 + timedelta(days=2)) == older


def test_when_expiry_and_grant_tie_the_lot_id_decides() -> None:
    first, second = a_lot("lot-a"), a_lot("lot-b")
    assert pick_lot([second, first], JAN_1) == first


def test_there_is_no_lot_to_spend_from_when_nothing_is_spendable() -> None:
    assert pick_lot([], JAN_1) is None
    assert pick_lot([a_lot(status=LotStatus.DEPLETED)], JAN_1) is None


def test_a_grant_is_clamped_to_the_room_left_under_the_cap() -> None:
    assert clamp_grant(5, current_balance=12, cap=15) == 3
    assert clamp_grant(5, current_balance=0, cap=15) == 5
    assert clamp_grant(5, current_balance=15, cap=15) == 0


def test_a_balance_already_above_a_lowered_cap_gets_nothing_rather_than_a_negative_grant() -> None:
    assert clamp_grant(5, current_balance=30, cap=15) == 0


def test_a_negative_grant_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        clamp_grant(-1, current_balance=0, cap=15)


def test_a_lot_cannot_hold_more_than_it_was_granted() -> None:
    with pytest.raises(ValueError, match="remaining"):
        a_lot(remaining=6, quantity=5)
    with pytest.raises(ValueError, match="remaining"):
        a_lot(remaining=-1, quantity=5)


def test_a_lot_with_naive_times_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        a_lot(granted_at=datetime(2025, 1, 1))


moments = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)


@st.composite
def lots(draw: st.DrawFn) -> list[CreditLot]:
    count = draw(st.integers(min_value=0, max_value=12))
    result = []
    for index in range(count):
        quantity = draw(st.integers(min_value=0, max_value=20))
        granted_at = draw(moments)
        lifetime = draw(st.sampled_from([LOT_LIFETIME, timedelta(days=1), timedelta(0)]))
        result.append(
            CreditLot(
                id=draw(st.sampled_from(["lot-a", "lot-b", "lot-c"])) + f"-{index % 3}",
                member_id="grace-hopper",
                source=draw(st.sampled_from(CreditSource)),
                quantity=quantity,
                remaining=draw(st.integers(min_value=0, max_value=quantity)),
                granted_at=granted_at,
                expires_at=granted_at + lifetime,
                status=draw(st.sampled_from(LotStatus)),
            )
        )
    return result


@given(lots=lots(), now=moments)
def test_pick_lot_always_picks_the_spendable_lot_that_sorts_first(
    lots: list[CreditLot], now: datetime
) -> None:
    spendable = [lot for lot in lots if lot.is_spendable(now)]
    picked = pick_lot(lots, now)
    if not spendable:
        assert picked is None
    else:
        assert picked is not None
        assert picked.is_spendable(now)
        assert all(spend_order_key(picked) <= spend_order_key(lot) for lot in spendable)


@given(lots=lots(), now=moments)
def test_the_balance_is_never_negative_and_is_zero_exactly_when_nothing_can_be_spent(
    lots: list[CreditLot], now: datetime
) -> None:
    total = held(SPENDABLE, lots, now)
    assert total >= 0
    assert (total == 0) == (pick_lot(lots, now) is None)


@given(
    quantity=st.integers(min_value=0, max_value=1000),
    current=st.integers(min_value=0, max_value=1000),
    cap=st.integers(min_value=0, max_value=1000),
)
def test_a_clamped_grant_never_lifts_the_balance_above_the_cap(
    quantity: int, current: int, cap: int
) -> None:
    granted = clamp_grant(quantity, current, cap)
    assert 0 <= granted <= quantity
    assert current + granted <= max(cap, current)
    if current <= cap:
        assert granted == min(quantity, cap - current)


@given(
    operations=st.lists(
        st.one_of(
            st.tuples(st.just("grant"), st.integers(min_value=0, max_value=40)),
            st.tuples(st.just("spend"), st.just(0)),
            st.tuples(st.just("wait"), st.integers(min_value=0, max_value=60)),
        ),
        max_size=60,
    ),
    cap=st.integers(min_value=0, max_value=90),
)
def test_any_sequence_of_grants_spends_and_waiting_keeps_the_balance_within_zero_and_the_cap(
    operations: list[tuple[str, int]], cap: int
) -> None:
    now = JAN_1
    lots: list[CreditLot] = []
    for step, (operation, amount) in enumerate(operations):
        if operation == "grant":
            granted = clamp_grant(amount, held(SPENDABLE, lots, now), cap)
            lots.append(a_lot(f"lot-{step:03}", granted_at=now, remaining=granted))
        elif operation == "spend":
            before = held(SPENDABLE, lots, now)
            lot = pick_lot(lots, now)
            if lot is None:
                assert before == 0
                continue
            spent = replace(lot, remaining=lot.remaining - 1)
            lots = [spent if existing.id == lot.id else existing for existing in lots]
            assert held(SPENDABLE, lots, now) == before - 1
        else:
            now += timedelta(days=amount)
        assert 0 <= held(SPENDABLE, lots, now) <= cap
