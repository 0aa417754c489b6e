"""A stopping app stops its background tasks together, within one bound: stopped one after
another, each waiting out its grace on a database that is gone, they added up past what a process
manager gives a worker (a worker of a killed `inmail serve` outlived it by half a minute)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from inmail.services.background import stop_together

WITHIN = 0.2
NEVER = 60.0  # a wait the test would hit only if the stops were not bounded

Stop = tuple[str, Callable[[], Awaitable[None]]]


async def stopped_in_time(*stops: Stop, within: float = WITHIN) -> bool:
    """Run stop_together over `stops`; whether it ended before NEVER."""
    stopping = asyncio.create_task(stop_together(list(stops), within))
    done, _ = await asyncio.wait({stopping}, timeout=NEVER)
    stopping.cancel()  # one held for ever (the test fails) is not left behind
    return stopping in done


async def test_tasks_are_stopped_at_the_same_time_not_one_after_another() -> None:
    """Each stop ends only once the other has begun: one after another, the first never ends."""
    begun = {"scheduler": asyncio.Event(), "webhooks": asyncio.Event()}
    ended: list[str] = []

    def stop_of(name: str, other: str) -> Stop:
        async def stop() -> None:
            begun[name].set()
            await begun[other].wait()
            ended.append(name)

        return name, stop

    assert await stopped_in_time(
        stop_of("scheduler", "webhooks"), stop_of("webhooks", "scheduler"), within=NEVER / 2
    )
    assert sorted(ended) == ["scheduler", "webhooks"]


async def test_a_stop_that_never_ends_is_cancelled_and_the_others_still_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ended: list[str] = []
    cancelled = asyncio.Event()

    async def held() -> None:
        try:
            await asyncio.Event().wait()  # a call waiting on a database that is gone
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def quick() -> None:
        ended.append("live")

    with caplog.at_level(logging.WARNING, "inmail.services.background"):
        assert await stopped_in_time(("scheduler", held), ("live", quick))
    assert ended == ["live"]
    assert cancelled.is_set()
    assert "scheduler did not stop in 0 s; cancelling" in caplog.text


async def test_a_stop_that_ignores_its_cancellation_is_left_behind_after_a_moment() -> None:
    released = asyncio.Event()
    ended = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await released.wait()  # swallows its cancellation until the test lets it go
            ended.set()

    assert await stopped_in_time(("stubborn", stubborn))
    assert not ended.is_set(), "left behind, still running"
    released.set()
    await asyncio.wait_for(ended.wait(), NEVER)


async def test_a_stop_that_fails_is_logged_and_the_others_still_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ended: list[str] = []

    async def failing() -> None:
        raise RuntimeError("the change stream would not close")

    async def quick() -> None:
        ended.append("scheduler")

    with caplog.at_level(logging.ERROR, "inmail.services.background"):
        assert await stopped_in_time(("live", failing), ("scheduler", quick))
    assert ended == ["scheduler"]
    assert "stopping live failed" in caplog.text
    assert "the change stream would not close" in caplog.text


async def test_no_tasks_is_nothing_to_wait_for() -> None:
    assert await stopped_in_time()
