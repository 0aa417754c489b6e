"""Credit lots: each grant's quantity, what is left of it, and until when it can be spent."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from pymongo import UpdateOne

from inmail.domain.credits import CreditLot, CreditSource, LotStatus
from inmail.repositories.mongo import Doc, Mongo, Session
from inmail.repositories.pages import Page, keyset_page

NEWEST_FIRST = (("grantedAt", -1), ("_id", -1))


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
    }


class CreditLotRepository:
    def __init__(self, mongo: Mongo) -> None:
        self._mongo = mongo
        self._c = mongo.c.credit_lots

    async def active_for(self, member_id: str, session: Session = None) -> list[CreditLot]:
        docs = await self._mongo.find_all(
            self._c, {"memberId": member_id, "status": LotStatus.ACTIVE.value}, session=session
        )
        return [lot_from_doc(doc) for doc in docs]

    async def all_for(self, member_id: str) -> list[CreditLot]:
        """Every lot the member was ever granted, whatever its status (for audits)."""
        docs = await self._mongo.find_all(self._c, {"memberId": member_id}, sort=[("_id", 1)])
        return [lot_from_doc(doc) for doc in docs]

    async def write(
        self, created: Sequence[CreditLot], updated: Sequence[CreditLot], session: Session
    ) -> None:
        if created:
            await self._c.insert_many([lot_to_doc(lot) for lot in created], session=session)
        if updated:
            ops = [
                UpdateOne(
                    {"_id": lot.id},
                    {"$set": {"remaining": lot.remaining, "status": lot.status.value}},
                )
                for lot in updated
            ]
            if self._mongo.in_memory:  # mongomock's bulk_write fails on updates
                for op in ops:
                    await self._c.update_one(op._filter, op._doc, session=session)
            else:
                await self._c.bulk_write(ops, ordered=True, session=session)

    async def get_many(self, ids: Iterable[str]) -> dict[str, CreditLot]:
        wanted = list(dict.fromkeys(ids))
        docs = await self._mongo.find_all(self._c, {"_id": {"$in": wanted}}) if wanted else []
        return {doc["_id"]: lot_from_doc(doc) for doc in docs}

    async def balances(self, member_ids: Sequence[str], now: datetime) -> dict[str, int]:
        """Credits spendable now: remaining over ACTIVE lots not past expiresAt (SPEC 3)."""
        rows = await self._mongo.aggregate(
            self._c,
            [
                {
                    "$match": {
                        "memberId": {"$in": list(member_ids)},
                        "status": "ACTIVE",
                        "expiresAt": {"$gt": now},
                    }
                },
                {"$group": {"_id": "$memberId", "balance": {"$sum": "$remaining"}}},
            ],
        )
        found = {row["_id"]: int(row["balance"]) for row in rows}
        return {member_id: found.get(member_id, 0) for member_id in member_ids}

    async def page(
        self,
        member_id: str,
        statuses: Sequence[LotStatus] | None,
        first: int,
        after: str | None,
    ) -> Page[CreditLot]:
        query = self._query(member_id, statuses)
        page = await keyset_page(self._mongo, self._c, query, NEWEST_FIRST, first, after)
        return Page([(c, lot_from_doc(d)) for c, d in page.items], page.has_next)

    async def count(self, member_id: str, statuses: Sequence[LotStatus] | None) -> int:
        return await self._c.count_documents(self._query(member_id, statuses))

    @staticmethod
    def _query(member_id: str, statuses: Sequence[LotStatus] | None) -> Doc:
        query: Doc = {"memberId": member_id}
        if statuses:
            query["status"] = {"$in": [s.value for s in statuses]}
        return query

    async def lapsed(self, now: datetime, *, limit: int) -> list[str]:
        """Members holding ACTIVE lots that are past expiresAt: work for the expiry job."""
        rows = await self._mongo.aggregate(
            self._c,
            [
                {"$match": {"status": "ACTIVE", "expiresAt": {"$lte": now}}},
                {"$group": {"_id": "$memberId"}},
                {"$sort": {"_id": 1}},
                {"$limit": limit},
            ],
        )
        return [row["_id"] for row in rows]

    async def active_for_many(
        self, member_ids: Sequence[str], session: Session = None
    ) -> dict[str, list[CreditLot]]:
        """Every ACTIVE lot of these members, in one query, by member."""
        found: dict[str, list[CreditLot]] = {member_id: [] for member_id in member_ids}
        if not found:
            return found
        docs = await self._mongo.find_all(
            self._c,
            {"memberId": {"$in": list(found)}, "status": LotStatus.ACTIVE.value},
            session=session,
        )
        for doc in docs:
            found[doc["memberId"]].append(lot_from_doc(doc))
        return found

    async def lapsed_member_ids(
        self, now: datetime, *, after_id: str | None, limit: int
    ) -> list[str]:
        """Up to `limit` members holding ACTIVE lots past expiresAt, in id order after `after_id`.

        Walks the (memberId, status, expiresAt) index in member order, so each batch reads about
        as many keys as it returns, however many lots have lapsed in all.
        """
        query: Doc = {"status": LotStatus.ACTIVE.value, "expiresAt": {"$lte": now}}
        query["memberId"] = {"$gt": after_id} if after_id is not None else {"$type": "string"}
        cursor = self._c.find(query, {"_id": 0, "memberId": 1}).sort("memberId", 1)
        if not self._mongo.in_memory:
            cursor = cursor.hint("member_spendable")
        ids: list[str] = []
        async for doc in cursor.batch_size(max(limit, 2)):
            if not ids or ids[-1] != doc["memberId"]:
                if len(ids) == limit:
                    break
                ids.append(doc["memberId"])
        await cursor.close()
        return ids

    async def next_expiry_at(self, after: datetime | None = None) -> datetime | None:
        """The earliest expiresAt of a lot still ACTIVE (strictly after `after`, if given)."""
        when: Doc = {"$gt": after} if after is not None else {"$type": "date"}
        docs = await self._mongo.find_all(
            self._c,
            {"status": LotStatus.ACTIVE.value, "expiresAt": when},
            projection={"_id": 0, "expiresAt": 1},
            sort=[("status", 1), ("expiresAt", 1)],
            limit=1,
        )
        return docs[0]["expiresAt"] if docs else None
