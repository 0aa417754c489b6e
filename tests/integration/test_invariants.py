"""The invariants of credits (SPEC 3-5) hold after every step of random use of the API.

Balance = sum of ledger deltas = sum of remaining over spendable lots; never negative; no
grant over the cap; each InMail exactly one DEBIT; at most one CREDIT_BACK per InMail. Each
walk is a seeded random sequence of what clients do, audited from storage after every step.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

from audit import audit_member
from support import (
    Api,
    Person,
    ada_and_grace,
    cancel_subscription,
    change_plan,
    new_key,
    update_card,
)

PLANS = ["PREMIUM_CAREER", "PREMIUM_BUSINESS", "SALES_NAVIGATOR", "LEGACY_PREMIUM"]
CARDS = [
    {"brand": "Visa", "last4": "4242", "expMonth": 12, "expYear": 2030},
    {"brand": "Visa", "last4": "1111", "expMonth": 2, "expYear": 2026},  # runs out in a walk
]


@dataclass
class World:
    api: Api
    rng: random.Random
    people: list[Person] = field(default_factory=list)
    awaiting: list[tuple[str, Person]] = field(default_factory=list)  # (conversation, recipient)
    answered: list[tuple[str, Person]] = field(default_factory=list)
    keys: list[tuple[Person, str, int]] = field(default_factory=list)  # purchases made
    outcomes: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def someone(self) -> Person:
        return self.rng.choice(self.people)

    def outcome(self, move: str, result: dict[str, Any]) -> str:
        """What `move` answered, counted: OK or its error codes."""
        said = ",".join(error["code"] for error in result["errors"]) or "OK"
        self.outcomes[move][said] += 1
        return said


async def audit_everyone(world: World, step: str) -> None:
    container = world.api.container
    audits = await asyncio.gather(*(audit_member(container, person.id) for person in world.people))
    problems = [problem for audit in audits for problem in audit]
    assert problems == [], f"after {step}: {problems}"


async def send(world: World) -> str:
    sender, recipient = world.someone(), world.someone()
    result = await world.api.send(sender, recipient)
    if not result["errors"]:
        world.awaiting.append((result["conversation"]["id"], recipient))
    return f"send -> {world.outcome('send', result)}"


async def respond(world: World) -> str:
    pool = world.awaiting if world.awaiting and world.rng.random() < 0.85 else world.answered
    if not pool:
        return "respond: nothing to answer"
    conversation_id, recipient = world.rng.choice(pool)
    kind = world.rng.choice(["INTERESTED", "MAYBE_LATER", "NOT_INTERESTED", "REPLY"])
    result = await world.api.respond(recipient, conversation_id, kind, "Sure." if kind else None)
    if not result["errors"] and (conversation_id, recipient) in world.awaiting:
        world.awaiting.remove((conversation_id, recipient))
        world.answered.append((conversation_id, recipient))
    return f"respond {kind} -> {world.outcome('respond', result)}"


async def purchase(world: World) -> str:
    if world.keys and world.rng.random() < 0.3:
        member, key, quantity = world.rng.choice(world.keys)  # a retry, or a reused key
        quantity = quantity if world.rng.random() < 0.7 else quantity + 1
    else:
        member, key, quantity = world.someone(), new_key(), world.rng.randint(0, 11)
    result = await world.api.purchase(member, quantity, key=key)
    if not result["errors"]:
        world.keys.append((member, key, quantity))
    return f"purchase {quantity} -> {world.outcome('purchase', result)}"


async def advance(world: World) -> str:
    hours = world.rng.choice([1, 13, 24 * 3, 24 * 17, 24 * 40])
    world.api.advance(hours=hours)
    return f"advance {hours}h"


async def plan_change(world: World) -> str:
    member = world.someone()
    plan = "BASIC" if world.rng.random() < 0.15 else world.rng.choice(PLANS)
    allotment = world.rng.randint(1, 12) if plan == "LEGACY_PREMIUM" else None
    result = await change_plan(world.api, member, plan, allotment)
    return f"changePlan {plan} -> {world.outcome('changePlan', result)}"


async def cancel(world: World) -> str:
    result = await cancel_subscription(world.api, world.someone())
    return f"cancel -> {world.outcome('cancel', result)}"


async def new_card(world: World) -> str:
    result = await update_card(world.api, world.someone(), CARDS[0])
    return f"updatePaymentMethod -> {world.outcome('updatePaymentMethod', result)}"


async def burst(world: World) -> str:
    """Several of the above at once, as concurrent clients would."""
    moves = [send, send, send, respond, purchase, purchase]
    chosen = [world.rng.choice(moves) for _ in range(world.rng.randint(3, 8))]
    done = await asyncio.gather(*(move(world) for move in chosen))
    return "burst: " + "; ".join(done)


# What each move may answer in a walk: OK, or a refusal its rules give (an unexpected code, an
# internal error above all, fails the walk).
MAY_ANSWER: dict[str, set[str]] = {
    "send": {
        "OK",
        "CANNOT_MESSAGE_SELF",
        "RECIPIENT_IS_CONNECTION",
        "UPGRADE_REQUIRED",
        "SUBSCRIPTION_INACTIVE",
        "PAYMENT_METHOD_EXPIRED",
        "AWAITING_RESPONSE",
        "INSUFFICIENT_CREDITS",
        "RATE_LIMITED",
    },
    "respond": {"OK", "ALREADY_RESPONDED"},
    "purchase": {
        "OK",
        "INVALID_INPUT",  # a quantity of 0 or 11
        "PURCHASE_NOT_ALLOWED",
        "SUBSCRIPTION_INACTIVE",
        "PAYMENT_METHOD_EXPIRED",
        "CAP_EXCEEDED",
        "IDEMPOTENCY_KEY_REUSED",
    },
    "changePlan": {"OK", "PLAN_NOT_AVAILABLE", "PAYMENT_METHOD_EXPIRED", "INVALID_INPUT"},
    "cancel": {"OK", "SUBSCRIPTION_INACTIVE"},
    "updatePaymentMethod": {"OK"},
}
# The walk moved credits every way: sends spent them, responses earned them back, purchases
# bought them.
MUST_SUCCEED = ("send", "respond", "purchase")

MOVES: list[tuple[Any, int]] = [
    (send, 30),
    (respond, 20),
    (purchase, 15),
    (advance, 12),
    (burst, 10),
    (plan_change, 8),
    (cancel, 2),
    (new_card, 5),
]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_invariant_of_credits_holds_after_every_step_of_a_random_walk(
    api: Api, seed: int
) -> None:
    world = World(api, random.Random(seed))
    for i, plan in enumerate(PLANS * 2):
        world.people.append(
            await api.create_member(
                f"Premium {i}",
                plan,
                card=CARDS[i % 2],
                billing_day=world.rng.choice([1, 15, 29, 31]),
                monthly_allotment=4 if plan == "LEGACY_PREMIUM" else None,
            )
        )
    world.people.append(await api.create_member("Basil Basic", "BASIC", card=None))
    await api.connect(world.people[0], world.people[1])
    await audit_everyone(world, "setup")

    moves, weights = zip(*MOVES, strict=True)
    for step in range(40):
        move = world.rng.choices(moves, weights)[0]
        what = await move(world)
        await audit_everyone(world, f"step {step}: {what}")

    answered = {move: set(",".join(seen).split(",")) for move, seen in world.outcomes.items()}
    assert {move: codes - MAY_ANSWER[move] for move, codes in answered.items()} == {
        move: set() for move in answered
    }, world.outcomes
    assert [move for move in MUST_SUCCEED if world.outcomes[move]["OK"] == 0] == [], world.outcomes


async def test_the_audit_names_a_lot_that_does_not_match_its_ledger(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    assert await audit_member(api.container, ada.id) == []

    await api.container.mongo.c.credit_lots.update_one(
        {"memberId": ada.id}, {"$inc": {"remaining": -1}}
    )

    problems = await audit_member(api.container, ada.id)
    assert any("ledger entries sum to 5" in problem for problem in problems), problems
    assert any("ledger sum 5" in problem for problem in problems), problems


async def test_the_audit_names_an_inmail_without_its_debit(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    sent = await api.send(ada, grace)
    conversation_id = sent["conversation"]["id"]

    await api.container.mongo.c.ledger.update_one(
        {"memberId": ada.id, "kind": "DEBIT"}, {"$set": {"conversationId": None}}
    )

    problems = await audit_member(api.container, ada.id)
    assert f"InMail {conversation_id} has 0 DEBIT entries, not 1" in problems


async def test_the_audit_counts_a_lot_past_its_expiry_as_gone_before_any_job_runs(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    api.advance(days=95)  # the first lot lapsed; nothing has written EXPIRE yet

    # Read as of now (SPEC 3): February's and March's cycles count (10, then the cap of 15);
    # April's grant comes before the January lot lapses that same instant, so it is clamped.
    assert await api.balance(ada) == 10
    assert await audit_member(api.container, ada.id) == []
