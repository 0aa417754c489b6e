"""Concurrent requests (SPEC 4, 5, 6): nothing is spent, granted, charged or answered twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from support import (
    Api,
    Person,
    ada_and_grace,
    assert_bought_once,
    charges_of,
    ledger_of,
    outcomes,
    purchased_lots_of,
)


async def members(api: Api, count: int, plan: str = "BASIC") -> list[Person]:
    return list(
        await asyncio.gather(*(api.create_member(f"Reader {i}", plan) for i in range(count)))
    )


async def inmails_of(api: Api, member: Person) -> list[dict[str, Any]]:
    data = await api.gql(
        "{ viewer { conversations(first: 100) { nodes { id state recipient { id } } } } }",
        token=member.token,
    )
    nodes: list[dict[str, Any]] = data["viewer"]["conversations"]["nodes"]
    return nodes


async def test_fifty_concurrent_sends_against_five_credits_make_exactly_five_conversations(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    readers = await members(api, 50)

    results = await asyncio.gather(*(api.send(ada, reader) for reader in readers))

    assert outcomes(results) == Counter({"OK": 5, "INSUFFICIENT_CREDITS": 45})
    assert await api.balance(ada) == 0
    sent = await inmails_of(api, ada)
    assert len(sent) == 5
    assert len({c["recipient"]["id"] for c in sent}) == 5
    entries = await ledger_of(api, ada)
    assert [e["kind"] for e in entries] == ["GRANT"] + ["DEBIT"] * 5
    assert [e["balanceAfter"] for e in entries] == [5, 4, 3, 2, 1, 0]


async def test_fifty_concurrent_sends_to_one_recipient_make_one_conversation(api: Api) -> None:
    ada, grace = await ada_and_grace(api)

    results = await asyncio.gather(*(api.send(ada, grace) for _ in range(50)))

    assert outcomes(results) == Counter({"OK": 1, "AWAITING_RESPONSE": 49})
    assert len(await inmails_of(api, ada)) == 1
    assert await api.balance(ada) == 4


async def test_fifty_concurrent_retries_of_one_send_make_one_conversation(api: Api) -> None:
    ada, grace = await ada_and_grace(api)

    results = await asyncio.gather(*(api.send(ada, grace, key="once") for _ in range(50)))

    assert outcomes(results) == Counter({"OK": 50})
    assert len({result["conversation"]["id"] for result in results}) == 1
    assert {result["creditsLeft"] for result in results} == {4}
    assert await api.balance(ada) == 4


async def test_twenty_concurrent_responses_credit_back_once(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    conversation_id = (await api.send(ada, grace))["conversation"]["id"]

    results = await asyncio.gather(
        *(api.respond(grace, conversation_id, "INTERESTED") for _ in range(20))
    )

    assert outcomes(results) == Counter({"OK": 1, "ALREADY_RESPONDED": 19})
    assert sum(result["creditedBack"] for result in results) == 1
    assert await api.balance(ada) == 5
    assert [e["kind"] for e in await ledger_of(api, ada)] == ["GRANT", "DEBIT", "CREDIT_BACK"]


async def test_twenty_concurrent_purchases_with_one_key_charge_once_and_grant_one_lot(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    results = await asyncio.gather(*(api.purchase(ada, 3, key="order-7") for _ in range(20)))

    assert outcomes(results) == Counter({"OK": 20})
    assert len({result["lot"]["id"] for result in results}) == 1
    await assert_bought_once(api, ada, balance=8)


async def test_concurrent_purchases_over_the_cap_are_refused_before_any_charge(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")  # 5 of a cap of 15

    results = await asyncio.gather(*(api.purchase(ada, 4) for _ in range(20)))

    assert outcomes(results) == Counter({"OK": 2, "CAP_EXCEEDED": 18})
    assert await api.balance(ada) == 13
    charges = await charges_of(api, ada)
    assert [c["status"] for c in charges] == ["SUCCEEDED", "SUCCEEDED"]  # none charged and refunded
    assert len(await purchased_lots_of(api, ada)) == 2


async def test_same_key_purchases_racing_a_cap_filler_never_grant_without_a_charge(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")  # 5 of a cap of 15

    results = await asyncio.gather(
        *(api.purchase(ada, 10, key="slow-order") for _ in range(5)),
        *(api.purchase(ada, 10, key="fast-order") for _ in range(5)),
    )

    assert set(outcomes(results)) <= {"OK", "CAP_EXCEEDED"}
    assert await api.balance(ada) == 15
    kept = [c for c in await charges_of(api, ada) if c["status"] == "SUCCEEDED"]
    purchased = await purchased_lots_of(api, ada)
    assert len(kept) == len(purchased) == 1


async def test_concurrent_writes_after_a_cycle_start_grant_its_allotment_once(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    readers = await members(api, 10)
    api.advance(days=31)  # 15 Feb is due

    results = await asyncio.gather(
        *(api.send(ada, reader) for reader in readers),
        *(api.purchase(ada, 1) for _ in range(10)),
    )

    monthly = [
        e
        for e in await ledger_of(api, ada)
        if e["kind"] == "GRANT" and e["at"].endswith("T00:00:00Z")
    ]
    assert [(e["at"], e["delta"]) for e in monthly] == [("2026-02-15T00:00:00Z", 5)]
    ok = outcomes(results)["OK"]
    entries = await ledger_of(api, ada)
    assert sum(e["delta"] for e in entries) == await api.balance(ada)
    assert len(entries) == 2 + ok


async def test_a_cancel_racing_sends_leaves_a_zero_balance_and_a_consistent_ledger(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")  # 15 credits
    readers = await members(api, 10)  # however the race goes, the cancel forfeits 5 or more

    cancel = api.gql("mutation { cancelSubscription { errors { code } } }", token=ada.token)
    results = await asyncio.gather(*(api.send(ada, reader) for reader in readers), cancel)

    sends = list(results[:-1])
    assert results[-1] == {"cancelSubscription": {"errors": []}}
    assert set(outcomes(sends)) <= {"OK", "SUBSCRIPTION_INACTIVE"}
    assert await api.balance(ada) == 0
    entries = await ledger_of(api, ada)
    assert sum(e["delta"] for e in entries) == 0
    assert entries[-1]["kind"] == "FORFEIT"
    assert len([e for e in entries if e["kind"] == "DEBIT"]) == outcomes(sends)["OK"]
    running = 0
    for entry in entries:
        running += entry["delta"]
        assert entry["balanceAfter"] == running >= 0
