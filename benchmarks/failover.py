"""Benchmark: how long writes stop when the primary steps down or dies (not a test; BENCHMARKS.md).

    .venv/bin/python benchmarks/failover.py                 # 3 step-downs, then 3 kills
    .venv/bin/python benchmarks/failover.py --rounds 1 --writers 8

It starts a three-member replica set of the wheel's mongod (each its own port and folder in a
temp folder) and one service process (uvicorn) connected with `?replicaSet=`. Writers, one member
each, loop without pause: sendInMail to their own reader, who answers NOT_INTERESTED (a debit,
then a credit-back: the balance stays put). A request without an answer (transport error,
timeout, top-level GraphQL error) is sent again as it was, under the same idempotency key, as a
real client does. Once the writes are steady, the primary is stepped down (`replSetStepDown`)
or killed with SIGKILL; a killed member is started again before the next round.

Per round it prints: the election (event -> another member answers `hello` as writable primary),
the recovery (event -> first answered write whose successful attempt was sent after the event),
and the slowest request a writer saw (first attempt -> answer, retries included). At the end it
checks every invariant of credits on what is stored. Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reliability.invariants import load_sync, problems
from reliability.remote import RESPOND, SEND, Fleet, variables_send
from reliability.replicaset import ReplicaSet, mongod_binary
from reliability.servers import running
from support import START, Person

CLIENT_TIMEOUT = 15.0


@dataclass
class Write:
    """One request as a client sees it: every attempt until the answer."""

    kind: str
    started: float
    attempts: list[tuple[float, float, bool]] = field(default_factory=list)  # sent, back, ok

    @property
    def answered(self) -> float | None:
        """When it was answered without a refusal (a write that took effect), else None."""
        return self.attempts[-1][1] if self.attempts and self.attempts[-1][2] else None


@dataclass
class Writers:
    fleet: Fleet
    writes: list[Write] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def call(
        self, kind: str, query: str, variables: dict[str, Any], token: str
    ) -> dict[str, Any]:
        """Send until answered (same variables, so the same idempotency key); the payload."""
        write = Write(kind, time.monotonic())
        self.writes.append(write)
        field_name = "sendInMail" if kind == "send" else "respondToInMail"
        while True:
            sent = time.monotonic()
            payload: dict[str, Any] | None = None
            try:
                response = await self.fleet.post(query, variables, token)
                body = response.json() if response.status_code == 200 else {}
                if not body.get("errors"):
                    payload = (body.get("data") or {}).get(field_name)
            except httpx.TransportError:
                pass
            ok = payload is not None and not payload["errors"]
            write.attempts.append((sent, time.monotonic(), ok))
            if payload is not None:
                return payload
            await asyncio.sleep(0.2)

    async def loop(self, sender: Person, reader: Person) -> None:
        while not self.stop.is_set():
            sent = await self.call(
                "send", SEND, variables_send(reader.id, uuid.uuid4().hex), sender.token
            )
            if sent["errors"]:
                raise SystemExit(f"a send was refused: {sent['errors']}")
            response = {"conversationId": sent["conversation"]["id"], "response": "NOT_INTERESTED"}
            await self.call("respond", RESPOND, {"i": response}, reader.token)


@dataclass
class Round:
    how: str
    election: float
    recovery: float | None
    slowest: float
    in_flight: int
    failed_attempts: int


async def one_round(members: ReplicaSet, writers: Writers, how: str) -> Round:
    await asyncio.sleep(2.0)  # steady writes first
    old = members.wait_for_primary(5)
    event = time.monotonic()
    if how == "step-down":
        await asyncio.to_thread(members.step_down, old)
    else:
        await asyncio.to_thread(old.kill)
    await asyncio.to_thread(members.wait_for_primary, 60, other_than=old)
    election = time.monotonic() - event

    deadline = time.monotonic() + 60
    recovery: float | None = None
    while recovery is None and time.monotonic() < deadline:
        after = [
            w.attempts[-1][1] - event
            for w in writers.writes
            if w.answered is not None and w.attempts[-1][0] > event
        ]
        recovery = min(after) if after else None
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    around = [w for w in writers.writes if w.started < event and (w.answered or event + 1) > event]
    slowest = max(((w.answered or time.monotonic()) - w.started for w in around), default=0.0)
    failed = sum(
        1 for w in writers.writes for (sent, _, ok) in w.attempts if not ok and sent >= event - 1
    )
    if how == "kill":
        old.launch(mongod_binary(), members.name)
        await asyncio.to_thread(members.wait_healthy, 120)
    else:
        await asyncio.to_thread(members.wait_healthy, 60)
        await asyncio.to_thread(members.unfreeze, old)  # the next round may elect it again
    return Round(how, election, recovery, slowest, len(around), failed)


async def run(rounds: int, writer_count: int, root: Path) -> list[Round]:
    results: list[Round] = []
    members = ReplicaSet(root / "replica-set")
    started = time.monotonic()
    members.start()
    print(f"replica set up in {time.monotonic() - started:.1f} s: {members.uri}")
    try:
        with running(1, members.uri, "failover_bench", root) as servers:
            limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
            async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=limits) as client:
                fleet = Fleet(client, [servers[0].url])
                pairs = [
                    (
                        await fleet.create_member(f"Writer {i}", "PREMIUM_BUSINESS"),
                        await fleet.create_member(f"Reader {i}", "BASIC", card=None),
                    )
                    for i in range(writer_count)
                ]
                writers = Writers(fleet)
                tasks = [asyncio.create_task(writers.loop(s, r)) for s, r in pairs]
                for how in ["step-down"] * rounds + ["kill"] * rounds:
                    result = await one_round(members, writers, how)
                    results.append(result)
                    print(describe(result), flush=True)
                writers.stop.set()
                await asyncio.gather(*tasks)
                print(f"writes answered: {sum(w.answered is not None for w in writers.writes)}")
        found = problems(load_sync(members.uri, "failover_bench"), START)
        print("invariants of credits: " + ("all hold" if not found else "; ".join(found[:5])))
    finally:
        members.stop()
    return results


def describe(r: Round) -> str:
    recovery = f"{r.recovery:5.2f} s" if r.recovery is not None else "  none "
    return (
        f"{r.how:9}  election {r.election:5.2f} s  first write after {recovery}  "
        f"slowest request {r.slowest:5.2f} s  ({r.in_flight} in flight, "
        f"{r.failed_attempts} failed attempts)"
    )


def summary(results: list[Round]) -> None:
    for how in ("step-down", "kill"):
        rows = [r for r in results if r.how == how and r.recovery is not None]
        if rows:
            recoveries = [r.recovery for r in rows if r.recovery is not None]
            print(
                f"{how:9}  recovery median {statistics.median(recoveries):.2f} s, "
                f"max {max(recoveries):.2f} s; election median "
                f"{statistics.median(r.election for r in rows):.2f} s; slowest request "
                f"{max(r.slowest for r in rows):.2f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="step-downs, then as many kills")
    parser.add_argument("--writers", type=int, default=4, help="members writing at once")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, mongod {mongod_binary()}")
    with tempfile.TemporaryDirectory(prefix="inmail-failover-") as tmp:
        results = asyncio.run(run(args.rounds, args.writers, Path(tmp)))
    summary(results)


if __name__ == "__main__":
    main()
