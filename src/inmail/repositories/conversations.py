"""Conversations: an InMail, or a direct thread between connections (messages: messages.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pymongo import ReturnDocument

from inmail.domain.conversations import (
    ConversationFilter,
    ConversationRole,
    ConversationState,
    DueReminder,
    InMailResponse,
)
from inmail.domain.keyed import IdempotencyRecord
from inmail.domain.model import Conversation, ConversationKind
from inmail.domain.pages import Page
from inmail.repositories.collection import RecordReader
from inmail.repositories.message_docs import message_fields, message_from_doc
from inmail.repositories.mongo import (
    AWAITING,
    REMINDER_PENDING,
    Doc,
    Mongo,
    Session,
    TransactionSession,
)
from inmail.repositories.pages import after_key
from inmail.repositories.records import SENT_UNDER, sent_under_to_doc

NEWEST_FIRST = (("sentAt", -1), ("_id", -1))


def conversation_to_doc(c: Conversation) -> Doc:
    doc: Doc = {
        "_id": c.id,
        "kind": c.kind.value,
        "senderId": c.sender_id,
        "recipientId": c.recipient_id,
        "subject": c.subject,
        "state": c.state.value,
        "sentAt": c.sent_at,
        "respondedAt": c.responded_at,
        "response": c.response.value if c.response else None,
        "creditedBack": c.credited_back,
        "reminderSentAt": c.reminder_sent_at,
        "reminderDueAt": c.reminder_due_at,
        # The time of the thread's latest message: its first (sent with it) until another is
        # added (`ConversationRepository.take_message_time`).
        "lastMessageAt": c.sent_at,
    }
    if c.first_message is not None:
        # The InMail's first message rides in the conversation's own insert: one write for
        # both. Every later message is a document of the messages collection (messages.py).
        doc["first"] = message_fields(c.first_message)
    if c.kind is ConversationKind.DIRECT:
        # One direct thread per pair, enforced by the unique index {senderId, pairKey}: the
        # shard key leads it (README, Sharding), so the thread is stored under the pair's
        # smaller id. Who started it, and with whom, is kept beside.
        low, high = stored_pair(c)
        doc.update(
            senderId=low,
            recipientId=high,
            pairKey=pair_key(low, high),
            startedBy=c.sender_id,
            startedWith=c.recipient_id,
        )
    return doc


def stored_pair(c: Conversation) -> tuple[str, str]:
    """(senderId, recipientId) as the conversation is stored: an InMail's own; a direct
    thread's two members in order, the smaller id first (see conversation_to_doc)."""
    if c.kind is ConversationKind.DIRECT:
        low, high = sorted((c.sender_id, c.recipient_id))
        return low, high
    return c.sender_id, c.recipient_id


def stored_at(c: Conversation) -> Doc:
    """The filter that names the conversation's document with its shard key (`senderId`, as
    stored): a single-document update or findAndModify on a sharded collection needs it
    before MongoDB 7.1."""
    return {"_id": c.id, "senderId": stored_pair(c)[0]}


def awaiting_from(sender_id: str | None, recipient_ids: Sequence[str]) -> Doc:
    """The sender's InMails to any of these recipients that await a response (None: a join on
    the sender names it). At most one per pair: the `one_awaiting_per_pair` index, whose
    partial filter (`AWAITING`) this query holds so that it can use it."""
    query: Doc = {"recipientId": {"$in": list(recipient_ids)}, **AWAITING}
    if sender_id is not None:
        query["senderId"] = sender_id
    return query


def conversation_from_doc(doc: Doc) -> Conversation:
    return Conversation(
        id=doc["_id"],
        kind=ConversationKind(doc.get("kind", "INMAIL")),
        sender_id=doc["startedBy"] if "startedBy" in doc else doc["senderId"],
        recipient_id=doc["startedWith"] if "startedWith" in doc else doc["recipientId"],
        subject=doc["subject"],
        state=ConversationState(doc["state"]),
        sent_at=doc["sentAt"],
        responded_at=doc.get("respondedAt"),
        response=InMailResponse(doc["response"]) if doc.get("response") else None,
        credited_back=doc.get("creditedBack", False),
        reminder_sent_at=doc.get("reminderSentAt"),
        reminder_due_at=doc.get("reminderDueAt"),
        first_message=message_from_doc(doc["first"]) if "first" in doc else None,
    )


NOT_IN_RECORD: tuple[str, ...] = ("messages", SENT_UNDER)
AS_RECORD: Doc = {name: 0 for name in NOT_IN_RECORD}
"""What a conversation is read with: not the messages that conversations stored before messages
had their own collection may still embed (until the start-up migration moves them), nor the
idempotency record of the send that started it (read only when its key is used again)."""


def _to_milliseconds(doc: Doc) -> Doc:
    """A document as the server keeps it: BSON keeps times to the millisecond."""
    return {key: _value_to_milliseconds(item) for key, item in doc.items()}


def _value_to_milliseconds(value: object) -> object:
    if isinstance(value, datetime):
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    if isinstance(value, dict):
        return {key: _value_to_milliseconds(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_value_to_milliseconds(item) for item in value]
    return value


def utc_milliseconds(value: datetime) -> datetime:
    """A time as the server compares it: UTC (a time without a zone is UTC), to the
    millisecond."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def pair_key(a: str, b: str) -> str:
    """The pair of members, in either order: the smaller id, a colon, the larger."""
    return ":".join(sorted((a, b)))


class ConversationReader(RecordReader[Conversation]):
    """Conversations as read outside a transaction, or inside one (then from its snapshot)."""

    def __init__(self, mongo: Mongo, session: Session) -> None:
        super().__init__(mongo, session, mongo.c.conversations, conversation_from_doc, AS_RECORD)

    async def awaiting_between(self, sender_id: str, recipient_id: str) -> bool:
        doc = await self._c.find_one(
            awaiting_from(sender_id, [recipient_id]), {"_id": 1}, session=self._session
        )
        return doc is not None

    async def direct_between(self, a: str, b: str) -> Conversation | None:
        doc = await self._c.find_one(
            {
                "senderId": min(a, b),
                "pairKey": pair_key(a, b),
                "kind": ConversationKind.DIRECT.value,
            },
            AS_RECORD,
            session=self._session,
        )
        return conversation_from_doc(doc) if doc else None

    @staticmethod
    def _query(which: ConversationFilter) -> Doc:
        """The member's conversations; with a role, those they started (SENT) or did not.

        An InMail is the sender's SENT and the recipient's RECEIVED. A direct thread is stored
        under the pair's smaller id (see conversation_to_doc), so its roles are read from
        `startedBy` / `startedWith`; each branch of the $or has an index of its own.
        """
        member_id = which.member_id
        inmail: Doc = {"kind": {"$ne": ConversationKind.DIRECT.value}}
        direct: Doc = {"kind": ConversationKind.DIRECT.value}
        if which.role is ConversationRole.SENT:
            branches = [{"senderId": member_id, **inmail}, {"startedBy": member_id, **direct}]
        elif which.role is ConversationRole.RECEIVED:
            branches = [{"recipientId": member_id, **inmail}, {"startedWith": member_id, **direct}]
        else:
            branches = [{"senderId": member_id}, {"recipientId": member_id}]
        query: Doc = {"$or": branches}
        if which.state is not None:
            query["state"] = which.state.value
        return query

    async def page(
        self, which: ConversationFilter, first: int, after: str | None
    ) -> Page[Conversation]:
        return await self._page(
            self._query(which), NEWEST_FIRST, first, after, owner=which.member_id
        )

    async def reminders_due_after(
        self, now: datetime, *, after: tuple[datetime, str] | None, limit: int
    ) -> list[DueReminder]:
        """InMails unanswered and unreminded whose reminder is due by `now`, in due order.

        `after` is the (reminderDueAt, id) of the last one seen, so a conversation that failed
        is passed over rather than met again in the same pass.
        """
        due = {**REMINDER_PENDING, "reminderDueAt": {"$lte": now}}
        docs = await self._mongo.find_all(
            self._c,
            after_key(due, _REMINDER_ORDER, after),
            projection={"_id": 1, "recipientId": 1, "reminderDueAt": 1},
            sort=_REMINDER_ORDER,
            limit=limit,
            session=self._session,
        )
        return [DueReminder(doc["_id"], doc["recipientId"], doc["reminderDueAt"]) for doc in docs]

    async def next_reminder_due_at(self, after: datetime | None = None) -> datetime | None:
        """The earliest reminderDueAt still pending (strictly after `after`, if given)."""
        when: Doc = {"$gt": after} if after is not None else {"$type": "date"}
        docs = await self._mongo.find_all(
            self._c,
            {**REMINDER_PENDING, "reminderDueAt": when},
            projection={"_id": 0, "reminderDueAt": 1},
            sort=[("reminderDueAt", 1)],
            limit=1,
            session=self._session,
        )
        return docs[0]["reminderDueAt"] if docs else None


class ConversationRepository(ConversationReader):
    """Conversations inside a transaction: every write here is part of it."""

    def __init__(self, mongo: Mongo, session: TransactionSession) -> None:
        super().__init__(mongo, session.driver)

    async def insert(
        self, conversation: Conversation, sent_under: IdempotencyRecord | None = None
    ) -> Conversation:
        """Write a new conversation, with the record of the send under its key if it has one;
        returns it as reading it back would give it."""
        doc = conversation_to_doc(conversation)
        if sent_under is not None:
            doc[SENT_UNDER] = sent_under_to_doc(sent_under)
        await self._c.insert_one(doc, session=self._session)
        return conversation_from_doc(_to_milliseconds(doc))

    async def record_response(
        self,
        conversation: Conversation,
        *,
        state: ConversationState,
        response: InMailResponse,
        at: datetime,
        credited_back: bool,
    ) -> Conversation | None:
        """Record the first response; the conversation as it now stands, or None if a response
        was recorded already (a written reply is a message: the caller adds it)."""
        update: Doc = {
            "$set": {
                "state": state.value,
                "response": response.value,
                "respondedAt": at,
                "creditedBack": credited_back,
            }
        }
        doc = await self._c.find_one_and_update(
            {**stored_at(conversation), "respondedAt": None},
            update,
            return_document=ReturnDocument.AFTER,
            session=self._session,
        )
        return None if doc is None else conversation_from_doc(doc)

    async def take_message_time(self, conversation: Conversation, now: datetime) -> datetime:
        """The time a new message of the thread is stored with: `now`, or a millisecond after
        the thread's latest message when `now` is not later (a stopped manual clock, two
        messages in one millisecond). The thread keeps it as its latest (`lastMessageAt`).

        Taking it writes the conversation, so two transactions adding to one thread conflict
        and one runs again, after the other: a thread's messages commit in the order of their
        (sentAt, _id), and a reader that pages forward from the last message it saw never
        misses one committed after. A conversation stored before the field has its latest
        message read once, from the thread's index."""
        at = utc_milliseconds(now)
        before = await self._c.find_one_and_update(
            stored_at(conversation),
            {"$max": {"lastMessageAt": at}},
            projection={"_id": 0, "lastMessageAt": 1, "sentAt": 1},
            return_document=ReturnDocument.BEFORE,
            session=self._session,
        )
        assert before is not None, "a message is added to a conversation the transaction read"
        latest = utc_milliseconds(
            before.get("lastMessageAt") or await self._latest_stored(conversation.id, before)
        )
        if at > latest:
            return at
        at = latest + timedelta(milliseconds=1)
        await self._c.update_one(
            stored_at(conversation), {"$set": {"lastMessageAt": at}}, session=self._session
        )
        return at

    async def _latest_stored(self, conversation_id: str, conversation: Doc) -> datetime:
        """The time of a thread's latest message, for a conversation stored before it kept it:
        its newest in the messages collection, else its start (its first message's time)."""
        newest = await self._mongo.c.messages.find_one(
            {"conversationId": conversation_id},
            projection={"_id": 0, "sentAt": 1},
            sort=[("sentAt", -1), ("_id", -1)],
            session=self._session,
        )
        started: datetime = conversation["sentAt"]
        return max(started, newest["sentAt"]) if newest else started

    async def mark_reminded(self, conversation_id: str, at: datetime) -> bool:
        result = await self._c.update_one(
            {"_id": conversation_id, **REMINDER_PENDING},
            {"$set": {"reminderSentAt": at}},
            session=self._session,
        )
        return result.modified_count == 1


_REMINDER_ORDER = (("reminderDueAt", 1), ("_id", 1))  # index reminders_due_keyset
