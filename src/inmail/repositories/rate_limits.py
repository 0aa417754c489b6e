"""Rate-limit logs: when a member made its latest sends of one kind, shared by every process.

One document per (action, member) (`_id` "<action>:<member id>") holding the times of the
member's latest sends, at most as many as the limit (`$push` with `$slice`), in one atomic
update that hands back what it held before. InMails are logged on the member document instead
(`inmailSends`). The TTL index `rate_limits.expired` deletes a log once its `deleteAfter` has
passed (on the system clock only).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pymongo import ReturnDocument

from inmail.domain.model import RecentSends
from inmail.repositories.members import (
    INMAIL_LOG_FIELDS,
    recent_inmails_from_doc,
    sends_from_doc,
)
from inmail.repositories.mongo import Mongo, Session, TransactionSession

# Sends are timed on the service's clock; MongoDB's TTL monitor runs on the server's wall
# clock. On the system clock a log is useless a minute after its last send: it is kept this long
# of wall-clock time after it, and nothing piles up. A manual clock may stand still for hours
# while a window is open, so there logs are not forgotten (`forget_idle`).
KEEP_FOR = timedelta(minutes=10)
INMAIL = "inmail"  # logged on the member document, not here


def log_id(action: str, member_id: str) -> str:
    return f"{action}:{member_id}"


class RateLimitReader:
    def __init__(self, mongo: Mongo, session: Session) -> None:
        self._session = session
        self._c = mongo.c.rate_limits
        self._members = mongo.c.members

    async def recent(self, action: str, member_id: str) -> RecentSends:
        """The member's latest sends of `action` as logged (none when nothing was). InMails are
        logged on the member document (services/rate_limits.py), messages here."""
        if action == INMAIL:
            member = await self._members.find_one(
                {"_id": member_id}, INMAIL_LOG_FIELDS, session=self._session
            )
            return recent_inmails_from_doc(member or {})
        doc = await self._c.find_one(
            {"_id": log_id(action, member_id)}, {"times": 1}, session=self._session
        )
        return sends_from_doc(None if doc is None else doc.get("times"))


class RateLimitRepository(RateLimitReader):
    """Send logs inside a transaction: every write here is part of it."""

    def __init__(self, mongo: Mongo, session: TransactionSession) -> None:
        super().__init__(mongo, session.driver)

    async def log_one(
        self, action: str, member_id: str, at: datetime, keep: int, *, forget_idle: bool
    ) -> RecentSends:
        """Log a send of `action` at `at`, keeping the latest `keep`; the sends logged before.
        `forget_idle`: the log may be deleted once idle for KEEP_FOR of wall-clock time."""
        update: dict[str, object] = {
            "$push": {"times": {"$each": [at], "$slice": -keep}},
            "$setOnInsert": {"action": action, "memberId": member_id},
        }
        if forget_idle:
            update["$max"] = {"deleteAfter": datetime.now(UTC) + KEEP_FOR}
        else:
            update["$unset"] = {"deleteAfter": ""}
        before = await self._c.find_one_and_update(
            {"_id": log_id(action, member_id)},
            update,
            upsert=True,
            return_document=ReturnDocument.BEFORE,
            projection={"times": 1},
            session=self._session,
        )
        return sends_from_doc(None if before is None else before.get("times"))
