"""One benchmark run: its own mongod and server, seeding, the workloads, then the tables."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import operator
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from benchmarks import floors
from benchmarks import scheduler as scheduler_workload
from benchmarks import workloads as w
from benchmarks.commands import snapshot, workload_commands
from benchmarks.load import Call, Check, LoadResult, run_calls, run_http
from benchmarks.processes import CpuMeter, peak_rss_mb, reset_peak_rss
from benchmarks.report import (
    Goal,
    Measured,
    SchedulerRow,
    goals_table,
    ratios,
    scheduler_table,
    workload_table,
)
from harness.servers import ServiceProcess, service_env
from inmail.bootstrap import build_deps
from inmail.clock import ManualClock
from inmail.domain.plans import DEFAULT_PLAN_TABLE, LEGACY_ALLOTMENT_MAX
from inmail.embedded_mongod import EmbeddedMongod
from inmail.repositories.mongo import Mongo
from inmail.services.base import Deps
from inmail.settings import Settings

DB_NAME = "inmail_bench"

T = TypeVar("T")


class SizeError(ValueError):
    """Sizes the benchmark cannot run with; the message says which."""


@dataclass
class Sizes:
    rounds: int
    warmup: int
    sends: int
    reads: int
    page_requests: int
    recipients: int
    senders: int
    concurrency: int
    page_concurrency: int
    scheduler_sizes: list[int]
    profile_sends: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Sizes:
        quick = args.quick
        sizes = cls(
            rounds=args.rounds or (1 if quick else 3),
            warmup=20 if quick else 100,
            sends=args.sends or (60 if quick else 1000),
            reads=args.reads or (150 if quick else 2000),
            page_requests=args.page_requests or (4 if quick else 40),
            recipients=0,
            senders=args.senders or (20 if quick else 200),
            concurrency=args.concurrency or (8 if quick else 16),
            page_concurrency=2 if quick else 4,
            scheduler_sizes=args.scheduler_sizes or ([500, 1500] if quick else [10_000, 100_000]),
        )
        profiling_sends = args.profile and args.profile_workload == "send"
        sizes.profile_sends = sizes.sends if profiling_sends else 0
        sizes.recipients = max(w.PAGE_CONVERSATIONS + 10, sizes.sends_per_sender + 10)
        sizes.check()
        return sizes

    def check(self) -> None:
        if min(self.rounds, self.sends, self.reads, self.page_requests, self.concurrency) < 1:
            raise SizeError("rounds, sends, reads, page requests and concurrency must be >= 1")
        if self.senders < self.concurrency:
            raise SizeError("--senders must be at least --concurrency (one sender per client)")
        if self.sends_per_sender + 1 > LEGACY_ALLOTMENT_MAX:
            raise SizeError(
                f"{self.total_sends} sends need more senders: at most "
                f"{LEGACY_ALLOTMENT_MAX - 1} per sender (--senders)"
            )

    @property
    def warmup_sends(self) -> int:
        """Unmeasured sends per side before the rounds: at least one from every sender, so that
        each sender's token and member are known to the server, as in a service running for a
        while (a member's first request in a process looks the member up once)."""
        return max(self.warmup, self.senders)

    @property
    def total_sends(self) -> int:
        # Three sides take sends: HTTP, the service in-process and the send floor.
        return 3 * self.warmup_sends + 3 * self.rounds * self.sends + self.profile_sends

    @property
    def sends_per_sender(self) -> int:
        return math.ceil(self.total_sends / self.senders)


@dataclass
class Results:
    rows: list[Measured] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    scheduler: list[SchedulerRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: str | None = None


class Run:
    def __init__(
        self,
        args: argparse.Namespace,
        sizes: Sizes,
        server: ServiceProcess,
        deps: Deps,
        mongo: Mongo,
        mongod_pid: int,
        world: w.World,
    ) -> None:
        self.args = args
        self.sizes = sizes
        self.server = server
        self.url = f"{server.url}/graphql"
        self.deps = deps
        self.mongo = mongo
        self.mongod_pid = mongod_pid
        self.world = world
        self.results = Results()

    async def measure(self, row: Measured, work: Callable[[], Awaitable[LoadResult]]) -> LoadResult:
        pid = self.server.pid if row.via == "HTTP" else os.getpid()
        fresh_peak = reset_peak_rss(pid)
        meter = CpuMeter({"service": pid, "mongod": self.mongod_pid})
        client = self.mongo.client
        before = await snapshot(client)
        meter.start()
        result = await work()
        used = meter.stop()
        after = await snapshot(client)
        row.add(result, workload_commands(before, after), used, peak_rss_mb(pid))
        note = f"{row.name}: peak RSS is since the process started"
        if not fresh_peak and note not in self.results.notes:
            self.results.notes.append(note)
        return result

    def http(
        self, calls: list[Call], check: Check, concurrency: int
    ) -> Callable[[], Awaitable[LoadResult]]:
        return lambda: run_http(
            self.url, calls, concurrency=concurrency, check=check, client=self.args.client
        )

    # sendInMail: over HTTP, the service's code in-process, and the send floor, side by side.

    async def sends(self) -> None:
        s, world, deps = self.sizes, self.world, self.deps
        c = s.concurrency
        over_http = Measured("sendInMail", "HTTP", c)
        service = Measured("send_inmail() in-process (no HTTP)", "in-process", c)
        floor = Measured("send floor: PyMongo transaction", "in-process", c)
        send_floor = floors.SendFloor(self.mongo.client, self.mongo.db)
        warmup = s.warmup_sends
        await self.http(w.send_calls(world, world.take_sends(warmup)), w.check_send, c)()
        await run_calls(w.service_send_calls(deps, world.take_sends(warmup)), concurrency=c)
        await run_calls(w.floor_send_calls(send_floor, world.take_sends(warmup)), concurrency=c)

        async def http_round() -> None:
            calls = w.send_calls(world, world.take_sends(s.sends))
            await self.measure(over_http, self.http(calls, w.check_send, c))

        async def service_round() -> None:
            calls = w.service_send_calls(deps, world.take_sends(s.sends))
            await self.measure(service, lambda: run_calls(calls, concurrency=c))

        async def floor_round() -> None:
            calls = w.floor_send_calls(send_floor, world.take_sends(s.sends))
            await self.measure(floor, lambda: run_calls(calls, concurrency=c))

        steps = [http_round, service_round, floor_round]
        for r in range(s.rounds):
            for step in _in_turn(steps, r):
                await step()
        self.results.rows += [over_http, service, floor]
        # Each round's sides ran back to back: the median pair is the run's figure, robust to a
        # round that a neighbour on this shared machine slowed down; all rounds pooled beside it.
        self.slowdown_goal(
            "sendInMail over HTTP: time per op / send floor's", over_http, floor, at_most=1.3
        )
        self.round_trips_goal(
            "sendInMail over HTTP",
            over_http,
            "<= 7",
            7,
            beside=f" (send floor {floor.round_trips_per_op:.2f})",
        )
        self.slowdown_goal(
            "send_inmail() in-process: time per op / send floor's",
            service,
            floor,
            at_most=None,
            shown_for="(the database work's share of the gap)",
        )
        cpu = {
            name: (row.service_cpu + row.mongod_cpu) / row.ops * 1000
            for name, row in (("HTTP", over_http), ("in-process", service), ("floor", floor))
        }
        self.results.goals.append(
            Goal(
                "sendInMail: CPU ms per op (client-side process + mongod), HTTP / in-process / "
                "floor",
                f"{cpu['HTTP']:.2f} / {cpu['in-process']:.2f} / {cpu['floor']:.2f} "
                f"(HTTP {cpu['HTTP'] / cpu['floor']:.2f}x the floor's)",
                "(for reading the ratios above)",
                None,
            )
        )

    def _profiled_calls(self, workload: str) -> tuple[list[Call], Check, int]:
        """The workload's calls, their check, and how many clients send them (the member
        page's are one member's, held to the cost a member may have in flight)."""
        s, world = self.sizes, self.world
        if workload == "send":
            return w.send_calls(world, world.take_sends(s.sends)), w.check_send, s.concurrency
        if workload == "compose":
            return w.compose_calls(world, s.reads), w.check_compose, s.concurrency
        if workload == "now":
            return w.now_calls(world, s.reads), w.check_now, s.concurrency
        size = w.PAGE_CONVERSATIONS
        page = w.page_calls(world, size, s.page_requests)
        return page, w.page_check(size), s.page_concurrency

    async def profile(self, workload: str, output: Path) -> None:
        """An extra, unmeasured phase of one workload over HTTP with py-spy sampling the server."""
        py_spy = _py_spy()
        if py_spy is None:
            self.results.notes.append("--profile: py-spy is not installed; no profile taken")
            return
        calls, check, clients = self._profiled_calls(workload)
        spy = await asyncio.create_subprocess_exec(
            py_spy,
            "record",
            "--pid",
            str(self.server.pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.sleep(1.0)  # py-spy attaches
            await self.http(calls, check, clients)()
        finally:
            spy.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(spy.wait(), 30)
            except TimeoutError:
                spy.kill()
                await spy.wait()
        self.results.notes.append(f"py-spy profile of the server during {workload}: {output}")
        self.results.profile = _render_profile(output)

    # The compose window against the cheapest query there is and against its floor.

    async def reads(self) -> None:
        s, world = self.sizes, self.world
        c = s.concurrency
        compose = Measured("compose + viewer { inmailBalance }", "HTTP", c)
        trivial = Measured("{ now }", "HTTP", c)
        balance = Measured("viewer { inmailBalance }", "HTTP", c)
        floor = Measured("compose floor: one PyMongo aggregate", "in-process", c)
        compose_floor = floors.ComposeFloor(self.mongo.db)
        http_sides = (
            (compose, w.compose_calls, w.check_compose),
            (trivial, w.now_calls, w.check_now),
            (balance, w.balance_calls, w.check_balance),
        )
        for _, make, check in http_sides:
            await self.http(make(world, s.warmup), check, c)()
        await run_calls(w.floor_compose_calls(compose_floor, world, s.warmup), concurrency=c)
        for r in range(s.rounds):
            offset = r * s.reads
            steps: list[tuple[Measured, Callable[[], Awaitable[LoadResult]]]] = [
                (row, self.http(make(world, s.reads, offset), check, c))
                for row, make, check in http_sides
            ]
            floor_calls = w.floor_compose_calls(compose_floor, world, s.reads, offset)
            steps.append((floor, functools.partial(run_calls, floor_calls, concurrency=c)))
            for row, work in _in_turn(steps, r):
                await self.measure(row, work)
        self.results.rows += [compose, trivial, balance, floor]
        self.round_trips_goal(
            "compose window over HTTP",
            compose,
            "<= 2",
            2,
            beside=f" (compose floor {floor.round_trips_per_op:.2f})",
        )
        self.paired_goal(
            "compose window over HTTP: throughput / { now }'s",
            ratios(compose.round_throughputs, trivial.round_throughputs),
            pooled=compose.throughput / trivial.throughput,
            unit="",
            target=">= 0.35",
            met=lambda ratio: ratio >= 0.35,
        )
        self.slowdown_goal(
            "compose window over HTTP: time per op / compose floor's", compose, floor, at_most=1.5
        )
        self.round_trips_goal("viewer { inmailBalance } over HTTP", balance, "1", 1)

    def round_trips_goal(
        self, name: str, row: Measured, target: str, most: int, *, beside: str = ""
    ) -> None:
        """A goal on a row's database round trips per op: at most `most` (to two decimals)."""
        per_op = row.round_trips_per_op
        self.results.goals.append(
            Goal(
                f"{name}: db round trips per op",
                f"{per_op:.2f}{beside}",
                target,
                per_op <= most + 0.005,
            )
        )

    def slowdown_goal(
        self,
        name: str,
        row: Measured,
        floor: Measured,
        *,
        at_most: float | None,
        shown_for: str = "",
    ) -> None:
        """A goal on how many times the floor's time per op a row takes, round by round; with
        no `at_most`, a figure `shown_for` reading others, without a verdict."""
        met: Callable[[float], bool] | None = None
        if at_most is not None:
            met = functools.partial(operator.ge, at_most)  # ratio <= at_most
        self.paired_goal(
            name,
            ratios(floor.round_throughputs, row.round_throughputs),
            pooled=row.seconds_per_op / floor.seconds_per_op,
            unit="x",
            target=shown_for if at_most is None else f"<= {at_most}x",
            met=met,
        )

    def paired_goal(
        self,
        name: str,
        rounds: list[float],
        *,
        pooled: float,
        unit: str,
        target: str,
        met: Callable[[float], bool] | None,
    ) -> float:
        """A goal judged on the median of paired rounds (robust to a round a neighbour slowed)."""
        median = statistics.median(rounds)
        shown = ", ".join(f"{x:.2f}" for x in rounds)
        self.results.goals.append(
            Goal(
                name,
                f"{median:.2f}{unit} (median of {len(rounds)} paired rounds: {shown}; "
                f"pooled {pooled:.2f}{unit})",
                target,
                None if met is None else met(median),
            )
        )
        return median

    # The member page: round trips must not grow with the items shown; its CPU against
    # graphql-core executing the same document over the same data in memory.

    async def member_page(self) -> None:
        s = self.sizes
        c = s.page_concurrency
        size = w.PAGE_CONVERSATIONS
        small = Measured("member page, 10 conversations", "HTTP", c)
        large = Measured(f"member page, {size} conversations", "HTTP", c)
        floor = Measured(f"page floor: graphql-core, {size} in memory", "in-process", 1)
        await self.http(w.page_calls(self.world, 10, 2), w.page_check(10), 1)()
        await self.measure(
            small, self.http(w.page_calls(self.world, 10, s.page_requests), w.page_check(10), c)
        )
        data = await w.fetch_page(self.url, self.world, size)
        page_floor = floors.PageFloor(floors.service_sdl(), w.MEMBER_PAGE, data, {"n": size})
        if json.loads(page_floor.execute())["data"] != data:
            raise w.WorkloadError("graphql-core's member page differs from the API's")
        await self.http(w.page_calls(self.world, size, 2), w.page_check(size), 1)()

        async def execute() -> None:
            page_floor.execute()

        page_calls = w.page_calls(self.world, size, s.page_requests)
        steps: list[tuple[Measured, Callable[[], Awaitable[LoadResult]]]] = [
            (large, self.http(page_calls, w.page_check(size), c)),
            (floor, lambda: run_calls([execute] * s.page_requests, concurrency=1)),
        ]
        for r in range(s.rounds):
            for row, work in _in_turn(steps, r):
                await self.measure(row, work)
        self.results.rows += [small, large, floor]
        few, many = small.round_trips_per_op, large.round_trips_per_op
        self.results.goals.append(
            Goal(
                f"member page: db round trips, 10 vs {size} conversations",
                f"{few:.2f} vs {many:.2f}",
                "constant, <= 8",
                abs(many - few) < 0.5 and max(few, many) <= 8,
            )
        )
        self.paired_goal(
            f"member page of {size}: server CPU per request / graphql-core's execution",
            ratios(large.round_cpu_per_op, floor.round_cpu_per_op),
            pooled=large.service_cpu / large.ops / (floor.service_cpu / floor.ops),
            unit="x",
            target="<= 1.5x",
            met=lambda ratio: ratio <= 1.5,
        )


def _in_turn(steps: Sequence[T], round_number: int) -> Iterable[T]:
    """A round's steps, reversed every other round, so that no side always goes first."""
    return steps if round_number % 2 == 0 else reversed(steps)


async def scheduler_pass(uri: str, sizes: Sizes, results: Results) -> None:
    batch = scheduler_workload.default_batch()
    for size in sizes.scheduler_sizes:
        r = await scheduler_workload.renewal_pass(uri, size, batch)
        results.scheduler.append(
            SchedulerRow(
                size=size,
                pass_s=r["pass_s"],
                members_per_s=r["members_per_s"],
                floor_per_s=r["floor_per_s"],
                rss_before_mb=r["rss_before_mb"],
                rss_peak_mb=r["rss_peak_mb"],
                heap_peak_mb=r["heap_peak_mb"],
            )
        )
    rows = results.scheduler
    speed = min(r.members_per_s / r.floor_per_s for r in rows)
    results.goals.append(
        Goal(
            "scheduler pass: members/s / scheduler floor's members/s",
            ", ".join(f"{r.members_per_s / r.floor_per_s:.3f} at {r.size:,}" for r in rows),
            ">= 0.5",
            speed >= 0.5,
        )
    )
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        growth = [r.rss_peak_mb - r.rss_before_mb for r in (small, large)]
        flat = large.heap_peak_mb <= 1.5 * small.heap_peak_mb + 0.5 and growth[1] <= growth[0] + 8
        results.goals.append(
            Goal(
                f"scheduler pass: memory, {small.size:,} vs {large.size:,} members",
                f"heap peak {small.heap_peak_mb:.1f} vs {large.heap_peak_mb:.1f} MB; "
                f"RSS growth in pass {growth[0]:.0f} vs {growth[1]:.0f} MB",
                "flat",
                flat,
            )
        )


@contextmanager
def _own_mongod(prefix: str) -> Iterator[tuple[Path, EmbeddedMongod]]:
    """A scratch folder with a mongod of its own in it; both are gone when the block ends."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        mongod = EmbeddedMongod(tmp / "mongod", oplog_mb=1024)
        mongod.start()
        try:
            yield tmp, mongod
        finally:
            mongod.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _seeding_deps(mongo: Mongo) -> Deps:
    """The benchmarks' deps: indexes made, the clock at the workloads' start, a send rate limit
    that a sender sending its whole allotment on a clock that stands still stays under, and no
    webhooks, as the served app has no webhook URL (so both sides write the same)."""
    await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
    return build_deps(
        mongo,
        ManualClock(w.START),
        Settings(rate_limit_inmails_per_minute=LEGACY_ALLOTMENT_MAX),
        webhooks=False,
    )


def _served(uri: str, tmp: Path, log_name: str, **settings: str) -> ServiceProcess:
    """`inmail serve` on the benchmarks' settings and `settings` (INMAIL_* names), ready."""
    env = _server_env(uri, tmp) | settings
    return ServiceProcess.serve(
        service_env(**env), tmp / f"{log_name}.log", die_with_parent=True
    ).start_ready()


def _quick_args(doc: str | None) -> argparse.Namespace:
    """A one-table benchmark's arguments: `--quick` for small counts."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true")
    return parser.parse_args()


def _server_env(uri: str, tmp: Path) -> dict[str, str]:
    return {
        "INMAIL_MONGODB_URI": uri,
        "INMAIL_DB_NAME": DB_NAME,
        "INMAIL_JWT_SECRET": w.SECRET,
        "INMAIL_SCHEDULER_ENABLED": "false",
        "INMAIL_CLOCK": "manual",
        "INMAIL_CLOCK_START": w.START.isoformat().replace("+00:00", "Z"),
        "INMAIL_DATA_DIR": str(tmp / "data"),
        "INMAIL_LOG_LEVEL": "WARNING",
        # A sender sends up to its allotment on a clock that stands still: counted, not refused.
        "INMAIL_RATE_LIMIT_INMAILS_PER_MINUTE": str(LEGACY_ALLOTMENT_MAX),
    }


def _machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}"


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


async def run(args: argparse.Namespace, sizes: Sizes) -> Results:
    chosen = set(args.workloads)
    started = time.perf_counter()
    with _own_mongod("inmail-bench-") as (tmp, mongod):
        mongo = Mongo.connect(mongod.uri, DB_NAME, app_name="inmail-bench")
        try:
            version = await mongo.server_version()
            print(
                f"bench: {_machine()}; mongod {version} (pid {mongod.pid}); load average {_load()}",
                flush=True,
            )
            results = Results()
            if chosen & {"send", "compose", "page"}:
                results = await _api_workloads(args, sizes, mongo, mongod, tmp, chosen)
                results.notes.append(f"load average after the API workloads: {_load()}")
        finally:
            await mongo.close()
        if "scheduler" in chosen:
            print("bench: scheduler pass (benchmarks.renewals)...", flush=True)
            await scheduler_pass(mongod.uri, sizes, results)
    results.notes.append(f"wall time {time.perf_counter() - started:.0f} s")
    return results


async def _api_workloads(
    args: argparse.Namespace,
    sizes: Sizes,
    mongo: Mongo,
    mongod: EmbeddedMongod,
    tmp: Path,
    chosen: set[str],
) -> Results:
    deps = await _seeding_deps(mongo)
    print(
        f"bench: seeding {sizes.recipients} recipients, {sizes.senders} senders and a "
        f"member page of {w.PAGE_CONVERSATIONS} conversations...",
        flush=True,
    )
    world = await w.seed(
        deps,
        recipients=sizes.recipients,
        senders=sizes.senders,
        credits_per_sender=sizes.sends_per_sender + 1,
    )
    # The floors' own copy of what was seeded, taken before any workload writes.
    await floors.prepare(mongo.db)
    assert mongod.pid is not None
    server = ServiceProcess.serve(
        service_env(**_server_env(mongod.uri, tmp)), tmp / "server.log", die_with_parent=True
    ).start_ready()
    try:
        bench = Run(args, sizes, server, deps, mongo, mongod.pid, world)
        print(f"bench: server pid {server.pid} at {server.url}", flush=True)
        if "send" in chosen:
            print("bench: sendInMail, HTTP and floor...", flush=True)
            await bench.sends()
        if "compose" in chosen:
            print("bench: compose window and { now }...", flush=True)
            await bench.reads()
        if "page" in chosen:
            print("bench: member page...", flush=True)
            await bench.member_page()
        if args.profile is not None:
            print(f"bench: profiling {args.profile_workload} with py-spy...", flush=True)
            await bench.profile(args.profile_workload, args.profile)
        return bench.results
    finally:
        server.stop()


def _py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def _render_profile(output: Path) -> str | None:
    if not output.is_file():
        return None
    from benchmarks.profile import render

    return render(output)


def print_results(results: Results, sizes: Sizes) -> None:
    print()
    if results.rows:
        print(workload_table(results.rows))
        print()
    if results.scheduler:
        print(scheduler_table(results.scheduler))
        print()
    print(goals_table(results.goals))
    print()
    if results.rows:
        print("Database commands per op, by name (serverStatus metrics.commands):")
        for row in results.rows:
            print(f"- {row.name} ({row.via}): {row.command_mix()}")
    for note in results.notes:
        print(f"note: {note}")
    if results.profile:
        print()
        print(results.profile)
    print(
        f"sizes: {sizes.rounds} round(s) of {sizes.sends} sends and {sizes.reads} reads per "
        f"side, {sizes.page_requests} member pages per size, {sizes.senders} senders, "
        f"{sizes.recipients} recipients; scheduler sizes {sizes.scheduler_sizes}"
    )
