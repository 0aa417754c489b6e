"""The sliding minute of the rate limits (SPEC 4), on the log alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inmail.domain.errors import RateLimited
from inmail.domain.model import RecentSends
from inmail.repositories.members import member_from_doc
from inmail.services.rate_limits import RateLimits, count_inmail

NOON = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
LIMITS = RateLimits(inmails_per_minute=3, messages_per_minute=3)


def test_the_limit_counts_the_sixty_seconds_before_a_send_not_the_clocks_minute() -> None:
    log = RecentSends()
    for second in (58, 59, 59):
        log = count_inmail(LIMITS, log, NOON + timedelta(seconds=second))
    with pytest.raises(RateLimited) as refused:
        count_inmail(LIMITS, log, NOON + timedelta(seconds=60))
    assert refused.value.retry_after_seconds == 58
    assert count_inmail(LIMITS, log, NOON + timedelta(seconds=118)).times == (
        NOON + timedelta(seconds=59),
        NOON + timedelta(seconds=59),
        NOON + timedelta(seconds=118),
    )


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=60))
def test_no_sixty_seconds_ever_hold_more_than_the_limit(offsets: list[int]) -> None:
    log, accepted = RecentSends(), []
    for offset in sorted(offsets):
        at = NOON + timedelta(seconds=offset)
        try:
            log = count_inmail(LIMITS, log, at)
        except RateLimited as refused:
            retry_after = refused.retry_after_seconds
        else:
            accepted.append(at)
            continue
        assert retry_after >= 1
    for at in accepted:
        in_the_minute = [t for t in accepted if at - timedelta(seconds=60) < t <= at]
        assert len(in_the_minute) <= 3


def test_a_member_stored_with_a_fixed_window_count_reads_as_that_many_sends_at_its_start() -> None:
    doc = {
        "_id": "m1",
        "name": "Rosalind Franklin",
        "plan": "PREMIUM_CAREER",
        "createdAt": NOON,
        "inmailWindow": {"start": NOON, "count": 2},
    }

    assert member_from_doc(doc).recent_inmails == RecentSends((NOON, NOON))
    assert member_from_doc({**doc, "inmailSends": []}).recent_inmails == RecentSends()
