"""Leases: which process may run a singleton job for now, timed by the database's own clock.

A lease is a document `{_id: name, owner, expiresAt}`. Taking it is one atomic update that
succeeds when the lease is free, lapsed or already ours; `expiresAt` is computed from the
server's `$$NOW`, so it is real time even when the service runs a manual clock, and the hosts'
clocks need not agree. A lease only saves duplicate work: the jobs stay correct without it.
"""

from __future__ import annotations

from datetime import timedelta

from pymongo import ReturnDocument

from inmail.repositories.mongo import Doc, DuplicateKeyError, Mongo


class LeaseRepository:
    def __init__(self, mongo: Mongo) -> None:
        self._c = mongo.c.leases

    async def acquire(self, name: str, owner: str, ttl: timedelta) -> bool:
        """Take or extend the lease `name` for `ttl`; False while another owner holds it."""
        me: Doc = {"$literal": owner}
        free: Doc = {
            "$or": [
                {"$lte": ["$expiresAt", "$$NOW"]},  # lapsed, or never taken (missing < date)
                {"$eq": ["$owner", me]},
            ]
        }
        ttl_ms = int(ttl.total_seconds() * 1000)
        try:
            doc = await self._c.find_one_and_update(
                {"_id": name},
                [
                    {
                        "$set": {
                            "owner": {"$cond": [free, me, "$owner"]},
                            "expiresAt": {
                                "$cond": [free, {"$add": ["$$NOW", ttl_ms]}, "$expiresAt"]
                            },
                        }
                    }
                ],
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # another process created it at the same instant
            return False
        return doc is not None and doc.get("owner") == owner

    async def release(self, name: str, owner: str) -> None:
        await self._c.update_one({"_id": name, "owner": owner}, [{"$set": {"expiresAt": "$$NOW"}}])
