"""Credit lots: each grant's quantity, what is left of it, and until when it can be spent."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

from inmail.domain.credits import (
    LAPSED,
    SPENDABLE,
    CreditLot,
    CreditSource,
    LapsedKey,
    LapsedMember,
    LotFilter,
    LotRule,
    LotStatus,
)
from inmail.domain.pages import Page
from inmail.repositories.collection import RecordReader
from inmail.repositories.mongo import Doc, Mongo, Session, TransactionSession
from inmail.repositories.pages import after_key

NEWEST_FIRST = (("grantedAt", -1), ("_id", -1))
_LAPSED_ORDER: Final = (("expiresAt", 1), ("_id", 1))


def lot_from_doc(doc: Doc) -> CreditLot:
    return CreditLot(
        id=doc["_id"],
        member_id=doc["memberId"],
        source=CreditSource(doc["source"]),
        quantity=doc["quantity"],
        remaining=doc["remaining"],
        granted_at=doc["grantedAt"],
        expires_at=doc["expiresAt"],
        status=LotStatus(doc["status"]),
        conversation_id=doc.get("conversationId"),
        purchase_id=doc.get("purchaseId"),
    )


def lot_to_doc(lot: CreditLot) -> Doc:
    return {
        "_id": lot.id,
        "memberId": lot.member_id,
        "source": lot.source.value,
        "quantity": lot.quantity,
        "remaining": lot.remaining,
        "grantedAt": lot.granted_at,
        "expiresAt": lot.expires_at,
        "status": lot.status.value,
        **({"conversationId": lot.conversation_id} if lot.conversation_id else {}),
        **({"purchaseId": lot.purchase_id} if lot.purchase_id else {}),
    }


def matching(rule: LotRule, now: Doc) -> Doc:
    """The database's form of a domain `LotRule`, with `now` as a condition on expiresAt (a
    window of expiry times, for a lot the rule counts now and that expires within it)."""
    return {"status": rule.status.value, "remaining": {"$gt": 0}, "expiresAt": now}


def matching_at(rule: LotRule, now: datetime) -> Doc:
    """The database's form of a domain `LotRule` at the instant `now`."""
    return matching(rule, {"$lte": now} if rule.past_expiry else {"$gt": now})


def active_of(member_ids: Iterable[str] | None) -> Doc:
    """The query for these members' ACTIVE lots (the `member_spendable` index's prefix); for
    None, of any member (for a join on memberId)."""
    query: Doc = {"status": LotStatus.ACTIVE.value}
    if member_ids is not None:
        query["memberId"] = {"$in": list(member_ids)}
    return query


class CreditLotReader(RecordReader[CreditLot]):
    """Credit lots as read outside a transaction, or inside one (then from its snapshot)."""

    def __init__(self, mongo: Mongo, session: Session) -> None:
        super().__init__(mongo, session, mongo.c.credit_lots, lot_from_doc)

    async def active_for(self, member_id: str) -> list[CreditLot]:
        docs = await self._mongo.find_all(
            self._c,
            {"memberId": member_id, "status": LotStatus.ACTIVE.value},
            session=self._session,
        )
        return [lot_from_doc(doc) for doc in docs]

    async def active_for_many(self, member_ids: Sequence[str]) -> dict[str, list[CreditLot]]:
        """Every ACTIVE lot of these members, in one query, by member."""
        found: dict[str, list[CreditLot]] = {member_id: [] for member_id in member_ids}
        if not found:
            return found
        docs = await self._mongo.find_all(self._c, active_of(found), session=self._session)
        for doc in docs:
            found[doc["memberId"]].append(lot_from_doc(doc))
        return found

    async def balances(self, member_ids: Sequence[str], now: datetime) -> dict[str, int]:
        """Credits spendable now, by member: remaining over the lots `SPENDABLE` counts."""
        rows = await self._mongo.aggregate(
            self._c,
            [
                {"$match": {"memberId": {"$in": list(member_ids)}, **matching_at(SPENDABLE, now)}},
                {"$group": {"_id": "$memberId", "balance": {"$sum": "$remaining"}}},
            ],
            self._session,
        )
        found = {row["_id"]: int(row["balance"]) for row in rows}
        return {member_id: found.get(member_id, 0) for member_id in member_ids}

    async def page(self, which: LotFilter, first: int, after: str | None) -> Page[CreditLot]:
        return await self._page(
            self._query(which), NEWEST_FIRST, first, after, owner=which.member_id
        )

    @staticmethod
    def _query(which: LotFilter) -> Doc:
        query: Doc = {"memberId": which.member_id}
        statuses, now = which.statuses, which.now
        if statuses is None:
            return query
        query["status"] = {"$in": [s.value for s in statuses]}
        # A lapsed lot is still stored ACTIVE until the expiry job writes it, but reads EXPIRED.
        if now is None or (LotStatus.ACTIVE in statuses) == (LotStatus.EXPIRED in statuses):
            return query
        lapsed = matching_at(LAPSED, now)
        if LotStatus.ACTIVE in statuses:
            return {**query, "$nor": [lapsed]}
        return {"memberId": which.member_id, "$or": [{"status": query["status"]}, lapsed]}

    async def lapsed_members(
        self, now: datetime, *, after: LapsedKey | None, limit: int
    ) -> list[LapsedMember]:
        """Up to `limit` members holding lots `LAPSED` by `now`, as their lots lapsed (each
        member once), walking those lots in (expiresAt, _id) order after `after`.

        Walks the index lapsed_keyset, which holds the lapsed lots together: a batch reads the
        lots of the members it returns, and one more.
        """
        query = after_key(matching_at(LAPSED, now), _LAPSED_ORDER, after)
        cursor = self._c.find(query, {"memberId": 1, "expiresAt": 1}, session=self._session)
        cursor = self._mongo.hinted(cursor.sort(list(_LAPSED_ORDER)), "lapsed_keyset")
        members: dict[str, None] = {}
        walked: LapsedKey | None = None
        async for doc in cursor.batch_size(max(limit, 2)):
            if doc["memberId"] not in members:
                if len(members) == limit:
                    break
                members[doc["memberId"]] = None
            walked = (doc["expiresAt"], doc["_id"])
        await cursor.close()
        if walked is None:
            return []
        return [LapsedMember(member_id, walked) for member_id in members]

    async def next_expiry_at(self, after: datetime | None = None) -> datetime | None:
        """The earliest instant a lot becomes `LAPSED` (strictly after `after`, if given)."""
        when: Doc = {"$gt": after} if after is not None else {"$type": "date"}
        docs = await self._mongo.find_all(
            self._c,
            matching(LAPSED, when),
            projection={"_id": 0, "expiresAt": 1},
            sort=[("status", 1), ("expiresAt", 1)],
            limit=1,
            session=self._session,
        )
        return docs[0]["expiresAt"] if docs else None


class CreditLotRepository(CreditLotReader):
    """Credit lots inside a transaction: every write here is part of it."""

    def __init__(self, mongo: Mongo, session: TransactionSession) -> None:
        super().__init__(mongo, session.driver)

    async def write(self, created: Sequence[CreditLot], updated: Sequence[CreditLot]) -> None:
        await self._mongo.insert_all(self._c, [lot_to_doc(lot) for lot in created], self._session)
        await self._mongo.update_each(
            self._c,
            [
                (
                    {"_id": lot.id},
                    {"$set": {"remaining": lot.remaining, "status": lot.status.value}},
                )
                for lot in updated
            ],
            self._session,
        )
