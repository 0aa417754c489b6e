"""The database's answer to "what is spendable" and "what has lapsed" is the domain's.

The rules live once, in domain/credits.py (`SPENDABLE`, `LAPSED`); the queries that serve
`inmailBalance` and feed the expiry job are translated from them. Here Hypothesis writes random
lots (every status, empty and full, expiring before, at and after the instant asked about) to
the real mongod and compares its answers with the domain's over the same lots.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from audit import held
from inmail.domain.credits import LAPSED, SPENDABLE, CreditLot, CreditSource, LotStatus
from inmail.repositories.mongo import Mongo
from inmail.repositories.unit_of_work import MongoUnitOfWork
from support import AGAINST_THE_DATABASE, answered_by_the_database

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MEMBERS = ("ada-lovelace", "grace-hopper", "alan-turing", "hedy-lamarr")

# BSON keeps milliseconds: every instant is NOW plus or minus whole milliseconds, and the
# boundaries (expiring exactly now, a millisecond either side) come up often.
offsets = st.one_of(
    st.sampled_from([-1, 0, 1]),
    st.integers(min_value=-3 * 86_400_000, max_value=3 * 86_400_000),
)


@st.composite
def lots(draw: st.DrawFn) -> list[CreditLot]:
    found: list[CreditLot] = []
    for index in range(draw(st.integers(min_value=0, max_value=12))):
        quantity = draw(st.integers(min_value=0, max_value=20))
        expires_at = NOW + timedelta(milliseconds=draw(offsets))
        found.append(
            CreditLot(
                id=f"lot-{index:02}",
                member_id=draw(st.sampled_from(MEMBERS)),
                source=draw(st.sampled_from(CreditSource)),
                quantity=quantity,
                remaining=draw(st.integers(min_value=0, max_value=quantity)),
                granted_at=expires_at - timedelta(days=90),
                expires_at=expires_at,
                status=draw(st.sampled_from(LotStatus)),
            )
        )
    return found


def database_answers(
    written: list[CreditLot],
) -> Callable[[Mongo], Awaitable[tuple[dict[str, int], set[str], datetime | None]]]:
    """The database's balances, lapsed members and next expiry, over exactly these lots."""

    async def read(mongo: Mongo) -> tuple[dict[str, int], set[str], datetime | None]:
        await mongo.c.credit_lots.delete_many({})
        uow = MongoUnitOfWork(mongo)
        if written:
            async with uow.transaction() as tx:
                await tx.lots.write(written, [])
        lots = uow.reads.lots
        balances = await lots.balances(list(MEMBERS), NOW)
        walked = await lots.lapsed_members(NOW, after=None, limit=len(MEMBERS) + 1)
        lapsed = {member.member_id for member in walked}
        return balances, lapsed, await lots.next_expiry_at(NOW)

    return read


@AGAINST_THE_DATABASE
@given(written=lots())
def test_the_database_counts_the_same_lots_spendable_and_lapsed_as_the_domain(
    mongodb_uri: str, db_name: str, written: list[CreditLot]
) -> None:
    answers = answered_by_the_database(mongodb_uri, db_name, database_answers(written))
    balances, lapsed, next_lapse = answers

    by_member = {m: [lot for lot in written if lot.member_id == m] for m in MEMBERS}
    assert balances == {m: held(SPENDABLE, by_member[m], NOW) for m in MEMBERS}
    assert lapsed == {m for m in MEMBERS if any(LAPSED.matches(lot, NOW) for lot in by_member[m])}
    later = NOW + timedelta(days=4)  # past every expiry drawn: whatever can lapse has
    assert next_lapse == min(
        (lot.expires_at for lot in written if lot.expires_at > NOW and LAPSED.matches(lot, later)),
        default=None,
    )
