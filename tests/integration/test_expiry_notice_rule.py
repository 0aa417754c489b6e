"""The database's answer to "which lots are due a CREDITS_EXPIRING notice" is the domain's.

The rule lives once, in domain/credits.py (`EXPIRY_NOTICE_DUE`); the scheduler's query for the
lots due a notice, its next notice time and the conditional mark that tells a member once
(repositories/notifications.py) are translated from it. Here Hypothesis writes random lots
(every status, empty and full, noticed or not, expiring before, at and after the instant asked
about and the notice's lead, and a millisecond either side of each) to the real mongod and
compares its answers with the domain's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from inmail.domain.credits import (
    EXPIRY_NOTICE_DUE,
    LOT_LIFETIME,
    CreditLot,
    CreditSource,
    LotStatus,
)
from inmail.repositories.credit_lots import lot_to_doc
from inmail.repositories.mongo import Doc, Mongo
from inmail.repositories.unit_of_work import MongoUnitOfWork
from support import AGAINST_THE_DATABASE, answered_by_the_database

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MOST = 12  # lots in one example
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Written:
    lot: CreditLot
    noticed_at: datetime | None

    @property
    def noticed(self) -> bool:
        return self.noticed_at is not None


@dataclass(frozen=True, slots=True)
class Answers:
    due: list[str]  # the lots due a notice at NOW, in (expiresAt, _id) order
    first_due: datetime | None  # the first notice of the lots awaiting one at NOW
    first_due_beyond: datetime | None  # ... of those awaiting one at NOW + the lead
    marked: set[str]  # the lots `mark_noticed` at NOW marked
    due_after_marking: list[str]


@st.composite
def examples(draw: st.DrawFn) -> tuple[timedelta, list[Written]]:
    lead = timedelta(days=draw(st.sampled_from([7, 1, 3])))
    lead_ms = lead // timedelta(milliseconds=1)
    # BSON keeps milliseconds: every expiry is NOW plus or minus whole milliseconds, and the
    # boundaries (expiring exactly now, exactly at the lead, a millisecond either side of
    # each) come up often.
    offsets = st.one_of(
        st.sampled_from([-1, 0, 1, lead_ms - 1, lead_ms, lead_ms + 1]),
        st.integers(min_value=-10 * DAY_MS, max_value=10 * DAY_MS),
    )
    found: list[Written] = []
    for index in range(draw(st.integers(min_value=0, max_value=MOST))):
        # The rule reads a lot's status, what is left of it and its expiry, nothing else.
        expires_at = NOW + timedelta(milliseconds=draw(offsets))
        lot = CreditLot(
            id=f"lot-{index:02}",
            member_id="ada-lovelace",
            source=CreditSource.PURCHASE,
            quantity=2,
            remaining=draw(st.integers(min_value=0, max_value=2)),
            granted_at=expires_at - LOT_LIFETIME,
            expires_at=expires_at,
            status=draw(st.sampled_from(LotStatus)),
        )
        found.append(Written(lot, draw(st.none() | st.just(expires_at - lead))))
    return lead, found


def _doc(written: Written) -> Doc:
    doc = lot_to_doc(written.lot)
    if written.noticed_at is not None:
        doc["expiryNoticeAt"] = written.noticed_at
    return doc


def database_answers(
    lead: timedelta, written: list[Written]
) -> Callable[[Mongo], Awaitable[Answers]]:
    async def read(mongo: Mongo) -> Answers:
        uow = MongoUnitOfWork(mongo)
        expiring = uow.reads.notifications.expiring
        due = await expiring.due(NOW, lead, after=None, limit=MOST + 1)
        first_due = await expiring.first_due_at(lead, expiring_after=NOW)
        beyond = await expiring.first_due_at(lead, expiring_after=NOW + lead)
        marked = set()
        async with uow.transaction() as tx:
            for each in written:
                if await tx.notifications.expiring.mark_noticed(each.lot.id, NOW):
                    marked.add(each.lot.id)
        after = await expiring.due(NOW, lead, after=None, limit=MOST + 1)
        return Answers(
            due=[lot.lot_id for lot in due],
            first_due=first_due,
            first_due_beyond=beyond,
            marked=marked,
            due_after_marking=[lot.lot_id for lot in after],
        )

    return read


def _first_due(lead: timedelta, written: list[Written], at: datetime) -> datetime | None:
    return min(
        (
            EXPIRY_NOTICE_DUE.due_at(w.lot.expires_at, lead)
            for w in written
            if EXPIRY_NOTICE_DUE.awaits(w.lot, noticed=w.noticed, now=at)
        ),
        default=None,
    )


@AGAINST_THE_DATABASE
@given(example=examples())
def test_the_database_finds_the_same_lots_due_a_notice_as_the_domain(
    mongodb_uri: str, db_name: str, example: tuple[timedelta, list[Written]]
) -> None:
    lead, written = example
    answers = answered_by_the_database(
        mongodb_uri,
        db_name,
        database_answers(lead, written),
        holding=("credit_lots", [_doc(w) for w in written]),
    )

    due = [
        w.lot
        for w in written
        if EXPIRY_NOTICE_DUE.is_due(w.lot, noticed=w.noticed, now=NOW, lead=lead)
    ]
    assert answers.due == [lot.id for lot in sorted(due, key=lambda lot: (lot.expires_at, lot.id))]
    assert answers.first_due == _first_due(lead, written, NOW)
    assert answers.first_due_beyond == _first_due(lead, written, NOW + lead)
    assert answers.marked == {
        w.lot.id for w in written if EXPIRY_NOTICE_DUE.awaits(w.lot, noticed=w.noticed, now=NOW)
    }
    assert answers.due_after_marking == []
