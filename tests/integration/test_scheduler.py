"""The scheduler's jobs on a real mongod: renewals, expirations, reminders, batches and the lease.

The jobs are called the way the background task calls them, with the time it would pass; the
manual clock of the `api` fixture (2026-01-15T09:00Z) stands for the service's clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from pymongo.errors import NetworkTimeout

from inmail.bootstrap import build_deps, build_scheduler
from inmail.domain.billing import PaymentMethod
from inmail.domain.conversations import InMailResponse
from inmail.domain.credits import CreditLot, CreditSource, LedgerKind, LotFilter, LotStatus
from inmail.domain.intents import IntentStatus
from inmail.domain.model import LedgerEntry
from inmail.domain.plans import PlanType
from inmail.repositories.credit_lots import lot_to_doc
from inmail.repositories.leases import LeaseRepository
from inmail.repositories.members import MemberRepository
from inmail.repositories.mongo import Mongo, new_id
from inmail.scheduler import LEASE_NAME, RELEASE_WITHIN, PassStalled, Scheduler
from inmail.services import inmail as inmail_service
from inmail.services import manual_clock, scheduling
from inmail.services import members as member_service
from inmail.services.base import Deps
from inmail.services.payments import Charge, PaymentGateway
from inmail.settings import Settings, SettingsError
from stored import lease_holder, notifications_of
from support import START, Api, PassThroughGateway, open_api, orphan_charge
from support import test_settings as settings_with

T = TypeVar("T")
CARD = PaymentMethod("Visa", "4242", 12, 2030)
BATCH = Settings().scheduler_batch


def at(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


async def new_member(
    deps: Deps,
    name: str = "Ada Lovelace",
    plan: PlanType = PlanType.PREMIUM_CAREER,
    *,
    billing_day: int | None = None,
    monthly_allotment: int | None = None,
) -> str:
    member = await member_service.create_member(
        deps,
        member_service.NewMember(
            name=name,
            plan=plan,
            billing_day=billing_day,
            payment_method=CARD,
            monthly_allotment=monthly_allotment,
        ),
    )
    return member.id


async def balance(deps: Deps, member_id: str) -> int:
    return (await deps.reads.lots.balances([member_id], deps.now()))[member_id]


async def ledger(deps: Deps, member_id: str) -> list[LedgerEntry]:
    page = await deps.reads.ledger.page(member_id, 1000, None)  # newest first
    return [entry for _, entry in reversed(page.items)]


def grants(entries: Sequence[LedgerEntry]) -> list[tuple[datetime, int]]:
    return [(e.at, e.delta) for e in entries if e.kind is LedgerKind.GRANT]


async def assert_consistent(deps: Deps, member_id: str) -> None:
    """The ledger is gap-free, each balanceAfter is the running sum, and the lots agree."""
    entries = await ledger(deps, member_id)
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    running = 0
    for entry in entries:
        running += entry.delta
        assert entry.balance_after == running, entry
    keys = [e.grant_key for e in entries if e.grant_key]
    assert len(keys) == len(set(keys))
    member = await deps.reads.members.get(member_id)
    assert member is not None
    assert member.ledger_seq == len(entries)
    active = await deps.reads.lots.active_for(member_id)
    assert sum(lot.remaining for lot in active) == running


async def set_clock(api: Api, when: datetime) -> datetime:
    api.clock.set(when)
    return when


# Renewals


async def test_renewal_happens_on_the_anchor_day_and_not_before(api: Api) -> None:
    deps = api.container.deps
    ada = await new_member(deps)  # 15 January, 09:00: the anchor is the 15th

    report = await scheduling.renew_due(
        deps, await set_clock(api, at(2, 14, 23, 59, 59)), batch_size=BATCH
    )
    assert report.changed == 0
    assert await balance(deps, ada) == 5

    report = await scheduling.renew_due(deps, await set_clock(api, at(2, 15)), batch_size=BATCH)
    assert report.changed == 1
    assert await balance(deps, ada) == 10
    assert grants(await ledger(deps, ada)) == [(START, 5), (at(2, 15), 5)]
    member = await deps.reads.members.get(ada)
    assert member is not None
    assert member.subscription is not None
    assert member.subscription.next_renewal_at == at(3, 15)


async def test_anchor_31_goes_through_february_and_back_to_the_31st(api: Api) -> None:
    deps = api.container.deps
    ada = await new_member(deps, billing_day=31)  # the current cycle began 31 December
    for when in (at(1, 31), at(2, 28), at(3, 28), at(3, 31), at(4, 30), at(5, 31)):
        await scheduling.renew_due(deps, await set_clock(api, when), batch_size=BATCH)
    assert [t for t, _ in grants(await ledger(deps, ada))] == [
        START,
        at(1, 31),
        at(2, 28),
        at(3, 31),
        at(4, 30),
        at(5, 31),
    ]
    await assert_consistent(deps, ada)


@pytest.mark.parametrize(
    ("plan", "allotment", "cap"),
    [
        (PlanType.PREMIUM_CAREER, None, 15),
        (PlanType.PREMIUM_BUSINESS, None, 45),
        (PlanType.SALES_NAVIGATOR, None, 60),
        (PlanType.RECRUITER_LITE, None, 90),
        (PlanType.LEGACY_PREMIUM, 12, 36),
    ],
)
async def test_the_cap_of_each_plan_is_reached_after_months_of_no_spending(
    api: Api, plan: PlanType, allotment: int | None, cap: int
) -> None:
    deps = api.container.deps
    member = await new_member(deps, plan=plan, monthly_allotment=allotment)
    monthly = deps.plans.policy(plan, allotment).monthly_allotment
    # 15 April 00:00: the fourth allotment, nine hours before the first lot's 90 days end.
    await manual_clock.advance_clock(deps, days=89, hours=15, batch_size=BATCH)
    assert api.clock.now() == at(4, 15)
    assert await balance(deps, member) == cap
    last = (await ledger(deps, member))[-1]
    assert (last.at, last.kind, last.delta) == (at(4, 15), LedgerKind.GRANT, 0)
    assert last.requested == monthly
    await assert_consistent(deps, member)


async def test_catch_up_after_three_missed_months_grants_each_cycle_at_its_own_start(
    api: Api,
) -> None:
    deps = api.container.deps
    ada = await new_member(deps)
    # The service was down from 15 January to 20 April: one pass catches up.
    await scheduling.run_due_jobs(deps, await set_clock(api, at(4, 20)), batch_size=BATCH)
    entries = await ledger(deps, ada)
    assert [(e.at, e.kind, e.delta, e.balance_after) for e in entries] == [
        (START, LedgerKind.GRANT, 5, 5),
        (at(2, 15), LedgerKind.GRANT, 5, 10),
        (at(3, 15), LedgerKind.GRANT, 5, 15),
        (at(4, 15), LedgerKind.GRANT, 0, 15),  # the cap
        (at(4, 15, 9), LedgerKind.EXPIRE, -5, 10),  # the January lot, at its own expiry
    ]
    assert await balance(deps, ada) == 10
    await assert_consistent(deps, ada)
    again = await scheduling.run_due_jobs(deps, at(4, 20), batch_size=BATCH)
    assert [job.changed for job in again.jobs] == [0] * len(again.jobs)
    assert len(again.jobs) == 5  # renewals, expirations, reminders, expiry notices, charges
    assert await ledger(deps, ada) == entries


async def test_lots_whose_90_days_passed_during_an_outage_are_recorded_expired(api: Api) -> None:
    deps = api.container.deps
    ada = await new_member(deps)
    await scheduling.renew_due(deps, await set_clock(api, at(6, 20)), batch_size=BATCH)
    lots = {lot.granted_at: lot for lot in await lots_of(deps, ada)}
    assert {t: lot.status for t, lot in lots.items()} == {
        START: LotStatus.EXPIRED,
        at(2, 15): LotStatus.EXPIRED,  # granted and expired, all while nobody looked
        at(3, 15): LotStatus.EXPIRED,
        at(5, 15): LotStatus.ACTIVE,
        at(6, 15): LotStatus.ACTIVE,
    }
    expiries = [(e.at, e.delta) for e in await ledger(deps, ada) if e.kind is LedgerKind.EXPIRE]
    assert expiries == [(at(4, 15, 9), -5), (at(5, 16), -5), (at(6, 13), -5)]
    assert await balance(deps, ada) == 10
    await assert_consistent(deps, ada)


async def lots_of(deps: Deps, member_id: str) -> list[Any]:
    page = await deps.reads.lots.page(LotFilter(member_id), 100, None)
    return [lot for _, lot in page.items]


# Expirations


async def test_a_credit_is_spendable_one_second_before_90_days_and_not_at_90_days(
    api: Api,
) -> None:
    deps = api.container.deps
    ada = await new_member(deps, "Ada Lovelace")
    alan = await new_member(deps, "Alan Turing")
    grace = await new_member(deps, "Grace Hopper")
    first_lot = (await deps.reads.lots.active_for(ada))[0]
    await manual_clock.advance_clock(deps, days=89, hours=23, batch_size=BATCH)
    api.clock.set(first_lot.expires_at - timedelta(seconds=1))

    sent = await inmail_service.send_inmail(deps, ada, alan, "Hello", "One second left.", "k-1")
    debit = (await ledger(deps, ada))[-1]
    assert (debit.kind, debit.lot_id, sent.credits_left) == (LedgerKind.DEBIT, first_lot.id, 14)

    api.clock.set(first_lot.expires_at)
    # Before any job ran, the four credits left on that lot are no longer there.
    assert await balance(deps, ada) == 10
    await inmail_service.send_inmail(deps, ada, grace, "Hello", "Not from that lot.", "k-2")
    assert (await ledger(deps, ada))[-1].lot_id != first_lot.id

    report = await scheduling.expire_due(deps, api.clock.now(), batch_size=BATCH)
    assert report.changed == 2  # Alan's and Grace's: Ada's own send settled hers
    entries = await ledger(deps, ada)
    expire = next(e for e in entries if e.kind is LedgerKind.EXPIRE)
    assert (expire.at, expire.delta, expire.lot_id) == (first_lot.expires_at, -4, first_lot.id)
    assert {lot.id: lot.status for lot in await lots_of(deps, ada)}[first_lot.id] == (
        LotStatus.EXPIRED
    )
    assert await balance(deps, ada) == 9
    await assert_consistent(deps, ada)
    assert (await scheduling.expire_due(deps, api.clock.now(), batch_size=BATCH)).changed == 0


# Reminders


async def test_reminders_go_once_and_within_72_hours(api: Api) -> None:
    deps = api.container.deps
    ada = await new_member(deps, "Ada Lovelace")
    alan = await new_member(deps, "Alan Turing")
    grace = await new_member(deps, "Grace Hopper")
    to_alan = await inmail_service.send_inmail(deps, ada, alan, "Hi", "Coffee?", "k-1")
    api.clock.advance(timedelta(hours=20))
    to_grace = await inmail_service.send_inmail(deps, ada, grace, "Hi", "Tea?", "k-2")
    sent_at = {alan: START, grace: START + timedelta(hours=20)}

    assert (
        await scheduling.remind_due(deps, START + timedelta(hours=47, minutes=59), batch_size=BATCH)
    ).changed == 0
    # Passes at irregular times, twice at once, then again later: one reminder each.
    first_pass = START + timedelta(hours=48)
    second_pass = START + timedelta(hours=70)
    reports = await asyncio.gather(
        scheduling.remind_due(deps, first_pass, batch_size=BATCH),
        scheduling.remind_due(deps, first_pass, batch_size=BATCH),
    )
    assert sorted(r.changed for r in reports) == [0, 1]
    assert (await scheduling.remind_due(deps, second_pass, batch_size=BATCH)).changed == 1
    assert (
        await scheduling.remind_due(deps, START + timedelta(days=9), batch_size=BATCH)
    ).changed == 0

    for member_id, conversation_id, reminded_at in (
        (alan, to_alan.conversation.id, first_pass),
        (grace, to_grace.conversation.id, second_pass),
    ):
        conversation = await deps.reads.conversations.get(conversation_id)
        assert conversation is not None
        assert conversation.reminder_sent_at == reminded_at
        assert conversation.reminder_sent_at - sent_at[member_id] <= timedelta(hours=72)
        notes = await notifications_of(api.container.mongo, member_id)
        assert [(n.kind, n.conversation_id, n.at) for n in notes if n.kind == "REMINDER"] == [
            ("REMINDER", conversation_id, reminded_at)
        ]


async def test_a_response_on_its_way_while_its_reminder_is_sent_is_recorded_after_it(
    api: Api,
) -> None:
    """The response's time was taken (47 h after the InMail) before a pass that reminds at
    48 h committed: what is stored says the reminder went first, then the response came, never
    a reminder for an InMail already answered."""
    deps = api.container.deps
    ada = await new_member(deps, "Ada Lovelace")
    alan = await new_member(deps, "Alan Turing")
    sent = await inmail_service.send_inmail(deps, ada, alan, "Hi", "Coffee?", "k-1")
    api.clock.advance(timedelta(hours=47))  # the responder's moment, before the pass's
    reminded_at = START + timedelta(hours=48)
    assert (await scheduling.remind_due(deps, reminded_at, batch_size=BATCH)).changed == 1

    answer = await inmail_service.respond(
        deps, alan, sent.conversation.id, InMailResponse.INTERESTED, "Gladly"
    )

    conversation = await deps.reads.conversations.get(sent.conversation.id)
    assert conversation is not None
    assert conversation.reminder_sent_at == reminded_at
    assert conversation.responded_at == reminded_at
    assert answer.credited_back
    notes = await notifications_of(api.container.mongo, ada)
    assert [n.at for n in notes if n.kind == "RESPONSE_RECEIVED"] == [reminded_at]


async def test_the_reminder_delay_is_configurable(mongodb_uri: str, db_name: str) -> None:
    async with open_api(mongodb_uri, db_name, settings_with(reminder_delay_hours=24)) as api:
        deps = api.container.deps
        ada = await new_member(deps, "Ada Lovelace")
        alan = await new_member(deps, "Alan Turing")
        sent = await inmail_service.send_inmail(deps, ada, alan, "Hi", "Coffee?", "k-1")
        await manual_clock.advance_clock(deps, days=3, batch_size=BATCH)
        conversation = await deps.reads.conversations.get(sent.conversation.id)
        assert conversation is not None
        assert conversation.reminder_sent_at == START + timedelta(hours=24)


# Batches, failures and stopping


async def create_members(deps: Deps, count: int) -> list[str]:
    return [await new_member(deps, f"Member {n:03}") for n in range(count)]


async def test_renewals_go_in_batches_of_one_transaction_each(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    deps = api.container.deps
    members = await create_members(deps, 25)
    transactions = counting_transactions(api.container.mongo, monkeypatch)

    report = await scheduling.renew_due(deps, await set_clock(api, at(2, 15)), batch_size=10)

    assert (report.changed, report.failed) == (25, [])
    assert transactions() == 3
    for member_id in members:
        assert grants(await ledger(deps, member_id)) == [(START, 5), (at(2, 15), 5)]


def counting_transactions(mongo: Mongo, monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    calls = 0
    real = mongo.run_transaction

    async def counted(callback: Callable[[Any], Awaitable[T]]) -> T:
        nonlocal calls
        calls += 1
        return await real(callback)

    monkeypatch.setattr(mongo, "run_transaction", counted)
    return lambda: calls


async def test_one_failing_member_is_logged_and_skipped_and_the_others_are_renewed(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    deps = api.container.deps
    members = await create_members(deps, 6)
    broken = members[3]
    # A record no code path writes: an anchor day out of range makes the billing maths refuse.
    await api.container.mongo.c.members.update_one(
        {"_id": broken}, {"$set": {"subscription.billingDay": 0}}
    )
    now = await set_clock(api, at(2, 15))

    with caplog.at_level(logging.WARNING, logger="inmail.services.scheduling"):
        report = await scheduling.renew_due(deps, now, batch_size=4)

    assert report.failed == [broken]
    assert report.changed == 5
    for member_id in members:
        expected = [(START, 5)] if member_id == broken else [(START, 5), (at(2, 15), 5)]
        assert grants(await ledger(deps, member_id)) == expected
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [broken in r.getMessage() for r in errors] == [True]

    again = await scheduling.run_due_jobs(deps, now, batch_size=4)
    assert again.job("renewals").failed == [broken]
    assert again.job("renewals").changed == 0


async def test_a_member_failing_expiry_is_tried_once_a_pass_however_many_lots_it_holds(
    api: Api,
) -> None:
    """The expiry job walks lapsed lots: a failing member's other lapsed lots, further along,
    would bring it back batch after batch. It is tried (and reported) once a pass."""
    deps = api.container.deps
    members = await create_members(deps, 6)  # each a cycle's lot, lapsing at START + 90 days
    broken = members[3]
    await api.container.mongo.c.members.update_one(
        {"_id": broken}, {"$set": {"subscription.billingDay": 0}}
    )
    lapse = START + timedelta(days=90)
    await api.container.mongo.c.credit_lots.insert_many(
        [  # one lapsing before every other member's lot, one after
            lot_to_doc(
                CreditLot(
                    new_id(), broken, CreditSource.PURCHASE, 1, 1, START, when, LotStatus.ACTIVE
                )
            )
            for when in (lapse - timedelta(hours=1), lapse + timedelta(hours=1))
        ]
    )

    report = await scheduling.expire_due(deps, lapse + timedelta(hours=2), batch_size=2)

    assert report.failed == [broken]
    assert report.changed == 5


async def test_a_pass_told_to_stop_ends_between_batches_and_the_next_pass_finishes(
    api: Api,
) -> None:
    deps = api.container.deps
    members = await create_members(deps, 30)
    now = await set_clock(api, at(2, 15))
    asked = 0

    async def stop_after_first_batch() -> bool:
        nonlocal asked
        asked += 1
        return False

    first = await scheduling.run_due_jobs(
        deps, now, batch_size=10, checkpoint=stop_after_first_batch
    )
    assert (first.stopped, asked, len(first.jobs)) == (True, 1, 1)
    assert first.job("renewals").changed == 10
    renewed = [m for m in members if len(grants(await ledger(deps, m))) == 2]
    assert len(renewed) == 10

    second = await scheduling.run_due_jobs(deps, now, batch_size=10)
    assert second.job("renewals").changed == 20
    for member_id in members:
        assert grants(await ledger(deps, member_id)) == [(START, 5), (at(2, 15), 5)]
        await assert_consistent(deps, member_id)


# The background task and its lease


class Gate:
    """A publisher that holds the pass after its first batch until the test opens it."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.open = asyncio.Event()

    async def publish(self, entries: object) -> None:
        self.reached.set()
        await self.open.wait()


async def test_stopping_the_scheduler_lets_the_batch_in_flight_finish_and_nothing_more(
    api: Api,
) -> None:
    deps = api.container.deps
    members = await create_members(deps, 30)
    api.clock.set(at(2, 15))
    gate = Gate()
    deps = replace(deps, publisher=gate)
    scheduler = build_scheduler(deps, api.container.mongo, interval=3600, batch_size=10)

    await scheduler.start()
    await gate.reached.wait()  # the first batch is committed; the pass waits to publish it
    stopping = asyncio.create_task(scheduler.stop())
    await asyncio.sleep(0)
    gate.open.set()
    await stopping

    renewed = [m for m in members if len(grants(await ledger(deps, m))) == 2]
    assert len(renewed) == 10
    for member_id in members:
        await assert_consistent(deps, member_id)
    lease = await lease_holder(api.container.mongo, LEASE_NAME)
    assert lease is not None
    assert await LeaseRepository(api.container.mongo).acquire(
        LEASE_NAME, "next", timedelta(seconds=5)
    )


class Recorder:
    """A publisher that tells the test when the scheduler has committed a renewal."""

    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []
        self.renewed = asyncio.Event()

    async def publish(self, entries: Sequence[LedgerEntry]) -> None:
        self.entries.extend(entries)
        if any(e.kind is LedgerKind.GRANT and e.at != START for e in entries):
            self.renewed.set()


async def test_the_scheduler_started_with_the_app_renews_members_nobody_touches(
    mongodb_uri: str, db_name: str
) -> None:
    settings = settings_with(scheduler_enabled=True, scheduler_interval=0.05)
    async with open_api(mongodb_uri, db_name, settings) as api:
        scheduler = api.container.scheduler
        assert scheduler is not None
        assert scheduler in api.container.background
        deps = api.container.deps
        ada = await new_member(deps)
        recorder = Recorder()
        api.container.events.listeners.append(recorder)
        api.clock.set(at(2, 15))
        await asyncio.wait_for(recorder.renewed.wait(), timeout=30)
        assert grants(await ledger(deps, ada)) == [(START, 5), (at(2, 15), 5)]
        assert [(e.member_id, e.at, e.balance_after) for e in recorder.entries] == [
            (ada, at(2, 15), 10)
        ]
    assert scheduler._task is None


async def test_two_schedulers_running_at_once_grant_once(
    api: Api, mongodb_uri: str, db_name: str
) -> None:
    deps = api.container.deps
    members = await create_members(deps, 40)
    api.clock.set(at(4, 20))
    other_mongo = Mongo.connect(mongodb_uri, db_name)
    try:
        other = build_deps(other_mongo, api.clock, api.container.settings)
        first = build_scheduler(deps, api.container.mongo, interval=60, batch_size=BATCH)
        second = build_scheduler(other, other_mongo, interval=60, batch_size=BATCH)
        # Connected first: a new client's first command waits for its connection, and the other
        # pass could end (and give the lease back) before this one asked for it.
        await other_mongo.ping()
        reports = await asyncio.gather(first.run_once(), second.run_once())
        assert sorted(r is None for r in reports) == [False, True]  # the lease let one work
        # Without the lease at all, both at once, with small batches that interleave:
        for _ in range(2):
            await asyncio.gather(
                scheduling.run_due_jobs(deps, at(6, 20), batch_size=7),
                scheduling.run_due_jobs(other, at(6, 20), batch_size=7),
            )
    finally:
        await other_mongo.close()
    for member_id in members:
        assert grants(await ledger(deps, member_id)) == [
            (START, 5),
            (at(2, 15), 5),
            (at(3, 15), 5),
            (at(4, 15), 0),
            (at(5, 15), 5),
            (at(6, 15), 5),
        ]
        await assert_consistent(deps, member_id)


class HangingGateway(PassThroughGateway):
    """A payment provider that stops answering: its lookups never return."""

    def __init__(self, inner: PaymentGateway) -> None:
        super().__init__(inner)
        self.reached = asyncio.Event()

    async def find(self, member_id: str, idempotency_key: str) -> Charge | None:
        self.reached.set()
        await asyncio.Event().wait()
        return None


async def test_a_pass_that_stops_making_progress_is_cut_off_and_gives_its_lease_back(
    api: Api,
) -> None:
    """Its heartbeat kept the lease while a call hung, and with it every job of every process:
    now the pass is cut off once it reaches no checkpoint for its stall limit, and another
    process's pass runs (here: a renewal that fell due meanwhile)."""
    deps = api.container.deps
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    await orphan_charge(api, ada, 1, status=IntentStatus.PENDING)
    api.clock.advance(timedelta(minutes=10))  # its reconciliation is due
    hanging = HangingGateway(deps.gateway)
    ttl = timedelta(seconds=0.6)
    stuck = build_scheduler(
        replace(deps, gateway=hanging),
        api.container.mongo,
        interval=60,
        batch_size=50,
        lease_ttl=ttl,
        stall_limit=1.5,
    )
    other = build_scheduler(deps, api.container.mongo, interval=60, batch_size=50, lease_ttl=ttl)

    cut_off = asyncio.create_task(stuck.run_once())
    await asyncio.wait_for(hanging.reached.wait(), 30)
    api.clock.set(at(2, 16))  # a month on: Ada's renewal is due
    with pytest.raises(PassStalled):
        await asyncio.wait_for(cut_off, 30)
    given_back = await lease_holder(api.container.mongo, LEASE_NAME)
    report = await other.run_once()

    assert given_back is not None
    assert given_back["owner"] == stuck.owner
    assert given_back["expiresAt"] <= datetime.now(UTC)  # released, not left to lapse
    assert report is not None
    # The first cycle's grant, the renewal, and the orphan charge's credit, reconciled.
    assert [g[1] for g in grants(await ledger(deps, ada.id))] == [5, 5, 1]


async def test_the_lease_runs_on_real_time_even_when_the_service_clock_is_manual(
    api: Api,
) -> None:
    leases = LeaseRepository(api.container.mongo)
    assert await leases.acquire(LEASE_NAME, "first", timedelta(seconds=30))
    api.clock.advance(timedelta(days=400))
    assert not await leases.acquire(LEASE_NAME, "second", timedelta(seconds=30))
    assert await leases.acquire(LEASE_NAME, "first", timedelta(seconds=30))  # extended
    await leases.release(LEASE_NAME, "first")
    assert await leases.acquire(LEASE_NAME, "second", timedelta(milliseconds=1))
    await asyncio.sleep(0.05)  # real time passes: that lease lapses
    assert await leases.acquire(LEASE_NAME, "third", timedelta(seconds=30))
    scheduler = build_scheduler(
        api.container.deps, api.container.mongo, interval=60, batch_size=BATCH
    )
    assert await scheduler.run_once() is None  # "third" holds it


async def test_a_pass_that_will_not_end_is_cancelled_after_the_grace_period(api: Api) -> None:
    deps = api.container.deps
    members = await create_members(deps, 12)
    api.clock.set(at(2, 15))
    gate = Gate()  # never opened: the pass hangs after its first batch
    deps = replace(deps, publisher=gate)
    scheduler = build_scheduler(
        deps, api.container.mongo, interval=3600, batch_size=5, stop_grace=0.05
    )
    await scheduler.start()
    await gate.reached.wait()
    await scheduler.stop()
    assert len([m for m in members if len(grants(await ledger(deps, m))) == 2]) == 5
    for member_id in members:
        await assert_consistent(deps, member_id)


class NeverReleased(LeaseRepository):
    """Leases on the test's mongod that are never given back: the release waits as on a
    database that is gone (the driver would wait out its server-selection timeout)."""

    async def release(self, name: str, owner: str) -> None:
        await asyncio.Event().wait()


async def test_a_stop_waits_no_longer_than_its_grace_and_a_moment_to_give_the_lease_back(
    api: Api,
) -> None:
    deps = api.container.deps
    await create_members(deps, 12)
    api.clock.set(at(2, 15))
    gate = Gate()  # never opened: the pass hangs after its first batch
    deps = replace(deps, publisher=gate)
    leases = NeverReleased(api.container.mongo)
    scheduler = Scheduler(deps, leases, interval=3600, batch_size=5, stop_grace=0.05)
    await scheduler.start()
    await gate.reached.wait()

    stopping = asyncio.create_task(scheduler.stop())
    done, _ = await asyncio.wait({stopping}, timeout=RELEASE_WITHIN + 30)
    stopping.cancel()  # a stop held for ever (the test fails) is not left behind

    assert done == {stopping}, "the stop waited on the lease's release"
    # Not given back: it lapses by itself.
    assert await lease_holder(api.container.mongo, LEASE_NAME) is not None


async def test_a_database_outage_ends_the_pass_instead_of_retrying_member_by_member(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    deps = api.container.deps
    await create_members(deps, 8)
    api.clock.set(at(2, 15))
    attempts = 0

    async def unreachable(*args: object, **kwargs: object) -> None:
        nonlocal attempts
        attempts += 1
        raise NetworkTimeout("the primary went away")

    monkeypatch.setattr(MemberRepository, "get_many", unreachable)
    with pytest.raises(NetworkTimeout):
        await scheduling.renew_due(deps, at(2, 15), batch_size=4)
    assert attempts == 1


async def test_on_the_system_clock_a_pass_comes_when_a_reminder_falls_due(
    mongodb_uri: str, db_name: str
) -> None:
    """The pass at start-up finds nothing; the interval's next pass, 20 s after it, finds the
    reminder due 25 s after sending and comes again when it falls due, rather than at the next
    interval (some 15 s late)."""
    settings = settings_with(
        clock="system",
        clock_start=None,
        scheduler_enabled=True,
        scheduler_interval=20.0,
        reminder_delay_hours=25 / 3600,
    )
    async with open_api(mongodb_uri, db_name, settings) as api:
        deps = api.container.deps
        ada = await new_member(deps, "Ada Lovelace")
        alan = await new_member(deps, "Alan Turing")
        sent = await inmail_service.send_inmail(deps, ada, alan, "Hi", "Coffee?", "k-1")
        due = sent.conversation.sent_at + timedelta(seconds=25)
        reminded_at = None
        for _ in range(600):  # up to a minute
            conversation = await deps.reads.conversations.get(sent.conversation.id)
            assert conversation is not None
            reminded_at = conversation.reminder_sent_at
            if reminded_at is not None:
                break
            await asyncio.sleep(0.1)
        assert reminded_at is not None
        assert due <= reminded_at < due + timedelta(seconds=10)


def test_the_interval_is_at_most_five_minutes_so_charges_and_reminders_keep_their_deadlines() -> (
    None
):
    """A pass wakes for the jobs it knows of. A charge left open by a request that died just
    after a pass is first seen by the next pass, then reconciled once two minutes old: an
    interval of at most five minutes keeps that within SPEC 6's ten. A reminder for an InMail
    sent just after a pass waits at most an interval, so every delay up to 72 hours holds."""
    for interval in ("300.001", "7200", "260000"):
        with pytest.raises(SettingsError, match="INMAIL_SCHEDULER_INTERVAL"):
            Settings.from_env({"INMAIL_SCHEDULER_INTERVAL": interval})
    for delay in ("72", "0.001"):
        settings = Settings.from_env(
            {"INMAIL_REMINDER_DELAY_HOURS": delay, "INMAIL_SCHEDULER_INTERVAL": "300"}
        )
        assert (settings.scheduler_interval, settings.reminder_delay_hours) == (300, float(delay))
