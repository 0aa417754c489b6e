"""The messages of conversations: one document per message, in a collection of their own.

A thread holds any number of messages: each is its own small document, so a thread never meets
MongoDB's 16 MB document limit, and a read loads only the messages it shows. One document per
message (rather than buckets of many) because every read is a keyset range of the index
`conversation_oldest` {conversationId, sentAt, _id}: the latest 100 are the last 100 entries of
a conversation's range, a page of `messageConnection` the next `first` after a cursor, and a
count an index-only COUNT_SCAN. Buckets would save index entries but make every page straddle
buckets, every append a read-modify-write of a shared document (a hot spot that concurrent
writers retry on), and the exact "latest 100" a merge of two buckets.
"""

from __future__ import annotations

from collections.abc import Iterable

from inmail.domain.model import Message
from inmail.repositories.mongo import Doc, Mongo, Session
from inmail.repositories.pages import Page, keyset_page

OLDEST_FIRST = (("sentAt", 1), ("_id", 1))
NEWEST_FIRST = (("sentAt", -1), ("_id", -1))
LATEST = 100
"""How many messages `Conversation.messages` shows: the latest 100 (SPEC section 4)."""


def message_to_doc(conversation_id: str, message: Message) -> Doc:
    return {
        "_id": message.id,
        "conversationId": conversation_id,
        "authorId": message.author_id,
        "body": message.body,
        "sentAt": message.sent_at,
    }


def message_from_doc(doc: Doc) -> Message:
    return Message(
        id=doc["_id"], author_id=doc["authorId"], body=doc["body"], sent_at=doc["sentAt"]
    )


class MessageReader:
    """Messages as read outside a transaction, or inside one (then from its snapshot)."""

    def __init__(self, mongo: Mongo, session: Session) -> None:
        self._mongo = mongo
        self._session = session
        self._c = mongo.c.messages

    async def latest_for_many(
        self, conversation_ids: Iterable[str], limit: int = LATEST
    ) -> dict[str, list[Message]]:
        """The latest `limit` messages of each conversation, oldest first; one round trip."""
        wanted = list(dict.fromkeys(conversation_ids))
        docs = await self._mongo.latest_per_key(
            self._c, "conversationId", wanted, NEWEST_FIRST, limit, self._session
        )
        found: dict[str, list[Message]] = {conversation_id: [] for conversation_id in wanted}
        for doc in docs:
            found[doc["conversationId"]].append(message_from_doc(doc))
        for messages in found.values():
            messages.reverse()
        return found

    async def get_many(self, ids: Iterable[str]) -> dict[str, tuple[str, Message]]:
        """Messages by id, each with the id of its conversation: one round trip."""
        docs = await self._mongo.find_by_ids(self._c, ids, self._session)
        return {doc["_id"]: (doc["conversationId"], message_from_doc(doc)) for doc in docs}

    async def page(self, conversation_id: str, first: int, after: str | None) -> Page[Message]:
        """Every message of a conversation, oldest first, `first` at a time."""
        page = await keyset_page(
            self._mongo, self._c, {"conversationId": conversation_id}, OLDEST_FIRST, first, after
        )
        return page.map(message_from_doc)

    async def count(self, conversation_id: str) -> int:
        return await self._c.count_documents(
            {"conversationId": conversation_id}, session=self._session
        )


class MessageRepository(MessageReader):
    """Messages inside a transaction: every write here is part of it."""

    async def add(self, conversation_id: str, message: Message) -> None:
        await self._c.insert_one(message_to_doc(conversation_id, message), session=self._session)
