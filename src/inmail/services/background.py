"""Passes run over and over in the background (the scheduler's, the webhook worker's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def repeat(
    run_pass: Callable[[], Awaitable[object]],
    *,
    interval: float,
    stopping: asyncio.Event,
    wake: asyncio.Event,
    what: str,
) -> None:
    """Run a pass, then the next once `interval` seconds have gone by or `wake` is set, until
    `stopping` is set; a pass that fails is logged and the next one runs as usual."""
    while not stopping.is_set():
        try:
            await run_pass()
        except Exception:
            log.exception("%s: a pass failed; trying again", what)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval)
        wake.clear()


async def finish_within(task: asyncio.Task[None], grace: float, what: str) -> None:
    """Let the pass under way end within `grace` seconds; cancel it after that."""
    try:
        await asyncio.wait_for(asyncio.shield(task), grace)
    except TimeoutError:
        log.warning("%s: the pass did not end in %.0f s; cancelling it", what, grace)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
