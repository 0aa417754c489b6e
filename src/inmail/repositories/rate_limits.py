"""Rate-limit counters: how many sends a member made in one window, shared by every process.

One document per (action, window, member), its `_id` made of the three, counted with an atomic
`$inc` and upsert. The TTL index `rate_limits.expired` deletes a counter once its `deleteAfter`
has passed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pymongo import ReturnDocument

from inmail.repositories.members import window_from_doc
from inmail.repositories.mongo import Mongo, Session

# Windows are counted on the service's clock, which a manual clock may hold still or set in the
# past; MongoDB's TTL monitor runs on the server's wall clock. So a counter is kept for this long
# of wall-clock time after its last count, whatever the service's clock says: on the system
# clock a window is useless a minute after it ends, and nothing piles up.
KEEP_FOR = timedelta(minutes=10)
INMAIL = "inmail"  # counted on the member document, not here


def counter_id(action: str, window_start: datetime, member_id: str) -> str:
    # The member id comes last: the action and the epoch second hold no ":".
    return f"{action}:{int(window_start.timestamp())}:{member_id}"


class RateLimitReader:
    def __init__(self, mongo: Mongo, session: Session) -> None:
        self._session = session
        self._c = mongo.c.rate_limits
        self._members = mongo.c.members

    async def counted(self, action: str, member_id: str, window_start: datetime) -> int:
        """The member's count of `action` in the window, 0 when nothing was counted. InMails
        are counted on the member document (services/rate_limits.py), messages here."""
        if action == INMAIL:
            member = await self._members.find_one(
                {"_id": member_id}, {"inmailWindow": 1}, session=self._session
            )
            window = window_from_doc((member or {}).get("inmailWindow"))
            return window.count if window is not None and window.start == window_start else 0
        doc = await self._c.find_one(
            {"_id": counter_id(action, window_start, member_id)},
            {"count": 1},
            session=self._session,
        )
        return 0 if doc is None else int(doc["count"])


class RateLimitRepository(RateLimitReader):
    async def count_one(self, action: str, member_id: str, window_start: datetime) -> int:
        """Add one to the member's counter of `action` in the window; the count with this one."""
        doc = await self._c.find_one_and_update(
            {"_id": counter_id(action, window_start, member_id)},
            {
                "$inc": {"count": 1},
                "$setOnInsert": {
                    "action": action,
                    "memberId": member_id,
                    "windowStart": window_start,
                },
                "$max": {"deleteAfter": datetime.now(UTC) + KEEP_FOR},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
            projection={"count": 1},
            session=self._session,
        )
        assert doc is not None  # an upsert always returns the document after
        return int(doc["count"])
