"""Members: profile, plan, subscription, payment method and connections, in one document."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

from inmail.domain.billing import PaymentMethod
from inmail.domain.credits import CreditLot
from inmail.domain.keyed import IdempotencyRecord
from inmail.domain.model import (
    RENEWAL_DUE,
    Member,
    RecentSends,
    Subscription,
    SubscriptionStatus,
)
from inmail.domain.plans import PlanType
from inmail.repositories.collection import RecordReader
from inmail.repositories.conversations import awaiting_from
from inmail.repositories.credit_lots import active_of, lot_from_doc
from inmail.repositories.mongo import Collection, Doc, Mongo, Session, TransactionSession
from inmail.repositories.records import record_from_doc


def _changes(read: Member, updated: Member) -> Doc:
    """What a commit writes: the ledger position, plan and subscription, and the latest InMails
    the rate limit counts when a send added one."""
    changes: Doc = {
        "ledgerSeq": updated.ledger_seq,
        "ledgerAt": updated.ledger_at,
        "plan": updated.plan.value,
        "subscription": _subscription_to_doc(updated.subscription),
    }
    if updated.recent_inmails != read.recent_inmails:
        changes["inmailSends"] = list(updated.recent_inmails.times)
    return changes


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


def _subscription_to_doc(sub: Subscription | None) -> Doc | None:
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


_NO_SENDS: Final = RecentSends()


def sends_from_doc(times: list[datetime] | None) -> RecentSends:
    if not times:
        return _NO_SENDS  # most members read: one object for all of them
    return RecentSends(tuple(times))


INMAIL_LOG_FIELDS: Final = {"inmailSends": 1, "inmailWindow": 1}
"""A member document's fields that `recent_inmails_from_doc` reads."""


def recent_inmails_from_doc(doc: Doc) -> RecentSends:
    """`inmailSends`; a member stored before it has `inmailWindow` (a count in the minute that
    starts at `start`), read as that many sends at its start."""
    times = doc.get("inmailSends")
    if times is not None:
        return sends_from_doc(times)
    window = doc.get("inmailWindow") or {}
    start = window.get("start")
    return sends_from_doc([start] * int(window.get("count", 0)) if start else None)


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
        recent_inmails=recent_inmails_from_doc(doc),
        ledger_at=doc.get("ledgerAt"),
    )


def member_to_doc(member: Member) -> Doc:
    return {
        "_id": member.id,
        "name": member.name,
        "headline": member.headline,
        "plan": member.plan.value,
        "createdAt": member.created_at,
        "subscription": _subscription_to_doc(member.subscription),
        "paymentMethod": _card_to_doc(member.payment_method),
        "connections": sorted(member.connections),
        "ledgerSeq": member.ledger_seq,
        "ledgerAt": member.ledger_at,
        "inmailSends": list(member.recent_inmails.times),
    }


class MemberReader(RecordReader[Member]):
    """Members as read outside a transaction, or inside one (then from its snapshot)."""

    def __init__(self, mongo: Mongo, session: Session) -> None:
        super().__init__(mongo, session, mongo.c.members, member_from_doc)

    async def get_many_with_lots(
        self, ids: Iterable[str], own: str
    ) -> tuple[dict[str, Member], list[CreditLot]]:
        """These members and `own`, with `own`'s ACTIVE lots, in one round trip (a member's
        live lots are few: the cap bounds them)."""
        members, lots, _ = await self._with_own_lots(own, ids)
        return members, lots

    async def get_many_with_own_lots_and_awaiting(
        self, ids: Iterable[str], own: str, recipients: Sequence[str]
    ) -> tuple[dict[str, Member], list[CreditLot], set[str]]:
        """These members and `own`, `own`'s ACTIVE lots, and those of `recipients` to whom `own`
        sent an InMail still awaiting a response, in one round trip (what a compose window
        asks)."""
        members, lots, [awaiting] = await self._with_own_lots(
            own, ids, (self._mongo.c.conversations, awaiting_from(own, recipients))
        )
        return members, lots, {doc["recipientId"] for doc in awaiting}

    async def get_sender_and_recipient(
        self, sender_id: str, recipient_id: str, key: str
    ) -> tuple[dict[str, Member], list[CreditLot], IdempotencyRecord | None]:
        """Both members, the sender's ACTIVE lots, and the record another keyed request (a
        purchase, a plan change) keeps under the sender's idempotency key (a send carries its
        own record in its conversation), in one round trip."""
        under_key = {"memberId": sender_id, "key": key}
        members, lots, [records] = await self._with_own_lots(
            sender_id, [recipient_id], (self._mongo.c.idempotency, under_key)
        )
        return members, lots, record_from_doc(records[0]) if records else None

    async def _with_own_lots(
        self, own: str, ids: Iterable[str], *also: tuple[Collection, Doc]
    ) -> tuple[dict[str, Member], list[CreditLot], list[list[Doc]]]:
        """The members, `own`'s ACTIVE lots, and the documents of each of `also`'s (collection,
        query) parts, in one round trip."""
        others = [i for i in dict.fromkeys(ids) if i != own]
        joins = [(self._mongo.c.credit_lots, active_of([own])), *also]
        docs, joined = await self._mongo.find_anchored(self._c, own, others, joins, self._session)
        members = {doc["_id"]: member_from_doc(doc) for doc in docs}
        return members, [lot_from_doc(lot) for lot in joined[0]], joined[1:]

    async def due_ids_for_renewal(
        self, now: datetime, *, after_id: str | None, limit: int
    ) -> list[str]:
        """Ids of members with a cycle due by `now`, in _id order after `after_id`."""
        query = _renewal_due({"$lte": now})
        if after_id is not None:
            query["_id"] = {"$gt": after_id}
        docs = await self._mongo.find_all(
            self._c,
            query,
            projection={"_id": 1},
            sort=[("_id", 1)],
            limit=limit,
            session=self._session,
        )
        return [doc["_id"] for doc in docs]

    async def next_renewal_at(self, after: datetime | None = None) -> datetime | None:
        """The earliest cycle start still to be granted (strictly after `after`, if given)."""
        when: Doc = {"$gt": after} if after is not None else {"$type": "date"}
        docs = await self._mongo.find_all(
            self._c,
            _renewal_due(when),
            projection={"_id": 0, "subscription.nextRenewalAt": 1},
            sort=[("subscription.status", 1), ("subscription.nextRenewalAt", 1)],
            limit=1,
            session=self._session,
        )
        return docs[0]["subscription"]["nextRenewalAt"] if docs else None


def _renewal_due(when: Doc) -> Doc:
    """The database's form of `RENEWAL_DUE`: its status, and a condition on nextRenewalAt."""
    return {"subscription.status": RENEWAL_DUE.status.value, "subscription.nextRenewalAt": when}


class MemberRepository(MemberReader):
    """Members inside a transaction: every write here is part of it."""

    def __init__(self, mongo: Mongo, session: TransactionSession) -> None:
        super().__init__(mongo, session.driver)

    async def insert(self, member: Member) -> None:
        await self._c.insert_one(member_to_doc(member), session=self._session)

    async def write_unless_moved(self, read: Member, updated: Member) -> None:
        """Write a member's new ledger position, plan and subscription, only if nobody else did.

        `read` is the member as this transaction read it, `updated` as it is to be. Every change
        to a member's credits passes here first, so two transactions on one member conflict and
        one of them is retried: the ledger's order is the commit order.
        """
        await self.write_each_unless_moved([(read, updated)])

    async def take_turn(self, member_id: str) -> None:
        """Write nothing of the member but its revision. Any two transactions that write one
        member conflict, and one of them is retried, so each sees what the other wrote beside
        the member: a transaction takes the member's turn to be ordered with its sends, grants
        and purchases."""
        await self._c.update_one({"_id": member_id}, {"$inc": {"rev": 1}}, session=self._session)

    async def write_each_unless_moved(self, commits: Sequence[tuple[Member, Member]]) -> None:
        """`write_unless_moved` for many members in one round trip: (member as read, member as
        updated)."""
        updates = [
            (
                {"_id": read.id, "ledgerSeq": read.ledger_seq},
                {"$set": _changes(read, updated), "$inc": {"rev": 1}},
            )
            for read, updated in commits
        ]
        matched = await self._mongo.update_each(self._c, updates, self._session)
        if matched != len(updates):
            raise StaleMember(f"{len(updates) - matched} of {len(updates)} members moved")

    async def set_payment_method(self, member_id: str, card: PaymentMethod) -> None:
        await self._c.update_one(
            {"_id": member_id},
            {"$set": {"paymentMethod": _card_to_doc(card)}},
            session=self._session,
        )

    async def connect(self, a: str, b: str) -> None:
        """Each member in the other's connections: both writes in one round trip."""
        await self._mongo.update_each(
            self._c,
            [
                ({"_id": a}, {"$addToSet": {"connections": b}}),
                ({"_id": b}, {"$addToSet": {"connections": a}}),
            ],
            self._session,
        )
