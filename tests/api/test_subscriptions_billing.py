"""Plans (SPEC 1) and subscriptions (SPEC 2): cycles, plan change, cancel, payment method."""

from __future__ import annotations

from typing import Any

import pytest

from inmail.domain.plans import plan_table_from_overrides
from support import (
    Api,
    Person,
    cancel_subscription,
    change_plan,
    charges_of,
    codes,
    ledger_of,
    legacy_premium_by_an_admin,
    lots_of,
    open_api,
    subscription_of,
    update_card,
)
from support import test_settings as settings_for_tests

CARD_EXPIRING_JANUARY_2026 = {"brand": "Visa", "last4": "1111", "expMonth": 1, "expYear": 2026}

SPEC_PLAN_TABLE = {
    # type: (canSendInMail, monthlyAllotment, maxBalance, canPurchaseCredits)
    "BASIC": (False, 0, 0, False),
    "PREMIUM_CAREER": (True, 5, 15, True),
    "PREMIUM_BUSINESS": (True, 15, 45, True),
    "SALES_NAVIGATOR": (True, 20, 60, False),
    "RECRUITER_LITE": (True, 30, 90, False),
    "LEGACY_PREMIUM": (True, 10, 30, True),
}


async def spend(api: Api, sender: Person, count: int, tag: str = "") -> None:
    """Send `count` InMails to new members: a write that also catches up due renewals."""
    for i in range(count):
        reader = await api.create_member(f"Reader {tag}{i}", "BASIC")
        result = await api.send(sender, reader)
        assert result["errors"] == [], result["errors"]


def grants(entries: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(e["at"], e["delta"]) for e in entries if e["kind"] == "GRANT"]


async def test_the_plans_query_shows_the_policy_table_of_the_spec(api: Api) -> None:
    data = await api.gql(
        "{ plans { type canSendInMail monthlyAllotment maxBalance canPurchaseCredits } }"
    )

    table = {
        p["type"]: (
            p["canSendInMail"],
            p["monthlyAllotment"],
            p["maxBalance"],
            p["canPurchaseCredits"],
        )
        for p in data["plans"]
    }
    assert table == SPEC_PLAN_TABLE


async def test_the_plans_query_shows_each_plans_prices_in_cents(api: Api) -> None:
    data = await api.gql(
        "{ plans { type monthlyPrice { amount currency } creditPrice { amount currency } } }"
    )

    prices = {
        p["type"]: (
            p["monthlyPrice"]["amount"],
            p["creditPrice"] and p["creditPrice"]["amount"],
            p["monthlyPrice"]["currency"],
        )
        for p in data["plans"]
    }
    assert prices == {
        "BASIC": (0, None, "USD"),
        "PREMIUM_CAREER": (2999, 1000, "USD"),
        "PREMIUM_BUSINESS": (5999, 1000, "USD"),
        "SALES_NAVIGATOR": (9999, None, "USD"),
        "RECRUITER_LITE": (17000, None, "USD"),
        "LEGACY_PREMIUM": (2999, 1000, "USD"),
    }


async def test_an_operator_can_override_the_plan_table_in_configuration(
    mongodb_uri: str, db_name: str
) -> None:
    plans = plan_table_from_overrides(
        {
            "PREMIUM_CAREER": {"monthlyAllotment": 8, "maxBalance": 24},
            "SALES_NAVIGATOR": {
                "canPurchaseCredits": True,
                "creditPrice": {"amount": 1500, "currency": "USD"},
            },
        }
    )
    async with open_api(mongodb_uri, db_name, settings_for_tests(plans=plans)) as api:
        ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
        sam = await api.create_member("Sam Seller", "SALES_NAVIGATOR")

        assert await api.balance(ada) == 8
        assert (await api.purchase(ada, 10))["errors"] == []
        assert codes(await api.purchase(ada, 7)) == ["CAP_EXCEEDED"]  # 18 + 7 > 24
        assert (await api.purchase(sam, 2))["errors"] == []
        [charge] = await charges_of(api, sam)
        assert (charge["amount"], charge["currency"]) == (3000, "USD")


@pytest.mark.parametrize(
    ("plan", "allotment"),
    [
        ("PREMIUM_CAREER", 5),
        ("PREMIUM_BUSINESS", 15),
        ("SALES_NAVIGATOR", 20),
        ("RECRUITER_LITE", 30),
        ("LEGACY_PREMIUM", 10),
    ],
)
async def test_starting_a_subscription_grants_the_plans_allotment_at_once(
    api: Api, plan: str, allotment: int
) -> None:
    member = await api.create_member("Pat Premium", plan)

    assert await api.balance(member) == allotment
    [lot] = await lots_of(api, member)
    assert (lot["source"], lot["quantity"], lot["grantedAt"]) == (
        "MONTHLY_ALLOTMENT",
        allotment,
        "2026-01-15T09:00:00Z",
    )
    assert (await subscription_of(api, member))["subscription"]["status"] == "ACTIVE"


async def test_a_basic_member_has_no_subscription_and_no_credits(api: Api) -> None:
    basil = await api.create_member("Basil Basic", "BASIC")

    viewer = await subscription_of(api, basil)

    assert viewer["subscription"] is None
    assert viewer["plan"] == {"type": "BASIC", "monthlyAllotment": 0, "maxBalance": 0}
    assert await api.balance(basil) == 0
    assert await lots_of(api, basil) == []


async def test_legacy_premium_uses_its_own_allotment_and_a_cap_of_three_times_it(
    api: Api,
) -> None:
    old_timer = await api.create_member("Olive Oldtimer", "LEGACY_PREMIUM", monthly_allotment=7)

    viewer = await subscription_of(api, old_timer)
    assert viewer["plan"] == {"type": "LEGACY_PREMIUM", "monthlyAllotment": 7, "maxBalance": 21}
    assert viewer["subscription"]["plan"]["maxBalance"] == 21
    assert await api.balance(old_timer) == 7
    assert (await api.purchase(old_timer, 10))["errors"] == []
    assert codes(await api.purchase(old_timer, 5)) == ["CAP_EXCEEDED"]  # 17 + 5 > 21
    assert (await api.purchase(old_timer, 4))["errors"] == []
    assert await api.balance(old_timer) == 21


async def test_legacy_premium_renewals_grant_its_own_allotment_clamped_at_its_cap(
    api: Api,
) -> None:
    old_timer = await api.create_member("Olive Oldtimer", "LEGACY_PREMIUM", monthly_allotment=8)

    await three_allotments_up_to_the_cap(api, old_timer, 8)


async def three_allotments_up_to_the_cap(api: Api, old_timer: Person, allotment: int) -> None:
    """Two months on, a Legacy Premium member (cap: three allotments) that sends once has been
    granted its allotment three times, at the cap and not over it."""
    api.advance(days=60)  # 16 Mar: 15 Feb and 15 Mar are due

    await spend(api, old_timer, 1)

    assert grants(await ledger_of(api, old_timer)) == [
        ("2026-01-15T09:00:00Z", allotment),
        ("2026-02-15T00:00:00Z", allotment),
        ("2026-03-15T00:00:00Z", allotment),
    ]
    assert await api.balance(old_timer) == 3 * allotment - 1


async def test_legacy_premium_without_an_allotment_keeps_the_default_of_its_start(
    mongodb_uri: str, db_name: str
) -> None:
    terms = {"type": "LEGACY_PREMIUM", "monthlyAllotment": 10, "maxBalance": 30}
    async with open_api(mongodb_uri, db_name) as api:
        old_timer = await api.create_member("Olive Oldtimer", "LEGACY_PREMIUM")
        ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
        moved = await change_plan(api, ada, "LEGACY_PREMIUM", by_admin=True)
        assert moved["errors"] == []
        assert moved["member"]["plan"] == terms

    # The operator raises the default later: the members who started at 10 keep 10.
    raised = plan_table_from_overrides({"LEGACY_PREMIUM": {"monthlyAllotment": 25}})
    async with open_api(mongodb_uri, db_name, settings_for_tests(plans=raised)) as api:
        for member in (old_timer, ada):
            viewer = await subscription_of(api, member)
            assert viewer["plan"] == terms
            assert viewer["subscription"]["plan"] == terms
        await three_allotments_up_to_the_cap(api, old_timer, 10)
        newcomer = await api.create_member("Nina Newcomer", "LEGACY_PREMIUM")
        assert (await subscription_of(api, newcomer))["plan"] == {
            "type": "LEGACY_PREMIUM",
            "monthlyAllotment": 25,
            "maxBalance": 75,
        }


async def test_a_monthly_allotment_is_for_legacy_premium_only(api: Api) -> None:
    for plan in ["PREMIUM_CAREER", "BASIC"]:
        data = await api.gql(
            "mutation($i: CreateMemberInput!) { createMember(input: $i) { member { id } "
            "errors { code field } } }",
            {"i": {"name": "Pat", "plan": plan, "monthlyAllotment": 50}},
            api.admin,
        )

        assert data["createMember"] == {
            "member": None,
            "errors": [{"code": "INVALID_INPUT", "field": "monthlyAllotment"}],
        }, plan
    assert await api.container.mongo.c.members.count_documents({}) == 0


async def test_the_billing_day_defaults_to_the_day_of_month_of_the_start(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    subscription = (await subscription_of(api, ada))["subscription"]

    assert subscription["billingDay"] == 15
    assert subscription["currentPeriodStart"] == "2026-01-15T00:00:00Z"
    assert subscription["nextRenewalAt"] == "2026-02-15T00:00:00Z"


async def test_the_billing_day_from_billing_is_independent_of_the_start(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", billing_day=20)

    subscription = (await subscription_of(api, ada))["subscription"]
    assert subscription["billingDay"] == 20
    assert subscription["currentPeriodStart"] == "2025-12-20T00:00:00Z"
    assert subscription["nextRenewalAt"] == "2026-01-20T00:00:00Z"
    api.advance(days=5)  # 20 Jan 09:00

    await spend(api, ada, 1)

    assert grants(await ledger_of(api, ada)) == [
        ("2026-01-15T09:00:00Z", 5),
        ("2026-01-20T00:00:00Z", 5),
    ]
    assert (await subscription_of(api, ada))["subscription"]["nextRenewalAt"] == (
        "2026-02-20T00:00:00Z"
    )


async def test_a_billing_day_outside_1_to_31_is_invalid_input(api: Api) -> None:
    for day in [0, 32, -1]:
        data = await api.gql(
            "mutation($i: CreateMemberInput!) { createMember(input: $i) { member { id } "
            "errors { code field } } }",
            {"i": {"name": "Pat", "plan": "PREMIUM_CAREER", "billingDay": day}},
            api.admin,
        )

        assert data["createMember"]["errors"] == [
            {"code": "INVALID_INPUT", "field": "billingDay"}
        ], day
    assert await api.container.mongo.c.members.count_documents({}) == 0


async def test_an_anchor_of_31_falls_on_the_last_day_of_short_months_without_drift(
    api: Api,
) -> None:
    bob = await api.create_member("Bob Business", "PREMIUM_BUSINESS", billing_day=31)
    api.advance(days=76)  # 1 Apr 09:00

    await spend(api, bob, 1)

    assert grants(await ledger_of(api, bob)) == [
        ("2026-01-15T09:00:00Z", 15),
        ("2026-01-31T00:00:00Z", 15),
        ("2026-02-28T00:00:00Z", 15),
        ("2026-03-31T00:00:00Z", 0),  # at the cap of 45: clamped, but on the books
    ]
    subscription = (await subscription_of(api, bob))["subscription"]
    assert subscription["currentPeriodStart"] == "2026-03-31T00:00:00Z"
    assert subscription["nextRenewalAt"] == "2026-04-30T00:00:00Z"


async def test_a_clamped_allotment_leaves_a_ledger_entry_saying_what_it_would_have_been(
    api: Api,
) -> None:
    bob = await api.create_member("Bob Business", "PREMIUM_BUSINESS")
    assert (await api.purchase(bob, 10))["errors"] == []
    assert (await api.purchase(bob, 10))["errors"] == []  # 35 of 45
    api.advance(days=31)  # 15 Feb: 15 more would make 50

    await spend(api, bob, 1)

    data = await api.gql(
        "{ viewer { ledger(first: 3) { nodes { kind delta balanceAfter requested at } } } }",
        token=bob.token,
    )
    renewal = data["viewer"]["ledger"]["nodes"][1]
    assert renewal == {
        "kind": "GRANT",
        "delta": 10,
        "balanceAfter": 45,
        "requested": 15,
        "at": "2026-02-15T00:00:00Z",
    }


async def test_each_cycle_is_granted_once_however_many_writes_catch_it_up(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    api.advance(days=31)

    await spend(api, ada, 3, tag="a")
    assert (await api.purchase(ada, 1))["errors"] == []
    api.advance(hours=5)
    await spend(api, ada, 2, tag="b")

    assert grants(await ledger_of(api, ada)) == [
        ("2026-01-15T09:00:00Z", 5),
        ("2026-02-15T00:00:00Z", 5),
        ("2026-02-15T09:00:00Z", 1),  # the purchase
    ]
    assert await api.balance(ada) == 5 + 5 + 1 - 5


async def test_missed_cycles_are_all_granted_at_their_own_starts_and_lapsed_ones_expire(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    api.advance(days=200)  # 3 Aug: six cycle starts were missed

    await spend(api, ada, 1)

    entries = await ledger_of(api, ada)
    assert grants(entries) == [
        ("2026-01-15T09:00:00Z", 5),
        ("2026-02-15T00:00:00Z", 5),
        ("2026-03-15T00:00:00Z", 5),
        ("2026-04-15T00:00:00Z", 0),  # 15 held: at the cap
        ("2026-05-15T00:00:00Z", 5),
        ("2026-06-15T00:00:00Z", 5),
        ("2026-07-15T00:00:00Z", 5),
    ]
    assert [(e["at"], e["delta"]) for e in entries if e["kind"] == "EXPIRE"] == [
        ("2026-04-15T09:00:00Z", -5),
        ("2026-05-16T00:00:00Z", -5),
        ("2026-06-13T00:00:00Z", -5),
    ]
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    assert await api.balance(ada) == 14
    statuses = sorted((lot["grantedAt"][:10], lot["status"]) for lot in await lots_of(api, ada))
    assert statuses == [
        ("2026-01-15", "EXPIRED"),
        ("2026-02-15", "EXPIRED"),  # granted late, already past its 90 days: never spendable
        ("2026-03-15", "EXPIRED"),
        ("2026-05-15", "ACTIVE"),
        ("2026-06-15", "ACTIVE"),
        ("2026-07-15", "ACTIVE"),
    ]


async def test_changing_plan_forfeits_old_credits_and_grants_the_new_allotment_at_once(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    assert (await api.purchase(ada, 3))["errors"] == []
    api.advance(days=5, hours=3)  # 20 Jan 12:00

    result = await change_plan(api, ada, "PREMIUM_BUSINESS")

    assert result["errors"] == []
    member = result["member"]
    assert member["plan"] == {"type": "PREMIUM_BUSINESS", "monthlyAllotment": 15, "maxBalance": 45}
    assert member["inmailBalance"] == 15
    assert member["subscription"] == {
        "status": "ACTIVE",
        "billingDay": 20,
        "currentPeriodStart": "2026-01-20T00:00:00Z",
        "nextRenewalAt": "2026-02-20T00:00:00Z",
    }
    entries = await ledger_of(api, ada)
    assert [(e["kind"], e["delta"], e["balanceAfter"]) for e in entries[-3:]] == [
        ("FORFEIT", -5, 3),
        ("FORFEIT", -3, 0),
        ("GRANT", 15, 15),
    ]
    assert {e["at"] for e in entries[-3:]} == {"2026-01-20T12:00:00Z"}
    lots = await lots_of(api, ada)
    assert sorted((lot["source"], lot["status"], lot["remaining"]) for lot in lots) == [
        ("MONTHLY_ALLOTMENT", "ACTIVE", 15),
        ("MONTHLY_ALLOTMENT", "FORFEITED", 0),
        ("PURCHASE", "FORFEITED", 0),
    ]


async def test_a_plan_change_restarts_the_billing_cycle_on_the_day_of_the_change(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")  # anchor 15
    api.advance(days=5)
    await change_plan(api, ada, "PREMIUM_BUSINESS")  # anchor 20
    api.advance(days=27)  # 16 Feb: the old anchor has passed

    await spend(api, ada, 1, tag="feb16-")
    assert await api.balance(ada) == 14
    api.advance(days=4)  # 20 Feb: the new anchor
    await spend(api, ada, 1, tag="feb20-")

    assert grants(await ledger_of(api, ada))[-2:] == [
        ("2026-01-20T09:00:00Z", 15),
        ("2026-02-20T00:00:00Z", 15),
    ]
    assert await api.balance(ada) == 28


async def test_changing_to_basic_is_a_cancellation(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    result = await change_plan(api, ada, "BASIC")

    assert result["errors"] == []
    assert result["member"]["plan"]["type"] == "BASIC"
    assert result["member"]["subscription"]["status"] == "CANCELED"
    assert result["member"]["subscription"]["nextRenewalAt"] is None
    assert result["member"]["inmailBalance"] == 0
    assert [(e["kind"], e["delta"]) for e in await ledger_of(api, ada)] == [
        ("GRANT", 5),
        ("FORFEIT", -5),
    ]


async def test_an_admin_moves_a_member_to_legacy_premium_with_its_grandfathered_allotment(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    member = await legacy_premium_by_an_admin(api, ada)

    assert member["inmailBalance"] == 12


async def test_changing_to_the_plan_already_held_restarts_nothing(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    await spend(api, ada, 1)
    api.advance(days=3)

    result = await change_plan(api, ada, "PREMIUM_CAREER")

    assert result["errors"] == []
    assert result["member"]["inmailBalance"] == 4
    assert result["member"]["subscription"]["billingDay"] == 15
    assert [e["kind"] for e in await ledger_of(api, ada)] == ["GRANT", "DEBIT"]


@pytest.mark.parametrize("meanwhile", ["cancel", "paid change"])
async def test_a_change_to_the_plan_held_writes_nothing_whatever_lands_meanwhile(
    api: Api, monkeypatch: pytest.MonkeyPatch, meanwhile: str
) -> None:
    """SPEC 2: it changes nothing and charges nothing. A cancellation or a paid change that
    lands between its look at the member and its answer stands: the request never starts the
    plan again, unpaid."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    members = api.container.deps.reads.members
    look = members.get
    landed: list[dict[str, Any]] = []

    async def look_then_let_the_other_land(member_id: str) -> Any:
        seen = await look(member_id)
        if not landed:
            landed.append({})  # the other request, once, right after this look
            if meanwhile == "cancel":
                landed[0] = await cancel_subscription(api, ada)
            else:
                landed[0] = await change_plan(api, ada, "PREMIUM_BUSINESS", key="paid")
        return seen

    monkeypatch.setattr(members, "get", look_then_let_the_other_land)
    same = await change_plan(api, ada, "PREMIUM_CAREER")
    monkeypatch.undo()

    assert codes(same) == codes(landed[0]) == []
    viewer = await subscription_of(api, ada)
    if meanwhile == "cancel":
        assert viewer["subscription"]["status"] == "CANCELED"
        assert await api.balance(ada) == 0
    else:
        assert viewer["plan"]["type"] == "PREMIUM_BUSINESS"
        assert await api.balance(ada) == 15
    kinds = [e["kind"] for e in await ledger_of(api, ada)]
    assert kinds.count("GRANT") == (1 if meanwhile == "cancel" else 2)


async def test_a_cancelled_member_who_picks_a_plan_subscribes_afresh(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    await cancel_subscription(api, ada)
    api.advance(days=10)

    result = await change_plan(api, ada, "PREMIUM_CAREER")

    assert result["errors"] == []
    assert result["member"]["subscription"]["status"] == "ACTIVE"
    assert result["member"]["subscription"]["billingDay"] == 25
    assert result["member"]["inmailBalance"] == 5


async def test_cancelling_zeroes_the_balance_at_once(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    assert (await api.purchase(ada, 10))["errors"] == []
    api.advance(hours=1)

    result = await cancel_subscription(api, ada)

    assert result["errors"] == []
    assert result["member"]["subscription"] == {"status": "CANCELED", "nextRenewalAt": None}
    assert result["member"]["inmailBalance"] == 0
    assert await api.balance(ada) == 0
    forfeits = [e for e in await ledger_of(api, ada) if e["kind"] == "FORFEIT"]
    assert [(e["delta"], e["at"]) for e in forfeits] == [
        (-15, "2026-01-15T10:00:00Z"),
        (-10, "2026-01-15T10:00:00Z"),
    ]
    assert forfeits[-1]["balanceAfter"] == 0
    assert {lot["status"] for lot in await lots_of(api, ada)} == {"FORFEITED"}
    assert (await subscription_of(api, ada))["plan"]["type"] == "PREMIUM_BUSINESS"


async def test_cancelling_stops_renewals(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    await cancel_subscription(api, ada)
    api.advance(days=45)  # 15 Feb and a month more pass while cancelled

    resubscribed = await change_plan(api, ada, "PREMIUM_CAREER")  # a write: anything due shows

    assert resubscribed["member"]["inmailBalance"] == 5
    assert grants(await ledger_of(api, ada)) == [
        ("2026-01-15T09:00:00Z", 5),
        ("2026-03-01T09:00:00Z", 5),
    ]


async def test_cancelling_twice_gets_subscription_inactive(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    basil = await api.create_member("Basil Basic", "BASIC")
    await cancel_subscription(api, ada)

    assert codes(await cancel_subscription(api, ada)) == ["SUBSCRIPTION_INACTIVE"]
    assert codes(await cancel_subscription(api, basil)) == ["SUBSCRIPTION_INACTIVE"]


async def test_the_card_on_file_shows_whether_it_has_expired(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", card=CARD_EXPIRING_JANUARY_2026)
    card = (await subscription_of(api, ada))["subscription"]["paymentMethod"]
    assert card == {
        "brand": "Visa",
        "last4": "1111",
        "expMonth": 1,
        "expYear": 2026,
        "isExpired": False,
    }

    api.advance(days=17)

    card = (await subscription_of(api, ada))["subscription"]["paymentMethod"]
    assert card["isExpired"] is True


async def test_updating_the_payment_method_replaces_the_card_on_file(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    result = await update_card(
        api, ada, {"brand": " Amex ", "last4": "0005", "expMonth": 3, "expYear": 2031}
    )

    assert result["errors"] == []
    expected = {
        "brand": "Amex",
        "last4": "0005",
        "expMonth": 3,
        "expYear": 2031,
        "isExpired": False,
    }
    assert result["subscription"]["paymentMethod"] == expected
    assert (await subscription_of(api, ada))["subscription"]["paymentMethod"] == expected


async def test_an_invalid_or_expired_card_is_invalid_input_and_keeps_the_old_card(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    good = {"brand": "Amex", "last4": "0005", "expMonth": 3, "expYear": 2031}
    cases = [
        ({**good, "brand": ""}, "brand"),
        ({**good, "last4": "42a2"}, "last4"),
        ({**good, "last4": "42424"}, "last4"),
        ({**good, "expMonth": 13}, "expMonth"),
        ({**good, "expMonth": 0}, "expMonth"),
        ({**good, "expMonth": 12, "expYear": 2025}, "expYear"),  # already expired
    ]

    for card, field in cases:
        result = await update_card(api, ada, card)

        assert result["errors"][0]["code"] == "INVALID_INPUT", card
        assert result["errors"][0]["field"] == field
        assert result["subscription"] is None
    kept = (await subscription_of(api, ada))["subscription"]["paymentMethod"]
    assert (kept["last4"], kept["expYear"]) == ("4242", 2030)


async def test_a_card_expired_earlier_this_year_is_refused_for_its_month(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    api.advance(days=60)  # mid-March 2026: February's cards have expired, March's have not
    cases = [
        ({"brand": "Visa", "last4": "1111", "expMonth": 2, "expYear": 2026}, "expMonth"),
        ({"brand": "Visa", "last4": "1111", "expMonth": 12, "expYear": 2025}, "expYear"),
    ]

    for card, field in cases:
        result = await update_card(api, ada, card)

        assert [(e["code"], e["field"]) for e in result["errors"]] == [("INVALID_INPUT", field)]
        assert result["subscription"] is None
    march = {"brand": "Visa", "last4": "3333", "expMonth": 3, "expYear": 2026}
    assert (await update_card(api, ada, march))["errors"] == []


async def test_a_new_members_invalid_card_names_its_field_within_payment_method(
    api: Api,
) -> None:
    good = {"brand": "Amex", "last4": "0005", "expMonth": 3, "expYear": 2031}
    create = (
        "mutation($i: CreateMemberInput!) { createMember(input: $i) "
        "{ member { id } errors { code field } } }"
    )
    for card, field in [
        ({**good, "last4": "42a2"}, "paymentMethod.last4"),
        ({**good, "brand": " "}, "paymentMethod.brand"),
        ({**good, "expMonth": 13}, "paymentMethod.expMonth"),
    ]:
        body = await api.raw(
            create,
            {"i": {"name": "Ada", "plan": "PREMIUM_CAREER", "paymentMethod": card}},
            api.admin,
        )
        result = body["data"]["createMember"]
        assert result["errors"] == [{"code": "INVALID_INPUT", "field": field}], card
        assert result["member"] is None


async def test_renewals_still_happen_while_the_card_is_expired(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", card=CARD_EXPIRING_JANUARY_2026)
    grace = await api.create_member("Grace Hopper", "BASIC")
    sent = await api.send(ada, grace)
    api.advance(days=32)  # 16 Feb: the card expired with January; 15 Feb is due

    # A response credits Ada back: a write on her credits, which catches up the renewal.
    assert (await api.respond(grace, sent["conversation"]["id"]))["creditedBack"] is True

    assert await api.balance(ada) == 4 + 5 + 1
    assert ("2026-02-15T00:00:00Z", 5) in grants(await ledger_of(api, ada))


async def test_a_basic_member_sees_the_card_it_stored_and_upgrades_with_it(api: Api) -> None:
    """A Basic member has no subscription to show the card under: the payload shows the card."""
    bob = await api.create_member("Bob Basic", "BASIC", card=None)
    card = {"brand": "Visa", "last4": "4242", "expMonth": 12, "expYear": 2030}

    stored = await api.payload(
        "updatePaymentMethod",
        "mutation($i: PaymentMethodInput!) { updatePaymentMethod(input: $i) { subscription "
        "{ status } paymentMethod { brand last4 expMonth expYear isExpired } errors { code } } }",
        {"i": card},
        bob.token,
    )
    upgraded = await change_plan(api, bob, "PREMIUM_CAREER")

    assert stored == {
        "subscription": None,
        "paymentMethod": {**card, "isExpired": False},
        "errors": [],
    }
    assert upgraded["errors"] == []
    [charge] = await charges_of(api, bob)
    assert charge["cardLast4"] == "4242"
