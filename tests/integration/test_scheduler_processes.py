"""Scheduler passes in separate processes on one database, as several API instances run them.

Each child process is `python -c CHILD`: it opens its own client, builds the service's
dependencies with a manual clock, says "ready", waits for "go" on stdin (so that two of them
start together), runs one pass and prints what it did as JSON. The test stops its children by
their process ids.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from bson.binary import UUID_SUBTYPE, Binary

from inmail.domain.billing import PaymentMethod
from inmail.domain.credits import LedgerKind
from inmail.domain.plans import PlanType
from inmail.repositories.mongo import Mongo
from inmail.services import members as member_service
from inmail.services.base import Deps
from stored import ledger_of, lots_of
from support import START, Api

pytestmark = pytest.mark.slow

CHILD = r"""
import asyncio, json, sys
from datetime import datetime, timedelta

from inmail.bootstrap import build_deps, build_scheduler
from inmail.clock import ManualClock
from inmail.repositories.members import MemberRepository
from inmail.repositories.mongo import Mongo
from inmail.services import scheduling
from inmail.settings import Settings


async def main(uri, db, now, mode, batch, hang_at):
    mongo = Mongo.connect(uri, db)
    clock = ManualClock(datetime.fromisoformat(now))
    deps = build_deps(mongo, clock, Settings())
    if hang_at:
        real, calls = MemberRepository.write_each_unless_moved, 0

        async def write_each_unless_moved(self, commits):
            nonlocal calls
            calls += 1
            if calls == hang_at:  # inside a batch's transaction, before it writes anything
                print("hanging", self._session.session_id["id"].hex(), flush=True)
                await asyncio.Event().wait()
            await real(self, commits)

        MemberRepository.write_each_unless_moved = write_each_unless_moved
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    if mode == "no-lease":
        report = await scheduling.run_due_jobs(deps, clock.now(), batch_size=batch)
    else:
        scheduler = build_scheduler(
            deps, mongo, interval=60, batch_size=batch, lease_ttl=timedelta(seconds=2)
        )
        report = await scheduler.run_once()
        while report is None and mode == "lease-wait":  # until the dead holder's lease lapses
            await asyncio.sleep(0.2)
            report = await scheduler.run_once()
    out = None if report is None else {j.job: [j.changed, len(j.failed)] for j in report.jobs}
    print(json.dumps(out), flush=True)
    await mongo.close()


asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                 int(sys.argv[6])))
"""

CARD = PaymentMethod("Visa", "4242", 12, 2030)
APRIL_20 = datetime(2026, 4, 20, tzinfo=UTC)
EXPECTED_GRANTS = [
    (START, 5),
    (datetime(2026, 2, 15, tzinfo=UTC), 5),
    (datetime(2026, 3, 15, tzinfo=UTC), 5),
    (datetime(2026, 4, 15, tzinfo=UTC), 0),
]


class Child:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout=60)
        if not raw:
            assert self.process.stderr is not None
            errors = await self.process.stderr.read()
            raise AssertionError(f"child {self.process.pid} ended: {errors.decode()[-3000:]}")
        return raw.decode().strip()

    async def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        await self.process.stdin.drain()

    async def result(self) -> dict[str, list[int]] | None:
        report: dict[str, list[int]] | None = json.loads(await self.line())
        await asyncio.wait_for(self.process.wait(), timeout=60)
        return report

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)


@asynccontextmanager
async def children(
    uri: str, db: str, *specs: tuple[str, int, int], now: datetime = APRIL_20
) -> AsyncIterator[list[Child]]:
    """Started and ready children, one per (mode, batch size, batch to hang in or 0)."""
    started: list[Child] = []
    try:
        for mode, batch, hang_at in specs:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                CHILD,
                uri,
                db,
                now.isoformat(),
                mode,
                str(batch),
                str(hang_at),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            started.append(Child(process))
        for child in started:
            assert await child.line() == "ready"
        yield started
    finally:
        for child in started:
            child.kill()
            await child.process.wait()


async def seed(deps: Deps, count: int) -> list[str]:
    ids = []
    for n in range(count):
        member = await member_service.create_member(
            deps,
            member_service.NewMember(
                name=f"Member {n:03}", plan=PlanType.PREMIUM_CAREER, payment_method=CARD
            ),
        )
        ids.append(member.id)
    return ids


async def assert_each_cycle_granted_once(mongo: Mongo, deps: Deps, members: list[str]) -> None:
    for member_id in members:
        entries = await ledger_of(mongo, member_id)
        assert [(e.at, e.delta) for e in entries if e.kind is LedgerKind.GRANT] == EXPECTED_GRANTS
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
        assert [e.kind for e in entries].count(LedgerKind.EXPIRE) == 1
        assert entries[-1].balance_after == sum(e.delta for e in entries) == 10
        member = await deps.reads.members.get(member_id)
        assert member is not None
        assert member.ledger_seq == len(entries)
    assert sum([len(await lots_of(mongo, m)) for m in members]) == 3 * len(members)


async def passes_at_once(
    uri: str, db: str, *specs: tuple[str, int, int]
) -> list[dict[str, list[int]] | None]:
    """What each of the children reports after they all start a pass at the same moment."""
    async with children(uri, db, *specs) as started:
        await asyncio.gather(*(child.go() for child in started))
        return [await child.result() for child in started]


def renewed(report: dict[str, Any] | None) -> int:
    return 0 if report is None else int(report["renewals"][0])


async def each_cycle_granted_once_by_two_at_once(
    api: Api, uri: str, db: str, *specs: tuple[str, int, int]
) -> list[dict[str, list[int]] | None]:
    """Sixty members renewed by two processes passing at once: each renewal committed by
    exactly one of them, each cycle granted once. What each process reports."""
    deps = api.container.deps
    members = await seed(deps, 60)
    reports = await passes_at_once(uri, db, *specs)
    assert sum(renewed(r) for r in reports) == len(members)
    await assert_each_cycle_granted_once(api.container.mongo, deps, members)
    return reports


async def test_two_scheduler_processes_at_once_grant_each_cycle_once(
    api: Api, mongodb_uri: str, db_name: str
) -> None:
    both = [("lease", 7, 0), ("lease", 7, 0)]
    reports = await each_cycle_granted_once_by_two_at_once(api, mongodb_uri, db_name, *both)
    assert sorted(r is None for r in reports) == [False, True]  # one held the lease


async def test_two_processes_without_the_lease_still_grant_each_cycle_once(
    api: Api, mongodb_uri: str, db_name: str
) -> None:
    both = [("no-lease", 7, 0), ("no-lease", 5, 0)]
    reports = await each_cycle_granted_once_by_two_at_once(api, mongodb_uri, db_name, *both)
    assert all(r is not None and r["renewals"][1] == 0 for r in reports)  # both worked


async def test_a_pass_killed_midway_is_completed_by_the_next_without_duplicates(
    api: Api, mongodb_uri: str, db_name: str
) -> None:
    deps = api.container.deps
    members = await seed(deps, 50)
    async with children(mongodb_uri, db_name, ("lease", 10, 3)) as (doomed,):
        await doomed.go()
        hanging, session_id = (await doomed.line()).split()
        assert hanging == "hanging"  # two batches committed, the third's transaction open
        doomed.kill()
        await doomed.process.wait()
    # A dead client's open transaction is aborted by the server after its lifetime limit
    # (transactionLifetimeLimitSeconds, 60 s by default); end it now rather than wait.
    await api.container.mongo.client.admin.command(
        "killSessions", [{"id": Binary(bytes.fromhex(session_id), UUID_SUBTYPE)}]
    )

    done = [m for m in members if len(await ledger_of(api.container.mongo, m)) > 1]
    assert len(done) == 20
    untouched = [m for m in members if m not in done]
    for member_id in untouched:
        assert [e.at for e in await ledger_of(api.container.mongo, member_id)] == [START]

    # The next pass waits out the dead process's lease (2 s of real time), then finishes.
    async with children(mongodb_uri, db_name, ("lease-wait", 10, 0)) as (successor,):
        await successor.go()
        report = await successor.result()
    assert renewed(report) == 30
    await assert_each_cycle_granted_once(api.container.mongo, deps, members)
