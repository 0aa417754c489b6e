"""Notifications and conversation events: what a member is told, and what their inbox shows live.

A notification is one member's record of one event (SPEC 5a). Each has an event key: the kind
and the key together name the event, so the same event can never be recorded twice, however
often the transaction that reports it is retried or however many schedulers run at once.

A conversation event is something that happened in a conversation (a new InMail, a response,
a message, a reminder); both parties see it, each under the kind that fits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from inmail.domain.model import Conversation, Message


class NotificationKind(StrEnum):
    INMAIL_RECEIVED = "INMAIL_RECEIVED"
    REMINDER = "REMINDER"
    RESPONSE_RECEIVED = "RESPONSE_RECEIVED"
    CREDITED_BACK = "CREDITED_BACK"
    RENEWED = "RENEWED"
    CREDITS_EXPIRING = "CREDITS_EXPIRING"
    PURCHASE_COMPLETED = "PURCHASE_COMPLETED"
    PURCHASE_REFUNDED = "PURCHASE_REFUNDED"


@dataclass(frozen=True, slots=True)
class Notification:
    """One member's record of one event; `id` is given when it is stored."""

    kind: NotificationKind
    member_id: str
    at: datetime
    event_key: str
    conversation_id: str | None = None
    lot_id: str | None = None
    purchase_id: str | None = None
    read_at: datetime | None = None
    id: str = ""

    @classmethod
    def inmail_received(cls, conversation: Conversation, at: datetime) -> Notification:
        return cls(
            NotificationKind.INMAIL_RECEIVED,
            conversation.recipient_id,
            at,
            conversation.id,
            conversation_id=conversation.id,
        )

    @classmethod
    def reminder(cls, recipient_id: str, conversation_id: str, at: datetime) -> Notification:
        return cls(
            NotificationKind.REMINDER,
            recipient_id,
            at,
            conversation_id,
            conversation_id=conversation_id,
        )

    @classmethod
    def response_received(cls, conversation: Conversation, at: datetime) -> Notification:
        return cls(
            NotificationKind.RESPONSE_RECEIVED,
            conversation.sender_id,
            at,
            conversation.id,
            conversation_id=conversation.id,
        )

    @classmethod
    def credited_back(
        cls, conversation: Conversation, lot_id: str | None, at: datetime
    ) -> Notification:
        return cls(
            NotificationKind.CREDITED_BACK,
            conversation.sender_id,
            at,
            conversation.id,
            conversation_id=conversation.id,
            lot_id=lot_id,
        )

    @classmethod
    def renewed(
        cls, member_id: str, grant_key: str, lot_id: str | None, at: datetime
    ) -> Notification:
        """An allotment granted (a cycle's, or a new subscription's first); `lot_id` is None
        when the cap clamped it to nothing."""
        return cls(
            NotificationKind.RENEWED, member_id, at, f"{member_id}:{grant_key}", lot_id=lot_id
        )

    @classmethod
    def credits_expiring(cls, member_id: str, lot_id: str, at: datetime) -> Notification:
        return cls(NotificationKind.CREDITS_EXPIRING, member_id, at, lot_id, lot_id=lot_id)

    @classmethod
    def purchase_completed(
        cls, member_id: str, purchase_id: str, lot_id: str | None, at: datetime
    ) -> Notification:
        return cls(
            NotificationKind.PURCHASE_COMPLETED,
            member_id,
            at,
            purchase_id,
            purchase_id=purchase_id,
            lot_id=lot_id,
        )

    @classmethod
    def purchase_refunded(cls, member_id: str, purchase_id: str, at: datetime) -> Notification:
        return cls(
            NotificationKind.PURCHASE_REFUNDED, member_id, at, purchase_id, purchase_id=purchase_id
        )


class ConversationEventKind(StrEnum):
    """What a party sees; an INMAIL event is INMAIL_SENT to its sender, INMAIL_RECEIVED to its
    recipient."""

    INMAIL_SENT = "INMAIL_SENT"
    INMAIL_RECEIVED = "INMAIL_RECEIVED"
    RESPONDED = "RESPONDED"
    MESSAGE = "MESSAGE"
    REMINDED = "REMINDED"


class ConversationChange(StrEnum):
    """What happened in a conversation, the same for both parties."""

    INMAIL = "INMAIL"
    RESPONDED = "RESPONDED"
    MESSAGE = "MESSAGE"
    REMINDED = "REMINDED"


@dataclass(frozen=True, slots=True)
class ConversationEvent:
    change: ConversationChange
    conversation_id: str
    sender_id: str
    recipient_id: str
    at: datetime
    message: Message | None = None
    id: str = ""

    @property
    def event_key(self) -> str:
        """One event per InMail, response and reminder of a conversation, and per message."""
        if self.change is ConversationChange.MESSAGE and self.message is not None:
            return f"{self.change}:{self.message.id}"
        return f"{self.change}:{self.conversation_id}"

    @property
    def parties(self) -> tuple[str, str]:
        return (self.sender_id, self.recipient_id)

    def kind_for(self, member_id: str) -> ConversationEventKind:
        if self.change is ConversationChange.INMAIL:
            if member_id == self.sender_id:
                return ConversationEventKind.INMAIL_SENT
            return ConversationEventKind.INMAIL_RECEIVED
        return ConversationEventKind(self.change.value)

    @classmethod
    def of(
        cls,
        change: ConversationChange,
        conversation: Conversation,
        at: datetime,
        message: Message | None = None,
    ) -> ConversationEvent:
        return cls(
            change, conversation.id, conversation.sender_id, conversation.recipient_id, at, message
        )
