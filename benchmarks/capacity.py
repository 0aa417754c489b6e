"""Capacity: a mixed workload at 1 and 2 workers, and each operation's cost against history.

    .venv/bin/python -m benchmarks.capacity            # both tables
    .venv/bin/python -m benchmarks.capacity --quick    # small counts

Mixed workload: of every 20 requests, 16 are the compose window (`compose(recipientId)` with
`viewer { inmailBalance }`: the reads), 3 are sendInMail and 1 is respondToInMail (the recipient
of an earlier InMail answering it), over HTTP from a closed loop of clients. For 1 and then 2
uvicorn workers (`INMAIL_WORKERS`), the client count doubles from 1 to 32; the knee is the
fewest clients giving at least 90 % of the most throughput seen, and its p50/p99 are printed.

History: for members holding 1, 100 and 10,000 conversations and as many lots and ledger entries
(inserted as documents; every lot but the live one spent), each operation over HTTP, one client
at a time: its p50 latency, the server's CPU and mongod's round trips per request.

Starts its own throwaway mongod and servers, stopped by pid; nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks import workloads as w
from benchmarks.commands import round_trips, snapshot, workload_commands
from benchmarks.load import Call, LoadResult, graphql_call, run_http
from benchmarks.processes import CpuMeter
from benchmarks.runner import (
    DB_NAME,
    _load,
    _machine,
    _own_mongod,
    _quick_args,
    _seeding_deps,
    _served,
)
from harness.servers import ServiceProcess
from inmail.auth import Role, TokenService
from inmail.domain.plans import PlanType
from inmail.repositories.mongo import Mongo, new_id
from inmail.services import inmail as inmail_service
from inmail.services import members as member_service
from inmail.services.base import Deps
from inmail.settings import Settings

RESPOND = (
    "mutation Respond($i: RespondToInMailInput!) { respondToInMail(input: $i) "
    "{ creditedBack conversation { id state } errors { code message } } }"
)
PAGE_OF_10 = 10
HISTORIES = (1, 100, 10_000)


def check_respond(data: dict[str, Any]) -> None:
    if data["respondToInMail"]["errors"]:
        raise w.WorkloadError(f"respondToInMail failed: {data['respondToInMail']['errors']}")


def check_any(data: dict[str, Any]) -> None:
    """Mixed replies: each kind checked by its own field."""
    if "sendInMail" in data:
        w.check_send(data)
    elif "respondToInMail" in data:
        check_respond(data)
    else:
        w.check_compose(data)


@dataclass
class Pending:
    """InMails sent before the clock starts, for recipients to answer during the run."""

    answers: list[tuple[str, str]]  # (recipient, conversation id)

    def take(self, count: int) -> list[tuple[str, str]]:
        taken, self.answers = self.answers[:count], self.answers[count:]
        if len(taken) < count:
            raise w.WorkloadError("seed more InMails to answer")
        return taken


def respond_calls(world: w.World, answers: list[tuple[str, str]]) -> list[Call]:
    return [
        graphql_call(
            RESPOND,
            {"i": {"conversationId": conversation, "response": "NOT_INTERESTED"}},
            world.token(recipient),
        )
        for recipient, conversation in answers
    ]


def mixed_calls(world: w.World, pending: Pending, count: int, offset: int) -> list[Call]:
    sends = w.send_calls(world, world.take_sends(count * 3 // 20))
    responses = respond_calls(world, pending.take(count // 20))
    reads = w.compose_calls(world, count - len(sends) - len(responses), offset)
    calls: list[Call] = []
    for i in range(count):
        kind = i % 20
        source = sends if 16 <= kind < 19 else responses if kind == 19 else reads
        calls.append(source.pop() if source else reads.pop())
    return calls


async def seed_answers(deps: Deps, world: w.World, count: int) -> Pending:
    answers = []
    for sender, recipient, key in world.take_sends(count):
        sent = await inmail_service.send_inmail(deps, sender, recipient, "Hello", w.BODY, key)
        answers.append((recipient, sent.conversation.id))
    return Pending(answers)


async def mixed(
    uri: str, tmp: Path, world: w.World, pending: Pending, workers: int, ops: int, levels: list[int]
) -> list[tuple[int, LoadResult]]:
    server = _served(uri, tmp, f"server-{workers}", INMAIL_WORKERS=str(workers))
    try:
        url = f"{server.url}/graphql"
        await run_http(url, w.compose_calls(world, 50), concurrency=4, check=w.check_compose)
        curve = []
        for clients in levels:
            calls = mixed_calls(world, pending, ops, clients * ops)
            result = await run_http(url, calls, concurrency=clients, check=check_any)
            print(
                f"capacity: {workers} worker(s), {clients} clients: {result.throughput:,.0f}/s, "
                f"p50 {result.percentile(50) * 1000:.1f} ms, p99 "
                f"{result.percentile(99) * 1000:.1f} ms",
                flush=True,
            )
            curve.append((clients, result))
        return curve
    finally:
        server.stop()


def knee(curve: list[tuple[int, LoadResult]]) -> tuple[int, LoadResult]:
    best = max(result.throughput for _, result in curve)
    return next((c, r) for c, r in curve if r.throughput >= 0.9 * best)


# History: members with many conversations, lots and ledger entries.


async def add_history(mongo: Mongo, member_id: str, size: int, recipients: list[str]) -> None:
    """`size` answered InMails sent, `size - 1` spent lots and their ledger entries, as stored."""
    start = w.START - timedelta(days=400)
    conversations, lots, entries = [], [], []
    for i in range(size):
        at = start + timedelta(minutes=i)
        conversation_id = new_id()
        conversations.append(
            {
                "_id": conversation_id,
                "kind": "INMAIL",
                "senderId": member_id,
                "recipientId": recipients[i % len(recipients)],
                "subject": f"Old InMail {i}",
                "state": "DECLINED",
                "sentAt": at,
                "messages": [{"_id": new_id(), "authorId": member_id, "body": w.BODY, "at": at}],
                "respondedAt": at + timedelta(hours=1),
                "response": "NOT_INTERESTED",
                "creditedBack": False,
                "reminderSentAt": None,
                "reminderDueAt": None,
            }
        )
        if i == size - 1:
            break  # the member's live lot, from createMember, is the last one
        lot_id = new_id()
        lots.append(
            {
                "_id": lot_id,
                "memberId": member_id,
                "source": "PURCHASE",
                "quantity": 1,
                "remaining": 0,
                "grantedAt": at,
                "expiresAt": at + timedelta(days=365),
                "status": "DEPLETED",
            }
        )
        entries.append(
            {
                "_id": new_id(),
                "memberId": member_id,
                "seq": -(i + 1),  # before the member's first live entry, by seq
                "at": at,
                "kind": "SPEND",
                "delta": -1,
                "balanceAfter": 0,
                "lotId": lot_id,
                "conversationId": conversation_id,
                "purchaseId": None,
                "requested": None,
            }
        )
    for collection, docs in (
        (mongo.c.conversations, conversations),
        (mongo.c.credit_lots, lots),
        (mongo.c.ledger, entries),
    ):
        for chunk in range(0, len(docs), 5000):
            await collection.insert_many(docs[chunk : chunk + 5000])


@dataclass
class Cost:
    operation: str
    history: int
    p50_ms: float
    server_cpu_ms: float
    round_trips: float


async def history_costs(
    uri: str, mongo: Mongo, tmp: Path, deps: Deps, world: w.World, per_op: int
) -> list[Cost]:
    tokens = world.tokens
    minted = TokenService(w.SECRET, Settings().token_max_lifetime)
    members: dict[int, str] = {}
    for size in HISTORIES:
        new = member_service.NewMember(
            name=f"History {size}",
            plan=PlanType.LEGACY_PREMIUM,
            headline="Decades of InMail",
            billing_day=15,
            payment_method=w.CARD,
            monthly_allotment=per_op + 5,
        )
        member_id = (await member_service.create_member(deps, new)).id
        await add_history(mongo, member_id, size, world.recipients)
        tokens[member_id] = minted.mint(member_id, Role.MEMBER, timedelta(hours=12))
        members[size] = member_id
    server = _served(uri, tmp, "server-1", INMAIL_WORKERS="1")
    costs: list[Cost] = []
    try:
        url = f"{server.url}/graphql"
        for size, member_id in members.items():
            token = tokens[member_id]
            targets = world.recipients[-per_op:]
            sends = [
                graphql_call(
                    w.SEND,
                    {
                        "i": {
                            "recipientId": r,
                            "subject": w.SUBJECT,
                            "body": w.BODY,
                            "idempotencyKey": f"history-{size}-{r}",
                        }
                    },
                    token,
                )
                for r in targets
            ]
            sent_ids: list[tuple[str, str]] = []

            def keep_sent(data: dict[str, Any], ids: list[tuple[str, str]] = sent_ids) -> None:
                w.check_send(data)
                conversation = data["sendInMail"]["conversation"]
                ids.append(("", conversation["id"]))

            plan: list[tuple[str, list[Call], Any]] = [
                (
                    "compose window",
                    [graphql_call(w.COMPOSE, {"r": r}, token) for r in targets],
                    w.check_compose,
                ),
                (
                    "viewer { inmailBalance }",
                    [graphql_call(w.BALANCE, None, token)] * per_op,
                    w.check_balance,
                ),
                ("sendInMail", sends, keep_sent),
            ]
            for name, calls, check in plan:
                costs.append(await _cost(mongo, server, url, name, size, calls, check))
            answers = [
                (recipient, conversation)
                for recipient, (_, conversation) in zip(targets, sent_ids, strict=True)
            ]
            # sent_ids arrive in completion order; one client at a time keeps them in order
            responds = respond_calls(world, answers)
            costs.append(
                await _cost(
                    mongo,
                    server,
                    url,
                    "respondToInMail (credit back to this member)",
                    size,
                    responds,
                    check_respond,
                )
            )
            pages = [graphql_call(w.MEMBER_PAGE, {"n": PAGE_OF_10}, token)] * max(3, per_op // 4)
            costs.append(
                await _cost(
                    mongo,
                    server,
                    url,
                    f"member page of {PAGE_OF_10}",
                    size,
                    pages,
                    _page_of(min(size, PAGE_OF_10)),
                )
            )
    finally:
        server.stop()
    return costs


def _page_of(size: int) -> Any:
    def check(data: dict[str, Any]) -> None:
        if len(data["viewer"]["conversations"]["nodes"]) < size:
            raise w.WorkloadError("member page: too few conversations")

    return check


async def _cost(
    mongo: Mongo,
    server: ServiceProcess,
    url: str,
    name: str,
    history: int,
    calls: list[Call],
    check: Any,
) -> Cost:
    meter = CpuMeter({"server": server.pid})
    before = await snapshot(mongo.client)
    meter.start()
    result = await run_http(url, calls, concurrency=1, check=check)
    used = meter.stop()
    after = await snapshot(mongo.client)
    trips = round_trips(workload_commands(before, after))
    return Cost(
        name,
        history,
        result.percentile(50) * 1000,
        used["server"] / result.ops * 1000,
        trips / result.ops,
    )


async def main(args: argparse.Namespace) -> None:
    ops = 200 if args.quick else 600
    levels = [1, 2, 4, 8, 16] if args.quick else [1, 2, 4, 8, 16, 32]
    per_op = 10 if args.quick else 30
    senders = 100
    started = time.perf_counter()
    with _own_mongod("inmail-capacity-") as (tmp, mongod):
        mongo = Mongo.connect(mongod.uri, DB_NAME, app_name="inmail-capacity")
        try:
            print(f"capacity: {_machine()}; load average {_load()}", flush=True)
            deps = await _seeding_deps(mongo)
            mixed_sends = 2 * len(levels) * ops * 3 // 20
            answers = 2 * len(levels) * ops // 20
            per_sender = (mixed_sends + answers) // senders + 2
            world = await w.seed(
                deps,
                recipients=max(w.PAGE_CONVERSATIONS + 10, per_sender + per_op + 10),
                senders=senders,
                credits_per_sender=per_sender + 1,
            )
            pending = await seed_answers(deps, world, answers)
            curves = {}
            for workers in (1, 2):
                curves[workers] = await mixed(mongod.uri, tmp, world, pending, workers, ops, levels)
            costs = await history_costs(mongod.uri, mongo, tmp, deps, world, per_op)
            load = _load()
        finally:
            await mongo.close()
    print()
    print(
        "| workers | clients at the knee | requests/s there | p50 ms | p99 ms "
        "| curve (clients: req/s) |"
    )
    print("|---:|---:|---:|---:|---:|---|")
    for workers, curve in curves.items():
        clients, r = knee(curve)
        shown = ", ".join(f"{c}: {x.throughput:,.0f}" for c, x in curve)
        print(
            f"| {workers} | {clients} | {r.throughput:,.0f} | {r.percentile(50) * 1000:.1f} "
            f"| {r.percentile(99) * 1000:.1f} | {shown} |"
        )
    print()
    print("| operation | history | p50 ms | server CPU ms/op | db round trips/op |")
    print("|---|---:|---:|---:|---:|")
    for c in costs:
        print(
            f"| {c.operation} | {c.history:,} | {c.p50_ms:.1f} | {c.server_cpu_ms:.2f} "
            f"| {c.round_trips:.2f} |"
        )
    print(f"\nload average at the end {load}; wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(_quick_args(__doc__)))
