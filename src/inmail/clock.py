"""The service's clock: the one source of "now". Domain code receives times, never reads them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    @property
    def is_manual(self) -> bool: ...

    def now(self) -> datetime: ...


class SystemClock:
    is_manual = False

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """Time that stands still until moved: for demos and tests (INMAIL_CLOCK=manual)."""

    is_manual = True

    def __init__(self, start: datetime, *, movable: bool = True) -> None:
        if start.tzinfo is None:
            raise ValueError("a manual clock starts at an aware UTC datetime")
        self._now = start.astimezone(UTC)
        # Each worker process keeps a manual clock of its own: with several, moving the one a
        # request lands on would leave the others behind, so none of them moves.
        self.movable = movable
        # Held while the clock is moved through the jobs due on the way, so that two advances
        # run one after the other (services/manual_clock.py).
        self.advancing = asyncio.Lock()

    def now(self) -> datetime:
        return self._now

    def set(self, when: datetime) -> None:
        if when < self._now:
            raise ValueError("a manual clock only moves forward")
        self._now = when.astimezone(UTC)

    def advance(self, delta: timedelta) -> datetime:
        self.set(self._now + delta)
        return self._now
