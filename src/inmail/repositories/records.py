"""Idempotency records, purchases, charges of the built-in gateway, and notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ReturnDocument

from inmail.domain.model import Purchase
from inmail.repositories.mongo import Doc, DuplicateKeyError, Mongo, Session, new_id


class IdempotencyRepository:
    """What a request with a client-chosen key did, so that a retry returns it again."""

    def __init__(self, mongo: Mongo) -> None:
        self._c = mongo.c.idempotency

    async def find(self, member_id: str, key: str, session: Session = None) -> Doc | None:
        return await self._c.find_one({"memberId": member_id, "key": key}, session=session)

    async def insert(
        self,
        member_id: str,
        key: str,
        *,
        operation: str,
        request_hash: str,
        result: dict[str, Any],
        at: datetime,
        session: Session,
    ) -> None:
        await self._c.insert_one(
            {
                "_id": new_id(),
                "memberId": member_id,
                "key": key,
                "operation": operation,
                "requestHash": request_hash,
                "result": result,
                "at": at,
            },
            session=session,
        )

    async def hold(
        self,
        member_id: str,
        key: str,
        *,
        operation: str,
        request_hash: str,
        refusal: dict[str, Any],
        at: datetime,
    ) -> bool:
        """Take the key while a refused request undoes its side effects; False if it is taken.

        Until `release`, a retry under the key is given `refusal` again instead of running.
        """
        try:
            await self._c.insert_one(
                {
                    "_id": new_id(),
                    "memberId": member_id,
                    "key": key,
                    "operation": operation,
                    "requestHash": request_hash,
                    "refusal": refusal,
                    "at": at,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def release(self, member_id: str, key: str) -> None:
        await self._c.delete_one({"memberId": member_id, "key": key, "refusal": {"$exists": True}})


class PurchaseRepository:
    def __init__(self, mongo: Mongo) -> None:
        self._c = mongo.c.purchases

    async def exists_for_charge(self, charge_id: str) -> bool:
        return await self._c.find_one({"chargeId": charge_id}, {"_id": 1}) is not None

    async def insert(self, purchase: Purchase, session: Session) -> None:
        await self._c.insert_one(
            {
                "_id": purchase.id,
                "memberId": purchase.member_id,
                "quantity": purchase.quantity,
                "chargeId": purchase.charge_id,
                "lotId": purchase.lot_id,
                "at": purchase.at,
                "idempotencyKey": purchase.idempotency_key,
            },
            session=session,
        )


class ChargeRepository:
    """The built-in payment gateway's book of charges: one per (member, idempotency key)."""

    def __init__(self, mongo: Mongo) -> None:
        self._c = mongo.c.charges

    async def charge_once(
        self, member_id: str, key: str, *, quantity: int, card_last4: str, at: datetime
    ) -> Doc:
        doc: Doc = {
            "_id": new_id(),
            "memberId": member_id,
            "idempotencyKey": key,
            "quantity": quantity,
            "cardLast4": card_last4,
            "at": at,
            "status": "SUCCEEDED",
        }
        try:
            await self._c.insert_one(doc)
        except DuplicateKeyError:
            # A purchase refused after its charge was refunded may be retried under its key once
            # there is room: that is a new charge, not the refunded one again.
            recharged = await self._c.find_one_and_update(
                {"memberId": member_id, "idempotencyKey": key, "status": "REFUNDED"},
                {
                    "$set": {
                        "status": "SUCCEEDED",
                        "quantity": quantity,
                        "cardLast4": card_last4,
                        "at": at,
                    },
                    "$unset": {"refundedAt": ""},
                },
                return_document=ReturnDocument.AFTER,
            )
            if recharged is not None:
                return recharged
            existing = await self._c.find_one({"memberId": member_id, "idempotencyKey": key})
            if existing is None:  # pragma: no cover - the key's owner was just seen
                raise
            return existing
        return doc

    async def standing(self, member_id: str, key: str) -> Doc | None:
        return await self._c.find_one(
            {"memberId": member_id, "idempotencyKey": key, "status": "SUCCEEDED"}
        )

    async def refund(self, charge_id: str, at: datetime) -> None:
        await self._c.update_one(
            {"_id": charge_id, "status": "SUCCEEDED"},
            {"$set": {"status": "REFUNDED", "refundedAt": at}},
        )

    async def count_for(self, member_id: str) -> int:
        return await self._c.count_documents({"memberId": member_id, "status": "SUCCEEDED"})


class NotificationRepository:
    """Notifications for a mail or push system to deliver (an outbox)."""

    def __init__(self, mongo: Mongo) -> None:
        self._c = mongo.c.notifications

    async def add_reminder(
        self, member_id: str, conversation_id: str, at: datetime, session: Session
    ) -> None:
        await self._c.insert_one(
            {
                "_id": new_id(),
                "kind": "INMAIL_REMINDER",
                "memberId": member_id,
                "conversationId": conversation_id,
                "at": at,
                "deliveredAt": None,
            },
            session=session,
        )

    async def for_member(self, member_id: str) -> list[Doc]:
        return [doc async for doc in self._c.find({"memberId": member_id}).sort("at", 1)]
