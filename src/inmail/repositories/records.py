"""Idempotency records, purchases, and charges of the built-in gateway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from pymongo import ReturnDocument

from inmail.domain.errors import ErrorCode
from inmail.domain.model import Purchase
from inmail.repositories.mongo import Doc, DuplicateKeyError, Mongo, Session, new_id


@dataclass(frozen=True, slots=True)
class KeyedOutcome:
    """What a keyed request did: the record it made (an InMail, a lot) and the credits left."""

    subject_id: str | None
    credits_left: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """A keyed request's refusal, given again to a retry while its side effects are undone."""

    code: ErrorCode
    message: str
    field: str | None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    member_id: str
    key: str
    operation: str
    request_hash: str
    at: datetime
    outcome: KeyedOutcome | None = None
    refusal: Refusal | None = None


# Each operation's outcome names its record under its own field, as clients of old saw it.
_SUBJECT_FIELD: Final = {"sendInMail": "conversationId", "purchaseInMailCredits": "lotId"}


def _record_to_doc(record: IdempotencyRecord) -> Doc:
    doc: Doc = {
        "_id": new_id(),
        "memberId": record.member_id,
        "key": record.key,
        "operation": record.operation,
        "requestHash": record.request_hash,
        "at": record.at,
    }
    if record.outcome is not None:
        doc["result"] = {
            _SUBJECT_FIELD.get(record.operation, "subjectId"): record.outcome.subject_id,
            "creditsLeft": record.outcome.credits_left,
        }
    if record.refusal is not None:
        refusal = record.refusal
        doc["refusal"] = {
            "code": refusal.code.value,
            "message": refusal.message,
            "field": refusal.field,
        }
    return doc


def _record_from_doc(doc: Doc) -> IdempotencyRecord:
    result, refusal = doc.get("result"), doc.get("refusal")
    operation = doc["operation"]
    return IdempotencyRecord(
        member_id=doc["memberId"],
        key=doc["key"],
        operation=operation,
        request_hash=doc["requestHash"],
        at=doc["at"],
        outcome=(
            KeyedOutcome(
                result.get(_SUBJECT_FIELD.get(operation, "subjectId")), int(result["creditsLeft"])
            )
            if result is not None
            else None
        ),
        refusal=(
            Refusal(ErrorCode(refusal["code"]), refusal["message"], refusal.get("field"))
            if refusal is not None
            else None
        ),
    )


class IdempotencyReader:
    """What a request with a client-chosen key did, so that a retry returns it again."""

    def __init__(self, mongo: Mongo, session: Session) -> None:
        self._session = session
        self._c = mongo.c.idempotency

    async def find(self, member_id: str, key: str) -> IdempotencyRecord | None:
        doc = await self._c.find_one({"memberId": member_id, "key": key}, session=self._session)
        return _record_from_doc(doc) if doc else None


class IdempotencyRepository(IdempotencyReader):
    async def insert(self, record: IdempotencyRecord) -> None:
        await self._c.insert_one(_record_to_doc(record), session=self._session)

    async def hold(self, record: IdempotencyRecord) -> bool:
        """Take the key with a refusal while the request undoes its side effects; False if taken.

        Until `release`, a retry under the key is given the refusal again instead of running.
        """
        doc = _record_to_doc(record)
        result = await self._c.update_one(
            {"memberId": record.member_id, "key": record.key},
            {"$setOnInsert": doc},
            upsert=True,
            session=self._session,
        )
        return result.upserted_id is not None

    async def release(self, member_id: str, key: str) -> None:
        await self._c.delete_one(
            {"memberId": member_id, "key": key, "refusal": {"$exists": True}},
            session=self._session,
        )


class PurchaseReader:
    def __init__(self, mongo: Mongo, session: Session) -> None:
        self._session = session
        self._c = mongo.c.purchases

    async def exists_for_charge(self, charge_id: str) -> bool:
        found = await self._c.find_one({"chargeId": charge_id}, {"_id": 1}, session=self._session)
        return found is not None


class PurchaseRepository(PurchaseReader):
    async def insert(self, purchase: Purchase) -> None:
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
            session=self._session,
        )


class ChargeStatus:
    SUCCEEDED: Final = "SUCCEEDED"
    REFUNDED: Final = "REFUNDED"


@dataclass(frozen=True, slots=True)
class ChargeRecord:
    id: str
    member_id: str
    idempotency_key: str
    quantity: int
    card_last4: str
    at: datetime
    status: str


def _charge_from_doc(doc: Doc) -> ChargeRecord:
    return ChargeRecord(
        id=doc["_id"],
        member_id=doc["memberId"],
        idempotency_key=doc["idempotencyKey"],
        quantity=doc["quantity"],
        card_last4=doc["cardLast4"],
        at=doc["at"],
        status=doc["status"],
    )


class ChargeRepository:
    """The built-in payment gateway's book of charges: one per (member, idempotency key).

    It stands for a payment provider, which no transaction of ours reaches: its writes are its
    own, each atomic on one document.
    """

    def __init__(self, mongo: Mongo) -> None:
        self._c = mongo.c.charges

    async def charge_once(
        self, member_id: str, key: str, *, quantity: int, card_last4: str, at: datetime
    ) -> ChargeRecord:
        doc: Doc = {
            "_id": new_id(),
            "memberId": member_id,
            "idempotencyKey": key,
            "quantity": quantity,
            "cardLast4": card_last4,
            "at": at,
            "status": ChargeStatus.SUCCEEDED,
        }
        try:
            await self._c.insert_one(doc)
        except DuplicateKeyError:
            # A purchase refused after its charge was refunded may be retried under its key once
            # there is room: that is a new charge, not the refunded one again.
            recharged = await self._c.find_one_and_update(
                {"memberId": member_id, "idempotencyKey": key, "status": ChargeStatus.REFUNDED},
                {
                    "$set": {
                        "status": ChargeStatus.SUCCEEDED,
                        "quantity": quantity,
                        "cardLast4": card_last4,
                        "at": at,
                    },
                    "$unset": {"refundedAt": ""},
                },
                return_document=ReturnDocument.AFTER,
            )
            if recharged is not None:
                return _charge_from_doc(recharged)
            existing = await self._c.find_one({"memberId": member_id, "idempotencyKey": key})
            if existing is None:  # pragma: no cover - the key's owner was just seen
                raise
            return _charge_from_doc(existing)
        return _charge_from_doc(doc)

    async def standing(self, member_id: str, key: str) -> ChargeRecord | None:
        doc = await self._c.find_one(
            {"memberId": member_id, "idempotencyKey": key, "status": ChargeStatus.SUCCEEDED}
        )
        return _charge_from_doc(doc) if doc else None

    async def refund(self, charge_id: str, at: datetime) -> None:
        await self._c.update_one(
            {"_id": charge_id, "status": ChargeStatus.SUCCEEDED},
            {"$set": {"status": ChargeStatus.REFUNDED, "refundedAt": at}},
        )
