"""Benchmark: what the database deadline costs one command (not a test; BENCHMARKS.md).

    .venv/bin/python -m benchmarks.deadline                 # 6 rounds of 3,000 find_one
    .venv/bin/python -m benchmarks.deadline --rounds 10 --ops 5000

Every query and mutation runs under `INMAIL_DATABASE_TIMEOUT`: PyMongo's client-side timeout
(`pymongo.timeout`), which gives each command a `maxTimeMS` and each socket read its own timer.
This starts a throwaway embedded mongod and times the same `find_one` by `_id` without and
within a deadline, in ABBA rounds, and prints the client CPU and wall time per command of each
(the median over rounds). Figures only: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import pymongo
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from inmail.embedded_mongod import EmbeddedMongod

DEADLINE_SECONDS = 30.0


async def timed(
    collection: AsyncCollection[dict[str, object]], ops: int, within: bool
) -> tuple[float, float]:
    """Client CPU and wall seconds of `ops` find_one, each within a deadline or not."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(ops):
        if within:
            with pymongo.timeout(DEADLINE_SECONDS):
                await collection.find_one({"_id": i % 100})
        else:
            await collection.find_one({"_id": i % 100})
    return time.process_time() - cpu, time.perf_counter() - wall


async def main(rounds: int, ops: int) -> None:
    with tempfile.TemporaryDirectory(prefix="inmail-bench-deadline-") as folder:
        mongod = EmbeddedMongod(Path(folder), oplog_mb=64)
        uri = mongod.start()
        try:
            client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, tz_aware=True)
            collection = client.bench.deadline
            await collection.insert_many([{"_id": i, "x": i} for i in range(100)])
            await timed(collection, ops // 6, within=False)  # warm up the pool
            figures: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for round_no in range(rounds):
                order = (False, True) if round_no % 2 == 0 else (True, False)
                for within in order:
                    figures[within].append(await timed(collection, ops, within))
            await client.close()
        finally:
            mongod.stop()
    print(f"{rounds} rounds of {ops} find_one by _id, ABBA; median per command:")
    for within, label in ((False, "no deadline"), (True, "within a deadline")):
        cpu = statistics.median(f[0] for f in figures[within]) / ops * 1e6
        wall = statistics.median(f[1] for f in figures[within]) / ops * 1e6
        print(f"  {label:18} client CPU {cpu:6.1f} us   wall {wall:6.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--ops", type=int, default=3000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.ops))
