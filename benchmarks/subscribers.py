"""Live updates under load: 1,000 websocket subscribers on one server process.

Starts a throwaway mongod (or uses --mongodb-uri, a replica set) and one uvicorn process of the
service, creates one Premium Business member per subscriber, and connects every subscriber over
graphql-transport-ws (the `websockets` library, one connection each) to balanceChanged. Then:

- sequential: one purchase at a time; each waits for its update before the next starts;
- burst: every member buys a credit at once (HTTP requests --concurrency at a time).

Latency is from the commit (the `wallTime` MongoDB stamps on the transaction's oplog entry,
millisecond resolution, read from a change stream of this script) to the moment the subscriber's
client here has the update decoded. Memory per subscriber is the server's resident memory with
every subscriber connected minus before any, divided by their number. Prints the figures.

    .venv/bin/python -m benchmarks.subscribers [--subscribers 1000] [--sequential 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from benchmarks.processes import cpu_seconds
from harness.servers import ServiceProcess, service_env
from inmail.auth import Role, TokenService
from inmail.domain.credits import LedgerKind
from inmail.embedded_mongod import EmbeddedMongod
from inmail.services.events import BalanceUpdate
from inmail.services.live import Subscriber
from inmail.settings import Settings

SECRET = "benchmark-secret-0123456789-0123456789-0123456789"
CARD = {"brand": "Visa", "last4": "4242", "expMonth": 12, "expYear": 2099}
SUBSCRIPTION = "subscription { balanceChanged { memberId balance delta reason at } }"
WAIT = 120.0


@dataclass
class Deliveries:
    """What the subscribers received: (memberId, balance) -> receipt time (epoch seconds)."""

    received: dict[tuple[str, int], float] = field(default_factory=dict)
    duplicates: int = 0
    waiters: dict[tuple[str, int], asyncio.Future[None]] = field(default_factory=dict)

    def record(self, member_id: str, balance: int, at: float) -> None:
        key = (member_id, balance)
        if key in self.received:
            self.duplicates += 1
            return
        self.received[key] = at
        waiter = self.waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_for(self, member_id: str, balance: int) -> None:
        key = (member_id, balance)
        if key in self.received:
            return
        waiter = self.waiters.setdefault(key, asyncio.get_running_loop().create_future())
        await asyncio.wait_for(waiter, WAIT)


@dataclass
class Commits:
    """When each change was committed: (memberId, balanceAfter) -> oplog wallTime (epoch s),
    and when a change stream of this script saw it (a reference no change-stream reader beats)."""

    at: dict[tuple[str, int], float] = field(default_factory=dict)
    seen: dict[tuple[str, int], float] = field(default_factory=dict)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class CpuMeter:
    """CPU used by each process during a phase, in cores (1.0 = one core busy all the time)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.wall = time.perf_counter()
        self.own = time.process_time()
        self.cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.wall

    def shares(self) -> str:
        wall = self.seconds
        used = {n: (cpu_seconds(p) - self.cpu[n]) / wall for n, p in self.pids.items()}
        used["load generator (this script)"] = (time.process_time() - self.own) / wall
        parts = ", ".join(f"{name} {cores:.2f}" for name, cores in used.items())
        return f"CPU in cores ({os.cpu_count()} on this machine): {parts}"


@contextlib.contextmanager
def mongod(uri: str | None) -> Iterator[tuple[str, int | None]]:
    """A replica set's URI, and the pid of its mongod when it is ours."""
    if uri:
        yield uri, None
        return
    folder = Path(tempfile.mkdtemp(prefix="inmail-bench-mongod-"))
    server = EmbeddedMongod(folder, oplog_mb=256)
    try:
        started = server.start()
        yield started, server.pid
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def service(uri: str, db_name: str) -> Iterator[ServiceProcess]:
    log_dir = Path(tempfile.mkdtemp(prefix="inmail-bench-server-"))
    env = service_env(
        INMAIL_MONGODB_URI=uri,
        INMAIL_DB_NAME=db_name,
        INMAIL_JWT_SECRET=SECRET,
        INMAIL_SCHEDULER_ENABLED="false",
        INMAIL_LOG_LEVEL="WARNING",
        INMAIL_WS_KEEPALIVE="60",
    )
    try:
        server = ServiceProcess.uvicorn(env, log_dir / "server.log", "--log-level", "warning")
        with server.running():
            yield server
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)


async def gql(
    client: httpx.AsyncClient, token: str, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    body: dict[str, Any] = response.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    data: dict[str, Any] = body["data"]
    return data


async def create_members(
    client: httpx.AsyncClient, admin: str, count: int, concurrency: int
) -> list[str]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with gate:
            data = await gql(
                client,
                admin,
                "mutation($i: CreateMemberInput!) { createMember(input: $i) { member { id } } }",
                {"i": {"name": f"Member {i}", "plan": "PREMIUM_BUSINESS", "paymentMethod": CARD}},
            )
            member_id: str = data["createMember"]["member"]["id"]
            return member_id

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def purchase(client: httpx.AsyncClient, token: str) -> int:
    data = await gql(
        client,
        token,
        "mutation($i: PurchaseInMailCreditsInput!) { purchaseInMailCredits(input: $i) "
        "{ creditsLeft errors { code } } }",
        {"i": {"quantity": 1, "idempotencyKey": uuid.uuid4().hex}},
    )
    result = data["purchaseInMailCredits"]
    if result["errors"]:
        raise RuntimeError(result["errors"])
    balance: int = result["creditsLeft"]
    return balance


async def subscribe(url: str, token: str, deflate: bool = True) -> ClientConnection:
    ws = await connect(
        url,
        subprotocols=[Subprotocol("graphql-transport-ws")],
        open_timeout=WAIT,
        compression="deflate" if deflate else None,
    )
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    ack = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
    assert ack["type"] == "connection_ack", ack
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}))
    return ws


async def read(ws: ClientConnection, deliveries: Deliveries) -> None:
    with contextlib.suppress(Exception):
        async for raw in ws:
            message = json.loads(raw)
            if message["type"] == "next":
                update = message["payload"]["data"]["balanceChanged"]
                deliveries.record(update["memberId"], update["balance"], time.time())
            elif message["type"] == "ping":
                await ws.send(json.dumps({"type": "pong"}))


@contextlib.asynccontextmanager
async def commit_times(uri: str, db_name: str, commits: Commits) -> AsyncIterator[None]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    stream = await client[db_name]["ledger"].watch([{"$match": {"operationType": "insert"}}])

    async def follow() -> None:
        async for change in stream:
            doc = change["fullDocument"]
            wall: datetime = change["wallTime"]
            key = (doc["memberId"], doc["balanceAfter"])
            commits.seen[key] = time.time()
            commits.at[key] = wall.timestamp()

    task = asyncio.create_task(follow())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await stream.close()
        await client.close()


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    if not ms:
        return "no samples"
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms (n={len(ms)})"


def latencies(
    keys: list[tuple[str, int]],
    start: dict[tuple[str, int], float],
    end: dict[tuple[str, int], float],
) -> tuple[list[float], int]:
    samples, missing = [], 0
    for key in keys:
        began, ended = start.get(key), end.get(key)
        if began is None or ended is None:
            missing += 1
        else:
            samples.append(max(0.0, ended - began))
    return samples, missing


def report(name: str, keys: list[tuple[str, int]], commits: Commits, got: Deliveries) -> int:
    delivered, missing = latencies(keys, commits.at, got.received)
    print(f"{name}\n  commit -> subscriber has it:       {percentiles(delivered)}")
    visible, _ = latencies(keys, commits.at, commits.seen)
    print(f"  (commit -> visible to any change stream: {percentiles(visible)})")
    return missing


def broker_bytes_per_subscriber(count: int = 1000) -> float:
    """What the broker itself holds per subscriber (its queue and wake-up), measured here."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    subscribers = [Subscriber(f"m{i}") for i in range(count)]
    for i, subscriber in enumerate(subscribers):
        subscriber.offer(BalanceUpdate(f"m{i}", 5, 5, LedgerKind.GRANT, datetime.now(UTC), 1))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown / len(subscribers)


async def run(args: argparse.Namespace, uri: str, mongod_pid: int | None) -> None:
    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    tokens = TokenService(SECRET, Settings().token_max_lifetime)
    admin = tokens.mint("admin", Role.ADMIN)
    deliveries, commits = Deliveries(), Commits()
    with service(uri, db_name) as process:
        url = process.url.replace("http://", "ws://") + "/graphql"
        limits = httpx.Limits(max_connections=args.concurrency)
        async with (
            httpx.AsyncClient(base_url=process.url, limits=limits) as client,
            commit_times(uri, db_name, commits),
        ):
            started = time.perf_counter()
            members = await create_members(client, admin, args.subscribers, args.concurrency)
            print(f"created {len(members)} members in {time.perf_counter() - started:.1f} s")
            member_tokens = {m: tokens.mint(m, Role.MEMBER) for m in members}

            # Warm the websocket path once, then take the baseline.
            warm = await subscribe(url, member_tokens[members[0]], args.deflate)
            await warm.close()
            await asyncio.sleep(1.0)
            baseline = rss_bytes(process.pid)

            started = time.perf_counter()
            sockets: list[ClientConnection] = []
            for start in range(0, len(members), 100):
                chunk = members[start : start + 100]
                sockets += await asyncio.gather(
                    *(subscribe(url, member_tokens[m], args.deflate) for m in chunk)
                )
            readers = [asyncio.create_task(read(ws, deliveries)) for ws in sockets]
            await asyncio.gather(*(deliveries.wait_for(m, 15) for m in members))
            connected = time.perf_counter() - started
            await asyncio.sleep(1.0)
            loaded = rss_bytes(process.pid)
            print(
                f"{len(sockets)} subscribers (permessage-deflate "
                f"{'on' if args.deflate else 'off'}) connected and holding their first update in "
                f"{connected:.1f} s"
            )
            per_subscriber = (loaded - baseline) / len(sockets)
            print(
                f"server RSS {baseline / 2**20:.1f} MiB -> {loaded / 2**20:.1f} MiB: "
                f"{per_subscriber / 1024:.1f} KiB per subscriber"
            )

            pids = {"server": process.pid, "mongod": mongod_pid}
            sequential_keys = []
            meter = CpuMeter(pids)
            for member_id in members[: args.sequential]:
                balance = await purchase(client, member_tokens[member_id])
                await deliveries.wait_for(member_id, balance)
                sequential_keys.append((member_id, balance))
            rate, cpu = len(sequential_keys) / meter.seconds, meter.shares()
            await asyncio.sleep(0.5)  # let this script's own change stream catch up
            missing = report(
                f"sequential: {len(sequential_keys)} changes one at a time, {rate:.0f} changes/s; "
                f"{cpu}",
                sequential_keys,
                commits,
                deliveries,
            )

            gate = asyncio.Semaphore(args.concurrency)

            async def buy(member_id: str) -> tuple[str, int]:
                async with gate:
                    return member_id, await purchase(client, member_tokens[member_id])

            meter = CpuMeter(pids)
            burst_keys = list(await asyncio.gather(*(buy(m) for m in members)))
            await asyncio.gather(*(deliveries.wait_for(m, b) for m, b in burst_keys))
            rate, cpu = len(burst_keys) / meter.seconds, meter.shares()
            await asyncio.sleep(0.5)
            missing += report(
                f"burst: {len(burst_keys)} changes, {args.concurrency} requests in flight, "
                f"{rate:.0f} changes/s; {cpu}",
                burst_keys,
                commits,
                deliveries,
            )
            print(f"missing deliveries: {missing}, duplicate deliveries: {deliveries.duplicates}")
            for ws in sockets:
                await ws.close()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--no-deflate",
        dest="deflate",
        action="store_false",
        help="clients do not offer permessage-deflate (browsers do, so it is on by default)",
    )
    parser.add_argument("--mongodb-uri", default=None, help="a replica set (default: embedded)")
    args = parser.parse_args()
    load = os.getloadavg()
    with mongod(args.mongodb_uri) as (uri, mongod_pid):
        asyncio.run(run(args, uri, mongod_pid))
    after = os.getloadavg()
    print(f"machine load average (1 min) {load[0]:.1f} before, {after[0]:.1f} after the run")
    print(f"broker's own share: {broker_bytes_per_subscriber():.0f} bytes per subscriber")


if __name__ == "__main__":
    main()
