"""The messages of conversations: one document per message, in a collection of their own.

A thread holds any number of messages: each is its own small document, so a thread never meets
MongoDB's 16 MB document limit, and a read loads only the messages it shows. One document per
message (rather than buckets of many) because every read is a keyset range of the index
`conversation_oldest` {conversationId, sentAt, _id}: the latest 100 are the last 100 entries of
a conversation's range, a page of `messageConnection` the next `first` after a cursor, and a
count an index-only COUNT_SCAN. Buckets would save index entries but make every page straddle
buckets, and the exact "latest 100" a merge of two buckets.

An append does write one shared document: its conversation's `lastMessageAt`, which gives the
message its time (`ConversationRepository.take_message_time`). Two appends to one thread at
once conflict there and one runs again after the other, so a thread's messages commit in their
(sentAt, _id) order and a client paging forward from the last message it saw misses none.

An InMail's first message is the exception: it is kept in the conversation document itself
(field `first`, written by the conversation's own insert, so a send is one write less). It is
the oldest message of its thread. Every read here takes the conversation as read, and places its
first message, if it carries one, in the thread's order (sentAt, _id) as if it were one more
document of the range: the answers are those of a thread kept wholly in this collection, which is
what conversations stored before are (they carry no `first`, and are not rewritten).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime

from inmail.domain.model import Conversation, Message
from inmail.domain.pages import Cursor, Page
from inmail.repositories.conversations import (
    AS_RECORD,
    NOT_IN_RECORD,
    conversation_from_doc,
    utc_milliseconds,
)
from inmail.repositories.message_docs import message_fields, message_from_doc
from inmail.repositories.mongo import NO_TRANSACTION, Doc, Mongo, Session, TransactionSession
from inmail.repositories.pages import decode_cursor, keyset_page, list_name

_THREAD = "_thread"  # where a message read by id carries its conversation

OLDEST_FIRST = (("sentAt", 1), ("_id", 1))
NEWEST_FIRST = (("sentAt", -1), ("_id", -1))
LATEST = 100
"""How many messages `Conversation.messages` shows: the latest 100 (SPEC section 4)."""


def message_to_doc(conversation_id: str, message: Message) -> Doc:
    doc: Doc = {"_id": message.id, "conversationId": conversation_id}
    return doc | message_fields(message)


_Position = tuple[datetime, str]


def _position(sent_at: datetime, message_id: str) -> _Position:
    """Where a message sorts in its thread, (sentAt, _id), compared as the server compares
    them: a time as UTC to the millisecond (BSON keeps no more; a time without a zone is UTC),
    an id as its bytes."""
    return utc_milliseconds(sent_at), message_id


def _position_of(message: Message) -> _Position:
    return _position(message.sent_at, message.id)


def _merged(first: Message, others: list[Message]) -> list[Message]:
    """A conversation's first message among others read from the collection, in thread order."""
    return sorted([first, *others], key=_position_of)


async def _it_precedes() -> bool:
    return True


class MessageReader:
    """Messages as read outside a transaction, or inside one (then from its snapshot)."""

    def __init__(self, mongo: Mongo, session: Session) -> None:
        self._mongo = mongo
        self._session = session
        self._c = mongo.c.messages
        self._conversations = mongo.c.conversations

    async def latest_for_many(
        self, conversations: Iterable[Conversation], limit: int = LATEST
    ) -> dict[str, list[Message]]:
        """The latest `limit` messages of each conversation, oldest first; one round trip.

        A first message kept with its conversation is the oldest of its thread: it is shown
        only when the thread has fewer than `limit` others.
        """
        wanted = {c.id: c for c in conversations}
        docs = await self._mongo.latest_per_key(
            self._c, "conversationId", list(wanted), NEWEST_FIRST, limit, self._session
        )
        found: dict[str, list[Message]] = {conversation_id: [] for conversation_id in wanted}
        for doc in docs:
            found[doc["conversationId"]].append(message_from_doc(doc))
        for conversation_id, messages in found.items():
            messages.reverse()
            first = wanted[conversation_id].first_message
            if first is not None:
                found[conversation_id] = _merged(first, messages)[-limit:]
        return found

    async def get_many(self, ids: Iterable[str]) -> dict[str, tuple[Conversation, Message]]:
        """Messages by id, each with its conversation (whose parties alone may read it): the
        messages collection joined to their conversations, and the conversations whose first
        message is one of them, asked together.

        The conversation comes in the same reads as its message, so whose a message is costs
        no read of its own: an id of someone else's message makes the round trips an unknown
        id makes (a read that followed only for messages found would tell them apart by a
        round trip; what is left is the server's join of a message it finds).

        In a transaction the conversations are read after the messages instead: a transaction
        refuses a `$lookup` into a sharded collection (README, Sharding)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        joined: list[Doc] = [
            {"$match": {"_id": {"$in": wanted}}},
            {
                "$lookup": {
                    "from": self._conversations.name,
                    "localField": "conversationId",
                    "foreignField": "_id",
                    "as": _THREAD,
                }
            },
            # The conversation as a record is read (not what older ones may still embed).
            {"$project": {f"{_THREAD}.{name}": 0 for name in NOT_IN_RECORD}},
        ]
        firsts_query = {"first._id": {"$in": wanted}}
        if self._session is None:
            docs, firsts = await asyncio.gather(
                self._mongo.aggregate(self._c, joined, NO_TRANSACTION),
                self._mongo.find_all(
                    self._conversations, firsts_query, projection=AS_RECORD, session=NO_TRANSACTION
                ),
            )
        else:  # one operation at a time in a transaction's session
            docs = await self._mongo.find_by_ids(self._c, wanted, self._session)
            firsts = await self._mongo.find_all(
                self._conversations, firsts_query, projection=AS_RECORD, session=self._session
            )
            threads = await self._mongo.find_by_ids(
                self._conversations,
                [doc["conversationId"] for doc in docs],
                self._session,
                projection=AS_RECORD,
            )
            by_id = {thread["_id"]: thread for thread in threads}
            for doc in docs:
                doc[_THREAD] = (
                    [by_id[doc["conversationId"]]] if doc["conversationId"] in by_id else []
                )
        found: dict[str, tuple[Conversation, Message]] = {}
        for doc in docs:
            threads = doc.pop(_THREAD)
            if threads:
                found[doc["_id"]] = (conversation_from_doc(threads[0]), message_from_doc(doc))
        for doc in firsts:
            found[doc["first"]["_id"]] = (
                conversation_from_doc(doc),
                message_from_doc(doc["first"]),
            )
        return found

    async def page(
        self, conversation: Conversation, first: int, after: str | None
    ) -> Page[Message]:
        """Every message of a conversation, oldest first, `first` at a time.

        The cursors are those of the collection's keyset (sentAt, _id), the first message
        kept with the conversation included: a cursor at it continues in the collection.
        """
        page = (
            await keyset_page(
                self._mongo,
                self._c,
                {"conversationId": conversation.id},
                OLDEST_FIRST,
                first,
                after,
                scope=conversation.id,
            )
        ).map(message_from_doc)
        opening = conversation.first_message
        if opening is None:
            return page
        kept_apart = page.count

        async def count() -> int:
            return await kept_apart() + 1

        thread = list_name(self._c, conversation.id)
        if after is not None:
            sent_at, message_id = decode_cursor(after, OLDEST_FIRST, thread)
            assert isinstance(sent_at, datetime), "OLDEST_FIRST's first field is a time"
            assert isinstance(message_id, str), "and its second an id"
            if _position_of(opening) <= _position(sent_at, message_id):
                return Page(page.items, page.has_next, count, _it_precedes)
        if first <= 0:
            return Page([], True, count, page.previous)  # the opening message follows, at least
        # The opening message and the collection's next `first` (of which there were more, or
        # not): the page is the `first` earliest of them.
        opened = (Cursor([opening.sent_at, opening.id], thread), opening)
        items = sorted([opened, *page.items], key=lambda item: _position_of(item[1]))
        has_next = page.has_next or len(items) > first
        return Page(items[:first], has_next, count, page.previous)


class MessageRepository(MessageReader):
    """Messages inside a transaction: every write here is part of it."""

    def __init__(self, mongo: Mongo, session: TransactionSession) -> None:
        super().__init__(mongo, session.driver)

    async def add(self, conversation_id: str, message: Message) -> None:
        await self._c.insert_one(message_to_doc(conversation_id, message), session=self._session)
