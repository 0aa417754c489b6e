"""Passes run over and over in the background (the scheduler's, the webhook worker's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger(__name__)

# Passes asked for by `due_in` come at most this often: work falling due at many instants close
# together (reminders of a burst of InMails) is done in one pass, not one pass each.
SOONEST_PASS = 1.0


async def repeat(
    run_pass: Callable[[], Awaitable[object]],
    *,
    interval: float,
    stopping: asyncio.Event,
    wake: asyncio.Event,
    what: str,
    due_in: Callable[[], Awaitable[float | None]] | None = None,
) -> None:
    """Run a pass, then the next once `interval` seconds have gone by or `wake` is set, until
    `stopping` is set; a pass that fails is logged and the next one runs as usual.

    `due_in`, asked after each pass: in how many seconds the next work falls due (None: none
    known). The next pass then comes as soon as that, but never sooner than SOONEST_PASS.
    """
    while not stopping.is_set():
        try:
            await run_pass()
        except Exception:
            log.exception("%s: a pass failed; trying again", what)
        wait = await _wait_for_next(interval, due_in, what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), wait)
        wake.clear()


async def _wait_for_next(
    interval: float, due_in: Callable[[], Awaitable[float | None]] | None, what: str
) -> float:
    """How many seconds to wait for the next pass: `interval`, or less when `due_in` tells of
    work falling due sooner (but never less than SOONEST_PASS)."""
    if due_in is None:
        return interval
    try:
        due = await due_in()
    except Exception:
        log.warning("%s: could not tell when work falls due", what, exc_info=True)
        return interval
    return interval if due is None else min(interval, max(due, SOONEST_PASS))


STOP_GRACE = 5.0
"""How long a stopping background task waits for the pass under way before cancelling it. What a
pass cuts short is done again (a scheduler batch is a transaction, which the next pass in any
process does; a webhook delivery's lease lapses and the event is sent again), so waiting longer
would only hold a shutdown, as when MongoDB cannot be reached and a call waits out its server
selection."""


async def finish_within(task: asyncio.Task[None], grace: float, what: str) -> None:
    """Let the pass under way end within `grace` seconds; cancel it after that."""
    try:
        await asyncio.wait_for(asyncio.shield(task), grace)
    except TimeoutError:
        log.warning("%s: the pass did not end in %.0f s; cancelling it", what, grace)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


STOP_ALL_WITHIN = 8.0
"""How long a stopping app waits for all its background tasks, stopped together: a pass's grace
(STOP_GRACE), then what the cancelled pass does on its way out (a scheduler gives its lease back,
a webhook delivery its event, each within 2 s), and a second to spare. Stopped one after
another, the tasks' graces would add up while the database is out of reach (and a change feed
being opened holds its stop for the whole of the driver's server selection)."""

CANCELLED_WITHIN = 1.0
"""How long a stop cut short by STOP_ALL_WITHIN is given to end once cancelled."""


async def stop_together(
    stops: Sequence[tuple[str, Callable[[], Awaitable[None]]]], within: float = STOP_ALL_WITHIN
) -> None:
    """Stop every named task at once and wait at most `within` seconds for them all. A stop
    that fails is logged; one still running then is cancelled, and left to the process's end if
    it does not end within CANCELLED_WITHIN either."""
    running = {
        asyncio.create_task(_awaited(stop), name=f"stopping {name}"): name for name, stop in stops
    }
    if not running:
        return
    done, late = await asyncio.wait(running, timeout=within)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("stopping %s failed", running[task], exc_info=error)
    if late:
        log.warning(
            "%s did not stop in %.0f s; cancelling",
            ", ".join(sorted(running[task] for task in late)),
            within,
        )
        for task in late:
            task.cancel()
        await asyncio.wait(late, timeout=CANCELLED_WITHIN)


async def _awaited(stop: Callable[[], Awaitable[None]]) -> None:
    await stop()
