"""The primary of a three-member replica set goes away mid-burst: no credit is lost or doubled.

The service runs as real uvicorn processes connected with `?replicaSet=`; members send InMails
and buy credits all at once, each request sent again under its idempotency key until it gets an
answer, as a real client does. Mid-burst the primary is stepped down (as a rolling upgrade does)
or killed with SIGKILL (as a lost host is). Writes must resume on the newly elected primary and,
afterwards, every member's credits must add up: balance = the ledger's deltas, one debit per
InMail, one purchase per charge, and each request's effect exactly once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from reliability.invariants import Snapshot, keyed_records, load_sync, problems
from reliability.remote import PURCHASE, SEND, Fleet, variables_send
from reliability.replicaset import Member, ReplicaSet
from reliability.servers import running
from support import START, Person

CREDIT_PRICE_CENTS = 1000  # the Premium plans' price of one extra credit (SPEC 1)

pytestmark = pytest.mark.slow

SENDERS = 8
RECIPIENTS = 9  # each sender writes to each recipient at most once: no two awaiting InMails
CALLS_PER_SENDER = 9  # 6 sends and 3 purchases: never short of credits, never over the cap
START_BALANCE = 15  # PREMIUM_BUSINESS's first allotment (cap 45)
CLIENT_TIMEOUT = 15.0  # a client gives up on a request after this long and sends it again
GIVE_UP_AFTER = 50.0  # a request still unanswered after this long fails the test


@dataclass
class Call:
    """One request of one member, sent again as it was until it gets an answer."""

    kind: str
    query: str
    variables: dict[str, Any]
    member: Person
    quantity: int = 0
    started: float = 0.0
    answered: float | None = None
    result: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        key: str = self.variables["i"]["idempotencyKey"]
        return key


async def until_answered(fleet: Fleet, call: Call) -> None:
    """Transport errors, timeouts and top-level GraphQL errors are not answers: send again."""
    field_name = "sendInMail" if call.kind == "send" else "purchaseInMailCredits"
    call.started = time.monotonic()
    while True:
        try:
            response = await fleet.post(call.query, call.variables, call.member.token)
        except httpx.TransportError as exc:
            call.failures.append(type(exc).__name__)
        else:
            body = response.json() if response.status_code == 200 else {}
            payload = (body.get("data") or {}).get(field_name)
            if payload is not None and not body.get("errors"):
                call.result = payload
                call.answered = time.monotonic()
                return
            call.failures.append(f"{response.status_code} {str(body.get('errors'))[:120]}")
        assert time.monotonic() - call.started < GIVE_UP_AFTER, (
            f"{call.kind} {call.key} unanswered for {GIVE_UP_AFTER:.0f} s: {call.failures[-3:]}"
        )
        await asyncio.sleep(0.2)


def plan(sender: Person, recipients: list[Person], index: int) -> list[Call]:
    calls: list[Call] = []
    for i in range(CALLS_PER_SENDER):
        key = f"{sender.id}-{i}-{uuid.uuid4().hex[:8]}"
        if i % 3 == 2:
            quantity = 1 + (index + i) % 2
            variables = {"i": {"quantity": quantity, "idempotencyKey": key}}
            calls.append(Call("purchase", PURCHASE, variables, sender, quantity))
        else:
            recipient = recipients[(index + i) % len(recipients)]
            calls.append(Call("send", SEND, variables_send(recipient.id, key), sender))
    return calls


@dataclass
class Failover:
    old_primary: Member
    new_primary: Member
    at: float  # when the primary was stepped down or killed
    elected_after: float  # seconds until another member answered as a writable primary


@dataclass
class Burst:
    senders: list[Person]
    calls: list[Call]
    failover: Failover
    snapshot: Snapshot


async def burst_through_failover(
    members: ReplicaSet, how: str, db_name: str, log_dir: Path
) -> Burst:
    """Run the burst on two service processes; a third of the way in, step down or kill."""
    with running(2, members.uri, db_name, log_dir) as servers:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=limits) as client:
            fleet = Fleet(client, [server.url for server in servers])
            senders = list(
                await asyncio.gather(
                    *(
                        fleet.create_member(f"Sender {i}", "PREMIUM_BUSINESS")
                        for i in range(SENDERS)
                    )
                )
            )
            recipients = list(
                await asyncio.gather(
                    *(
                        fleet.create_member(f"Reader {i}", "BASIC", card=None)
                        for i in range(RECIPIENTS)
                    )
                )
            )
            plans = [plan(sender, recipients, i) for i, sender in enumerate(senders)]
            calls = [call for calls in plans for call in calls]
            trigger = len(calls) // 3

            a_third_answered = asyncio.Event()

            async def member_worker(own: list[Call]) -> None:
                for call in own:
                    await until_answered(fleet, call)
                    if sum(c.answered is not None for c in calls) >= trigger:
                        a_third_answered.set()

            workers = [asyncio.create_task(member_worker(own)) for own in plans]
            await a_third_answered.wait()
            failover = await asyncio.to_thread(disrupt, members, how)
            await asyncio.gather(*workers)
            for call in calls:  # every answer is what the member asked for
                assert call.result is not None
                assert call.result["errors"] == [], (call.kind, call.key, call.result["errors"])
            assert await fleet.balance(senders[0]) == expected_balance(senders[0], calls)

    return Burst(senders, calls, failover, load_sync(members.uri, db_name))


def disrupt(members: ReplicaSet, how: str) -> Failover:
    old = members.wait_for_primary(5)
    at = time.monotonic()
    if how == "step-down":
        members.step_down(old)
    else:
        old.kill()
    new = members.wait_for_primary(60, other_than=old)
    return Failover(old, new, at, time.monotonic() - at)


def expected_balance(member: Person, calls: list[Call]) -> int:
    own = [call for call in calls if call.member == member]
    bought = sum(call.quantity for call in own if call.kind == "purchase")
    return START_BALANCE + bought - sum(call.kind == "send" for call in own)


def credit_problems(burst: Burst) -> list[str]:
    """Credits neither lost nor doubled, and each answered request took effect exactly once.

    For every member: the stored balance adds up to the ledger and equals the starting allotment
    plus what was bought minus what was sent; one conversation and one debit per answered send;
    one purchase, one lot and one successful charge per answered purchase, each of the quantity
    asked for. Also every invariant of `reliability.invariants` (whose last part is that every
    successful charge has exactly one purchase: see `orphan_charges`).
    """
    snapshot = burst.snapshot
    found = problems(snapshot, START)
    records = keyed_records(snapshot)
    conversations = {c["_id"]: c for c in snapshot.conversations}
    lots = {lot["_id"]: lot for lot in snapshot.credit_lots}
    purchases_by_key = Counter((p["memberId"], p["idempotencyKey"]) for p in snapshot.purchases)
    # A charge is made under its payment intent's id, and for an amount: credits at USD 10.00.
    succeeded = Counter(c["memberId"] for c in snapshot.charges if c["status"] == "SUCCEEDED")
    completed = [p for p in snapshot.purchases if p.get("status", "COMPLETED") == "COMPLETED"]
    purchases_of = Counter(p["memberId"] for p in completed)
    sent_by = Counter(c["senderId"] for c in snapshot.conversations)
    bought_by: Counter[str] = Counter()
    for p in completed:
        bought_by[p["memberId"]] += p["quantity"]
    charged_by: Counter[str] = Counter()
    for c in snapshot.charges:
        if c["status"] == "SUCCEEDED":
            charged_by[c["memberId"]] += c["amount"] // CREDIT_PRICE_CENTS
    ledger_of: Counter[str] = Counter()
    for e in snapshot.ledger:
        ledger_of[e["memberId"]] += e["delta"]

    for call in burst.calls:
        who = call.member.id
        record = records.get((who, call.key))
        assert call.result is not None
        if record is None:
            found.append(f"{call.kind} {call.key} was answered but left no record")
            continue
        if call.kind == "send":
            made = record["result"].get("conversationId")
            if made not in conversations or call.result["conversation"]["id"] != made:
                found.append(f"send {call.key} answered with a conversation that is not stored")
        else:
            lot = lots.get(record["result"].get("lotId"))
            if lot is None or lot["quantity"] != call.quantity:
                found.append(f"purchase {call.key} has no lot of {call.quantity}")
            if purchases_by_key[(who, call.key)] != 1:
                found.append(f"purchase {call.key} has {purchases_by_key[(who, call.key)]} grants")

    for sender in burst.senders:
        who = sender.id
        own = [call for call in burst.calls if call.member == sender]
        sends = sum(call.kind == "send" for call in own)
        if sent_by[who] != sends:
            found.append(f"{who}: {sent_by[who]} conversations for {sends} answered sends")
        if succeeded[who] != purchases_of[who]:
            found.append(f"{who}: {succeeded[who]} charges for {purchases_of[who]} purchases")
        if bought_by[who] != charged_by[who]:
            found.append(f"{who}: {bought_by[who]} credits granted, {charged_by[who]} charged")
        if ledger_of[who] != expected_balance(sender, burst.calls):
            found.append(
                f"{who}: the ledger adds up to {ledger_of[who]}, "
                f"expected {expected_balance(sender, burst.calls)}"
            )
    return found


def orphan_charges(snapshot: Snapshot) -> list[str]:
    """Successful charges without their purchase (and not refunded): money taken, nothing given."""
    purchased = {p["chargeId"] for p in snapshot.purchases}
    return [
        f"charge {c['_id']} ({c['memberId']}, key {c['idempotencyKey']}) has no purchase"
        for c in snapshot.charges
        if c["status"] == "SUCCEEDED" and c["_id"] not in purchased
    ]


def assert_writes_resumed(burst: Burst) -> None:
    failover = burst.failover
    assert failover.new_primary is not failover.old_primary
    answered = [call.answered for call in burst.calls if call.answered is not None]
    assert len(answered) == len(burst.calls)
    assert any(at < failover.at for at in answered), "the failover came before the burst"
    after = [call for call in burst.calls if call.answered and call.answered > failover.at]
    assert after, "no write was answered after the failover"
    across = [call for call in after if call.started < failover.at]
    assert across, "no request was in flight when the primary went away"


@pytest.fixture
def replica_set(tmp_path: Path) -> Iterator[ReplicaSet]:
    with ReplicaSet(tmp_path / "replica-set") as members:
        yield members


async def test_a_primary_stepped_down_mid_burst_loses_and_doubles_no_credit(
    replica_set: ReplicaSet, tmp_path: Path
) -> None:
    burst = await burst_through_failover(replica_set, "step-down", "failover_step_down", tmp_path)

    assert_writes_resumed(burst)
    assert credit_problems(burst) == []
    assert orphan_charges(burst.snapshot) == []


async def test_a_primary_killed_mid_burst_loses_and_doubles_no_credit(
    replica_set: ReplicaSet, tmp_path: Path
) -> None:
    burst = await burst_through_failover(replica_set, "kill", "failover_kill", tmp_path)

    assert not burst.failover.old_primary.running
    assert_writes_resumed(burst)
    assert credit_problems(burst) == []
    assert orphan_charges(burst.snapshot) == []
