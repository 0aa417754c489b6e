"""Several service processes on one database: concurrent requests never overspend (SPEC 3-6)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from inmail.services import scheduling
from reliability.invariants import load, problems
from reliability.remote import CANCEL, CHANGE_PLAN, Fleet, member_token
from support import START, Person, codes, open_api, outcomes
from support import test_settings as service_settings

pytestmark = pytest.mark.slow

Doc = dict[str, Any]


def key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


async def basic_members(fleet: Fleet, count: int, label: str) -> list[Person]:
    return list(
        await asyncio.gather(
            *(fleet.create_member(f"{label} {i}", "BASIC", card=None) for i in range(count))
        )
    )


@pytest.fixture
def db(fleet_mongo: AsyncMongoClient[Doc], fleet_db: str) -> AsyncDatabase[Doc]:
    """The fleet's database, read directly."""
    return fleet_mongo[fleet_db]


async def assert_invariants(db: AsyncDatabase[Doc]) -> None:
    assert problems(await load(db), START) == []


async def assert_sends_settled(
    fleet: Fleet, db: AsyncDatabase[Doc], sender: Person, *, balance: int, opened: int
) -> None:
    """After a burst of sends: the sender's balance, the `opened` conversations they opened and
    as many debits on their ledger, as stored, and every invariant."""
    assert await fleet.balance(sender) == balance
    conversations = await db.conversations.count_documents({"senderId": sender.id})
    debits = await db.ledger.count_documents({"memberId": sender.id, "kind": "DEBIT"})
    assert (conversations, debits) == (opened, opened)
    await assert_invariants(db)


async def test_two_hundred_concurrent_sends_from_five_credits_spend_exactly_five(
    fleet: Fleet, db: AsyncDatabase[Doc]
) -> None:
    ada = await fleet.create_member("Ada Lovelace", "PREMIUM_CAREER")
    recipients = await basic_members(fleet, 200, "Recipient")
    assert await fleet.balance(ada) == 5

    results = await asyncio.gather(*(fleet.send(ada, r, key("burst")) for r in recipients))

    assert outcomes(results) == {"OK": 5, "INSUFFICIENT_CREDITS": 195}
    assert sorted(r["creditsLeft"] for r in results if not r["errors"]) == [0, 1, 2, 3, 4]
    await assert_sends_settled(fleet, db, ada, balance=0, opened=5)


async def test_fifty_concurrent_sends_to_one_recipient_open_one_conversation(
    fleet: Fleet, db: AsyncDatabase[Doc]
) -> None:
    bea = await fleet.create_member("Bea Recruiter", "PREMIUM_BUSINESS")
    [carl] = await basic_members(fleet, 1, "Carl")

    results = await asyncio.gather(*(fleet.send(bea, carl, key("same")) for _ in range(50)))

    assert outcomes(results) == {"OK": 1, "AWAITING_RESPONSE": 49}
    await assert_sends_settled(fleet, db, bea, balance=14, opened=1)


async def test_twenty_concurrent_responses_to_one_inmail_credit_back_once(
    fleet: Fleet, db: AsyncDatabase[Doc]
) -> None:
    eve = await fleet.create_member("Eve Sourcer", "PREMIUM_CAREER")
    [finn] = await basic_members(fleet, 1, "Finn")
    sent = await fleet.send(eve, finn, key("respond"))
    conversation_id = sent["conversation"]["id"]
    assert await fleet.balance(eve) == 4
    kinds = ["INTERESTED", "MAYBE_LATER", "NOT_INTERESTED", "INTERESTED"]

    results = await asyncio.gather(
        *(fleet.respond(finn, conversation_id, kinds[i % len(kinds)]) for i in range(20))
    )

    assert outcomes(results) == {"OK": 1, "ALREADY_RESPONDED": 19}
    [winner] = [r for r in results if not r["errors"]]
    assert winner["creditedBack"] is True
    assert await fleet.balance(eve) == 5
    backs = await db.ledger.count_documents(
        {"memberId": eve.id, "kind": "CREDIT_BACK", "conversationId": conversation_id}
    )
    assert backs == 1
    assert await db.credit_lots.count_documents({"memberId": eve.id, "source": "CREDIT_BACK"}) == 1
    await assert_invariants(db)


async def test_twenty_concurrent_purchases_with_one_key_charge_once_and_grant_one_lot(
    fleet: Fleet, db: AsyncDatabase[Doc]
) -> None:
    gus = await fleet.create_member("Gus Buyer", "PREMIUM_CAREER")
    shared = key("buy")

    results = await asyncio.gather(*(fleet.purchase(gus, 3, shared) for _ in range(20)))

    assert [r["errors"] for r in results] == [[]] * 20
    assert {r["lot"]["id"] for r in results} == {results[0]["lot"]["id"]}
    assert {r["creditsLeft"] for r in results} == {8}
    assert await fleet.balance(gus) == 8
    assert await db.charges.count_documents({"memberId": gus.id}) == 1
    assert await db.purchases.count_documents({"memberId": gus.id}) == 1
    assert await db.credit_lots.count_documents({"memberId": gus.id, "source": "PURCHASE"}) == 1
    await assert_invariants(db)


async def test_a_send_and_a_purchase_under_one_key_at_once_never_both_take_it(
    fleet: Fleet, db: AsyncDatabase[Doc]
) -> None:
    """Keys are one namespace (SPEC 8): of a send and a purchase racing under one key, in
    whichever processes, one takes it and the other is refused, and a retry of the one that
    took it is answered as it was."""
    buyers = await asyncio.gather(
        *(fleet.create_member(f"Keen {i}", "PREMIUM_CAREER") for i in range(12))
    )
    [reader] = await basic_members(fleet, 1, "Reader")
    keys = [key("both") for _ in buyers]

    races = await asyncio.gather(
        *(
            asyncio.gather(fleet.send(buyer, reader, k), fleet.purchase(buyer, 2, k))
            for buyer, k in zip(buyers, keys, strict=True)
        )
    )

    for buyer, k, (sent, bought) in zip(buyers, keys, races, strict=True):
        assert sorted([codes(sent), codes(bought)]) == [[], ["IDEMPOTENCY_KEY_REUSED"]]
        charged = await db.charges.count_documents({"memberId": buyer.id})
        if sent["errors"] == []:
            retried = await fleet.send(buyer, reader, k)
            assert retried["conversation"]["id"] == sent["conversation"]["id"]
            assert (charged, await fleet.balance(buyer)) == (0, 4)
        else:
            retried = await fleet.purchase(buyer, 2, k)
            assert retried["lot"]["id"] == bought["lot"]["id"]
            assert (charged, await fleet.balance(buyer)) == (1, 7)
        assert codes(retried) == []
    await assert_invariants(db)


async def test_concurrent_purchases_near_the_cap_never_exceed_it_nor_charge_the_losers(
    fleet: Fleet, db: AsyncDatabase[Doc]
) -> None:
    hal = await fleet.create_member("Hal Buyer", "PREMIUM_CAREER")  # 5 of a cap of 15

    results = await asyncio.gather(*(fleet.purchase(hal, 10, key("cap")) for _ in range(20)))

    assert outcomes(results) == {"OK": 1, "CAP_EXCEEDED": 19}
    assert await fleet.balance(hal) == 15
    assert await db.charges.count_documents({"memberId": hal.id, "status": "SUCCEEDED"}) == 1
    assert await db.purchases.count_documents({"memberId": hal.id, "status": "COMPLETED"}) == 1
    # Every loser was refused before any charge, in whichever process it ran: none refunded.
    assert await db.charges.count_documents({"memberId": hal.id}) == 1
    assert await db.purchases.count_documents({"memberId": hal.id, "status": "REFUNDED"}) == 0
    await assert_invariants(db)


async def test_sends_racing_a_cancellation_a_plan_change_and_an_expiry_keep_every_invariant(
    fleet: Fleet, db: AsyncDatabase[Doc], fleet_db: str, mongodb_uri: str
) -> None:
    # Zoe joined 90 days ago: her first allotment lapses at this very instant (START), while the
    # two renewals since (17 Nov, 17 Dec) are still good for 10 credits.
    async with open_api(
        mongodb_uri, fleet_db, service_settings(clock_start=START - timedelta(days=90))
    ) as past:
        zoe_id = (await past.create_member("Zoe Early", "PREMIUM_CAREER")).id
        [first_lot] = [doc async for doc in db.credit_lots.find({"memberId": zoe_id})]
        assert first_lot["expiresAt"] == START
        past.advance(days=90)
        assert past.clock.now() == START
        zoe = Person(zoe_id, member_token(zoe_id))
        cleo = await fleet.create_member("Cleo Quitter", "PREMIUM_CAREER")
        dan = await fleet.create_member("Dan Upgrader", "PREMIUM_CAREER")
        recipients = await basic_members(fleet, 15, "Target")

        sends = [
            *(fleet.send(cleo, r, key("cancel")) for r in recipients[:10]),
            *(fleet.send(dan, r, key("change")) for r in recipients[:10]),
            *(fleet.send(zoe, r, key("expiry")) for r in recipients),
        ]
        others: list[Any] = [
            fleet.gql(CANCEL, token=cleo.token),
            fleet.gql(
                CHANGE_PLAN,
                {"i": {"plan": "PREMIUM_BUSINESS", "idempotencyKey": "dan-upgrade"}},
                dan.token,
            ),
            scheduling.run_due_jobs(
                past.container.deps,
                START,
                batch_size=past.container.settings.scheduler_batch,
            ),
        ]
        results = await asyncio.gather(*sends, *others)
        cleo_sends, dan_sends, zoe_sends = results[:10], results[10:20], results[20:35]
        cancelled, changed = results[35]["cancelSubscription"], results[36]["changePlan"]

    assert cancelled["errors"] == []
    assert changed["errors"] == []

    def ok(rs: list[dict[str, Any]]) -> int:
        return sum(1 for r in rs if not r["errors"])

    assert {c for r in cleo_sends for c in codes(r)} <= {
        "SUBSCRIPTION_INACTIVE",
        "INSUFFICIENT_CREDITS",
    }
    assert ok(cleo_sends) <= 5
    assert await fleet.balance(cleo) == 0
    forfeited = [e async for e in db.ledger.find({"memberId": cleo.id, "kind": "FORFEIT"})]
    assert sum(e["delta"] for e in forfeited) == -(5 - ok(cleo_sends))

    assert {c for r in dan_sends for c in codes(r)} <= {"INSUFFICIENT_CREDITS"}
    # Dan's sends spend either Career credits (then forfeited) or the Business allotment.
    dan_debits = [e async for e in db.ledger.find({"memberId": dan.id, "kind": "DEBIT"})]
    assert len(dan_debits) == ok(dan_sends)
    [business] = [d async for d in db.credit_lots.find({"memberId": dan.id, "quantity": 15})]
    on_business = sum(1 for e in dan_debits if e["lotId"] == business["_id"])
    assert await fleet.balance(dan) == 15 - on_business
    forfeited = [e async for e in db.ledger.find({"memberId": dan.id, "kind": "FORFEIT"})]
    assert sum(e["delta"] for e in forfeited) == -(5 - (len(dan_debits) - on_business))

    # Zoe spends the 10 credits still good, and never one of the lapsed lot.
    assert outcomes(zoe_sends) == {"OK": 10, "INSUFFICIENT_CREDITS": 5}
    assert await fleet.balance(zoe) == 0
    lapsed = await db.credit_lots.find_one({"_id": first_lot["_id"]})
    assert lapsed is not None
    assert lapsed["status"] == "EXPIRED"
    assert await db.ledger.count_documents({"lotId": first_lot["_id"], "kind": "DEBIT"}) == 0
    expire = await db.ledger.find_one({"lotId": first_lot["_id"], "kind": "EXPIRE"})
    assert expire is not None
    assert (expire["delta"], expire["at"]) == (-5, START)
    await assert_invariants(db)
