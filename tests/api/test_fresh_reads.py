"""Reads show the member as of now, before the scheduler or any write has recorded it (SPEC 3).

The scheduler is off and the manual clock is set directly, so no job runs on the way: what a read
shows past a cycle start or an expiry is the member brought up to now in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from support import Api, Person, api_time, ledger_of, lots_of, open_api, subscription_of
from support import test_settings as settings_with

JAN_31 = datetime(2026, 1, 31, tzinfo=UTC)
FEB_28 = datetime(2026, 2, 28, tzinfo=UTC)
MAR_31 = datetime(2026, 3, 31, tzinfo=UTC)
MAY_1 = datetime(2026, 5, 1, tzinfo=UTC)

COMPOSE = "query($r: ID!) { compose(recipientId: $r) { canSend reason creditsLeft } }"
ADVANCE = (
    "mutation($i: AdvanceClockInput!) "
    "{ advanceClock(input: $i) { now errors { code message field } } }"
)


@pytest.fixture
async def api(mongodb_uri: str, db_name: str) -> AsyncIterator[Api]:
    settings = settings_with(clock_start=JAN_31, scheduler_enabled=False)
    async with open_api(mongodb_uri, db_name, settings) as service:
        yield service


async def compose(api: Api, sender: Person, recipient: Person) -> dict[str, Any]:
    return await api.payload("compose", COMPOSE, {"r": recipient.id}, sender.token)


async def spend_everything(api: Api, sender: Person) -> None:
    """Five InMails to five strangers: a Career member's first allotment, all spent."""
    names = ["Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth", "Frances Allen"]
    for name in names:
        stranger = await api.create_member(name, "PREMIUM_CAREER")
        sent = await api.send(sender, stranger, subject=f"Hello {name}")
        assert sent["errors"] == [], sent["errors"]
    assert await api.balance(sender) == 0


async def test_a_career_member_with_nothing_left_reads_her_new_cycle_five_minutes_after_it_started(
    api: Api,
) -> None:
    grace = await api.create_member("Grace Hopper", "PREMIUM_CAREER")
    await spend_everything(api, grace)
    linus = await api.create_member("Linus Torvalds", "PREMIUM_CAREER")

    api.clock.set(FEB_28 + timedelta(minutes=5))  # no job runs: the cycle is not written yet

    assert await api.balance(grace) == 5
    subscription = (await subscription_of(api, grace))["subscription"]
    assert api_time(subscription["currentPeriodStart"]) == FEB_28
    assert api_time(subscription["nextRenewalAt"]) == MAR_31
    assert await compose(api, grace, linus) == {"canSend": True, "reason": None, "creditsLeft": 5}

    sent = await api.send(grace, linus, subject="Kernel hacking over coffee?")
    assert sent["errors"] == []
    assert sent["creditsLeft"] == 4
    assert await api.balance(grace) == 4
    assert await compose(api, grace, await api.create_member("Ken Thompson")) == {
        "canSend": True,
        "reason": None,
        "creditsLeft": 4,
    }


async def test_a_member_reading_ten_with_a_cycle_due_reads_fifteen_and_the_cap_refusal_agrees(
    api: Api,
) -> None:
    margaret = await api.create_member("Margaret Hamilton", "PREMIUM_CAREER")
    body = await api.raw(ADVANCE, {"i": {"days": 28}}, api.admin)  # jobs run: February's grant
    assert body["data"]["advanceClock"]["errors"] == []
    assert await api.balance(margaret) == 10

    api.clock.set(MAR_31 + timedelta(minutes=5))  # March's cycle started; nothing written

    assert await api.balance(margaret) == 15
    bought = await api.purchase(margaret, 5)
    assert [e["code"] for e in bought["errors"]] == ["CAP_EXCEEDED"]
    assert bought["lot"] is None
    assert await api.balance(margaret) == 15
    one_more = await api.purchase(margaret, 1)
    assert [e["code"] for e in one_more["errors"]] == ["CAP_EXCEEDED"]


async def test_lists_show_started_cycles_granted_and_lapsed_lots_expired_as_the_balance_does(
    api: Api,
) -> None:
    katherine = await api.create_member("Katherine Johnson", "PREMIUM_CAREER")
    [first_lot] = await lots_of(api, katherine, "ACTIVE")
    assert api_time(first_lot["expiresAt"]) == MAY_1

    api.clock.set(MAY_1 + timedelta(minutes=5))  # three cycles and one expiry, none written

    # In time order: February +5 (10), March +5 (15), April clamped to 0 by the cap, then the
    # January lot's 5 lapse on 1 May: 10. (Expiring first would have let April grant 5.)
    assert await api.balance(katherine) == 10
    active = await lots_of(api, katherine, "ACTIVE")
    assert [(api_time(lot["grantedAt"]), lot["remaining"]) for lot in active] == [
        (MAR_31, 5),
        (FEB_28, 5),
    ]
    data = await api.gql(
        "{ viewer { inmailBalance creditLots(status: [ACTIVE]) { totalCount } } }",
        token=katherine.token,
    )
    assert data["viewer"] == {"inmailBalance": 10, "creditLots": {"totalCount": 2}}
    [expired] = await lots_of(api, katherine, "EXPIRED")
    assert expired["id"] == first_lot["id"]
    assert (expired["status"], expired["remaining"]) == ("EXPIRED", 0)
    assert len(await lots_of(api, katherine)) == 3
    ledger = await api.gql(
        "{ viewer { ledger { nodes { kind delta balanceAfter at } } } }", token=katherine.token
    )
    entries = [
        (e["kind"], e["delta"], e["balanceAfter"], api_time(e["at"]))
        for e in reversed(ledger["viewer"]["ledger"]["nodes"])
    ]
    assert entries == [
        ("GRANT", 5, 5, JAN_31),
        ("GRANT", 5, 10, FEB_28),
        ("GRANT", 5, 15, MAR_31),
        ("GRANT", 0, 15, datetime(2026, 4, 30, tzinfo=UTC)),
        ("EXPIRE", -5, 10, MAY_1),
    ]
    assert sum(delta for _, delta, _, _ in entries) == 10  # the balance is the sum of deltas
    # Written once: reading again, or sending, finds nothing more to write.
    assert len(await lots_of(api, katherine)) == 3
    assert await api.balance(katherine) == 10

    bought = await api.purchase(katherine, 2)  # a write brings her up to now and agrees
    assert bought["errors"] == []
    assert bought["creditsLeft"] == 12
    assert await api.balance(katherine) == 12
    stored = await lots_of(api, katherine, "EXPIRED")
    assert [lot["id"] for lot in stored] == [first_lot["id"]]


async def test_concurrent_reads_of_the_lists_write_a_started_cycle_once(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    api.clock.set(FEB_28 + timedelta(minutes=5))  # February's cycle started; nothing written
    query = (
        "{ viewer { inmailBalance creditLots { totalCount } ledger { totalCount } "
        "again: creditLots(status: [ACTIVE]) { totalCount } } }"
    )

    answers = await asyncio.gather(*(api.gql(query, token=ada.token) for _ in range(8)))

    for data in answers:
        assert data["viewer"] == {
            "inmailBalance": 10,
            "creditLots": {"totalCount": 2},
            "ledger": {"totalCount": 2},
            "again": {"totalCount": 2},
        }
    assert [e["delta"] for e in await ledger_of(api, ada)] == [5, 5]


async def test_an_admin_reading_a_members_lots_sees_them_as_of_now(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    api.clock.set(FEB_28 + timedelta(minutes=5))

    data = await api.gql(
        "query($m: ID!) { creditLots(memberId: $m) { totalCount nodes { remaining } } }",
        {"m": ada.id},
        token=api.admin,
    )

    assert data["creditLots"] == {"totalCount": 2, "nodes": [{"remaining": 5}, {"remaining": 5}]}


async def test_the_notifications_show_a_started_cycles_renewal_as_the_balance_does(
    api: Api,
) -> None:
    """SPEC 3 (every read as of now) and 5a (RENEWED for an allotment granted): the balance
    counts February's cycle before anything wrote it, and so does the list of notifications."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    api.clock.set(FEB_28 + timedelta(minutes=5))  # February's cycle started; nothing written
    query = "{ viewer { inmailBalance notifications(first: 10) { totalCount nodes { kind at } } } }"

    data = await api.gql(query, token=ada.token)
    again = await api.gql(query, token=ada.token)

    assert data["viewer"]["inmailBalance"] == 10
    notes = data["viewer"]["notifications"]
    joined = api_time(notes["nodes"][-1]["at"])  # the first allotment, on joining
    assert [(n["kind"], api_time(n["at"])) for n in notes["nodes"]] == [
        ("RENEWED", FEB_28),
        ("RENEWED", joined),
    ]
    assert joined < FEB_28 - timedelta(days=27)
    assert notes["totalCount"] == 2
    assert again == data  # written once
