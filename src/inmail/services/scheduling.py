"""The scheduler's passes: the jobs that move credits through time, and when they are due.

A pass (`run_due_jobs`) runs every job with one `now`: renewals, expirations, reminders, expiry
notices and the reconciliation of charges, in that order. Each job is a plain function called as
`job(deps, now, batch_size=n, checkpoint=...)` (the checkpoint, asked between batches, may end
the pass early) and answers a `JobReport`. `scheduler.py` runs passes on a timer
under a `Lease`; `manual_clock.py` (advanceClock) runs one at every instant it stops at.

Every job is safe to run twice, late, or in several processes at once: a member's changes are
written in one transaction that re-reads the member and is optimistic on its ledger position, a
cycle's grant is unique per (member, grantKey), and a reminder is marked only while none was
sent. Renewals and expirations go in batches of members, one transaction per batch with bulk
writes; a batch that fails is redone one member at a time, so one bad member is logged and
skipped while the others go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from inmail.domain.conversations import DueReminder
from inmail.domain.credits import ExpiringLot, LapsedMember
from inmail.domain.model import LedgerEntry
from inmail.domain.notifications import ConversationChange, ConversationEvent, Notification
from inmail.metrics import SCHEDULER_PASS_SECONDS
from inmail.services.base import Account, Deps, save_all
from inmail.services.charges import RECONCILE_AFTER, reconcile_charges
from inmail.services.fulfilments import FULFILMENTS
from inmail.services.unit_of_work import DatabaseUnavailable, Transaction

D = TypeVar("D")
P = TypeVar("P")

log = logging.getLogger(__name__)

Checkpoint = Callable[[], Awaitable[bool]]
"""Asked between batches; False ends the pass there (every batch is all-or-nothing)."""


async def _go_on() -> bool:
    return True


@dataclass
class JobReport:
    job: str
    changed: int = 0
    failed: list[str] = field(default_factory=list)
    stopped: bool = False


@dataclass
class PassReport:
    now: datetime
    jobs: list[JobReport] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        return any(job.stopped for job in self.jobs)

    def job(self, name: str) -> JobReport:
        return next(job for job in self.jobs if job.job == name)


@dataclass(frozen=True, slots=True)
class _Run:
    """One run of one job: what it was called with, and the report it fills in."""

    deps: Deps
    now: datetime
    batch_size: int
    checkpoint: Checkpoint
    report: JobReport


async def _in_batches(
    run: _Run,
    due: Callable[[P | None], Awaitable[list[D]]],
    position: Callable[[D], P],
    process: Callable[[list[D]], Awaitable[None]],
) -> None:
    """Process what is due a batch at a time, each batch listed after the last one's position,
    until nothing is left or the checkpoint says stop."""
    after: P | None = None
    while batch := await due(after):
        after = position(batch[-1])
        await process(batch)
        if not await run.checkpoint():
            run.report.stopped = True
            break


# Renewals and expirations: members brought up to `now`, a batch at a time.


async def renew_due(
    deps: Deps, now: datetime, *, batch_size: int, checkpoint: Checkpoint = _go_on
) -> JobReport:
    """Grant every billing cycle that started by `now` to each member it is due to."""
    run = _Run(deps, now, batch_size, checkpoint, JobReport("renewals"))
    return await _members_job(run, deps.reads.members.due_ids_for_renewal)


async def expire_due(
    deps: Deps, now: datetime, *, batch_size: int, checkpoint: Checkpoint = _go_on
) -> JobReport:
    """Mark EXPIRED, with an EXPIRE entry at its own expiresAt, every lot that lapsed by `now`:
    the members holding them brought up to `now`, a batch at a time, as their lots lapsed."""
    run = _Run(deps, now, batch_size, checkpoint, JobReport("expirations"))
    await _in_batches(
        run,
        lambda after: deps.reads.lots.lapsed_members(now, after=after, limit=batch_size),
        lambda lapsed: lapsed.walked,
        lambda batch: _expire_batch(run, batch),
    )
    return run.report


async def _expire_batch(run: _Run, batch: Sequence[LapsedMember]) -> None:
    """Bring a batch's members up to now, but for those that failed earlier in this pass: the
    walk meets a member again at each of its lapsed lots further along (a member brought up to
    now has none left), and one that failed is tried again on the next pass, not in this one."""
    failed = set(run.report.failed)
    ids = [lapsed.member_id for lapsed in batch if lapsed.member_id not in failed]
    if ids:
        await _bring_up_to(run.deps, ids, run.now, run.report)


class _DueMemberIds(Protocol):
    def __call__(
        self, now: datetime, *, after_id: str | None, limit: int
    ) -> Awaitable[list[str]]: ...


async def _members_job(run: _Run, due_ids: _DueMemberIds) -> JobReport:
    """Bring every member `due_ids` names up to `now`, a batch at a time, in id order."""
    await _in_batches(
        run,
        lambda after: due_ids(run.now, after_id=after, limit=run.batch_size),
        lambda member_id: member_id,
        lambda ids: _bring_up_to(run.deps, ids, run.now, run.report),
    )
    return run.report


async def _bring_up_to(deps: Deps, ids: Sequence[str], now: datetime, report: JobReport) -> None:
    try:
        written = await deps.uow.run(_write_batch, deps, ids, now)
    except DatabaseUnavailable:
        raise  # no member's fault: the pass ends here and the next one starts over
    except Exception:
        if len(ids) == 1:
            log.exception("%s: member %s failed and was skipped", report.job, ids[0])
            report.failed.append(ids[0])
            return
        log.warning(
            "%s: a batch of %d members failed; redoing it one member at a time",
            report.job,
            len(ids),
            exc_info=True,
        )
        for member_id in ids:
            await _bring_up_to(deps, [member_id], now, report)
        return
    report.changed += written.members
    await _publish(deps, written.entries)


@dataclass(frozen=True, slots=True)
class _BatchWritten:
    members: int
    entries: list[LedgerEntry]


async def _write_batch(
    tx: Transaction, deps: Deps, ids: Sequence[str], now: datetime
) -> _BatchWritten:
    """One transaction: read the members and their ACTIVE lots, write what changed in bulk.

    Two reads, each one index range for the whole batch (`get_many_with_lots` brings the lots of
    one member only: a use case on one or two members)."""
    members = await tx.members.get_many(ids)
    lots = await tx.lots.active_for_many(list(members))
    accounts = [
        account
        for member in members.values()
        if (account := Account.brought_up_to(deps.plans, member, lots[member.id], now)).changed
    ]
    if not accounts:
        return _BatchWritten(0, [])
    entries = await save_all(tx, [(account, account.updated()) for account in accounts])
    return _BatchWritten(len(accounts), entries)


async def _publish(deps: Deps, entries: list[LedgerEntry]) -> None:
    try:
        await deps.publisher.publish(entries)
    except Exception:  # committed already: a live update lost is not a reason to stop
        log.exception("publishing %d scheduler ledger entries failed", len(entries))


# Reminders: one transaction per conversation, marked and written together.


async def remind_due(
    deps: Deps, now: datetime, *, batch_size: int, checkpoint: Checkpoint = _go_on
) -> JobReport:
    """Remind the recipient of every unanswered InMail whose reminder is due by `now`, once."""
    run = _Run(deps, now, batch_size, checkpoint, JobReport("reminders"))
    due = deps.reads.conversations.reminders_due_after
    return await _each_due(
        run,
        lambda after: due(now, after=after, limit=batch_size),
        lambda r: (r.due_at, r.conversation_id),
        lambda tx, r: _remind(tx, r, now),
    )


async def _remind(tx: Transaction, reminder: DueReminder, now: datetime) -> bool:
    if not await tx.conversations.mark_reminded(reminder.conversation_id, now):
        return False  # answered, or reminded by someone else, since it was listed
    conversation = await tx.conversations.get(reminder.conversation_id)
    assert conversation is not None, "the transaction has just marked it"
    await tx.notifications.record(
        [Notification.reminder(reminder.recipient_id, reminder.conversation_id, now)],
        ConversationEvent.of(ConversationChange.REMINDED, conversation, now),
    )
    return True


# Credits about to expire: each lot's member is told once, `expiry_notice` before expiresAt.


async def notify_expiring(
    deps: Deps, now: datetime, *, batch_size: int, checkpoint: Checkpoint = _go_on
) -> JobReport:
    """CREDITS_EXPIRING for every lot with credits that expires within the notice, once."""
    run = _Run(deps, now, batch_size, checkpoint, JobReport("expiry notices"))
    due, notice = deps.reads.notifications.expiring.due, deps.limits.expiry_notice
    return await _each_due(
        run,
        lambda after: due(now, notice, after=after, limit=batch_size),
        lambda lot: (lot.expires_at, lot.lot_id),
        lambda tx, lot: _notify_expiring(tx, lot, now),
    )


async def _each_due(
    run: _Run,
    due: Callable[[tuple[datetime, str] | None], Awaitable[list[D]]],
    position: Callable[[D], tuple[datetime, str]],
    step: Callable[[Transaction, D], Awaitable[bool]],
) -> JobReport:
    """Page through what is due, in order, one transaction an item: an item's failure is
    reported and the rest go on; a database that is gone stops the job."""
    report = run.report

    async def one_at_a_time(batch: list[D]) -> None:
        for item in batch:
            try:
                report.changed += await run.deps.uow.run(step, item)
            except DatabaseUnavailable:
                raise
            except Exception:
                log.exception("%s: %s failed", report.job, position(item)[1])
                report.failed.append(position(item)[1])

    await _in_batches(run, due, position, one_at_a_time)
    return report


async def _notify_expiring(tx: Transaction, lot: ExpiringLot, now: datetime) -> bool:
    if not await tx.notifications.expiring.mark_noticed(lot.lot_id, now):
        return False  # spent, or told by another pass, since it was listed
    await tx.notifications.add(Notification.credits_expiring(lot.member_id, lot.lot_id, now))
    return True


# Charges: paid requests left open by a process that died are completed or refunded.


async def reconcile_due(
    deps: Deps, now: datetime, *, batch_size: int, checkpoint: Checkpoint = _go_on
) -> JobReport:
    """Complete or refund each charge that has no purchase or plan change RECONCILE_AFTER on,
    asking the payment gateway what became of it; `checkpoint` is asked before each intent."""
    report = JobReport("charges")
    done = await reconcile_charges(
        deps, now, batch_size=batch_size, fulfilments=FULFILMENTS, go_on=checkpoint
    )
    report.changed = done.completed + done.refunded + done.lapsed
    report.failed.extend(done.failed)
    report.stopped = done.stopped
    return report


async def _next_reconciliation(deps: Deps, after: datetime | None) -> datetime | None:
    since = None if after is None else after - RECONCILE_AFTER
    oldest = await deps.reads.intents.oldest_open_created_at(since)
    recheck = await deps.reads.intents.next_recheck_at(after)
    due = [t for t in (oldest and oldest + RECONCILE_AFTER, recheck) if t is not None]
    return min(due, default=None)


# A pass: the jobs, in the order that keeps each member's ledger in time order.

_JOBS = (renew_due, expire_due, remind_due, notify_expiring, reconcile_due)


async def run_due_jobs(
    deps: Deps,
    now: datetime,
    *,
    batch_size: int,
    checkpoint: Checkpoint = _go_on,
) -> PassReport:
    report = PassReport(now)
    for job in _JOBS:
        started = time.perf_counter()
        result = await job(deps, now, batch_size=batch_size, checkpoint=checkpoint)
        SCHEDULER_PASS_SECONDS.labels(job=result.job).observe(time.perf_counter() - started)
        report.jobs.append(result)
        if result.stopped:
            break
    return report


async def oldest_due(deps: Deps, now: datetime) -> datetime | None:
    """When the oldest item still waiting for a job became due (None: nothing waits)."""
    due = await _first_due_times(deps, None, expiring_after=now)
    return min((t for t in due if t <= now), default=None)


async def next_due_after(deps: Deps, after: datetime) -> datetime | None:
    """The next instant after `after` at which some job has work: one indexed query per job."""
    notice = deps.limits.expiry_notice
    return min(await _first_due_times(deps, after, expiring_after=after + notice), default=None)


async def _first_due_times(
    deps: Deps, after: datetime | None, *, expiring_after: datetime
) -> list[datetime]:
    """Each job's first due instant (after `after`, if given; expiry notices of the lots that
    expire after `expiring_after`), for the jobs that have one."""
    firsts = (
        await deps.reads.members.next_renewal_at(after),
        await deps.reads.lots.next_expiry_at(after),
        await deps.reads.conversations.next_reminder_due_at(after),
        await deps.reads.notifications.expiring.first_due_at(
            deps.limits.expiry_notice, expiring_after=expiring_after
        ),
        await _next_reconciliation(deps, after),
    )
    return [t for t in firsts if t is not None]


class LeaseStore(Protocol):
    """Where leases are kept (repositories/leases.py; one process only: repositories/memory.py)."""

    async def acquire(self, name: str, owner: str, ttl: timedelta) -> bool: ...

    async def release(self, name: str, owner: str) -> None: ...


class Lease:
    """The right to run passes for a while, so that of several processes one works at a time.

    Timed by the database's real clock, never the service's (which may be manual). It spares
    duplicate work only: every job above stays correct when two passes run at once.
    """

    def __init__(self, leases: LeaseStore, name: str, owner: str, ttl: timedelta) -> None:
        self._leases = leases
        self.name, self.owner, self.ttl = name, owner, ttl

    async def take(self) -> bool:
        """Take the lease, or extend it if held already; False while another owner holds it."""
        return await self._leases.acquire(self.name, self.owner, self.ttl)

    async def release(self) -> None:
        await self._leases.release(self.name, self.owner)
