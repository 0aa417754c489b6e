"""Members: profile, plan, subscription, payment method and connections, in one document."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pymongo import UpdateOne

from inmail.domain.billing import PaymentMethod
from inmail.domain.model import Member, Subscription, SubscriptionStatus
from inmail.domain.plans import PlanType
from inmail.repositories.mongo import Doc, Mongo, Session


class StaleMember(RuntimeError):
    """The member changed since it was read in this transaction: retry the transaction."""


def _card_to_doc(card: PaymentMethod | None) -> Doc | None:
    if card is None:
        return None
    return {
        "brand": card.brand,
        "last4": card.last4,
        "expMonth": card.exp_month,
        "expYear": card.exp_year,
    }


def _card_from_doc(doc: Doc | None) -> PaymentMethod | None:
    if not doc:
        return None
    return PaymentMethod(
        brand=doc["brand"], last4=doc["last4"], exp_month=doc["expMonth"], exp_year=doc["expYear"]
    )


def subscription_to_doc(sub: Subscription | None) -> Doc | None:
    if sub is None:
        return None
    return {
        "id": sub.id,
        "plan": sub.plan.value,
        "status": sub.status.value,
        "billingDay": sub.billing_day,
        "startedAt": sub.started_at,
        "periodStart": sub.period_start,
        "nextRenewalAt": sub.next_renewal_at,
        "monthlyAllotment": sub.monthly_allotment,
    }


def _subscription_from_doc(doc: Doc | None) -> Subscription | None:
    if not doc:
        return None
    return Subscription(
        id=doc["id"],
        plan=PlanType(doc["plan"]),
        status=SubscriptionStatus(doc["status"]),
        billing_day=doc["billingDay"],
        started_at=doc["startedAt"],
        period_start=doc["periodStart"],
        next_renewal_at=doc.get("nextRenewalAt"),
        monthly_allotment=doc.get("monthlyAllotment"),
    )


def member_from_doc(doc: Doc) -> Member:
    return Member(
        id=doc["_id"],
        name=doc["name"],
        headline=doc.get("headline"),
        plan=PlanType(doc["plan"]),
        created_at=doc["createdAt"],
        subscription=_subscription_from_doc(doc.get("subscription")),
        payment_method=_card_from_doc(doc.get("paymentMethod")),
        connections=frozenset(doc.get("connections", ())),
        ledger_seq=doc.get("ledgerSeq", 0),
    )


def member_to_doc(member: Member) -> Doc:
    return {
        "_id": member.id,
        "name": member.name,
        "headline": member.headline,
        "plan": member.plan.value,
        "createdAt": member.created_at,
        "subscription": subscription_to_doc(member.subscription),
        "paymentMethod": _card_to_doc(member.payment_method),
        "connections": sorted(member.connections),
        "ledgerSeq": member.ledger_seq,
    }


class MemberRepository:
    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo
        self._c = mongo.c.members

    async def get(self, member_id: str, session: Session = None) -> Member | None:
        doc = await self._c.find_one({"_id": member_id}, session=session)
        return member_from_doc(doc) if doc else None

    async def get_many(self, ids: Iterable[str], session: Session = None) -> dict[str, Member]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        docs = await self._mongo.find_all(self._c, {"_id": {"$in": wanted}}, session=session)
        return {doc["_id"]: member_from_doc(doc) for doc in docs}

    async def insert(self, member: Member, session: Session = None) -> None:
        await self._c.insert_one(member_to_doc(member), session=session)

    async def commit(
        self,
        member: Member,
        *,
        new_seq: int,
        session: Session,
        changes: dict[str, Any] | None = None,
    ) -> None:
        """Write a member's new ledger position (and other changes), only if nobody else did.

        Every change to a member's credits passes here first, so two transactions on one member
        conflict and one of them is retried: the ledger's order is the commit order.
        """
        update: Doc = {"$set": {"ledgerSeq": new_seq, **(changes or {})}, "$inc": {"rev": 1}}
        result = await self._c.update_one(
            {"_id": member.id, "ledgerSeq": member.ledger_seq}, update, session=session
        )
        if result.matched_count != 1:
            raise StaleMember(member.id)

    async def set_payment_method(
        self, member_id: str, card: PaymentMethod, session: Session = None
    ) -> None:
        await self._c.update_one(
            {"_id": member_id}, {"$set": {"paymentMethod": _card_to_doc(card)}}, session=session
        )

    async def connect(self, a: str, b: str, session: Session = None) -> None:
        """Each member in the other's connections: both writes in one round trip."""
        ops = [
            UpdateOne({"_id": a}, {"$addToSet": {"connections": b}}),
            UpdateOne({"_id": b}, {"$addToSet": {"connections": a}}),
        ]
        if self._mongo.in_memory:  # mongomock's bulk_write fails on updates
            for op in ops:
                await self._c.update_one(op._filter, op._doc, session=session)
        else:
            await self._c.bulk_write(ops, ordered=True, session=session)

    async def due_ids_for_renewal(
        self, now: datetime, *, after_id: str | None, limit: int
    ) -> list[str]:
        """Ids of members with a cycle due by `now`, in _id order after `after_id`."""
        query: Doc = {"subscription.status": "ACTIVE", "subscription.nextRenewalAt": {"$lte": now}}
        if after_id is not None:
            query["_id"] = {"$gt": after_id}
        docs = await self._mongo.find_all(
            self._c, query, projection={"_id": 1}, sort=[("_id", 1)], limit=limit
        )
        return [doc["_id"] for doc in docs]

    async def next_renewal_at(self, after: datetime | None = None) -> datetime | None:
        """The earliest cycle start still to be granted (strictly after `after`, if given)."""
        when: Doc = {"$gt": after} if after is not None else {"$type": "date"}
        docs = await self._mongo.find_all(
            self._c,
            {"subscription.status": "ACTIVE", "subscription.nextRenewalAt": when},
            projection={"_id": 0, "subscription.nextRenewalAt": 1},
            sort=[("subscription.status", 1), ("subscription.nextRenewalAt", 1)],
            limit=1,
        )
        return docs[0]["subscription"]["nextRenewalAt"] if docs else None

    async def commit_many(
        self, commits: Sequence[tuple[Member, int, dict[str, Any]]], session: Session
    ) -> None:
        """`commit` for many members in one round trip: (member as read, new seq, changes)."""
        if not commits:
            return
        ops = [
            UpdateOne(
                {"_id": member.id, "ledgerSeq": member.ledger_seq},
                {"$set": {"ledgerSeq": new_seq, **changes}, "$inc": {"rev": 1}},
            )
            for member, new_seq, changes in commits
        ]
        if self._mongo.in_memory:  # mongomock's bulk_write fails on updates
            matched = 0
            for op in ops:
                result = await self._c.update_one(op._filter, op._doc, session=session)
                matched += result.matched_count
        else:
            matched = (await self._c.bulk_write(ops, ordered=True, session=session)).matched_count
        if matched != len(ops):
            raise StaleMember(f"{len(ops) - matched} of {len(ops)} members moved")
