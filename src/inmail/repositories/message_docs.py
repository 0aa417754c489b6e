"""A message as stored, wherever it is kept: a document of the messages collection, or an
InMail's first message inside its conversation (messages.py). Apart, so that conversations and
messages each read the other's documents without importing each other."""

from __future__ import annotations

from inmail.domain.model import Message
from inmail.repositories.mongo import Doc


def message_fields(message: Message) -> Doc:
    """A message as stored, wherever it is kept (its own document, or a conversation's first)."""
    return {
        "_id": message.id,
        "authorId": message.author_id,
        "body": message.body,
        "sentAt": message.sent_at,
    }


def message_from_doc(doc: Doc) -> Message:
    return Message(
        id=doc["_id"], author_id=doc["authorId"], body=doc["body"], sent_at=doc["sentAt"]
    )
