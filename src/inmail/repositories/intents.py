"""Payment intents in our database, recorded before the card is charged (`domain/intents.py`
says what an intent is, and how its status moves).

An intent is stored under a unique (member, key) index, so another request under the same key is
refused before any charge. Its status moves only by conditional updates, each from the statuses
it may move from.

An intent given up as never charged (DECLINED, ABANDONED) keeps a `recheckAt`: reconciliation asks
the gateway again then, and again every few minutes for a while, for a charge that an attempt
still under way made after the intent was given up.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from inmail.domain.intents import (
    GIVEN_UP,
    OPEN_STATUSES,
    UNDER_WAY,
    IntentKind,
    IntentStatus,
    PaymentIntent,
)
from inmail.domain.keyed import KeyedOutcome, KeyedRefusal
from inmail.domain.money import Money
from inmail.domain.plans import PlanType
from inmail.repositories.collection import RecordReader
from inmail.repositories.mongo import Doc, Mongo, Session, TransactionSession
from inmail.repositories.pages import after_key
from inmail.repositories.records import refusal_from_doc, refusal_to_doc


def _to_doc(intent: PaymentIntent) -> Doc:
    doc: Doc = {
        "_id": intent.id,
        "memberId": intent.member_id,
        "key": intent.key,
        "kind": intent.kind,
        "requestHash": intent.request_hash,
        "amount": intent.amount.to_doc(),
        "createdAt": intent.created_at,
        "status": intent.status,
        "quantity": intent.quantity,
        "plan": intent.plan.value if intent.plan else None,
        "chargeId": intent.charge_id,
    }
    if intent.terms is not None:
        doc["terms"] = intent.terms
    return doc


def _outcome_doc(outcome: KeyedOutcome) -> Doc:
    return {"subjectId": outcome.subject_id, "creditsLeft": outcome.credits_left}


def intent_from_doc(doc: Doc) -> PaymentIntent:
    outcome, refusal = doc.get("outcome"), doc.get("refusal")
    status = IntentStatus(doc["status"])
    return PaymentIntent(
        id=doc["_id"],
        member_id=doc["memberId"],
        key=doc["key"],
        kind=IntentKind(doc["kind"]),
        request_hash=doc["requestHash"],
        amount=Money.from_doc(doc["amount"]),
        created_at=doc["createdAt"],
        status=status,
        quantity=doc.get("quantity"),
        plan=PlanType(doc["plan"]) if doc.get("plan") else None,
        charge_id=doc.get("chargeId"),
        outcome=(
            KeyedOutcome(outcome.get("subjectId"), int(outcome["creditsLeft"])) if outcome else None
        ),
        refusal=refusal_from_doc(refusal) if refusal else None,
        terms=doc.get("terms"),
        recheck_at=doc.get("recheckAt"),
        given_up_at=doc.get(_REACHED_AT[status]) if status in GIVEN_UP else None,
    )


_REACHED_AT: Final = {
    IntentStatus.PENDING: "atPending",
    IntentStatus.CHARGED: "atCharged",
    IntentStatus.COMPLETED: "atCompleted",
    IntentStatus.DECLINED: "atDeclined",
    IntentStatus.ABANDONED: "atAbandoned",
    IntentStatus.REFUNDING: "atRefunding",
    IntentStatus.REFUNDED: "atRefunded",
}
"""The field that records when an intent last reached each status."""


_OPEN_BY_AGE: Final = (("createdAt", 1), ("_id", 1))  # index open_by_age, after the status
_BY_RECHECK: Final = (("recheckAt", 1), ("_id", 1))  # index abandoned_recheck
_TO_RECHECK: Final = {"recheckAt": {"$exists": True}}  # its partial filter


class PaymentIntentReader(RecordReader[PaymentIntent]):
    def __init__(self, mongo: Mongo, session: Session) -> None:
        super().__init__(mongo, session, mongo.c.payment_intents, intent_from_doc)

    async def find(self, member_id: str, key: str) -> PaymentIntent | None:
        doc = await self._c.find_one({"memberId": member_id, "key": key}, session=self._session)
        return intent_from_doc(doc) if doc else None

    async def open_created_by(
        self, before: datetime, *, after: tuple[datetime, str] | None, limit: int
    ) -> list[PaymentIntent]:
        """Open intents created at or before `before`, in (createdAt, _id) order, after a key."""
        open_by_then = {"status": {"$in": list(OPEN_STATUSES)}, "createdAt": {"$lte": before}}
        cursor = (
            self._c.find(after_key(open_by_then, _OPEN_BY_AGE, after), session=self._session)
            .sort(list(_OPEN_BY_AGE))
            .limit(limit)
        )
        return [intent_from_doc(doc) async for doc in cursor]

    async def rechecks_due(
        self, now: datetime, *, after: tuple[datetime, str] | None, limit: int
    ) -> list[PaymentIntent]:
        """Intents given up whose last look at the gateway is due by `now`, in (recheckAt, _id)
        order, after a key."""
        due = {**_TO_RECHECK, "recheckAt": {"$lte": now}}
        cursor = (
            self._c.find(after_key(due, _BY_RECHECK, after), session=self._session)
            .sort(list(_BY_RECHECK))
            .limit(limit)
        )
        return [intent_from_doc(doc) async for doc in cursor]

    async def next_recheck_at(self, after: datetime | None) -> datetime | None:
        """The first recheck due after `after` (the first of all for None)."""
        query: dict[str, object] = dict(_TO_RECHECK)
        if after is not None:
            query["recheckAt"] = {"$gt": after}
        doc = await self._c.find_one(
            query, {"recheckAt": 1}, sort=list(_BY_RECHECK), session=self._session
        )
        return doc["recheckAt"] if doc else None

    async def oldest_open_created_at(self, after: datetime | None = None) -> datetime | None:
        query: dict[str, object] = {"status": {"$in": list(OPEN_STATUSES)}}
        if after is not None:
            query["createdAt"] = {"$gt": after}
        doc = await self._c.find_one(
            query, {"createdAt": 1}, sort=[("createdAt", 1)], session=self._session
        )
        return doc["createdAt"] if doc else None

    async def plan_change_since(
        self, member_id: str, after: datetime, statuses: Sequence[str]
    ) -> bool:
        """Whether a change of the member's plan recorded after `after` is in one of `statuses`
        (UNDER_WAY: it may still be charged or applied)."""
        since = {
            "memberId": member_id,
            "kind": IntentKind.PLAN_CHANGE,
            "status": {"$in": list(statuses)},
            "createdAt": {"$gt": after},
        }
        return await self._c.find_one(since, {"_id": 1}, session=self._session) is not None

    async def credits_on_order(self, member_id: str) -> int:
        """The credits the member's open purchases may still grant: recorded or charged,
        neither granted nor refunded yet."""
        on_order = {
            "memberId": member_id,
            "kind": IntentKind.PURCHASE,
            "status": {"$in": list(UNDER_WAY)},
        }
        cursor = self._c.find(on_order, {"quantity": 1}, session=self._session)
        quantities = [int(doc.get("quantity") or 0) async for doc in cursor]
        return sum(quantities)


class PaymentIntentRepository(PaymentIntentReader):
    """Payment intents inside a transaction: every write here is part of it."""

    def __init__(self, mongo: Mongo, session: TransactionSession) -> None:
        super().__init__(mongo, session.driver)

    async def insert(self, intent: PaymentIntent) -> None:
        await self._c.insert_one(_to_doc(intent), session=self._session)

    async def move(
        self,
        intent_id: str,
        from_statuses: Sequence[IntentStatus],
        to_status: IntentStatus,
        at: datetime,
        *,
        charge_id: str | None = None,
        outcome: KeyedOutcome | None = None,
        refusal: KeyedRefusal | None = None,
        recheck_at: datetime | None = None,
    ) -> bool:
        """Move the intent to `to_status` if it is in one of `from_statuses`; False if not. Its
        recheck is set to `recheck_at`, or gone."""
        changes: Doc = {"status": to_status.value, _REACHED_AT[to_status]: at}
        if charge_id is not None:
            changes["chargeId"] = charge_id
        if outcome is not None:
            changes["outcome"] = _outcome_doc(outcome)
        if refusal is not None:
            changes["refusal"] = refusal_to_doc(refusal)
        update: Doc = {"$set": changes}
        if recheck_at is not None:
            changes["recheckAt"] = recheck_at
        else:
            update["$unset"] = {"recheckAt": ""}
        result = await self._c.update_one(
            {"_id": intent_id, "status": {"$in": list(from_statuses)}},
            update,
            session=self._session,
        )
        return result.matched_count == 1

    async def recheck_next(self, intent_id: str, at: datetime | None) -> None:
        """The next look at the gateway for an intent given up, at `at` (if it is still given
        up); None: no more (whatever its status)."""
        if at is None:
            await self._c.update_one(
                {"_id": intent_id}, {"$unset": {"recheckAt": ""}}, session=self._session
            )
            return
        await self._c.update_one(
            {"_id": intent_id, "status": {"$in": list(GIVEN_UP)}},
            {"$set": {"recheckAt": at}},
            session=self._session,
        )
