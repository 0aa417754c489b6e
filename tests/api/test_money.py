"""Money that cannot be minted: paid plan changes, purchases bound to their charge, and the
reconciliation of charges whose request never came back (SPEC 2 and 6), on the real mongod."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from inmail.domain.billing import PaymentMethod
from inmail.domain.intents import IntentKind, IntentStatus, PaymentIntent
from inmail.domain.money import Money
from inmail.repositories.records import ChargeRepository
from inmail.services import charges as charges_service
from inmail.services.charges import RECHECK_EVERY, new_intent, reconcile_charges
from inmail.services.fulfilments import FULFILMENTS
from inmail.services.idempotency import KeyedRequest
from inmail.services.payments import (
    DECLINED_LAST4,
    BuiltinGateway,
    Charge,
    ChargeRequest,
    PaymentDeclined,
)
from inmail.services.scheduling import reconcile_due
from inmail.settings import Settings
from stored import intents_of
from support import (
    START,
    Api,
    GraphQLFailure,
    HeldGateway,
    PassThroughGateway,
    Person,
    cancel_subscription,
    change_plan,
    charges_of,
    codes,
    held_gateways,
    legacy_premium_by_an_admin,
    lots_of,
    new_key,
    open_api,
    orphan_charge,
    purchased_lots_of,
    update_card,
)

WAIT = 30.0  # a bound on waiting for the app, never a measure of speed
BATCH = Settings().scheduler_batch  # the scheduler's batch, as the service runs it

DECLINING_CARD = {"brand": "Visa", "last4": "0002", "expMonth": 12, "expYear": 2030}
CARD_TO_JANUARY = {"brand": "Visa", "last4": "4242", "expMonth": 1, "expYear": 2026}
INTO_FEBRUARY = 17  # days from START: a card valid through January 2026 has expired
REFUNDED_SAID = "Your card was charged for this request, and that charge is refunded."
ADVANCE = "mutation($i: AdvanceClockInput!) { advanceClock(input: $i) { now errors { code } } }"
PURCHASES = (
    "{ viewer { purchases(first: 10) { totalCount nodes { quantity status "
    "amount { amount currency } lot { quantity } } } } }"
)


async def advance_clock(api: Api, hours: int) -> None:
    data = await api.gql(ADVANCE, {"i": {"hours": hours}}, api.admin)
    assert data["advanceClock"]["errors"] == []


async def purchases_of(api: Api, member: Person) -> list[dict[str, Any]]:
    data = await api.gql(PURCHASES, token=member.token)
    nodes: list[dict[str, Any]] = data["viewer"]["purchases"]["nodes"]
    assert data["viewer"]["purchases"]["totalCount"] == len(nodes)
    return nodes


async def plan_of(api: Api, member: Person) -> str:
    data = await api.gql("{ viewer { plan { type } } }", token=member.token)
    plan: str = data["viewer"]["plan"]["type"]
    return plan


async def reconcile_in(api: Api, minutes: int) -> None:
    """Reconciliation's pass `minutes` from now, as the scheduler runs it then."""
    api.advance(minutes=minutes)
    await reconcile_charges(
        api.container.deps, api.clock.now(), batch_size=BATCH, fulfilments=FULFILMENTS
    )


async def assert_on_premium_business_charged_once(api: Api, member: Person) -> None:
    """The member on Premium Business with its 15 credits, charged its price once."""
    assert await plan_of(api, member) == "PREMIUM_BUSINESS"
    assert await api.balance(member) == 15
    assert [c["amount"] for c in await charges_of(api, member)] == [5999]


async def test_a_basic_member_without_a_card_flipping_plans_gets_nothing_for_free(
    api: Api,
) -> None:
    farmer = await api.create_member("Frank Farmer", "BASIC", card=None)
    readers = [await api.create_member(f"Reader {i}", "BASIC") for i in range(3)]

    for plan in ["RECRUITER_LITE", "SALES_NAVIGATOR"] * 2:
        result = await change_plan(api, farmer, plan)
        assert codes(result) == ["PAYMENT_METHOD_EXPIRED"], plan

    assert await plan_of(api, farmer) == "BASIC"
    assert await api.balance(farmer) == 0
    assert await lots_of(api, farmer) == []
    assert await charges_of(api, farmer) == []
    assert [codes(await api.send(farmer, r)) for r in readers] == [["UPGRADE_REQUIRED"]] * 3


async def test_a_member_with_a_card_pays_the_monthly_price_of_every_paid_change(api: Api) -> None:
    flipper = await api.create_member("Flora Flipper", "BASIC")
    flips = ["RECRUITER_LITE", "SALES_NAVIGATOR", "RECRUITER_LITE", "SALES_NAVIGATOR"]

    for plan in flips:
        result = await change_plan(api, flipper, plan)
        assert result["errors"] == [], plan

    charges = await charges_of(api, flipper)
    assert [(c["amount"], c["currency"], c["status"]) for c in charges] == [
        (17000, "USD", "SUCCEEDED"),
        (9999, "USD", "SUCCEEDED"),
        (17000, "USD", "SUCCEEDED"),
        (9999, "USD", "SUCCEEDED"),
    ]
    # Each change forfeited what the last one granted: what is held is one allotment.
    assert await api.balance(flipper) == 20


async def test_changing_to_basic_or_to_the_plan_already_held_charges_nothing(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    same = await change_plan(api, ada, "PREMIUM_CAREER", key=None)
    basic = await change_plan(api, ada, "BASIC", key=None)

    assert same["errors"] == basic["errors"] == []
    assert basic["member"]["plan"]["type"] == "BASIC"
    assert await charges_of(api, ada) == []


async def test_a_paid_change_without_an_idempotency_key_is_invalid_input(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    result = await change_plan(api, ada, "PREMIUM_BUSINESS", key=None)

    assert codes(result) == ["INVALID_INPUT"]
    assert result["errors"][0]["field"] == "idempotencyKey"
    assert await plan_of(api, ada) == "PREMIUM_CAREER"
    assert await charges_of(api, ada) == []


async def test_a_paid_change_retried_under_its_key_charges_and_grants_once(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    first = await change_plan(api, ada, "PREMIUM_BUSINESS", key="upgrade-1")
    retry = await change_plan(api, ada, "PREMIUM_BUSINESS", key="upgrade-1")
    other = await change_plan(api, ada, "RECRUITER_LITE", key="upgrade-1")

    assert first["errors"] == retry["errors"] == []
    assert codes(other) == ["IDEMPOTENCY_KEY_REUSED"]
    await assert_on_premium_business_charged_once(api, ada)


async def test_a_paid_change_retried_after_a_later_change_succeeds_showing_the_member_now(
    api: Api,
) -> None:
    """A retry answers as the first did, a success, and charges and changes nothing more; its
    `member` is the one object of that id, as it is now (a client's normalized cache would
    take an older picture of it for the present)."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    first = await change_plan(api, ada, "PREMIUM_BUSINESS", key="upgrade-1")
    later = await change_plan(api, ada, "PREMIUM_CAREER", key="back-1")

    retry = await change_plan(api, ada, "PREMIUM_BUSINESS", key="upgrade-1")

    assert first["errors"] == later["errors"] == retry["errors"] == []
    assert first["member"]["plan"]["type"] == "PREMIUM_BUSINESS"
    assert retry["member"]["plan"]["type"] == "PREMIUM_CAREER"
    assert await plan_of(api, ada) == "PREMIUM_CAREER"
    assert [c["amount"] for c in await charges_of(api, ada)] == [5999, 2999]


async def test_paid_changes_asked_for_together_under_their_own_keys_charge_the_card_once(
    api: Api,
) -> None:
    """A double click, two tabs: changes sent together, each under a key of its own. One is
    charged and applied; the others are refused before any charge, rather than each charged
    and all but one refunded, and say that nothing was charged for them."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    prices = {"PREMIUM_BUSINESS": 5999, "RECRUITER_LITE": 17000, "SALES_NAVIGATOR": 9999}
    allotments = {"PREMIUM_BUSINESS": 15, "RECRUITER_LITE": 30, "SALES_NAVIGATOR": 20}

    results = await asyncio.gather(*(change_plan(api, ada, plan) for plan in [*prices] * 4))

    applied = [r["member"]["plan"]["type"] for r in results if r["errors"] == []]
    refused = [error for r in results for error in r["errors"]]
    assert len(applied) == 1, results
    assert len(refused) == len(results) - 1
    assert {(e["code"], e["field"]) for e in refused} == {("INVALID_INPUT", "plan")}
    assert all("nothing was charged for it" in e["message"] for e in refused), refused
    charges = await charges_of(api, ada)
    assert [(c["amount"], c["status"]) for c in charges] == [(prices[applied[0]], "SUCCEEDED")]
    assert await plan_of(api, ada) == applied[0]
    assert await api.balance(ada) == allotments[applied[0]]


async def test_a_change_to_the_plan_held_keeps_its_key_and_its_retry_never_charges(
    api: Api,
) -> None:
    """A change to the plan the member is on changes and charges nothing, and says so again to
    its retry, even once the member has moved to another plan (SPEC 4: a retry answers the
    first result, it never acts)."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    stay = await change_plan(api, ada, "PREMIUM_CAREER", key="stay-1")
    upgrade = await change_plan(api, ada, "PREMIUM_BUSINESS", key="upgrade-1")
    retry = await change_plan(api, ada, "PREMIUM_CAREER", key="stay-1")
    other = await change_plan(api, ada, "RECRUITER_LITE", key="stay-1")

    assert stay["errors"] == upgrade["errors"] == retry["errors"] == []
    assert stay["member"]["plan"]["type"] == "PREMIUM_CAREER"
    assert retry["member"]["plan"]["type"] == "PREMIUM_BUSINESS", "the retry changed nothing"
    assert codes(other) == ["IDEMPOTENCY_KEY_REUSED"]
    await assert_on_premium_business_charged_once(api, ada)


async def test_a_change_to_basic_under_a_key_takes_it_and_its_retry_changes_nothing(
    api: Api,
) -> None:
    """Keys are one namespace: a change to BASIC under a key another request took is refused
    and cancels nothing; under its own key, a retry answers as the first did without cancelling
    the subscription started since."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    alan = await api.create_member("Alan Turing", "BASIC")
    assert (await api.send(ada, alan, key="sent-1"))["errors"] == []

    reused = await change_plan(api, ada, "BASIC", key="sent-1")
    assert codes(reused) == ["IDEMPOTENCY_KEY_REUSED"]
    assert await plan_of(api, ada) == "PREMIUM_CAREER"
    assert await api.balance(ada) == 4

    cancelled = await change_plan(api, ada, "BASIC", key="basic-1")
    assert cancelled["errors"] == []
    assert await plan_of(api, ada) == "BASIC"
    assert await api.balance(ada) == 0
    assert (await change_plan(api, ada, "PREMIUM_CAREER", key="back-1"))["errors"] == []
    retry = await change_plan(api, ada, "BASIC", key="basic-1")
    other = await change_plan(api, ada, "PREMIUM_BUSINESS", key="basic-1")
    resend = await api.send(ada, alan, key="basic-1")

    assert retry["errors"] == []
    assert retry["member"]["plan"]["type"] == "PREMIUM_CAREER", "the retry changed nothing"
    assert codes(other) == ["IDEMPOTENCY_KEY_REUSED"]
    assert [e["code"] for e in resend["errors"]] == ["IDEMPOTENCY_KEY_REUSED"]
    assert await plan_of(api, ada) == "PREMIUM_CAREER"
    assert await api.balance(ada) == 5


async def test_a_send_and_a_change_to_the_plan_held_racing_under_one_key_take_it_once(
    api: Api,
) -> None:
    """SPEC 4: a key is one request's. A send keeps its key with its conversation and a change
    that charges nothing keeps its own in the idempotency records; arriving together, one of
    them takes the key and the other is refused, and a retry of each answers as the first run
    did (the winner's result, the loser's refusal)."""
    for round_no in range(6):
        ada = await api.create_member(f"Ada Lovelace {round_no}", "PREMIUM_CAREER")
        alan = await api.create_member(f"Alan Turing {round_no}", "BASIC")
        key = f"shared-{round_no}"

        sent, stayed = await asyncio.gather(
            api.send(ada, alan, key=key), change_plan(api, ada, "PREMIUM_CAREER", key=key)
        )
        sent_again = await api.send(ada, alan, key=key)
        stayed_again = await change_plan(api, ada, "PREMIUM_CAREER", key=key)

        outcomes = [codes(sent), codes(stayed)]
        assert sorted(outcomes) == [[], ["IDEMPOTENCY_KEY_REUSED"]], (sent, stayed)
        assert [codes(sent_again), codes(stayed_again)] == outcomes
        if codes(sent) == []:
            assert sent_again["conversation"]["id"] == sent["conversation"]["id"]
            assert await api.balance(ada) == 4
        else:
            assert await api.balance(ada) == 5, "no InMail went out"
        assert await charges_of(api, ada) == []


async def test_a_member_cannot_choose_legacy_premium_nor_set_an_allotment(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    legacy = await change_plan(api, ada, "LEGACY_PREMIUM", monthly_allotment=1000)
    legacy_default = await change_plan(api, ada, "LEGACY_PREMIUM")
    allotment = await change_plan(api, ada, "PREMIUM_BUSINESS", monthly_allotment=1000)

    assert codes(legacy) == codes(legacy_default) == ["PLAN_NOT_AVAILABLE"]
    assert codes(allotment) == ["PLAN_NOT_AVAILABLE"]
    [refused] = allotment["errors"]
    assert refused["field"] == "monthlyAllotment"
    assert "LEGACY" not in refused["message"]  # a plan she never asked for
    assert await plan_of(api, ada) == "PREMIUM_CAREER"
    assert await api.balance(ada) == 5
    assert await charges_of(api, ada) == []


async def test_an_admin_puts_a_member_on_legacy_premium_without_a_charge(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "BASIC", card=None)

    await legacy_premium_by_an_admin(api, ada)

    assert await api.balance(ada) == 12
    assert await charges_of(api, ada) == []


async def test_only_an_admin_may_name_the_member_whose_plan_changes(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    mallory = await api.create_member("Mallory", "PREMIUM_CAREER")

    body = await api.raw(
        "mutation($i: ChangePlanInput!) { changePlan(input: $i) { errors { code } } }",
        {"i": {"plan": "BASIC", "memberId": ada.id}},
        mallory.token,
    )

    assert body.get("errors"), body
    assert await plan_of(api, ada) == "PREMIUM_CAREER"


async def test_a_declined_card_changes_nothing_on_a_plan_change_or_a_purchase(api: Api) -> None:
    dora = await api.create_member("Dora Declined", "PREMIUM_CAREER", card=DECLINING_CARD)

    change = await change_plan(api, dora, "PREMIUM_BUSINESS", key="up")
    retry = await change_plan(api, dora, "PREMIUM_BUSINESS", key="up")
    purchase = await api.purchase(dora, 2)

    assert codes(change) == codes(retry) == codes(purchase) == ["PAYMENT_DECLINED"]
    # Nothing was charged: no answer says a charge is refunded.
    assert not any(
        "refunded" in e["message"] for p in (change, retry, purchase) for e in p["errors"]
    )
    assert await plan_of(api, dora) == "PREMIUM_CAREER"
    assert await api.balance(dora) == 5
    assert [lot["source"] for lot in await lots_of(api, dora)] == ["MONTHLY_ALLOTMENT"]
    assert await charges_of(api, dora) == []
    assert await purchases_of(api, dora) == []


async def test_a_declined_change_holds_up_no_change_asked_for_after_it(api: Api) -> None:
    dora = await api.create_member("Dora Declined", "PREMIUM_CAREER", card=DECLINING_CARD)
    declined = await change_plan(api, dora, "PREMIUM_BUSINESS", key="up")
    assert codes(declined) == ["PAYMENT_DECLINED"]

    assert (await update_card(api, dora, {**DECLINING_CARD, "last4": "4242"}))["errors"] == []
    upgraded = await change_plan(api, dora, "PREMIUM_BUSINESS", key="up-again")

    assert upgraded["errors"] == []
    assert await plan_of(api, dora) == "PREMIUM_BUSINESS"
    assert [(c["amount"], c["status"]) for c in await charges_of(api, dora)] == [
        (5999, "SUCCEEDED")
    ]


async def test_a_purchase_is_charged_its_quantity_times_the_credit_price(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")

    await api.purchase(ada, 3)
    api.advance(hours=1)
    await api.purchase(ada, 7)

    assert [c["amount"] for c in await charges_of(api, ada)] == [3000, 7000]
    assert await purchases_of(api, ada) == [
        {
            "quantity": 7,
            "status": "COMPLETED",
            "amount": {"amount": 7000, "currency": "USD"},
            "lot": {"quantity": 7},
        },
        {
            "quantity": 3,
            "status": "COMPLETED",
            "amount": {"amount": 3000, "currency": "USD"},
            "lot": {"quantity": 3},
        },
    ]


async def test_another_member_cannot_list_a_members_purchases(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    eve = await api.create_member("Eve Eavesdropper", "PREMIUM_BUSINESS")
    await api.purchase(ada, 1)

    body = await api.raw(
        "query($id: ID!) { member(id: $id) { purchases { totalCount } } }",
        {"id": ada.id},
        eve.token,
    )
    admin = await api.gql(
        "query($id: ID!) { member(id: $id) { purchases { totalCount } } }",
        {"id": ada.id},
        api.admin,
    )

    assert body.get("errors"), body
    assert admin["member"]["purchases"]["totalCount"] == 1


async def test_the_same_key_with_another_quantity_is_refused_before_any_charge(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")

    first = await api.purchase(ada, 1, key="order-7")
    second = await api.purchase(ada, 10, key="order-7")

    assert first["errors"] == []
    assert codes(second) == ["IDEMPOTENCY_KEY_REUSED"]
    assert [c["amount"] for c in await charges_of(api, ada)] == [1000]
    assert await api.balance(ada) == 16


async def test_concurrent_same_key_purchases_of_different_quantities_grant_what_was_charged(
    api: Api,
) -> None:
    for round_no in range(4):
        buyer = await api.create_member(f"Quinn Quantity {round_no}", "PREMIUM_BUSINESS")
        key = f"race-{round_no}"
        quantities = [1, 10, 3, 7, 1, 10]

        results = await asyncio.gather(*(api.purchase(buyer, q, key=key) for q in quantities))

        charges = await charges_of(api, buyer)
        assert len(charges) == 1, charges
        charged = charges[0]["amount"] // 1000
        winners = [q for q, r in zip(quantities, results, strict=True) if r["errors"] == []]
        assert winners
        assert set(winners) == {charged}
        for q, result in zip(quantities, results, strict=True):
            if q != charged:
                assert codes(result) == ["IDEMPOTENCY_KEY_REUSED"]
        bought = await purchased_lots_of(api, buyer)
        assert [lot["quantity"] for lot in bought] == [charged]
        assert await api.balance(buyer) == 15 + charged


# A process that died between the charge and the grant: the state made in the database.


async def test_an_orphan_charge_is_completed_by_reconciliation_when_it_fits(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    charged = await orphan_charge(api, ada, 4)
    pending = await orphan_charge(api, ada, 2, status=IntentStatus.PENDING)

    await advance_clock(api, hours=1)

    purchases = await purchases_of(api, ada)
    assert sorted((p["quantity"], p["status"]) for p in purchases) == [
        (2, "COMPLETED"),
        (4, "COMPLETED"),
    ]
    assert await api.balance(ada) == 15 + 4 + 2
    assert [c["status"] for c in await charges_of(api, ada)] == ["SUCCEEDED", "SUCCEEDED"]
    intents = await intents_of(api.container.mongo, ada.id)
    assert {i.id: i.status for i in intents} == {
        charged.id: IntentStatus.COMPLETED,
        pending.id: IntentStatus.COMPLETED,
    }


async def test_an_orphan_charge_that_no_longer_fits_is_refunded_and_grants_nothing(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    for _ in range(3):  # up to the cap of 45
        assert (await api.purchase(ada, 10))["errors"] == []
    orphan = await orphan_charge(api, ada, 10)  # charged by a process that died, over the cap

    await advance_clock(api, hours=1)
    retry = await api.purchase(ada, 10, key=orphan.key)

    statuses = [(p["quantity"], p["status"]) for p in await purchases_of(api, ada)]
    assert sorted(statuses) == [(10, "COMPLETED")] * 3 + [(10, "REFUNDED")]
    assert (
        sorted(c["status"] for c in await charges_of(api, ada)) == ["REFUNDED"] + ["SUCCEEDED"] * 3
    )
    assert await api.balance(ada) == 45
    # Its request, sent again, hears that it was charged and that the charge is refunded.
    assert retry["errors"] == [
        {
            "code": "CAP_EXCEEDED",
            "field": "quantity",
            "message": "That would take your balance to 55; the most you can hold is 45. Your "
            "card was charged for this request, and that charge is refunded.",
        }
    ]


async def test_an_orphan_charge_holds_its_room_under_the_cap_until_it_is_granted(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")  # 15 of a cap of 45
    await orphan_charge(api, ada, 10)  # paid for: its 10 credits are on order

    bought = [await api.purchase(ada, 10) for _ in range(3)]
    await advance_clock(api, hours=1)

    assert [codes(b) for b in bought] == [[], [], ["CAP_EXCEEDED"]]
    assert sorted(c["status"] for c in await charges_of(api, ada)) == ["SUCCEEDED"] * 3
    assert sorted(p["status"] for p in await purchases_of(api, ada)) == ["COMPLETED"] * 3
    assert await api.balance(ada) == 45


async def test_a_retry_after_reconciliation_gets_the_reconciled_purchase(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    intent = await orphan_charge(api, ada, 3)
    await advance_clock(api, hours=1)

    retry = await api.purchase(ada, 3, key=intent.key)
    other = await api.purchase(ada, 9, key=intent.key)

    assert retry["errors"] == []
    assert retry["lot"]["quantity"] == 3
    assert codes(other) == ["IDEMPOTENCY_KEY_REUSED"]
    assert len(await charges_of(api, ada)) == 1
    assert await api.balance(ada) == 18


async def test_a_retry_racing_two_reconcilers_settles_each_charge_exactly_once(api: Api) -> None:
    members = [await api.create_member(f"Rita Racer {i}", "PREMIUM_BUSINESS") for i in range(4)]
    for member in members[2:]:  # these two fill up to the cap: their charge will not fit
        for _ in range(3):
            assert (await api.purchase(member, 10))["errors"] == []
    intents = [await orphan_charge(api, m, 5 + 5 * (i % 2)) for i, m in enumerate(members)]
    api.advance(minutes=3)
    deps = api.container.deps
    now = api.clock.now()

    await asyncio.gather(
        reconcile_charges(deps, now, batch_size=BATCH, fulfilments=FULFILMENTS),
        reconcile_charges(deps, now, batch_size=BATCH, fulfilments=FULFILMENTS),
        *(
            api.purchase(m, i.quantity or 0, key=i.key)
            for m, i in zip(members, intents, strict=True)
        ),
    )

    expected = [IntentStatus.COMPLETED] * 2 + [IntentStatus.REFUNDED] * 2
    for member, intent, status in zip(members, intents, expected, strict=True):
        settled = await deps.reads.intents.get(intent.id)
        assert settled is not None
        assert settled.status == status
        [charge] = [c for c in await charges_of(api, member) if c["_id"] == intent.charge_id]
        ours = [p for p in await purchases_of(api, member) if p["status"] == "REFUNDED"]
        if status == IntentStatus.COMPLETED:
            assert charge["status"] == "SUCCEEDED"
            assert ours == []
        else:
            assert charge["status"] == "REFUNDED"
            assert [p["quantity"] for p in ours] == [intent.quantity]
        bought = await purchased_lots_of(api, member)
        granted = sum(lot["quantity"] for lot in bought)
        charged = sum(
            c["amount"] for c in await charges_of(api, member) if c["status"] != "REFUNDED"
        )
        assert granted * 1000 == charged
    assert [await api.balance(m) for m in members] == [20, 25, 45, 45]


async def test_an_orphan_is_left_to_its_request_for_two_minutes_and_settled_within_ten(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    intent = await orphan_charge(api, ada, 2)
    deps = api.container.deps

    early = await reconcile_charges(
        deps, START + timedelta(minutes=1), batch_size=BATCH, fulfilments=FULFILMENTS
    )
    late = await reconcile_charges(
        deps,
        api.clock.now() + timedelta(minutes=10),
        batch_size=BATCH,
        fulfilments=FULFILMENTS,
    )

    assert (early.completed, early.refunded) == (0, 0)
    assert (late.completed, late.refunded) == (1, 0)
    settled = await deps.reads.intents.get(intent.id)
    assert settled is not None
    assert settled.status == IntentStatus.COMPLETED


async def test_reconciliation_stops_where_its_pass_is_told_to_and_the_next_goes_on(
    api: Api,
) -> None:
    members = [await api.create_member(f"Member {i}", "PREMIUM_BUSINESS") for i in range(3)]
    intents = [await orphan_charge(api, member, 2) for member in members]
    deps = api.container.deps
    api.advance(minutes=10)
    later = api.clock.now()
    asked = 0

    async def one_more() -> bool:  # a scheduler that loses its lease after the first intent
        nonlocal asked
        asked += 1
        return asked == 1

    stopped = await reconcile_charges(
        deps, later, batch_size=BATCH, fulfilments=FULFILMENTS, go_on=one_more
    )
    left = [await deps.reads.intents.get(i.id) for i in intents]

    async def stop() -> bool:
        return False

    job = await reconcile_due(deps, later, batch_size=BATCH, checkpoint=stop)
    rest = await reconcile_charges(deps, later, batch_size=BATCH, fulfilments=FULFILMENTS)

    assert (stopped.completed, stopped.stopped, asked) == (1, True, 2)
    assert (job.changed, job.stopped) == (0, True), "the scheduler's report says it stopped"
    assert not rest.stopped
    assert sorted(str(i.status) for i in left if i is not None) == sorted(
        [IntentStatus.COMPLETED, IntentStatus.CHARGED, IntentStatus.CHARGED]
    )
    assert rest.completed == 2
    assert [await api.balance(m) for m in members] == [17, 17, 17]


async def uncharged_intent(api: Api, member: Person, quantity: int) -> PaymentIntent:
    """A purchase's intent recorded by a request that has not charged it (yet)."""
    request = KeyedRequest.of(member.id, new_key(), IntentKind.PURCHASE, quantity=quantity)
    amount = Money(1000 * quantity, "USD")
    intent = new_intent(request, amount, api.clock.now(), quantity=quantity)
    async with api.container.deps.uow.transaction() as tx:
        await tx.intents.insert(intent)
    return intent


async def test_a_charge_that_lands_after_its_intent_was_given_up_is_refunded_within_minutes(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    bob = await api.create_member("Bob Byron", "PREMIUM_BUSINESS")
    stalled, idle = await uncharged_intent(api, ada, 3), await uncharged_intent(api, bob, 4)
    deps = api.container.deps

    await reconcile_in(api, 3)  # both given up as never charged
    given_up = await deps.reads.intents.get(idle.id)
    # Ada's request was under way all along: its charge lands now, and its process dies.
    api.advance(minutes=1)
    member = await deps.reads.members.get(ada.id)
    assert member is not None
    assert member.payment_method is not None
    charge = ChargeRequest(
        ada.id, stalled.id, stalled.amount, member.payment_method, api.clock.now(), "purchase"
    )
    await deps.gateway.charge(charge)
    await reconcile_in(api, 5)  # the next look at the gateway, within SPEC's 10 minutes
    looked_again = await deps.reads.intents.get(idle.id)

    settled = {i.id: await deps.reads.intents.get(i.id) for i in (stalled, idle)}
    assert {k: i.status for k, i in settled.items() if i} == {
        stalled.id: IntentStatus.REFUNDED,
        idle.id: IntentStatus.ABANDONED,
    }
    assert [c["status"] for c in await charges_of(api, ada)] == ["REFUNDED"]
    assert await charges_of(api, bob) == []
    assert [(p["quantity"], p["status"]) for p in await purchases_of(api, ada)] == [(3, "REFUNDED")]
    assert [await api.balance(m) for m in (ada, bob)] == [15, 15]
    retries = [
        await api.purchase(ada, 3, key=stalled.key),
        await api.purchase(bob, 4, key=idle.key),
    ]
    assert [r["errors"][0]["message"] for r in retries] == [
        "This request lapsed before its charge was recorded, and that charge is refunded; send "
        "it again under a new idempotency key.",
        "This request was never charged and has lapsed; send it again under a new idempotency key.",
    ]
    # Bob's intent is looked at every RECHECK_EVERY, then, past RECHECK_FOR, no more: the
    # scheduler (advanceClock runs each pass at its time) has nothing left to wake for.
    assert given_up is not None
    assert looked_again is not None
    assert given_up.recheck_at == START + timedelta(minutes=3) + RECHECK_EVERY
    assert looked_again.recheck_at == START + timedelta(minutes=9) + RECHECK_EVERY
    await advance_clock(api, hours=2)
    assert await deps.reads.intents.next_recheck_at(None) is None
    assert await charges_of(api, bob) == []


class FirstAnswerLost(PassThroughGateway):
    """A provider whose first charge goes through but whose answer never comes back, and which
    declines a card refused now whatever the key (it replays no earlier answer)."""

    def __init__(self, charges: ChargeRepository) -> None:
        super().__init__(BuiltinGateway(charges))
        self.answered = False

    async def charge(self, request: ChargeRequest) -> Charge:
        if request.card.last4 == DECLINED_LAST4 or request.card.is_expired(request.at):
            raise PaymentDeclined("declined by the provider")
        charge = await super().charge(request)
        if not self.answered:
            self.answered = True
            raise TimeoutError("the provider's answer was lost")
        return charge


@pytest.mark.parametrize(
    ("paying_for", "refused_now"),
    [
        ("credits", "declined"),
        ("credits", "expired"),
        ("a plan", "declined"),
        ("a plan", "expired"),
    ],
)
async def test_a_retry_of_a_charge_whose_answer_was_lost_completes_it_whatever_the_card_says_now(
    mongodb_uri: str, db_name: str, paying_for: str, refused_now: str
) -> None:
    """The provider took the charge, its answer never came back, and the card changed or expired
    before the client sent the request again under its key: the retry finds that charge and
    gets what it paid for, instead of declining the intent and leaving the money taken."""
    async with open_api(mongodb_uri, db_name, gateway=FirstAnswerLost) as api:
        ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", card=CARD_TO_JANUARY)

        async def pay() -> dict[str, Any]:
            if paying_for == "credits":
                return await api.purchase(ada, 2, key="lost")
            return await change_plan(api, ada, "PREMIUM_BUSINESS", key="lost")

        with pytest.raises(GraphQLFailure, match="INTERNAL_SERVER_ERROR"):
            await pay()
        if refused_now == "declined":
            assert (await update_card(api, ada, DECLINING_CARD))["errors"] == []
        else:
            api.advance(days=INTO_FEBRUARY)
        retry = await pay()
        charges = [(c["amount"], c["status"]) for c in await charges_of(api, ada)]
        intents = [i.status for i in await intents_of(api.container.mongo, ada.id)]
        plan = await plan_of(api, ada)
        balance = await api.balance(ada)

    assert retry["errors"] == []
    assert intents == [IntentStatus.COMPLETED]
    if paying_for == "credits":
        assert (charges, plan, balance) == ([(2000, "SUCCEEDED")], "PREMIUM_CAREER", 7)
    else:
        assert (charges, plan, balance) == ([(5999, "SUCCEEDED")], "PREMIUM_BUSINESS", 15)


async def test_the_built_in_gateway_answers_a_retry_under_a_charged_key_with_that_charge(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS", card=CARD_TO_JANUARY)
    member = await api.container.deps.reads.members.get(ada.id)
    assert member is not None
    assert member.payment_method is not None
    card, gateway, now = member.payment_method, api.container.deps.gateway, api.clock.now()
    declining = replace(card, last4="0002")
    in_february = now + timedelta(days=INTO_FEBRUARY)

    def asked(key: str, card: PaymentMethod, at: datetime) -> ChargeRequest:
        return ChargeRequest(ada.id, key, Money(1000, "USD"), card, at, "purchase")

    first = await gateway.charge(asked("paid", card, now))

    assert await gateway.charge(asked("paid", declining, now)) == first
    assert await gateway.charge(asked("paid", card, in_february)) == first
    with pytest.raises(PaymentDeclined, match="declined"):
        await gateway.charge(asked("unpaid", declining, now))
    with pytest.raises(PaymentDeclined, match="expired"):
        await gateway.charge(asked("unpaid", card, in_february))
    assert [c["amount"] for c in await charges_of(api, ada)] == [1000]


async def test_a_charge_landing_after_a_twin_declined_its_intent_is_refunded_by_its_request(
    mongodb_uri: str, db_name: str
) -> None:
    """Two attempts under one key: the first is at the gateway when the card expires, and the
    second is declined before the first's charge lands. That charge is given back, and the first
    attempt's answer is the decline, saying so."""
    made, held = held_gateways(HeldGateway)

    async with open_api(mongodb_uri, db_name, gateway=held) as api:
        ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS", card=CARD_TO_JANUARY)
        buying = asyncio.create_task(api.purchase(ada, 3, key="twin"))
        await asyncio.wait_for(made[0].charging.wait(), WAIT)
        api.advance(days=INTO_FEBRUARY)
        twin = await api.purchase(ada, 3, key="twin")
        made[0].release.set()  # asked in January, the first attempt's charge goes through
        bought = await asyncio.wait_for(buying, WAIT)
        charges = await charges_of(api, ada)
        intents = await intents_of(api.container.mongo, ada.id)
        balance = await api.balance(ada)

    assert codes(twin) == codes(bought) == ["PAYMENT_METHOD_EXPIRED"]
    assert bought["errors"][0]["message"].endswith(REFUNDED_SAID)
    assert [(c["amount"], c["status"]) for c in charges] == [(3000, "REFUNDED")]
    assert [i.status for i in intents] == [IntentStatus.REFUNDED]
    assert balance == 15


async def test_a_charge_landing_after_its_retry_was_declined_is_refunded_by_reconciliation(
    api: Api,
) -> None:
    """A request is at the gateway when its card expires; a retry under its key is declined;
    then the first request's charge lands and its process dies. Reconciliation looks at a
    declined intent again, as at one it gave up, finds the charge and refunds it."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS", card=CARD_TO_JANUARY)
    stalled = await uncharged_intent(api, ada, 3)
    asked_at = api.clock.now()
    member = await api.container.deps.reads.members.get(ada.id)
    assert member is not None
    assert member.payment_method is not None
    api.advance(days=INTO_FEBRUARY)
    declined = await api.purchase(ada, 3, key=stalled.key)
    charge = ChargeRequest(
        ada.id, stalled.id, stalled.amount, member.payment_method, asked_at, "purchase"
    )
    await api.container.deps.gateway.charge(charge)  # the first request's, which never returns

    await reconcile_in(api, 5)  # the declined intent's next look at the gateway

    assert codes(declined) == ["PAYMENT_METHOD_EXPIRED"]
    assert [(c["amount"], c["status"]) for c in await charges_of(api, ada)] == [(3000, "REFUNDED")]
    refunded = await api.container.deps.reads.intents.get(stalled.id)
    assert refunded is not None
    assert refunded.status == IntentStatus.REFUNDED
    assert await api.balance(ada) == 15
    retry = await api.purchase(ada, 3, key=stalled.key)
    assert codes(retry) == ["PAYMENT_METHOD_EXPIRED"]
    assert retry["errors"][0]["message"].endswith(REFUNDED_SAID)


async def test_a_recheck_time_left_on_an_intent_no_longer_given_up_is_dropped(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    intent = await orphan_charge(api, ada, 2)
    await advance_clock(api, hours=1)  # completed by reconciliation
    # What a process of an earlier version could leave behind.
    await api.container.mongo.c.payment_intents.update_one(
        {"_id": intent.id}, {"$set": {"recheckAt": api.clock.now()}}
    )
    intents = api.container.deps.reads.intents

    await advance_clock(api, hours=1)

    assert await intents.next_recheck_at(None) is None
    completed = await intents.get(intent.id)
    assert completed is not None
    assert completed.status == IntentStatus.COMPLETED
    assert await api.balance(ada) == 17


async def test_a_purchase_refused_after_its_charge_says_the_charge_is_refunded(
    mongodb_uri: str, db_name: str
) -> None:
    """A purchase whose charge is under way when its member cancels is refused once charged
    (the subscription ended): it is refunded, and the answer, and any retry under its key,
    say so."""
    made, held = held_gateways(HeldGateway)

    async with open_api(mongodb_uri, db_name, gateway=held) as api:
        ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
        key = new_key()
        buying = asyncio.create_task(api.purchase(ada, 2, key=key))
        await asyncio.wait_for(made[0].charging.wait(), WAIT)
        cancelled = await cancel_subscription(api, ada)
        made[0].release.set()
        bought = await asyncio.wait_for(buying, WAIT)
        retry = await api.purchase(ada, 2, key=key)
        charges = await charges_of(api, ada)
        balance = await api.balance(ada)

    assert cancelled["errors"] == []
    refused = {
        "code": "SUBSCRIPTION_INACTIVE",
        "field": None,
        "message": "Your Premium subscription is cancelled. Your card was charged for this "
        "request, and that charge is refunded.",
    }
    assert bought["errors"] == retry["errors"] == [refused]
    assert [(c["amount"], c["status"]) for c in charges] == [(2000, "REFUNDED")]
    assert balance == 0


async def test_a_plan_change_refused_after_its_charge_says_the_charge_is_refunded_once(
    mongodb_uri: str, db_name: str
) -> None:
    """A paid change whose charge is under way when its member cancels is not applied once
    charged (the subscription it was asked on is gone): its charge is refunded, and the answer
    says so, once."""
    made, held = held_gateways(HeldGateway)

    async with open_api(mongodb_uri, db_name, gateway=held) as api:
        ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
        changing = asyncio.create_task(change_plan(api, ada, "PREMIUM_BUSINESS", key="up"))
        await asyncio.wait_for(made[0].charging.wait(), WAIT)
        cancelled = await cancel_subscription(api, ada)
        made[0].release.set()
        changed = await asyncio.wait_for(changing, WAIT)
        charges = await charges_of(api, ada)
        plan = await plan_of(api, ada)

    assert cancelled["errors"] == []
    assert changed["errors"] == [
        {
            "code": "INVALID_INPUT",
            "field": "plan",
            "message": "Your subscription changed after this plan change was asked for (another "
            "change or a cancellation): it was not applied, and its charge is refunded.",
        }
    ]
    assert [(c["amount"], c["status"]) for c in charges] == [(5999, "REFUNDED")]
    assert plan == "PREMIUM_CAREER"  # cancelled, not changed


class LateGateway(HeldGateway):
    """Charges once `release` is set (then sets `charged`), and answers the request only once
    `answer` is set."""

    def __init__(self, inner: BuiltinGateway) -> None:
        super().__init__(inner)
        self.charged = asyncio.Event()
        self.answer = asyncio.Event()

    async def charge(self, request: ChargeRequest) -> Charge:
        charge = await super().charge(request)
        self.charged.set()
        await self.answer.wait()
        return charge


async def test_a_charge_reconciliation_refunded_before_its_request_came_back_is_said_refunded(
    mongodb_uri: str, db_name: str
) -> None:
    """A purchase whose charge is so slow that reconciliation gives it up as never charged,
    then finds the charge and refunds it, all before the request records it: the request is
    answered that its charge is refunded (not that it was never charged), and so is a retry."""
    made, late = held_gateways(LateGateway)

    async with open_api(mongodb_uri, db_name, gateway=late) as api:
        ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
        buying = asyncio.create_task(api.purchase(ada, 3, key="slow"))
        await asyncio.wait_for(made[0].charging.wait(), WAIT)
        await reconcile_in(api, 3)  # given up: the gateway has no charge yet
        made[0].release.set()  # the charge lands
        await asyncio.wait_for(made[0].charged.wait(), WAIT)
        await reconcile_in(api, 5)  # found at the next look, and refunded
        made[0].answer.set()
        bought = await asyncio.wait_for(buying, WAIT)
        retry = await api.purchase(ada, 3, key="slow")
        charges = await charges_of(api, ada)
        balance = await api.balance(ada)

    said = "This request lapsed before its charge was recorded, and that charge is refunded; send "
    assert [e["message"] for e in bought["errors"]] == [
        said + "it again under a new idempotency key."
    ]
    assert retry["errors"] == bought["errors"]
    assert [(c["amount"], c["status"]) for c in charges] == [(3000, "REFUNDED")]
    assert balance == 15


async def test_a_request_whose_charge_reconciliation_refunds_as_it_records_it_is_said_refunded(
    mongodb_uri: str, db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race inside the request's recording of a late charge: it finds its intent given up,
    and reconciliation finds the charge and refunds it just before the request would. The
    request reads the intent again, and says that its charge is refunded."""
    made, held = held_gateways(HeldGateway)
    real_to_refund = charges_service._to_refund
    raced: list[bool] = []

    async with open_api(mongodb_uri, db_name, gateway=held) as api:

        async def reconciliation_first(*args: Any) -> bool:
            if not raced:  # the request's own call: reconciliation gets there first
                raced.append(True)
                await reconcile_in(api, 5)
            return await real_to_refund(*args)

        monkeypatch.setattr(charges_service, "_to_refund", reconciliation_first)
        ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
        buying = asyncio.create_task(api.purchase(ada, 3, key="slow"))
        await asyncio.wait_for(made[0].charging.wait(), WAIT)
        await reconcile_in(api, 3)  # given up: the gateway has no charge yet
        made[0].release.set()
        bought = await asyncio.wait_for(buying, WAIT)
        charges = await charges_of(api, ada)

    assert raced == [True]
    assert "that charge is refunded" in bought["errors"][0]["message"]
    assert [(c["amount"], c["status"]) for c in charges] == [(3000, "REFUNDED")]
