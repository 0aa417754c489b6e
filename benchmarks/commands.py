"""Database round trips, counted by mongod itself: `serverStatus` command counters, before/after.

The benchmark owns its mongod, so between two snapshots every command counted comes from the
workload, apart from drivers' monitoring and these snapshots themselves (left out by name) and
the `getMore`s of the API's live-updates change stream (about one a second when idle, more under
writes). Request paths here read under 101 documents per query, so they need no getMore of their
own: getMore is reported apart, as the live feed's cost, and not counted as a round trip.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# Commands of drivers' monitoring, sessions housekeeping and this harness: not the workload's.
NOT_WORKLOAD = frozenset(
    {
        "hello",
        "isMaster",
        "ismaster",
        "serverStatus",
        "ping",
        "endSessions",
        "buildInfo",
        "saslStart",
        "saslContinue",
        "getParameter",
        "replSetGetStatus",
        "replSetGetConfig",
    }
)
FEED = "getMore"


async def snapshot(client: Any) -> Counter[str]:
    """Every command's total count so far, by name."""
    status = await client.admin.command("serverStatus")
    counts: Counter[str] = Counter()
    for name, value in status["metrics"]["commands"].items():
        if isinstance(value, dict) and "total" in value:
            counts[name] = int(value["total"])
    return counts


def workload_commands(before: Counter[str], after: Counter[str]) -> Counter[str]:
    """The commands run between two snapshots, less monitoring and the snapshots themselves."""
    delta: Counter[str] = Counter()
    for name, total in after.items():
        if name not in NOT_WORKLOAD and total > before.get(name, 0):
            delta[name] = total - before.get(name, 0)
    return delta


def round_trips(commands: Counter[str]) -> int:
    return sum(n for name, n in commands.items() if name != FEED)
