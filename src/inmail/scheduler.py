"""The background scheduler: renewals, expirations, reminders, expiry notices and the
reconciliation of charges, every INMAIL_SCHEDULER_INTERVAL, or sooner when a job falls due
before that (on the system clock).

It runs inside the API process, started and stopped by the app's lifespan. Each pass takes a
lease in MongoDB first, so that of several processes on one database one works at a time; the
lease is timed by the database's real clock, even when the service's clock is manual. The lease
only spares duplicate work: the jobs themselves are idempotent (see services/scheduling.py), so
two passes at once, or a pass cut off by a crash and taken up by the next, still grant, expire
and remind once.

Stopping asks the pass in flight to end after its current batch (a batch is one transaction,
all or nothing) and waits for it; only past a grace period is it cancelled, which aborts the
batch's open transaction and so still leaves nothing half-done.

A pass that reaches no checkpoint (after each batch, before each charge it reconciles) for
PASS_STALL_LIMIT is cut off the same way, and its lease given back: its heartbeat would
otherwise keep the lease, and with it every job of every process, for as long as a call that
never returns (a payment provider that hangs, a half-open connection) held the pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

from inmail.metrics import SCHEDULER_LAG_SECONDS
from inmail.services import scheduling
from inmail.services.background import STOP_GRACE, finish_within, repeat
from inmail.services.base import Deps

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
DEFAULT_LEASE_TTL = timedelta(seconds=30)
PASS_STALL_LIMIT = 120.0
"""Seconds a pass may go without reaching a checkpoint before it is cut off (a batch of
renewals or reminders takes well under this)."""
RELEASE_WITHIN = 2.0
"""Seconds a pass's end waits to give its lease back: past them the lease lapses by itself (a
database gone with the process that stops, say, would hold the stop for the driver's whole
server-selection timeout)."""


class PassStalled(Exception):
    """A pass made no progress for its stall limit, and was cut off."""


class Scheduler:
    def __init__(
        self,
        deps: Deps,
        leases: scheduling.LeaseStore,
        *,
        interval: float,
        batch_size: int,
        lease_ttl: timedelta = DEFAULT_LEASE_TTL,
        stop_grace: float = STOP_GRACE,
        stall_limit: float = PASS_STALL_LIMIT,
        owner: str | None = None,
    ) -> None:
        self.deps = deps
        self.interval = interval
        self.batch_size = batch_size
        self.lease_ttl = lease_ttl
        self.stop_grace = stop_grace
        self.stall_limit = stall_limit
        self.owner = owner or f"scheduler-{uuid.uuid4().hex}"
        self.passes = 0
        self._lease = scheduling.Lease(leases, LEASE_NAME, self.owner, lease_ttl)
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()  # set by stop, so that no interval is waited out
        self._lease_lost = False
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Timeout | None = None  # the pass's, pushed on at each checkpoint

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._wake.clear()
            self._task = asyncio.create_task(self._loop(), name="inmail-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
        await finish_within(task, self.stop_grace, "scheduler")

    async def _loop(self) -> None:
        await repeat(
            self.run_once,
            interval=self.interval,
            stopping=self._stopping,
            wake=self._wake,
            what="scheduler",
            due_in=self._next_due_in,
        )

    async def _next_due_in(self) -> float | None:
        """Seconds until the next job falls due, on the system clock (a reminder is then sent
        when it is due, not up to an interval later: SPEC 5's 72 hours hold whatever the
        interval). None on a manual clock, which moves only with advanceClock."""
        if self.deps.clock.is_manual:
            return None
        now = self.deps.now()
        due = await scheduling.next_due_after(self.deps, now)
        return None if due is None else (due - now).total_seconds()

    async def run_once(self) -> scheduling.PassReport | None:
        """One pass if this process gets the lease; None when another process holds it."""
        if not await self._lease.take():
            log.debug("scheduler: another process holds the lease; skipping this pass")
            return None
        self._lease_lost = False
        heartbeat = asyncio.create_task(self._keep_lease())
        self._watchdog = watchdog = asyncio.timeout(None)
        try:
            async with watchdog:
                self._progressed()
                report = await self._pass()
        except TimeoutError:
            if not watchdog.expired():
                raise
            raise PassStalled(
                f"the pass reached no checkpoint for {self.stall_limit:g} s: cut off, and its "
                "lease given back"
            ) from None
        finally:
            self._watchdog = None
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self._release()
        self.passes += 1
        self._log(report)
        return report

    async def _pass(self) -> scheduling.PassReport:
        now = self.deps.now()
        oldest = await scheduling.oldest_due(self.deps, now)
        SCHEDULER_LAG_SECONDS.set((now - oldest).total_seconds() if oldest else 0.0)
        return await scheduling.run_due_jobs(
            self.deps, now, batch_size=self.batch_size, checkpoint=self._may_go_on
        )

    def _progressed(self) -> None:
        if self._watchdog is not None:
            self._watchdog.reschedule(asyncio.get_running_loop().time() + self.stall_limit)

    async def _may_go_on(self) -> bool:
        self._progressed()
        return not self._stopping.is_set() and not self._lease_lost

    async def _keep_lease(self) -> None:
        period = self.lease_ttl.total_seconds() / 3
        while True:
            await asyncio.sleep(period)
            try:
                held = await self._lease.take()
            except Exception:
                log.warning("scheduler: could not extend the lease", exc_info=True)
                continue
            if not held:
                log.warning("scheduler: lost the lease; ending the pass after this batch")
                self._lease_lost = True
                return

    async def _release(self) -> None:
        try:
            await asyncio.wait_for(self._lease.release(), RELEASE_WITHIN)
        except Exception:  # it lapses by itself after lease_ttl
            log.warning("scheduler: could not release the lease", exc_info=True)

    @staticmethod
    def _log(report: scheduling.PassReport) -> None:
        for job in report.jobs:
            if job.changed or job.failed:
                log.info(
                    "scheduler: %s at %s: %d done, %d failed%s",
                    job.job,
                    report.now.isoformat(),
                    job.changed,
                    len(job.failed),
                    " (stopped early)" if job.stopped else "",
                )
