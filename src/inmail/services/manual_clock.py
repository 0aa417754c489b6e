"""advanceClock (SPEC 7): move the service's manual clock forward and let time pass on the way.

With INMAIL_CLOCK=manual the clock (`clock.py` `ManualClock`) moves only when an admin asks. It
does not jump: it walks, stopping at every instant some scheduler job (`scheduling.py`) or
webhook attempt is due, and runs there what is due, so every grant, expiry, reminder and retry
is written at its own time, in time order, as a scheduler that never missed a beat would have.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Protocol

from inmail.auth import Viewer
from inmail.clock import ManualClock
from inmail.domain import access
from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.services.base import Deps
from inmail.services.scheduling import next_due_after, run_due_jobs

MAX_ADVANCE = timedelta(days=3660)


def advance_by(days: int | None, hours: int | None) -> timedelta:
    days, hours = days or 0, hours or 0
    if days < 0:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.NEGATIVE, "days")
    if hours < 0:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.NEGATIVE, "hours")
    most_hours = MAX_ADVANCE // timedelta(hours=1)
    if days * 24 + hours > most_hours:  # checked before timedelta can overflow
        # The field at fault: hours when they alone go too far, else days.
        field = "hours" if hours > most_hours else "days"
        raise DomainError(
            ErrorCode.INVALID_INPUT, Reason.ADVANCE_TOO_FAR, field, maximum_days=MAX_ADVANCE.days
        )
    delta = timedelta(days=days, hours=hours)
    if delta <= timedelta(0):
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.ADVANCE_TOO_SHORT)
    return delta


class Deliveries(Protocol):
    """Webhook deliveries, as `advance_clock` drives them (services/webhooks.py)."""

    async def next_due_after(self, after: datetime) -> datetime | None: ...

    async def drain(self) -> int: ...

    def alone(self) -> contextlib.AbstractAsyncContextManager[None]: ...


async def advance_clock_as(
    deps: Deps,
    viewer: Viewer | None,
    *,
    days: int | None = None,
    hours: int | None = None,
    batch_size: int,
    deliveries: Deliveries | None = None,
) -> datetime:
    """An admin's advanceClock (SPEC 8): the caller is checked before the clock and the input."""
    access.admin(viewer)
    return await advance_clock(
        deps, days=days, hours=hours, batch_size=batch_size, deliveries=deliveries
    )


async def advance_clock(
    deps: Deps,
    *,
    days: int | None = None,
    hours: int | None = None,
    batch_size: int,
    deliveries: Deliveries | None = None,
) -> datetime:
    """Move a manual clock forward, stopping at every instant a job has work, in time order.

    At each stop the clock reads that instant and the jobs run with it, so a grant, an expiry or
    a reminder is written at its own time, as a scheduler that never missed a beat would have.
    With `deliveries` (webhooks configured) each webhook attempt due is a stop too, and the
    events due at a stop are attempted there: retries keep their backoff however far the clock
    jumps (SPEC 7).
    """
    clock = _movable_clock(deps)
    delta = advance_by(days, hours)
    # Background deliveries wait while the clock walks: one in flight would otherwise record
    # its retry at a time the walk has already passed, and the retry would never be made.
    alone = deliveries.alone() if deliveries is not None else contextlib.nullcontext()
    async with clock.advancing, alone:
        await _walk(deps, clock, clock.now() + delta, batch_size, deliveries)
        return clock.now()


def _movable_clock(deps: Deps) -> ManualClock:
    clock = deps.clock
    if not isinstance(clock, ManualClock):
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.CLOCK_NOT_MANUAL)
    if not clock.movable:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.CLOCK_IN_SEVERAL_WORKERS)
    return clock


async def _walk(
    deps: Deps,
    clock: ManualClock,
    target: datetime,
    batch_size: int,
    deliveries: Deliveries | None,
) -> None:
    """Set the clock to each instant a job (or a webhook attempt) is due up to `target`, and
    run what is due there."""

    async def stop_here() -> None:
        await run_due_jobs(deps, clock.now(), batch_size=batch_size)
        if deliveries is not None:
            await deliveries.drain()

    await stop_here()  # anything left behind
    while clock.now() < target:
        upcoming = [await next_due_after(deps, clock.now())]
        if deliveries is not None:
            upcoming.append(await deliveries.next_due_after(clock.now()))
        clock.set(min([*(t for t in upcoming if t is not None), target]))
        await stop_here()
