"""Buying extra credits (SPEC 6), checked before any charge, through the API."""

from __future__ import annotations

import pytest

from inmail.domain.intents import IntentKind, IntentStatus
from inmail.domain.money import Money
from inmail.services import charges
from inmail.services.idempotency import KeyedRequest
from support import (
    Api,
    assert_bought_once,
    cancel_subscription,
    charges_of,
    codes,
    ledger_of,
    lots_of,
    open_api,
    update_card,
)
from support import test_settings as settings_for_tests

CARD_EXPIRING_JANUARY_2026 = {"brand": "Visa", "last4": "1111", "expMonth": 1, "expYear": 2026}


async def test_a_purchase_charges_the_card_once_and_grants_a_lot_for_90_days(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    api.advance(days=1)

    result = await api.purchase(ada, 3, key="buy-3")

    assert result["errors"] == []
    assert result["creditsLeft"] == 8
    assert result["lot"]["source"] == "PURCHASE"
    assert (result["lot"]["quantity"], result["lot"]["remaining"]) == (3, 3)
    assert await api.balance(ada) == 8
    lot = next(lot for lot in await lots_of(api, ada) if lot["id"] == result["lot"]["id"])
    assert (lot["grantedAt"], lot["expiresAt"]) == ("2026-01-16T09:00:00Z", "2026-04-16T09:00:00Z")
    [charge] = await charges_of(api, ada)
    assert (charge["amount"], charge["currency"], charge["cardLast4"], charge["status"]) == (
        3000,
        "USD",
        "4242",
        "SUCCEEDED",
    )
    grant = (await ledger_of(api, ada))[-1]
    assert (grant["kind"], grant["delta"], grant["balanceAfter"]) == ("GRANT", 3, 8)
    assert grant["lot"]["id"] == result["lot"]["id"]


@pytest.mark.parametrize("plan", ["SALES_NAVIGATOR", "RECRUITER_LITE", "BASIC"])
async def test_plans_that_cannot_buy_get_purchase_not_allowed_and_are_not_charged(
    api: Api, plan: str
) -> None:
    member = await api.create_member("Sam Seller", plan)
    balance = await api.balance(member)

    result = await api.purchase(member, 1)

    assert codes(result) == ["PURCHASE_NOT_ALLOWED"]
    assert result["lot"] is None
    assert await api.balance(member) == balance
    assert await charges_of(api, member) == []


async def test_plans_that_can_buy_may_purchase(api: Api) -> None:
    for plan in ["PREMIUM_CAREER", "PREMIUM_BUSINESS", "LEGACY_PREMIUM"]:
        member = await api.create_member("Betty Buyer", plan)

        result = await api.purchase(member, 1)

        assert result["errors"] == [], plan
        assert len(await charges_of(api, member)) == 1


async def test_a_quantity_outside_1_to_10_is_invalid_input_and_charges_nothing(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")

    for quantity in [0, -1, 11, 1000]:
        result = await api.purchase(ada, quantity)

        assert codes(result) == ["INVALID_INPUT"], quantity
        assert result["errors"][0]["field"] == "quantity"
    assert await api.balance(ada) == 15
    assert await charges_of(api, ada) == []


async def test_the_most_one_purchase_may_buy_is_configurable(
    mongodb_uri: str, db_name: str
) -> None:
    async with open_api(mongodb_uri, db_name, settings_for_tests(max_purchase_quantity=3)) as api:
        bob = await api.create_member("Bob Business", "PREMIUM_BUSINESS")

        assert codes(await api.purchase(bob, 4)) == ["INVALID_INPUT"]
        assert (await api.purchase(bob, 3))["errors"] == []
        assert await api.balance(bob) == 18


async def test_quantities_of_1_and_10_are_accepted(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")

    one, ten = await api.purchase(ada, 1), await api.purchase(ada, 10)

    assert one["errors"] == ten["errors"] == []
    assert await api.balance(ada) == 15 + 1 + 10


async def test_a_purchase_over_the_cap_is_cap_exceeded_and_charges_nothing(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")  # 5 of a cap of 15
    assert (await api.purchase(ada, 6))["errors"] == []

    over = await api.purchase(ada, 5)  # 11 + 5 would be 16

    assert codes(over) == ["CAP_EXCEEDED"]
    assert over["errors"][0]["field"] == "quantity"
    assert over["lot"] is None
    await assert_bought_once(api, ada, balance=11)


async def test_a_purchase_over_the_cap_once_a_due_renewal_is_counted_is_refused_before_any_charge(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")  # 5 of a cap of 15
    api.advance(days=32)  # 16 Feb: the 15 Feb allotment (5 more) is due, not yet granted

    result = await api.purchase(ada, 10)

    assert codes(result) == ["CAP_EXCEEDED"]
    assert await charges_of(api, ada) == []


async def test_a_purchase_up_to_exactly_the_cap_is_allowed(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    assert (await api.purchase(ada, 9))["errors"] == []

    result = await api.purchase(ada, 1)

    assert result["errors"] == []
    assert result["creditsLeft"] == 15


async def test_an_expired_card_blocks_buying_until_the_payment_method_is_updated(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", card=CARD_EXPIRING_JANUARY_2026)
    api.advance(days=17)  # 2026-02-01T09:00Z: January has passed

    refused = await api.purchase(ada, 2, key="buy-after-expiry")

    assert codes(refused) == ["PAYMENT_METHOD_EXPIRED"]
    assert await api.balance(ada) == 5
    assert await charges_of(api, ada) == []
    new_card = {"brand": "Mastercard", "last4": "5555", "expMonth": 2, "expYear": 2027}
    updated = await update_card(api, ada, new_card)
    assert updated["errors"] == []
    assert updated["subscription"]["paymentMethod"]["isExpired"] is False
    bought = await api.purchase(ada, 2, key="buy-after-expiry")
    assert bought["errors"] == []
    [charge] = await charges_of(api, ada)
    assert charge["cardLast4"] == "5555"


async def test_a_member_without_a_card_cannot_buy(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", card=None)

    result = await api.purchase(ada, 1)

    assert codes(result) == ["PAYMENT_METHOD_EXPIRED"]
    assert result["errors"][0]["field"] is None  # the card on file is no input of the purchase
    assert await charges_of(api, ada) == []


async def test_a_cancelled_member_cannot_buy(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    await cancel_subscription(api, ada)

    result = await api.purchase(ada, 1)

    assert codes(result) == ["SUBSCRIPTION_INACTIVE"]
    assert await api.balance(ada) == 0
    assert await charges_of(api, ada) == []


async def test_a_purchase_retried_with_its_key_charges_once_and_grants_one_lot(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    first = await api.purchase(ada, 4, key="order-42")
    retry = await api.purchase(ada, 4, key="order-42")

    assert first["errors"] == retry["errors"] == []
    assert retry["lot"]["id"] == first["lot"]["id"]
    assert retry["creditsLeft"] == first["creditsLeft"] == 9
    await assert_bought_once(api, ada, balance=9)


async def test_a_purchase_key_reused_for_another_quantity_is_refused(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    await api.purchase(ada, 4, key="order-42")

    result = await api.purchase(ada, 5, key="order-42")

    assert codes(result) == ["IDEMPOTENCY_KEY_REUSED"]
    assert await api.balance(ada) == 9
    assert len(await charges_of(api, ada)) == 1


async def test_a_refused_purchase_does_not_use_up_its_key(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    readers = [await api.create_member(f"Reader {i}", "BASIC") for i in range(2)]
    assert (await api.purchase(ada, 10))["errors"] == []
    assert codes(await api.purchase(ada, 2, key="when-there-is-room")) == ["CAP_EXCEEDED"]
    for reader in readers:
        await api.send(ada, reader)

    result = await api.purchase(ada, 2, key="when-there-is-room")

    assert result["errors"] == []
    assert result["creditsLeft"] == 15
    assert len(await charges_of(api, ada)) == 2


async def test_a_card_that_expires_before_the_charge_ends_the_purchase_and_holds_no_room(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", card=CARD_EXPIRING_JANUARY_2026)
    # A purchase checked and recorded in January (its card good then), its charge not made yet.
    request = KeyedRequest.of(ada.id, "slow-order", IntentKind.PURCHASE, quantity=10)
    price = Money(1000 * 10, "USD")
    recorded = charges.new_intent(request, price, api.clock.now(), quantity=10)
    await charges.open_intent(api.container.deps, recorded, request)
    api.advance(days=17)  # 2026-02-01T09:00Z: the card has expired

    refused = await api.purchase(ada, 10, key="slow-order")

    assert codes(refused) == ["PAYMENT_METHOD_EXPIRED"]
    assert await charges_of(api, ada) == []
    intent = await api.container.deps.reads.intents.get(recorded.id)
    assert intent is not None
    assert intent.status == IntentStatus.DECLINED
    new_card = {"brand": "Mastercard", "last4": "5555", "expMonth": 2, "expYear": 2027}
    assert (await update_card(api, ada, new_card))["errors"] == []
    # Its 10 credits are not on order: a new purchase up to the cap is charged and granted.
    assert (await api.purchase(ada, 10, key="new-order"))["errors"] == []
    assert await api.balance(ada) == 15
    # The first key answers as it did, and charges nothing.
    assert codes(await api.purchase(ada, 10, key="slow-order")) == ["PAYMENT_METHOD_EXPIRED"]
    assert [c["cardLast4"] for c in await charges_of(api, ada)] == ["5555"]


async def test_a_purchase_grant_in_the_ledger_names_its_purchase(api: Api) -> None:
    """SPEC 3: a ledger entry carries the conversation or purchase it belongs to."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    bought = await api.purchase(ada, 2)
    assert bought["errors"] == []

    data = await api.gql(
        "{ viewer { purchases(first: 5) { nodes { id lot { id } } } "
        "ledger(first: 5) { nodes { kind delta lot { id } "
        "purchase { id quantity status } } } } }",
        token=ada.token,
    )

    [purchase] = data["viewer"]["purchases"]["nodes"]
    entries = data["viewer"]["ledger"]["nodes"]
    assert [(e["kind"], e["delta"]) for e in entries] == [("GRANT", 2), ("GRANT", 5)]
    bought_entry, allotment = entries
    assert bought_entry["lot"]["id"] == purchase["lot"]["id"] == bought["lot"]["id"]
    assert bought_entry["purchase"]["id"] == purchase["id"]
    assert (bought_entry["purchase"]["quantity"], bought_entry["purchase"]["status"]) == (
        2,
        "COMPLETED",
    )
    assert allotment["purchase"] is None


LOT_ORIGINS = (
    "{ viewer { ledger(first: 20) { nodes { kind delta lot { id purchase { id } } "
    "purchase { id } } } } }"
)


async def test_the_entries_that_take_a_bought_lot_away_name_its_purchase_as_its_grant_did(
    api: Api,
) -> None:
    """SPEC 3: an EXPIRE or FORFEIT of a bought lot belongs to its purchase, as its GRANT."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    bea = await api.create_member("Bea Buyer", "PREMIUM_CAREER")
    expiring = await api.purchase(ada, 2, key="expires")
    forfeited = await api.purchase(bea, 3, key="forfeits")
    assert expiring["errors"] == forfeited["errors"] == []
    assert (await cancel_subscription(api, bea))["errors"] == []
    api.advance(days=91)

    for member, bought, kind in ((ada, expiring, "EXPIRE"), (bea, forfeited, "FORFEIT")):
        data = await api.gql(LOT_ORIGINS, token=member.token)
        entries = [
            e
            for e in data["viewer"]["ledger"]["nodes"]
            if e["lot"] and e["lot"]["id"] == bought["lot"]["id"]
        ]
        [purchase_id] = {e["purchase"]["id"] for e in entries}
        assert [(e["kind"], e["delta"]) for e in entries] == [
            (kind, -bought["lot"]["quantity"]),
            ("GRANT", bought["lot"]["quantity"]),
        ]
        assert {e["lot"]["purchase"]["id"] for e in entries} == {purchase_id}
