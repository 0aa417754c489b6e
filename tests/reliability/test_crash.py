"""A server killed with SIGKILL in the middle of a load loses nothing and doubles nothing.

Clients retry what got no answer, with the same idempotency key, as SPEC 4 and 6 ask of them;
after the restart every invariant of credits holds and every retried request took effect once.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from inmail.domain.errors import ErrorCode, Reason
from inmail.domain.intents import IntentStatus
from inmail.domain.keyed import KeyedRefusal
from inmail.processes import free_port
from inmail.repositories.records import ChargeRepository, refusal_to_doc
from inmail.services.charges import Reconciled, reconcile_charges
from inmail.services.fulfilments import FULFILMENTS
from inmail.services.payments import BuiltinGateway, Charge, ChargeRequest, PaymentGateway
from inmail.settings import Settings
from reliability.conftest import http_client
from reliability.invariants import Snapshot, keyed_records, problems
from reliability.invariants import load as load_snapshot
from reliability.paused_app import PAUSE_DIR
from reliability.remote import PURCHASE, RESPOND, SEND, Fleet, variables_send
from reliability.servers import (
    Server,
    abort_orphaned_transactions,
    running,
    server_env,
    transaction_lifetime,
)
from support import (
    START,
    Api,
    GraphQLFailure,
    Person,
    cancel_subscription,
    change_plan,
    charges_of,
    codes,
    open_api,
    orphan_charge,
    subscription_of,
)

BATCH = Settings().scheduler_batch  # the scheduler's batch, as the service runs it

pytestmark = pytest.mark.slow

Doc = dict[str, Any]


@dataclass
class Request:
    """One client request, kept so that it can be sent again exactly as it was."""

    kind: str
    query: str
    variables: dict[str, Any]
    member: Person
    server: int
    answer: dict[str, Any] | None = None
    lost: bool = False
    retries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str | None:
        value = self.variables["i"].get("idempotencyKey")
        return value if isinstance(value, str) else None

    def payload(self, body: dict[str, Any]) -> dict[str, Any]:
        assert not body.get("errors"), body["errors"]
        field_name = next(iter(body["data"]))
        result: dict[str, Any] = body["data"][field_name]
        return result


async def fire(fleet: Fleet, request: Request, done: Callable[[], None]) -> None:
    try:
        response = await fleet.on(request.server).post(
            request.query, request.variables, request.member.token
        )
    except httpx.TransportError:
        request.lost = True  # the server died with this request: the client cannot know more
        return
    finally:
        done()
    assert response.status_code == 200, f"{response.status_code}: {response.text}"
    request.answer = request.payload(response.json())


async def retry(fleet: Fleet, request: Request, server: int) -> dict[str, Any]:
    body = await fleet.on(server).raw(request.query, request.variables, request.member.token)
    result = request.payload(body)
    request.retries.append(result)
    return result


async def build_load(fleet: Fleet) -> list[Request]:
    rng = random.Random(20260115)
    senders = [await fleet.create_member(f"Sender {i}", "PREMIUM_BUSINESS") for i in range(4)]
    recipients = list(
        await asyncio.gather(
            *(fleet.create_member(f"Recipient {i}", "BASIC", card=None) for i in range(60))
        )
    )
    # InMails sent before the load, answered during it.
    earlier: list[tuple[Person, str]] = []
    for i, sender in enumerate(senders):
        for recipient in recipients[i * 5 : i * 5 + 5]:
            sent = await fleet.send(sender, recipient, f"before-{uuid.uuid4().hex}")
            assert sent["errors"] == []
            earlier.append((recipient, sent["conversation"]["id"]))
    load: list[Request] = []
    for sender in senders:
        for recipient in rng.sample(recipients[20:], 12):
            load.append(
                Request(
                    "send",
                    SEND,
                    variables_send(recipient.id, f"send-{uuid.uuid4().hex}"),
                    sender,
                    rng.randrange(2),
                )
            )
        for _ in range(6):
            load.append(
                Request(
                    "purchase",
                    PURCHASE,
                    {"i": {"quantity": rng.randint(1, 3), "idempotencyKey": uuid.uuid4().hex}},
                    sender,
                    rng.randrange(2),
                )
            )
    for recipient, conversation_id in earlier:
        response = rng.choice(["INTERESTED", "MAYBE_LATER", "NOT_INTERESTED"])
        load.append(
            Request(
                "respond",
                RESPOND,
                {"i": {"conversationId": conversation_id, "response": response}},
                recipient,
                rng.randrange(2),
            )
        )
    rng.shuffle(load)
    return load


async def run_until_killed(
    fleet: Fleet, load: list[Request], victim: Server, kill_after: int
) -> None:
    """Send the whole load at once; SIGKILL the victim once `kill_after` requests are done."""
    finished = 0
    halfway = asyncio.Event()

    def done() -> None:
        nonlocal finished
        finished += 1
        if finished >= kill_after:
            halfway.set()

    tasks = [asyncio.create_task(fire(fleet, request, done)) for request in load]
    await halfway.wait()
    await asyncio.to_thread(victim.kill)
    await asyncio.gather(*tasks)


async def test_a_server_killed_mid_load_then_restarted_keeps_every_invariant_and_retries_once(
    mongodb_uri: str, db_name: str, tmp_path: Path
) -> None:
    try:
        async with transaction_lifetime(mongodb_uri, seconds=5):
            load, snapshot = await crash_and_recover(mongodb_uri, db_name, tmp_path)
    finally:
        await abort_orphaned_transactions(mongodb_uri)

    assert problems(snapshot, START) == []
    assert_every_keyed_request_took_effect_at_most_once(load, snapshot)


async def crash_and_recover(
    mongodb_uri: str, db_name: str, tmp_path: Path
) -> tuple[list[Request], Snapshot]:
    with running(2, mongodb_uri, db_name, tmp_path) as servers:
        victim = servers[0]
        async with http_client() as client:
            fleet = Fleet(client, [s.url for s in servers])
            load = await build_load(fleet)
            await run_until_killed(fleet, load, victim, kill_after=len(load) // 3)

            lost = [r for r in load if r.lost]
            assert lost, "the kill landed after the load: nothing was in flight"
            assert all(r.server == 0 for r in lost)

            victim.start()  # the same port, database and settings
            await asyncio.to_thread(victim.wait_ready)

            # Every request without an answer is sent again, as it was, to either server.
            for i, request in enumerate(lost):
                result = await retry(fleet, request, server=i % 2)
                if request.kind == "respond":
                    assert codes(result) in ([], ["ALREADY_RESPONDED"])
                else:
                    assert set(codes(result)) <= {"INSUFFICIENT_CREDITS", "CAP_EXCEEDED"}
            # And once more: a retry of a request that has completed returns its first result.
            for request in lost:
                first = request.retries[0]
                if request.key is not None and not codes(first):
                    assert identity(await retry(fleet, request, server=1)) == identity(first)

        mongo: AsyncMongoClient[Doc] = AsyncMongoClient(mongodb_uri, tz_aware=True)
        try:
            return load, await load_snapshot(mongo[db_name])
        finally:
            await mongo.close()


def identity(result: dict[str, Any]) -> tuple[object, ...]:
    """What a replay must repeat: the same conversation or lot, the same credits left."""
    made = result.get("conversation") or result.get("lot") or {}
    return (made.get("id"), result.get("creditsLeft"), tuple(codes(result)))


def assert_every_keyed_request_took_effect_at_most_once(
    load: list[Request], snapshot: Snapshot
) -> None:
    records = keyed_records(snapshot)
    for intent in snapshot.payment_intents:  # a purchase's record is its payment intent
        if intent["status"] == "COMPLETED":
            lot_id = intent["outcome"]["subjectId"]
            records[(intent["memberId"], intent["key"])] = {"result": {"lotId": lot_id}}
    conversations = {c["_id"] for c in snapshot.conversations}
    purchases_by_key = Counter((p["memberId"], p["idempotencyKey"]) for p in snapshot.purchases)
    debits = Counter(e.get("conversationId") for e in snapshot.ledger if e["kind"] == "DEBIT")
    for request in load:
        if request.key is None:
            continue
        outcome = request.answer if request.answer is not None else request.retries[0]
        member_id = request.member.id
        record = records.get((member_id, request.key))
        if codes(outcome):
            assert record is None, f"{request.kind} {request.key} was refused yet recorded"
            continue
        assert record is not None, f"{request.kind} {request.key} succeeded without a record"
        if request.kind == "send":
            conversation_id = record["result"]["conversationId"]
            assert conversation_id in conversations
            assert outcome["conversation"]["id"] == conversation_id
            assert debits[conversation_id] == 1
        else:
            assert purchases_by_key[(member_id, request.key)] == 1
            assert outcome["lot"]["id"] == record["result"]["lotId"]


# A server killed while its transactions are open: the members it was writing stay writable.

TESTS_DIR = Path(__file__).resolve().parents[1]


def server_holding_transactions(env: dict[str, str], log_path: Path) -> Server:
    """The service, except that each transaction stays open, uncommitted, once its work is done."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "uvicorn", "--factory", "reliability.paused_app:app_from_env"),
        *("--host", "127.0.0.1", "--port", str(port), "--no-access-log"),
    ]
    return Server(command, {**env, "PYTHONPATH": str(TESTS_DIR)}, log_path, port)


async def transaction_lifetime_limit(mongodb_uri: str) -> int:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(mongodb_uri)
    try:
        reply = await client.admin.command(
            {"getParameter": 1, "transactionLifetimeLimitSeconds": 1}
        )
        return int(reply["transactionLifetimeLimitSeconds"])
    finally:
        await client.close()


async def wait_for_open_transactions(folder: Path, count: int, server: Server) -> None:
    deadline = time.monotonic() + 30
    while len(await asyncio.to_thread(lambda: list(folder.iterdir()))) < count:
        assert time.monotonic() < deadline, f"no transaction held open:\n{server.log()}"
        await asyncio.sleep(0.05)


async def timed_retry(fleet: Fleet, request: Request) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    result = await retry(fleet, request, server=0)
    return result, time.monotonic() - started


async def test_members_whose_transactions_died_with_their_server_can_write_again_within_seconds(
    mongodb_uri: str, db_name: str, tmp_path: Path
) -> None:
    """SIGKILL mid-commit: same-key retries on another server finish in seconds, not a minute.

    The database aborts a transaction whose process died only once transactionLifetimeLimitSeconds
    has run out; until then the member's documents stay locked and a retry waits. The embedded
    mongod (and docker-compose, and the README for production) sets it to 10 s.
    """
    assert await transaction_lifetime_limit(mongodb_uri) <= 10, (
        "the tests' mongod must abort orphaned transactions within 10 s, as production is told to"
    )
    held = tmp_path / "open-transactions"
    held.mkdir()
    doomed = server_holding_transactions(
        {**server_env(mongodb_uri, db_name), PAUSE_DIR: str(held)}, tmp_path / "doomed.log"
    )
    try:
        with running(1, mongodb_uri, db_name, tmp_path) as (healthy,):
            doomed.start()
            await asyncio.to_thread(doomed.wait_ready)
            async with http_client() as client:
                fleet = Fleet(client, [healthy.url])
                nadia = await fleet.create_member("Nadia Sender", "PREMIUM_BUSINESS")  # 15
                omar = await fleet.create_member("Omar Buyer", "PREMIUM_CAREER")  # 5
                reader = await fleet.create_member("Rita Reader", "BASIC", card=None)
                send = Request("send", SEND, variables_send(reader.id, "nadia-1"), nadia, 1)
                purchase = Request(
                    "purchase",
                    PURCHASE,
                    {"i": {"quantity": 3, "idempotencyKey": "omar-1"}},
                    omar,
                    1,
                )
                to_doomed = Fleet(client, [doomed.url])
                in_flight = [
                    asyncio.create_task(to_doomed.post(r.query, r.variables, r.member.token))
                    for r in (send, purchase)
                ]
                await wait_for_open_transactions(held, 2, doomed)
                assert not any(task.done() for task in in_flight)
                await asyncio.to_thread(doomed.kill)
                for task in in_flight:
                    with pytest.raises(httpx.TransportError):
                        await task

                (sent, send_seconds), (bought, buy_seconds) = await asyncio.gather(
                    timed_retry(fleet, send), timed_retry(fleet, purchase)
                )

                assert codes(sent) == []
                assert codes(bought) == []
                assert send_seconds < 20, f"the send's retry took {send_seconds:.1f} s"
                assert buy_seconds < 20, f"the purchase's retry took {buy_seconds:.1f} s"
                assert identity(await retry(fleet, send, server=0)) == identity(sent)
                assert identity(await retry(fleet, purchase, server=0)) == identity(bought)
                assert await fleet.balance(nadia) == 14
                assert await fleet.balance(omar) == 8

        mongo: AsyncMongoClient[Doc] = AsyncMongoClient(mongodb_uri, tz_aware=True)
        try:
            snapshot = await load_snapshot(mongo[db_name])
        finally:
            await mongo.close()
    finally:
        doomed.stop()
        await abort_orphaned_transactions(mongodb_uri)

    assert problems(snapshot, START) == []
    assert len(snapshot.conversations) == 1
    assert len(snapshot.purchases) == 1
    assert len(snapshot.charges) == 1
    assert_every_keyed_request_took_effect_at_most_once([send, purchase], snapshot)


# A crash between the charge and the grant, and a refund, made to happen on purpose.


async def test_a_purchase_charged_when_its_server_died_is_granted_once_when_retried(
    api: Api,
) -> None:
    ivy = await api.create_member("Ivy Buyer", "PREMIUM_CAREER")
    # The gateway charged the card for 3 credits, then the process died before the grant.
    intent = await orphan_charge(api, ivy, 3, status=IntentStatus.PENDING)

    first = await api.purchase(ivy, 3, intent.key)
    again = await api.purchase(ivy, 3, intent.key)
    other = await api.purchase(ivy, 10, intent.key)

    assert first["errors"] == []
    assert again == first
    assert codes(other) == ["IDEMPOTENCY_KEY_REUSED"]
    assert first["creditsLeft"] == 8
    assert await api.balance(ivy) == 8
    charges = await charges_of(api, ivy)
    assert [(c["idempotencyKey"], c["status"]) for c in charges] == [(intent.id, "SUCCEEDED")]
    snapshot = await load_snapshot(api.container.mongo.db)
    assert len(snapshot.purchases) == 1
    assert problems(snapshot, START) == []


class BalanceMovingGateway:
    """The built-in gateway, slow enough that the member's balance moves while it charges.

    A real provider takes a while; meanwhile the member's balance may move (another purchase,
    a cycle that starts: here run from inside the first charge, so that the race happens every
    time).
    """

    def __init__(
        self, inner: PaymentGateway, meanwhile: Callable[[], Awaitable[object]] | None
    ) -> None:
        self.inner = inner
        self.meanwhile: Callable[[], Awaitable[object]] | None = meanwhile

    async def charge(self, request: ChargeRequest) -> Charge:
        charge = await self.inner.charge(request)
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            await meanwhile()
        return charge

    async def find(self, member_id: str, idempotency_key: str) -> Charge | None:
        return await self.inner.find(member_id, idempotency_key)

    async def refund(self, charge: Charge, at: Any) -> None:
        await self.inner.refund(charge, at)


@dataclass
class RacedApi:
    api: Api
    gateway: BalanceMovingGateway


@pytest.fixture
async def raced(mongodb_uri: str, db_name: str) -> AsyncIterator[RacedApi]:
    """The service with a gateway that lets another request in between charge and grant."""
    made: list[BalanceMovingGateway] = []

    def gateway(charges: ChargeRepository) -> PaymentGateway:
        made.append(BalanceMovingGateway(BuiltinGateway(charges), None))
        return made[-1]

    async with open_api(mongodb_uri, db_name, gateway=gateway) as service:
        yield RacedApi(service, made[0])


async def test_a_purchase_made_while_another_is_being_charged_is_refused_before_any_charge(
    raced: RacedApi,
) -> None:
    """The race between two purchases is decided before any charge: the one recorded second
    counts the first's credits as on order."""
    api = raced.api
    hal = await api.create_member("Hal Buyer", "PREMIUM_CAREER")  # 5 of a cap of 15
    other: list[dict[str, Any]] = []

    async def another_purchase() -> None:
        other.append(await api.purchase(hal, 10, "hal-other"))

    raced.gateway.meanwhile = another_purchase

    bought = await api.purchase(hal, 10, "hal-1")

    assert codes(bought) == []
    assert [codes(o) for o in other] == [["CAP_EXCEEDED"]]
    assert await api.balance(hal) == 15
    statuses = [(c["amount"], c["status"]) for c in await charges_of(api, hal)]
    assert statuses == [(10000, "SUCCEEDED")]
    assert problems(await load_snapshot(api.container.mongo.db), START) == []


async def a_purchase_refunded_because_credits_came_back_during_its_charge(
    raced: RacedApi,
) -> Person:
    """Hal (Premium Business, cap 45) at 35 of it with two InMails awaiting, buys 10: it fits
    when recorded, but both InMails are answered while the card is charged, and with the two
    credits back the purchase no longer fits: refused with CAP_EXCEEDED and refunded."""
    api = raced.api
    hal = await api.create_member("Hal Buyer", "PREMIUM_BUSINESS")  # 15
    for quantity in (10, 10, 2):
        assert (await api.purchase(hal, quantity))["errors"] == []
    readers = [await api.create_member(f"Reader {i}", "BASIC", card=None) for i in range(2)]
    sent = [await api.send(hal, reader) for reader in readers]
    assert await api.balance(hal) == 35

    async def both_answer() -> None:
        for reader, inmail in zip(readers, sent, strict=True):
            answered = await api.respond(reader, inmail["conversation"]["id"])
            assert answered["creditedBack"] is True

    raced.gateway.meanwhile = both_answer
    assert codes(await api.purchase(hal, 10, "hal-1")) == ["CAP_EXCEEDED"]
    return hal


async def test_a_purchase_refunded_after_a_race_is_refused_when_the_race_is_over(
    raced: RacedApi,
) -> None:
    """The race itself is handled: the loser is refused with CAP_EXCEEDED and refunded."""
    api = raced.api

    hal = await a_purchase_refunded_because_credits_came_back_during_its_charge(raced)

    assert await api.balance(hal) == 37
    statuses = [c["status"] for c in await charges_of(api, hal)]
    assert sorted(statuses) == ["REFUNDED"] + ["SUCCEEDED"] * 3
    assert problems(await load_snapshot(api.container.mongo.db), START) == []


async def test_retrying_a_refunded_purchase_never_grants_credits_without_a_charge(
    raced: RacedApi,
) -> None:
    api = raced.api
    hal = await a_purchase_refunded_because_credits_came_back_during_its_charge(raced)
    for i in range(2):  # room under the cap again
        recipient = await api.create_member(f"Another reader {i}", "BASIC", card=None)
        assert (await api.send(hal, recipient))["errors"] == []
    assert await api.balance(hal) == 35

    retried = await api.purchase(hal, 10, "hal-1")

    charges = await charges_of(api, hal)
    purchases = await api.container.mongo.c.purchases.count_documents({"memberId": hal.id})
    # The retry replays the refusal: its charge was given back, and it charges nothing again.
    assert codes(retried) == ["CAP_EXCEEDED"]
    assert await api.balance(hal) == 35
    assert sorted(c["status"] for c in charges) == ["REFUNDED"] + ["SUCCEEDED"] * 3
    assert purchases == 4  # three COMPLETED, one REFUNDED
    assert problems(await load_snapshot(api.container.mongo.db), START) == []


async def test_a_purchase_killed_while_refunding_is_refunded_when_retried(api: Api) -> None:
    hal = await api.create_member("Hal Buyer", "PREMIUM_CAREER")
    assert (await api.purchase(hal, 10, "hal-fill"))["errors"] == []  # 15: at the cap
    # What purchase_credits had written when the process died refunding: the charge of a
    # purchase refused for the cap, its intent moved to REFUNDING, before the gateway's refund.
    intent = await orphan_charge(api, hal, 10, status=IntentStatus.REFUNDING, key="hal-1")
    refusal = KeyedRefusal(
        ErrorCode.CAP_EXCEEDED, Reason.OVER_CAP, "quantity", {"balance": 25, "cap": 15}
    )
    await api.container.mongo.c.payment_intents.update_one(
        {"_id": intent.id}, {"$set": {"refusal": refusal_to_doc(refusal)}}
    )

    retried = await api.purchase(hal, 10, "hal-1")

    assert codes(retried) == ["CAP_EXCEEDED"]
    statuses = sorted(
        (c["idempotencyKey"] == intent.id, c["status"]) for c in await charges_of(api, hal)
    )
    assert statuses == [(False, "SUCCEEDED"), (True, "REFUNDED")]
    assert problems(await load_snapshot(api.container.mongo.db), START) == []


# A paid plan change is applied only on the terms it was asked for (SPEC 2): a change or a
# cancellation that came after it, while its charge was in flight or its process lay dead, stands.


async def test_a_cancellation_during_a_plan_changes_charge_stands_and_the_charge_is_refunded(
    raced: RacedApi,
) -> None:
    api = raced.api
    kit = await api.create_member("Kit Changer", "PREMIUM_CAREER")
    cancelled: list[dict[str, Any]] = []

    async def cancel() -> None:
        cancelled.append(await cancel_subscription(api, kit))

    raced.gateway.meanwhile = cancel
    changed = await change_plan(api, kit, "PREMIUM_BUSINESS", key="kit-1")
    retried = await change_plan(api, kit, "PREMIUM_BUSINESS", key="kit-1")

    assert [codes(c) for c in cancelled] == [[]]
    assert codes(changed) == codes(retried) == ["INVALID_INPUT"]
    viewer = await subscription_of(api, kit)
    assert viewer["subscription"]["status"] == "CANCELED"
    assert viewer["plan"]["type"] == "PREMIUM_CAREER"
    assert await api.balance(kit) == 0
    assert [c["status"] for c in await charges_of(api, kit)] == ["REFUNDED"]
    assert problems(await load_snapshot(api.container.mongo.db), START) == []


@pytest.mark.parametrize("reconciled", ["after", "while-charging"])
async def test_an_orphaned_plan_change_does_not_undo_the_members_later_change(
    raced: RacedApi, reconciled: str
) -> None:
    """The process that charged the change dies before applying it. Another change asked for
    at once is refused before any charge (the first may still be under way: a retry under its
    key finishes it); once reconciliation's time has come, the member changes to another plan,
    reconciliation finds the charge and refunds it, and the later plan stands: whether
    reconciliation runs after the later change or while it is being charged."""
    api = raced.api
    kit = await api.create_member("Kit Changer", "PREMIUM_CAREER")

    async def die() -> None:
        raise ProcessDied

    raced.gateway.meanwhile = die
    with pytest.raises(GraphQLFailure):  # its client is told "Unexpected error."
        await change_plan(api, kit, "PREMIUM_BUSINESS", key="kit-1")
    at_once = await change_plan(api, kit, "SALES_NAVIGATOR", key="kit-2")
    assert codes(at_once) == ["INVALID_INPUT"]
    api.advance(hours=1)  # past the age at which reconciliation takes an intent
    reports: list[Reconciled] = []

    async def reconcile() -> None:
        container = api.container
        reports.append(
            await reconcile_charges(
                container.deps, api.clock.now(), batch_size=BATCH, fulfilments=FULFILMENTS
            )
        )

    raced.gateway.meanwhile = reconcile if reconciled == "while-charging" else None
    later = await change_plan(api, kit, "SALES_NAVIGATOR", key="kit-3")
    assert codes(later) == []
    if reconciled == "after":
        await reconcile()
    [report] = reports
    retried = await change_plan(api, kit, "PREMIUM_BUSINESS", key="kit-1")

    assert report.refunded == 1
    assert codes(retried) == ["INVALID_INPUT"]
    assert (await subscription_of(api, kit))["plan"]["type"] == "SALES_NAVIGATOR"
    statuses = sorted(c["status"] for c in await charges_of(api, kit))
    assert statuses == ["REFUNDED", "SUCCEEDED"]
    assert problems(await load_snapshot(api.container.mongo.db), START) == []


class ProcessDied(Exception):
    """What the test makes of a process dying right after a charge succeeded."""
