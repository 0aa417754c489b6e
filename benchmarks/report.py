"""What a run measured, and the tables it prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from benchmarks.commands import FEED, round_trips
from benchmarks.load import LoadResult


@dataclass
class Measured:
    """One workload over all its rounds."""

    name: str
    via: str  # "HTTP" or "in-process"
    concurrency: int
    ops: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    commands: Counter[str] = field(default_factory=Counter)
    service_cpu: float = 0.0  # the process doing the work: the server, or this one in-process
    mongod_cpu: float = 0.0
    client_cpu: float | None = None  # this process, as load generator (HTTP only)
    peak_rss_mb: float | None = None
    round_throughputs: list[float] = field(default_factory=list)
    round_cpu_per_op: list[float] = field(default_factory=list)  # the service's, each round

    def add(
        self,
        result: LoadResult,
        commands: Counter[str],
        cpu: dict[str, float],
        peak_rss_mb: float | None,
    ) -> None:
        self.ops += result.ops
        self.seconds += result.seconds
        self.latencies.extend(result.latencies)
        self.commands.update(commands)
        self.service_cpu += cpu["service"]
        self.mongod_cpu += cpu["mongod"]
        if self.via == "HTTP":
            self.client_cpu = (self.client_cpu or 0.0) + result.client_cpu
        if peak_rss_mb is not None:
            self.peak_rss_mb = max(self.peak_rss_mb or 0.0, peak_rss_mb)
        self.round_throughputs.append(result.throughput)
        if result.ops:
            self.round_cpu_per_op.append(cpu["service"] / result.ops)

    @property
    def throughput(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def seconds_per_op(self) -> float:
        return self.seconds / self.ops if self.ops else 0.0

    def percentile_ms(self, p: float) -> float:
        return LoadResult(self.ops, self.seconds, self.latencies, 0.0).percentile(p) * 1000

    @property
    def round_trips_per_op(self) -> float:
        return round_trips(self.commands) / self.ops if self.ops else 0.0

    @property
    def feed_per_op(self) -> float:
        return self.commands.get(FEED, 0) / self.ops if self.ops else 0.0

    def cpu_ms_per_op(self, seconds: float) -> float:
        return seconds / self.ops * 1000 if self.ops else 0.0

    @property
    def client_cpu_share(self) -> float | None:
        """The load generator's CPU as a share of one core over the run."""
        if self.client_cpu is None or not self.seconds:
            return None
        return self.client_cpu / self.seconds

    def command_mix(self) -> str:
        if not self.ops:
            return ""
        parts = [
            f"{name} {count / self.ops:.2g}"
            for name, count in sorted(self.commands.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        return ", ".join(parts)


@dataclass
class Goal:
    name: str
    measured: str
    target: str
    met: bool | None  # None: reported, no pass/fail

    @property
    def verdict(self) -> str:
        return {True: "met", False: "NOT met", None: "-"}[self.met]


@dataclass
class SchedulerRow:
    size: int
    pass_s: float
    members_per_s: float
    floor_per_s: float
    rss_before_mb: float
    rss_peak_mb: float
    heap_peak_mb: float


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def workload_table(rows: list[Measured]) -> str:
    head = (
        "| workload | via | clients | ops | ops/s | p50 ms | p99 ms | db round trips/op "
        "| feed getMore/op | service CPU ms/op | mongod CPU ms/op | client CPU (of 1 core) "
        "| peak RSS MB |"
    )
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        share = r.client_cpu_share
        lines.append(
            f"| {r.name} | {r.via} | {r.concurrency} | {r.ops:,} | {r.throughput:,.0f} "
            f"| {r.percentile_ms(50):.1f} | {r.percentile_ms(99):.1f} "
            f"| {r.round_trips_per_op:.2f} | {r.feed_per_op:.2f} "
            f"| {r.cpu_ms_per_op(r.service_cpu):.2f} | {r.cpu_ms_per_op(r.mongod_cpu):.2f} "
            f"| {'-' if share is None else f'{share:.0%}'} | {_num(r.peak_rss_mb, 0)} |"
        )
    return "\n".join(lines)


def scheduler_table(rows: list[SchedulerRow]) -> str:
    lines = [
        "| scheduler pass | pass | members/s | scheduler floor (members/s) | pass / floor speed "
        "| RSS before pass MB | peak RSS in pass MB | Python heap peak in pass MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size:,} members | {r.pass_s:.1f} s | {r.members_per_s:,.0f} "
            f"| {r.floor_per_s:,.0f} | {r.members_per_s / r.floor_per_s:.3f} "
            f"| {r.rss_before_mb:.0f} | {r.rss_peak_mb:.0f} | {r.heap_peak_mb:.1f} |"
        )
    return "\n".join(lines)


def goals_table(goals: list[Goal]) -> str:
    lines = ["| goal | measured | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {g.name} | {g.measured} | {g.target} | {g.verdict} |" for g in goals]
    return "\n".join(lines)


def ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    """Round by round: numerator / denominator."""
    return [n / d for n, d in zip(numerators, denominators, strict=True) if d]
