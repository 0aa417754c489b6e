"""What tests and audits read straight from the collections, as the service's own records.

The service never needs these reads (every record of a member, a conversation's events in
order, a lease's holder, an outbox event as stored), so they live here, beside the tests, and
decode documents with the repositories' own decoders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from inmail.domain.credits import CYCLE_GRANT, CreditLot
from inmail.domain.intents import PaymentIntent
from inmail.domain.model import Conversation, ConversationKind, LedgerEntry
from inmail.domain.notifications import ConversationEvent, Notification
from inmail.repositories.conversations import conversation_from_doc
from inmail.repositories.credit_lots import lot_from_doc
from inmail.repositories.intents import intent_from_doc
from inmail.repositories.ledger import entry_from_doc
from inmail.repositories.mongo import NO_TRANSACTION, Collection, Doc, Mongo
from inmail.repositories.notifications import EVENT_KIND, event_from_doc, notification_from_doc


async def _all(
    mongo: Mongo, collection: Collection, query: Mapping[str, Any], sort: Sequence[tuple[str, int]]
) -> list[Doc]:
    return await mongo.find_all(collection, query, sort=sort, session=NO_TRANSACTION)


async def lots_of(mongo: Mongo, member_id: str) -> list[CreditLot]:
    """Every lot the member was ever granted, whatever its status, oldest first."""
    docs = await _all(mongo, mongo.c.credit_lots, {"memberId": member_id}, [("_id", 1)])
    return [lot_from_doc(doc) for doc in docs]


async def ledger_of(mongo: Mongo, member_id: str) -> list[LedgerEntry]:
    """The member's whole ledger, in order."""
    docs = await _all(mongo, mongo.c.ledger, {"memberId": member_id}, [("seq", 1)])
    return [entry_from_doc(doc) for doc in docs]


async def intents_of(mongo: Mongo, member_id: str) -> list[PaymentIntent]:
    """Every payment intent the member opened, oldest first."""
    docs = await _all(mongo, mongo.c.payment_intents, {"memberId": member_id}, [("createdAt", 1)])
    return [intent_from_doc(doc) for doc in docs]


async def inmails_sent_by(mongo: Mongo, member_id: str) -> list[Conversation]:
    """Every InMail the member sent."""
    query = {"senderId": member_id, "kind": ConversationKind.INMAIL.value}
    docs = await _all(mongo, mongo.c.conversations, query, [("_id", 1)])
    return [conversation_from_doc(doc) for doc in docs]


async def notifications_of(mongo: Mongo, member_id: str) -> list[Notification]:
    """All of a member's notifications, oldest first."""
    sort = [("at", 1), ("_id", 1)]
    docs = await _all(mongo, mongo.c.notifications, {"memberId": member_id}, sort)
    return [n for doc in docs if (n := notification_from_doc(doc)) is not None]


async def events_of(mongo: Mongo, conversation_id: str) -> list[ConversationEvent]:
    """A conversation's events, oldest first."""
    query = {"kind": EVENT_KIND, "conversationId": conversation_id}
    docs = await _all(mongo, mongo.c.notifications, query, [("_id", 1)])
    return [e for doc in docs if (e := event_from_doc(doc)) is not None]


async def lease_holder(mongo: Mongo, name: str) -> Doc | None:
    """The lease's document as stored: its owner and until when."""
    return await mongo.c.leases.find_one({"_id": name})


async def outbox_event(mongo: Mongo, event_id: str) -> Doc | None:
    """A webhook event's document as stored."""
    return await mongo.c.webhook_outbox.find_one({"_id": event_id})


async def outbox_count(mongo: Mongo, status: str) -> int:
    return await mongo.c.webhook_outbox.count_documents({"status": status})


def cycle_of_grant(grant_key: str) -> str | None:
    """The subscription whose cycle a grant key names (`cycle_grant_key`), or None for any
    other grant."""
    kind, _, rest = grant_key.partition(":")
    if kind != CYCLE_GRANT:
        return None
    subscription_id, _, _ = rest.partition(":")
    return subscription_id or None
