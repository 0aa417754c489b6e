"""Abuse limits: how many InMails and messages one member may send a minute (SPEC 4).

Fixed windows, one per minute of the service's clock, rather than a sliding one: a window is one
counter that MongoDB increments atomically, so "at most N a minute" holds exactly under any
concurrency and across processes, and `retryAfterSeconds` is exact (the window's end). A
sliding log would count documents and insert one, which two transactions can both pass at N-1
(snapshot isolation does not stop that write skew). The price of fixed windows is a burst of up
to 2N across a window boundary, which is still a bound on abuse.

The count is taken inside the send's own transaction, so a send that is refused or rolled back
for any reason, RATE_LIMITED included, takes its count back with everything else: only sends
that happened are counted, and a refusal writes nothing at all. A retry under an idempotency key
that already has its result is answered before the count, so it is never RATE_LIMITED.

An InMail's count lives on the sender's member document (`inmailWindow`), which every send
writes anyway (its ledger position, conditionally on the position it read): the count costs no
round trip, and two concurrent sends of one member cannot both count from the same number, as
one of them is rerun. It counts after every check, so a burst that is refused (no credits,
awaiting a response) never touches it. A message's count is a counter document of its own, since
a message writes no member: concurrent messages of one member that both write it collide with a
WriteConflict and the driver runs the later transaction again (with backoff), so they take turns.
A message counts first, because its checks and writes are interleaved; its refusals roll back but
do take turns, which only slows that member's own burst.

The in-memory fallback has no transactions: there a message refused after its count still
counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from inmail.domain.errors import RateLimited, Reason
from inmail.domain.model import SendWindow

if TYPE_CHECKING:
    from inmail.services.unit_of_work import Transaction

WINDOW = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Action(StrEnum):
    INMAIL = "inmail"
    MESSAGE = "message"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Most sends of each kind one member may make in a minute of the service's clock."""

    inmails_per_minute: int = 30
    messages_per_minute: int = 60

    def limit(self, action: Action) -> int:
        if action is Action.INMAIL:
            return self.inmails_per_minute
        return self.messages_per_minute


def window_start(now: datetime) -> datetime:
    """The start of the window that holds `now`: windows are aligned on the epoch."""
    return now - (now - _EPOCH) % WINDOW


def retry_after_seconds(now: datetime) -> int:
    """Whole seconds until the window that holds `now` ends; at least 1."""
    remaining = window_start(now) + WINDOW - now
    return max(1, math.ceil(remaining.total_seconds()))


def count_inmail(limits: RateLimits, window: SendWindow | None, now: datetime) -> SendWindow:
    """The sender's InMail window with one more send at `now`; RateLimited past the limit.

    `window` is what the member document holds: a count in an earlier window counts nothing.
    """
    start = window_start(now)
    count = (window.count if window is not None and window.start == start else 0) + 1
    limit = limits.limit(Action.INMAIL)
    if count > limit:
        raise RateLimited(
            Reason.TOO_MANY_SENDS, retry_after_seconds(now), limit=limit, action=Action.INMAIL.value
        )
    return SendWindow(start, count)


async def count_send(
    tx: Transaction, limits: RateLimits, action: Action, member_id: str, now: datetime
) -> None:
    """Count one send of `member_id` at `now`, inside the send's transaction; RateLimited past it.

    Raising aborts the transaction, which takes the count back with it.
    """
    limit = limits.limit(action)
    count = await tx.rate_limits.count_one(action.value, member_id, window_start(now))
    if count > limit:
        raise RateLimited(
            Reason.TOO_MANY_SENDS, retry_after_seconds(now), limit=limit, action=action.value
        )
