"""`make bench` (`python -m benchmarks --quick`) runs end to end and prints its tables.

A smoke test: the timings are not judged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]

WORKLOADS = (
    "| sendInMail | HTTP |",
    "| sendInMail floor: send_inmail() in-process | in-process |",
    "| compose + viewer { inmailBalance } | HTTP |",
    "| { now } | HTTP |",
    "| member page, 10 conversations | HTTP |",
    "| member page, 100 conversations | HTTP |",
    "| 500 members |",
    "| 1,500 members |",
)
GOALS = (
    "sendInMail over HTTP: time per op / floor's",
    "compose window: throughput / { now }'s",
    "member page: db round trips, 10 vs 100 conversations",
    "scheduler pass: members/s / insert_many lots/s",
    "scheduler pass: memory, 500 vs 1,500 members",
)


@pytest.mark.slow
def test_the_quick_benchmark_prints_a_row_for_every_workload_and_a_verdict_for_every_goal() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INMAIL_")}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=CHECKOUT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    out = done.stdout
    assert "| workload | via | clients | ops | ops/s | p50 ms | p99 ms | db round trips/op" in out
    for row in WORKLOADS:
        assert row in out, f"no row {row!r} in:\n{out}"
    for goal in GOALS:
        assert f"| {goal} |" in out, f"no goal {goal!r} in:\n{out}"
    # The member page's round trips are counted, whatever the timings: 10 and 100 items alike.
    page_rows = [line for line in out.splitlines() if line.startswith("| member page,")]
    round_trips = {line.split("|")[8].strip() for line in page_rows}
    assert len(round_trips) == 1, page_rows
