"""One member's costliest reads side by side: what they leave of the process to everyone else.

    .venv/bin/python -m benchmarks.crowding            # 12 s per budget, twice each
    .venv/bin/python -m benchmarks.crowding --quick    # 4 s per budget, once each

One member sends, for the whole window, the same read from 12 connections at once, each again as
soon as it is answered or refused: `nodes` of one 100-message thread, 100 times over, in two
aliases (its cost 40,200, under INMAIL_MAX_QUERY_COST's 50,000; 7.2 MB answered). Beside
it, another client asks `{ now }` every 20 ms, one at a time. For each value of
INMAIL_MAX_COST_IN_FLIGHT_PER_MEMBER (a server of its own on one mongod, the budgets in ABBA
order), it prints the member's reads answered and refused, and `{ now }`'s latency: what one
member's token can take from everyone else on a process.

Starts its own throwaway mongod and servers, stopped by pid; nothing here is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass, field

import httpx

from benchmarks import workloads as w
from benchmarks.runner import _load, _machine, _own_mongod, _quick_args, _seeding_deps, _served
from inmail.auth import Role, TokenService, Viewer
from inmail.domain.plans import PlanType
from inmail.repositories.mongo import Mongo
from inmail.services import inmail as inmail_service
from inmail.services import members as member_service
from inmail.settings import Settings

BUDGETS = (500_000, 200_000, 100_000)
CONNECTIONS = 12
THREAD_LENGTH = 100
HEAVY = (
    "query($i: [ID!]!) {"
    " a: nodes(ids: $i) { ... on Conversation { messages { body author { name headline } } } }"
    " b: nodes(ids: $i) { ... on Conversation { messages { body author { name } } } } }"
)


@dataclass
class Window:
    budget: int
    answered: int = 0
    refused: int = 0
    probes: list[float] = field(default_factory=list)

    def probe_ms(self, q: float) -> float:
        ordered = sorted(self.probes)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def seed_thread(mongo: Mongo) -> tuple[str, str]:
    """Two connected members and a thread of THREAD_LENGTH messages: (one's id, the thread)."""
    deps = await _seeding_deps(mongo)

    async def create(name: str) -> str:
        new = member_service.NewMember(
            name=name,
            plan=PlanType.PREMIUM_CAREER,
            headline="Analytical engines, at scale",
            billing_day=15,
            payment_method=w.CARD,
        )
        return (await member_service.create_member(deps, new)).id

    ada, grace = await create("Ada Lovelace"), await create("Grace Hopper")
    admin = Viewer(subject="crowding-admin", role=Role.ADMIN)
    await member_service.connect_members(deps, admin, ada, grace)
    body = "A thread long enough to answer with every message in it, many times over. " * 4
    conversation, _ = await inmail_service.send_message(deps, ada, body, recipient_id=grace)
    for i in range(THREAD_LENGTH - 1):  # each sender stays under the messages' rate limit
        sender = grace if i % 2 == 0 else ada
        await inmail_service.send_message(deps, sender, body, conversation_id=conversation.id)
    return ada, conversation.id


async def crowd(url: str, token: str, thread: str, seconds: float, budget: int) -> Window:
    window = Window(budget)
    ends = time.perf_counter() + seconds
    heavy = {"query": HEAVY, "variables": {"i": [thread] * 100}}

    async def member(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < ends:
            reply = await client.post(url, json=heavy, headers={"authorization": f"Bearer {token}"})
            errors = reply.json().get("errors") or []
            if any(
                (e.get("extensions") or {}).get("code") == "SERVICE_UNAVAILABLE" for e in errors
            ):
                window.refused += 1
            elif reply.status_code == 200 and not errors:
                window.answered += 1
            else:
                raise RuntimeError(f"unexpected answer {reply.status_code}: {reply.text[:300]}")

    async def probe(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < ends:
            started = time.perf_counter()
            reply = await client.post(url, json={"query": "{ now }"})
            if reply.status_code != 200 or "now" not in (reply.json().get("data") or {}):
                raise RuntimeError(f"unexpected answer to {{ now }}: {reply.text[:300]}")
            window.probes.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)

    limits = httpx.Limits(max_connections=CONNECTIONS + 1)
    async with (
        httpx.AsyncClient(timeout=120, limits=limits) as client,
        httpx.AsyncClient(timeout=120) as other,
    ):
        await asyncio.gather(probe(other), *(member(client) for _ in range(CONNECTIONS)))
    return window


async def main(args: argparse.Namespace) -> None:
    seconds, rounds = (4.0, 1) if args.quick else (12.0, 2)
    started = time.perf_counter()
    results: list[Window] = []
    with _own_mongod("inmail-crowding-") as (tmp, mongod):
        mongo = Mongo.connect(mongod.uri, "inmail_bench", app_name="inmail-crowding")
        try:
            print(f"crowding: {_machine()}; load average {_load()}", flush=True)
            member, thread = await seed_thread(mongo)
        finally:
            await mongo.close()
        token = TokenService(w.SECRET, Settings().token_max_lifetime).mint(member, Role.MEMBER)
        order = [b for r in range(rounds) for b in (BUDGETS if r % 2 == 0 else BUDGETS[::-1])]
        for budget in order:
            server = _served(
                mongod.uri,
                tmp,
                f"server-{budget}",
                INMAIL_MAX_COST_IN_FLIGHT_PER_MEMBER=str(budget),
            )
            try:
                url = f"{server.url}/graphql"
                results.append(await crowd(url, token, thread, seconds, budget))
            finally:
                server.stop()
    print()
    print(
        "| in-flight budget per member | window s | member's reads answered | refused "
        "| { now } probes | p50 ms | p99 ms | max ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.budget:,} | {seconds:.0f} | {r.answered} | {r.refused} | {len(r.probes)} "
            f"| {statistics.median(r.probes) * 1000:.1f} | {r.probe_ms(0.99):.1f} "
            f"| {max(r.probes) * 1000:.1f} |"
        )
    print(f"\nload average at the end {_load()}; wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    asyncio.run(main(_quick_args(__doc__)))
