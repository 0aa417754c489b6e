"""Abuse limits: how many InMails and messages one member may send a minute (SPEC 4).

A sliding minute: a send is refused when the member already made `limit` sends of its kind in
the minute before it, whatever the clock's minute, so no 60 seconds ever hold more than
`limit`. Each member's latest sends of a kind (as many as the limit) are one log, written by one
atomic update, so the limit holds exactly under any concurrency and across processes: two
sends that would both take the last place write the same document, and one of them runs again
after the other. `retryAfterSeconds` is exact: when the oldest of those sends leaves the minute.

The count is taken inside the send's own transaction, so a send that is refused or rolled back
for any reason, RATE_LIMITED included, takes its entry back with everything else: only sends
that happened are counted, and a refusal writes nothing at all. A retry under an idempotency key
that already has its result is answered before the count, so it is never RATE_LIMITED.

An InMail's log lives on the sender's member document (`inmailSends`), which every send writes
anyway (its ledger position, conditionally on the position it read): it costs no round trip,
and two concurrent sends of one member cannot both count from the same log, as one of them is
rerun. It counts after every check, so a burst that is refused (no credits, awaiting a
response) never touches it. A message's log is a document of its own, since a message writes no
member: concurrent messages of one member that both write it collide with a WriteConflict and
the driver runs the later transaction again (with backoff), so they take turns. A message
counts first, because its checks and writes are interleaved; its refusals roll back but do take
turns, which only slows that member's own burst.

The in-memory fallback runs transactions one at a time and puts back what one that raised had
written, its count included (repositories/memory.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from inmail.domain.errors import RateLimited, Reason
from inmail.domain.model import RecentSends

if TYPE_CHECKING:
    from inmail.services.unit_of_work import Transaction

WINDOW = timedelta(minutes=1)


class Action(StrEnum):
    INMAIL = "inmail"
    MESSAGE = "message"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Most sends of each kind one member may make in any minute of the service's clock."""

    inmails_per_minute: int
    messages_per_minute: int
    # Whether a message log nobody added to for a while (of wall-clock time: MongoDB's TTL
    # monitor) may be deleted. Not on a manual clock, which may stand still for hours of wall
    # time while a window is open; there each member's one log per kind is kept.
    forget_idle_logs: bool = True

    def limit(self, action: Action) -> int:
        if action is Action.INMAIL:
            return self.inmails_per_minute
        return self.messages_per_minute


def in_the_minute_before(recent: RecentSends, now: datetime) -> list[datetime]:
    """The logged sends of the minute before `now`, oldest first.

    Sends logged at a time later than `now` count too: a concurrent send that started after
    this one, or committed first while this one's transaction was run again (with the time it
    started at), or that ran in a process whose clock is a little ahead. Only a send logged
    more than a minute later than `now` (a manual clock set back) is left out."""
    since, until = now - WINDOW, now + WINDOW
    return sorted(t for t in recent.times if since < t <= until)


def _refused_unless_room(
    limits: RateLimits, action: Action, recent: RecentSends, now: datetime
) -> list[datetime]:
    """The sends of the minute before `now`; RateLimited when they already reach the limit."""
    inside = in_the_minute_before(recent, now)
    retry = _seconds_until_room(limits.limit(action), inside, now)
    if retry is not None:
        limit = limits.limit(action)
        raise RateLimited(Reason.TOO_MANY_SENDS, retry, limit=limit, action=action.value)
    return inside


def _seconds_until_room(limit: int, inside: list[datetime], now: datetime) -> int | None:
    """None when the sends of the minute before `now` leave room for one more; else the whole
    seconds (at least 1) until they do: when the oldest send that keeps the count at the limit
    leaves the minute."""
    if len(inside) < limit:
        return None
    room_at = inside[-limit] + WINDOW
    return max(1, math.ceil((room_at - now).total_seconds()))


def retry_after(
    limits: RateLimits, action: Action, recent: RecentSends, now: datetime
) -> int | None:
    """For a window that only asks: None when one more `action` at `now` would be allowed,
    else the `retryAfterSeconds` a send now would be refused with."""
    return _seconds_until_room(limits.limit(action), in_the_minute_before(recent, now), now)


def count_inmail(limits: RateLimits, recent: RecentSends, now: datetime) -> RecentSends:
    """The sender's latest InMails with one more at `now`; RateLimited past the limit.

    `recent` is what the member document holds."""
    inside = _refused_unless_room(limits, Action.INMAIL, recent, now)
    return RecentSends(tuple(sorted([*inside, now])[-limits.limit(Action.INMAIL) :]))


async def count_send(
    tx: Transaction, limits: RateLimits, action: Action, member_id: str, now: datetime
) -> None:
    """Count one send of `member_id` at `now`, inside the send's transaction; RateLimited past it.

    Raising aborts the transaction, which takes the entry back with it.
    """
    before = await tx.rate_limits.log_one(
        action.value, member_id, now, limits.limit(action), forget_idle=limits.forget_idle_logs
    )
    _refused_unless_room(limits, action, before, now)
