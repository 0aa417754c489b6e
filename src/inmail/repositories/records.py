"""Idempotency records, purchases, and charges of the built-in gateway."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final

from inmail.domain.billing import ChargeRecord, ChargeStatus
from inmail.domain.errors import ErrorCode, Reason
from inmail.domain.intents import IntentKind
from inmail.domain.keyed import SEND, IdempotencyRecord, KeyedOutcome, KeyedRefusal
from inmail.domain.model import Purchase, PurchaseStatus
from inmail.domain.money import Money
from inmail.domain.pages import Page
from inmail.domain.plans import DEFAULT_CREDIT_PRICE
from inmail.repositories.collection import RecordReader
from inmail.repositories.mongo import (
    Doc,
    DuplicateKeyError,
    Mongo,
    Session,
    TransactionSession,
    new_id,
)

log = logging.getLogger(__name__)


def refusal_to_doc(refusal: KeyedRefusal) -> Doc:
    return {
        "code": refusal.code.value,
        "reason": refusal.reason.value,
        "field": refusal.field,
        "data": dict(refusal.data),
    }


_NO_INPUT_FIELD: Final = frozenset({"paymentMethod"})
"""Fields that refusals once named though no request has them as an input (the card on file):
a refusal recorded with one is answered with none, as it would be refused today."""


def refusal_from_doc(doc: Doc) -> KeyedRefusal:
    code, field = ErrorCode(doc["code"]), doc.get("field")
    if field in _NO_INPUT_FIELD:
        field = None
    if "reason" not in doc:  # recorded before refusals were stored as reasons: its own words
        return KeyedRefusal(code, Reason.RECORDED, field, {"message": str(doc["message"])})
    return KeyedRefusal(code, Reason(doc["reason"]), field, dict(doc.get("data") or {}))


# Each operation's outcome names its record under its own field, as clients of old saw it.
_SUBJECT_FIELD: Final = {SEND: "conversationId", IntentKind.PURCHASE: "lotId"}


def _key_use_to_doc(record: IdempotencyRecord) -> Doc:
    """The key, the fingerprint of the request made under it, and when: stored alike in an
    idempotency record and under an InMail's `sentUnder`."""
    return {"key": record.key, "requestHash": record.request_hash, "at": record.at}


def _record_of(
    member_id: str,
    operation: str,
    key_use: Doc,
    outcome: KeyedOutcome | None,
    refusal: KeyedRefusal | None = None,
) -> IdempotencyRecord:
    """The record of a key's use as `_key_use_to_doc` stored it."""
    return IdempotencyRecord(
        member_id=member_id,
        key=key_use["key"],
        operation=operation,
        request_hash=key_use["requestHash"],
        at=key_use["at"],
        outcome=outcome,
        refusal=refusal,
        intent_id=key_use.get("intentId"),
    )


def _record_to_doc(record: IdempotencyRecord) -> Doc:
    doc: Doc = {
        "_id": new_id(),
        "memberId": record.member_id,
        "operation": record.operation,
        **_key_use_to_doc(record),
    }
    if record.intent_id is not None:
        doc["intentId"] = record.intent_id
    if record.outcome is not None:
        doc["result"] = {
            _SUBJECT_FIELD.get(record.operation, "subjectId"): record.outcome.subject_id,
            "creditsLeft": record.outcome.credits_left,
        }
    if record.refusal is not None:
        doc["refusal"] = refusal_to_doc(record.refusal)
    return doc


def intent_key_to_doc(
    member_id: str, key: str, operation: str, request_hash: str, at: datetime, intent_id: str
) -> Doc:
    """The record that takes a key for a paid request, written with its payment intent."""
    record = IdempotencyRecord(member_id, key, operation, request_hash, at, intent_id=intent_id)
    return _record_to_doc(record)


def record_from_doc(doc: Doc) -> IdempotencyRecord:
    result, refusal = doc.get("result"), doc.get("refusal")
    operation = doc["operation"]
    return _record_of(
        doc["memberId"],
        operation,
        doc,
        (
            KeyedOutcome(
                result.get(_SUBJECT_FIELD.get(operation, "subjectId")), int(result["creditsLeft"])
            )
            if result is not None
            else None
        ),
        refusal_from_doc(refusal) if refusal is not None else None,
    )


SENT_UNDER: Final = "sentUnder"
"""The field of an InMail's conversation that holds the record of the send under its key: the
conversation's own insert writes it, and the unique index `send_key_once` on (senderId,
sentUnder.key) refuses a second send under the key. Sends written before it have their record
in `idempotency`, like every other keyed operation."""


def sent_under_to_doc(record: IdempotencyRecord) -> Doc:
    assert record.operation == SEND
    assert record.outcome is not None, "a send is recorded once it succeeded"
    return {**_key_use_to_doc(record), "creditsLeft": record.outcome.credits_left}


def _record_from_conversation(doc: Doc) -> IdempotencyRecord:
    held = doc[SENT_UNDER]
    return _record_of(
        doc["senderId"], SEND, held, KeyedOutcome(doc["_id"], int(held["creditsLeft"]))
    )


class IdempotencyReader:
    """What a request with a client-chosen key did, so that a retry returns it again."""

    def __init__(self, mongo: Mongo, session: Session) -> None:
        self._session = session
        self._c = mongo.c.idempotency
        self._sends = mongo.c.conversations

    async def find(self, member_id: str, key: str) -> IdempotencyRecord | None:
        doc = await self._c.find_one({"memberId": member_id, "key": key}, session=self._session)
        if doc is not None:
            return record_from_doc(doc)
        sent = await self._sends.find_one(
            {"senderId": member_id, f"{SENT_UNDER}.key": key},
            {"senderId": 1, SENT_UNDER: 1},
            session=self._session,
        )
        return _record_from_conversation(sent) if sent is not None else None


class IdempotencyRepository(IdempotencyReader):
    """Idempotency records inside a transaction: a key is taken here."""

    def __init__(self, mongo: Mongo, session: TransactionSession) -> None:
        super().__init__(mongo, session.driver)

    async def insert(self, record: IdempotencyRecord) -> None:
        """Take the key (the unique `key_once` index refuses it if it is taken)."""
        await self._c.insert_one(_record_to_doc(record), session=self._session)

    async def fulfil(self, record: IdempotencyRecord) -> None:
        """Write the outcome of a paid request into the record that took its key with its
        intent (written whole if there is none). A record another request keeps under the key
        (which only earlier versions could leave beside an intent) is left as it is: the intent
        still answers the paid request's retries."""
        assert record.outcome is not None
        under_key = {"memberId": record.member_id, "key": record.key}
        held = await self._c.find_one(under_key, {"requestHash": 1}, session=self._session)
        if held is not None and held["requestHash"] != record.request_hash:
            log.warning("member %s: key %r is another request's", record.member_id, record.key)
            return
        doc = _record_to_doc(record)
        result = doc.pop("result")
        await self._c.update_one(
            under_key,
            {"$set": {"result": result}, "$setOnInsert": doc},
            upsert=True,
            session=self._session,
        )


_PURCHASES_NEWEST_FIRST: Final = (("at", -1), ("_id", -1))


def _purchase_from_doc(doc: Doc) -> Purchase:
    amount = doc.get("amount")
    return Purchase(
        id=doc["_id"],
        member_id=doc["memberId"],
        quantity=doc["quantity"],
        charge_id=doc["chargeId"],
        lot_id=doc.get("lotId"),
        at=doc["at"],
        idempotency_key=doc["idempotencyKey"],
        # Purchases recorded before prices existed were charged the default price.
        amount=Money.from_doc(amount) if amount else DEFAULT_CREDIT_PRICE.times(doc["quantity"]),
        status=PurchaseStatus(doc.get("status", PurchaseStatus.COMPLETED)),
    )


class PurchaseReader(RecordReader[Purchase]):
    def __init__(self, mongo: Mongo, session: Session) -> None:
        super().__init__(mongo, session, mongo.c.purchases, _purchase_from_doc)

    async def page(self, member_id: str, first: int, after: str | None) -> Page[Purchase]:
        """A member's purchases, newest first."""
        return await self._page(
            {"memberId": member_id}, _PURCHASES_NEWEST_FIRST, first, after, owner=member_id
        )


class PurchaseRepository(PurchaseReader):
    """Purchases inside a transaction: every write here is part of it."""

    def __init__(self, mongo: Mongo, session: TransactionSession) -> None:
        super().__init__(mongo, session.driver)

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
                "amount": purchase.amount.to_doc(),
                "status": purchase.status.value,
            },
            session=self._session,
        )


def _charge_from_doc(doc: Doc) -> ChargeRecord:
    return ChargeRecord(
        id=doc["_id"],
        member_id=doc["memberId"],
        idempotency_key=doc["idempotencyKey"],
        amount=Money(doc["amount"], doc["currency"]),
        description=doc.get("description", ""),
        card_last4=doc["cardLast4"],
        at=doc["at"],
        status=ChargeStatus(doc["status"]),
        refunded_at=doc.get("refundedAt"),
    )


class ChargeRepository:
    """The built-in payment gateway's book of charges and refunds: one charge per (member,
    idempotency key), which a retry under the key gets again.

    It stands for a payment provider, which no transaction of ours reaches: its writes are its
    own, each atomic on one document.
    """

    def __init__(self, mongo: Mongo) -> None:
        self._c = mongo.c.charges

    async def charge_once(
        self,
        member_id: str,
        key: str,
        *,
        amount: Money,
        description: str,
        card_last4: str,
        at: datetime,
    ) -> ChargeRecord:
        doc: Doc = {
            "_id": new_id(),
            "memberId": member_id,
            "idempotencyKey": key,
            "amount": amount.amount,
            "currency": amount.currency,
            "description": description,
            "cardLast4": card_last4,
            "at": at,
            "status": ChargeStatus.SUCCEEDED,
        }
        try:
            await self._c.insert_one(doc)
        except DuplicateKeyError:
            existing = await self._c.find_one({"memberId": member_id, "idempotencyKey": key})
            if existing is None:  # pragma: no cover - the key's owner was just seen
                raise
            return _charge_from_doc(existing)
        return _charge_from_doc(doc)

    async def under_key(self, member_id: str, key: str) -> ChargeRecord | None:
        doc = await self._c.find_one({"memberId": member_id, "idempotencyKey": key})
        return _charge_from_doc(doc) if doc else None

    async def get(self, charge_id: str) -> ChargeRecord | None:
        doc = await self._c.find_one({"_id": charge_id})
        return _charge_from_doc(doc) if doc else None

    async def refund(self, charge_id: str, at: datetime) -> None:
        """Give a charge back, once: refunding a refunded charge changes nothing."""
        await self._c.update_one(
            {"_id": charge_id, "status": ChargeStatus.SUCCEEDED},
            {"$set": {"status": ChargeStatus.REFUNDED, "refundedAt": at}},
        )
