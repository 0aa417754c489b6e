"""A member's notifications: listed newest first, counted unread, marked read (SPEC 5a).

Notifications are written by the use cases that cause them, in their own transactions (see
domain/notifications.py for the kinds and their event keys); this module is what a member
does with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.notifications import Notification
from inmail.services.base import Deps
from inmail.services.unit_of_work import Transaction

MAX_IDS = 100

__all__ = ["MAX_IDS", "Notification", "mark_read", "unread_count"]


async def unread_count(deps: Deps, member_id: str) -> int:
    return await deps.reads.notifications.count(member_id, unread_only=True)


async def mark_read(
    deps: Deps, member_id: str, ids: Sequence[str] | None, everything: bool | None
) -> int:
    """Mark these notifications of the member read, or all of them; the unread count after.

    Ids that are not the member's own are refused, and then nothing is marked: an id of
    another member's notification is refused as one that names nothing, so a member cannot
    learn whether someone else's notification exists.
    """
    if everything and ids is not None:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.IDS_OR_ALL, "ids")
    if not everything:
        if ids is None:
            raise DomainError(ErrorCode.INVALID_INPUT, Reason.IDS_OR_ALL_MISSING, "ids")
        if len(ids) > MAX_IDS:
            raise DomainError(ErrorCode.INVALID_INPUT, Reason.TOO_MANY_IDS, "ids", maximum=MAX_IDS)
        if not all(_encodable(i) for i in ids):
            raise DomainError(ErrorCode.INVALID_INPUT, Reason.IDS_NOT_TEXT, "ids")
    chosen = None if everything else [str(i) for i in dict.fromkeys(ids or ())]
    await deps.uow.run(_mark_read, member_id, chosen, deps.now())
    return await unread_count(deps, member_id)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


async def _mark_read(tx: Transaction, member_id: str, ids: list[str] | None, at: datetime) -> int:
    if ids is not None:
        unknown = len(ids) - await tx.notifications.count_own(member_id, ids)
        if unknown:
            raise DomainError(
                ErrorCode.NOT_FOUND, Reason.NO_SUCH_NOTIFICATIONS, "ids", unknown=unknown
            )
    return await tx.notifications.mark_read(member_id, ids, at)
