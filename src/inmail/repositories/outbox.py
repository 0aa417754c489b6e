"""The webhook outbox: one document per event to deliver, written in the event's transaction.

A use case adds an `OutboxEvent` with `tx.outbox.add(event)` in the same transaction as the
change it reports, so the event exists if and only if the change was committed; its `_id` is
the event's id (the notification's), so a transaction that is run again cannot enqueue it twice.

The delivery worker (services/webhooks.py) claims due events one at a time with a lease: one
conditional update sets `leaseOwner`, a fresh `leaseToken` and `leaseUntil`. The lease is timed
by the database's clock (`$$NOW`), real time even when the service runs a manual clock, because
it stands for a request in flight; an event whose lease lapsed (its worker died) is claimed
again. When it is due (`dueAt`) is on the service's clock, so a manual clock drives retries.

A document: `{_id, kind, memberId, at, data, status: PENDING | DELIVERED | FAILED, dueAt,
attemptCount, firstAttemptAt, attempts: [every attempt (at most the `keep` latest, which the
retry schedule never exceeds): {at, statusCode, error, durationMs}, and `token` on one cut
short], leaseOwner, leaseToken, leaseUntil, leaseTakenAt, deliveredAt, failedAt, purgeAt}`. Every
event is removed by a TTL index RETENTION after it was written (real time), delivered or not.

An attempt whose worker never recorded it (killed, stopped mid-request, or cut off from the
database) is recorded by the claim that takes its lapsed lease: begun at `leaseTakenAt` (a lease
taken before that field was kept: at the takeover), no status, no duration, error `CUT_SHORT`,
under its lease's token, counted with the others. Should that worker finish it after all, what
it saw takes that entry's place, and a delivery it made stands.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from pymongo import ReturnDocument

from inmail.domain.outbox import Attempt, Claimed, OutboxEvent
from inmail.repositories.mongo import OUTBOX_PENDING, Doc, Mongo, TransactionSession

PENDING: Final = OUTBOX_PENDING
DELIVERED: Final = "DELIVERED"
FAILED: Final = "FAILED"

CUT_SHORT: Final = (
    "no outcome recorded: the lease lapsed before its worker recorded one (it stopped, or could "
    "not write)"
)

RETENTION: Final = timedelta(days=30)
"""How long an event is kept after it was written, whatever became of it."""


def _attempt_to_doc(attempt: Attempt) -> Doc:
    return {
        "at": attempt.at,
        "statusCode": attempt.status_code,
        "error": attempt.error,
        "durationMs": attempt.duration_ms,
    }


def _if(condition: Doc, then: object, field: str) -> Doc:
    """An update pipeline's value for `field`: `then` where `condition` holds, else the field as
    it is (still missing if it was)."""
    return {"$cond": [condition, then, f"${field}"]}


def _cut_short_appended(began: object, keep: int) -> Doc:
    """`attempts` with the lapsed lease's attempt added (begun at `began`), the `keep` latest."""
    entry = {
        "at": began,
        "statusCode": None,
        "error": CUT_SHORT,
        "durationMs": None,
        "token": "$leaseToken",
    }
    return {"$slice": [{"$concatArrays": [{"$ifNull": ["$attempts", []]}, [entry]]}, -keep]}


def _event_from_doc(doc: Doc) -> OutboxEvent:
    return OutboxEvent(
        id=doc["_id"],
        kind=doc["kind"],
        member_id=doc["memberId"],
        at=doc["at"],
        data=doc.get("data") or {},
    )


class OutboxRepository:
    """The outbox as a transaction sees it: events are only ever added there."""

    def __init__(self, mongo: Mongo, session: TransactionSession) -> None:
        self._mongo = mongo
        self._session = session.driver
        self._c = mongo.c.webhook_outbox

    async def add(self, event: OutboxEvent) -> None:
        """Enqueue `event` in this transaction; due at once (at `event.at`)."""
        await self.add_all([event])

    async def add_all(self, events: Sequence[OutboxEvent]) -> None:
        """Enqueue `events` in this transaction, in one round trip; each due at once."""
        # Real time: the TTL monitor compares with the server's own clock.
        purge_at = datetime.now(UTC) + RETENTION
        await self._mongo.insert_all(
            self._c,
            [
                {
                    "_id": event.id,
                    "kind": event.kind,
                    "memberId": event.member_id,
                    "at": event.at,
                    "data": dict(event.data),
                    "status": PENDING,
                    "dueAt": event.at,
                    "attemptCount": 0,
                    "attempts": [],
                    "leaseOwner": None,
                    "leaseToken": None,
                    "leaseUntil": None,
                    "purgeAt": purge_at,
                }
                for event in events
            ],
            self._session,
        )


class OutboxStore:
    """The delivery worker's side of the outbox: claim a due event, record how it went."""

    def __init__(self, mongo: Mongo) -> None:
        self._c = mongo.c.webhook_outbox

    async def claim(self, owner: str, now: datetime, lease: timedelta, keep: int) -> Claimed | None:
        """Lease the earliest event due by `now` (service time) that nobody holds; None if none.

        One atomic update on one document: of several workers only one gets a given event while
        its lease (`lease`, database time) runs. A lapsed lease that was never released is an
        attempt cut short, recorded here (`keep` as in `finish`) and counted with the others.
        """
        token = uuid.uuid4().hex
        lease_ms = int(lease.total_seconds() * 1000)
        cut_short = {"$ne": [{"$ifNull": ["$leaseToken", None]}, None]}
        began = {"$ifNull": ["$leaseTakenAt", {"$literal": now}]}
        doc = await self._c.find_one_and_update(
            {
                "status": PENDING,
                "dueAt": {"$lte": now},
                # Never leased, released (null) or lapsed: null and missing sort before dates.
                "$expr": {"$lte": ["$leaseUntil", "$$NOW"]},
            },
            [
                {
                    "$set": {
                        "attempts": _if(cut_short, _cut_short_appended(began, keep), "attempts"),
                        "attemptCount": _if(
                            cut_short,
                            {"$add": [{"$ifNull": ["$attemptCount", 0]}, 1]},
                            "attemptCount",
                        ),
                        "firstAttemptAt": _if(
                            cut_short,
                            {"$min": [{"$ifNull": ["$firstAttemptAt", began]}, began]},
                            "firstAttemptAt",
                        ),
                    }
                },
                {
                    "$set": {
                        "leaseOwner": {"$literal": owner},
                        "leaseToken": {"$literal": token},
                        "leaseUntil": {"$add": ["$$NOW", lease_ms]},
                        "leaseTakenAt": {"$literal": now},
                    }
                },
            ],
            sort=[("dueAt", 1)],
            projection={"attempts": 0},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        return Claimed(
            _event_from_doc(doc),
            token,
            int(doc.get("attemptCount", 0)),
            doc.get("firstAttemptAt"),
        )

    async def next_due_after(self, after: datetime) -> datetime | None:
        """When the earliest pending event due after `after` (service time) falls due."""
        doc = await self._c.find_one(
            {"status": PENDING, "dueAt": {"$gt": after}},
            {"dueAt": 1},
            sort=[("dueAt", 1)],
        )
        return None if doc is None else doc["dueAt"]

    async def finish(
        self, claimed: Claimed, attempt: Attempt, *, retry_at: datetime | None, keep: int
    ) -> bool:
        """Record `attempt` and release the lease: delivered, due again at `retry_at`, or FAILED
        (not delivered and no `retry_at`); an event a worker whose lease had lapsed delivered
        meanwhile stays delivered. False when the lease was lost meanwhile: the attempt is
        recorded all the same (in its cut-short entry's place), and a delivery still marks the
        event delivered.

        The document keeps the `keep` latest attempts (`attemptCount` counts them all): given
        more than the retry schedule can make, that is every one, and the document stays
        bounded even so."""
        entry = _attempt_to_doc(attempt)
        pushed: Doc = {"attempts": {"$each": [entry], "$slice": -keep}}
        record: Doc = {
            "$push": pushed,
            "$inc": {"attemptCount": 1},
            "$min": {"firstAttemptAt": attempt.at},
        }
        if attempt.delivered:
            outcome: Doc = {"status": DELIVERED, "deliveredAt": attempt.at}
        elif retry_at is not None:
            outcome = {"dueAt": retry_at}
        else:
            outcome = {"status": FAILED, "failedAt": attempt.at}
        released = {
            "leaseOwner": None,
            "leaseToken": None,
            "leaseUntil": None,
            "leaseTakenAt": None,
        }
        held = {"_id": claimed.event.id, "leaseToken": claimed.token}
        result = await self._c.update_one(
            {**held, "status": PENDING}, {**record, "$set": {**outcome, **released}}
        )
        if result.matched_count:
            return True
        result = await self._c.update_one(held, {**record, "$set": released})  # delivered by now
        if result.matched_count:
            return True
        # Another worker holds the event now; leave its lease and schedule alone. Its claim
        # recorded and counted this attempt as cut short: what it saw takes that entry's place,
        # or, the entry being older than the `keep` latest, comes after them.
        seen = await self._c.update_one(
            {"_id": claimed.event.id, "attempts.token": claimed.token},
            {"$set": {"attempts.$": entry}},
        )
        if not seen.matched_count:
            await self._c.update_one({"_id": claimed.event.id}, {"$push": pushed})
        if attempt.delivered:
            await self._c.update_one(
                {"_id": claimed.event.id, "status": PENDING}, {"$set": outcome}
            )
        return False
