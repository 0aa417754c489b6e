"""The database's answer to "whose billing cycle is due" is the domain's.

The rule lives once, in domain/model.py (`RENEWAL_DUE`); the scheduler's queries for members
due (repositories/members.py) are translated from it. Here Hypothesis writes random members
(no subscription, active or cancelled, with or without a next cycle, due before, at and after
the instant asked about) to the real mongod and compares its answers with the domain's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from inmail.domain.model import RENEWAL_DUE, Member, Subscription, SubscriptionStatus
from inmail.domain.plans import PlanType
from inmail.repositories.members import member_to_doc
from inmail.repositories.mongo import Mongo
from inmail.repositories.unit_of_work import MongoUnitOfWork
from support import AGAINST_THE_DATABASE, answered_by_the_database

NOW = datetime(2026, 3, 15, 0, 0, tzinfo=UTC)
MOST = 10  # members in one example
Due = tuple[list[str], datetime | None]  # (members due by NOW, the next renewal after it)

# BSON keeps milliseconds: every instant is NOW plus or minus whole milliseconds, and the
# boundaries (due exactly now, a millisecond either side) come up often.
offsets = st.one_of(
    st.sampled_from([-1, 0, 1]),
    st.integers(min_value=-40 * 86_400_000, max_value=40 * 86_400_000),
)


@st.composite
def subscriptions(draw: st.DrawFn, index: int) -> Subscription | None:
    if draw(st.booleans()):
        return None
    next_renewal_at = draw(st.none() | offsets.map(lambda ms: NOW + timedelta(milliseconds=ms)))
    return Subscription(
        id=f"sub-{index:02}",
        plan=PlanType.PREMIUM_CAREER,
        status=draw(st.sampled_from(SubscriptionStatus)),
        billing_day=15,
        started_at=NOW - timedelta(days=90),
        period_start=NOW - timedelta(days=30),
        next_renewal_at=next_renewal_at,
    )


@st.composite
def members(draw: st.DrawFn) -> list[Member]:
    found = []
    for index in range(draw(st.integers(min_value=0, max_value=MOST))):
        subscription = draw(subscriptions(index))
        found.append(
            Member(
                id=f"member-{index:02}",
                name=f"Member {index}",
                headline=None,
                plan=PlanType.PREMIUM_CAREER if subscription else PlanType.BASIC,
                created_at=NOW - timedelta(days=90),
                subscription=subscription,
            )
        )
    return found


async def members_due(mongo: Mongo) -> Due:
    """The database's members due by NOW, and the next renewal time after it."""
    reads = MongoUnitOfWork(mongo).reads.members
    due = await reads.due_ids_for_renewal(NOW, after_id=None, limit=MOST + 1)
    return due, await reads.next_renewal_at(NOW)


@AGAINST_THE_DATABASE
@given(written=members())
def test_the_database_finds_the_same_members_due_for_renewal_as_the_domain(
    mongodb_uri: str, db_name: str, written: list[Member]
) -> None:
    docs = [member_to_doc(member) for member in written]
    due, next_due = answered_by_the_database(
        mongodb_uri, db_name, members_due, holding=("members", docs)
    )

    assert due == [m.id for m in written if RENEWAL_DUE.is_due(m.subscription, NOW)]
    later = NOW + timedelta(days=41)  # past every cycle drawn: whatever can come due has
    assert next_due == min(
        (
            m.subscription.next_renewal_at
            for m in written
            if m.subscription is not None
            and m.subscription.next_renewal_at is not None
            and m.subscription.next_renewal_at > NOW
            and RENEWAL_DUE.is_due(m.subscription, later)
        ),
        default=None,
    )
