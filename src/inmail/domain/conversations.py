"""InMail conversations: response states, the credit-back window, message text, reminders."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.text import shows_something, without_controls

CREDIT_BACK_WINDOW: timedelta = timedelta(days=90)
SUBJECT_MAX = 200
BODY_MAX = 2000
MAX_REMINDER_DELAY = timedelta(hours=72)
"""Longest after an InMail its reminder may come (SPEC 5); INMAIL_REMINDER_DELAY_HOURS is bounded
by it."""


class ConversationState(StrEnum):
    AWAITING_RESPONSE = "AWAITING_RESPONSE"
    ACCEPTED = "ACCEPTED"
    DECLINED = "DECLINED"


class ConversationRole(StrEnum):
    """The viewer's side of a conversation: SENT if they started it, RECEIVED if the other did."""

    SENT = "SENT"
    RECEIVED = "RECEIVED"


@dataclass(frozen=True, slots=True)
class ConversationFilter:
    """Which of a member's conversations a listing shows (and its count counts): all of them,
    or those in `state`, or those on one side (`role`)."""

    member_id: str
    state: ConversationState | None = None
    role: ConversationRole | None = None


class InMailResponse(StrEnum):
    INTERESTED = "INTERESTED"
    MAYBE_LATER = "MAYBE_LATER"
    NOT_INTERESTED = "NOT_INTERESTED"
    REPLY = "REPLY"


def state_after(response: InMailResponse) -> ConversationState:
    if response is InMailResponse.NOT_INTERESTED:
        return ConversationState.DECLINED
    return ConversationState.ACCEPTED


def within_credit_back_window(sent_at: datetime, responded_at: datetime) -> bool:
    return responded_at < sent_at + CREDIT_BACK_WINDOW


def clean_subject(subject: str) -> str:
    """A subject is one line: a line break or tab in it is a space."""
    return _clean_text(subject, field="subject", maximum=SUBJECT_MAX, lines=False)


def clean_body(body: str, field: str = "body") -> str:
    return _clean_text(body, field=field, maximum=BODY_MAX, lines=True)


def clean_reply(response: InMailResponse, body: str | None) -> str | None:
    if response is InMailResponse.REPLY:
        return clean_body(body if body is not None else "")
    # A quick reply is complete without words; a blank note is no note.
    if body is None:
        return None
    note = body.strip()
    if len(note) <= BODY_MAX and not shows_something(note):
        return None
    return clean_body(note)


def reminder_due_at(sent_at: datetime, delay: timedelta) -> datetime:
    if not timedelta(0) <= delay <= MAX_REMINDER_DELAY:
        raise ValueError(f"reminder delay must be within 0..{MAX_REMINDER_DELAY}, got {delay}")
    return sent_at + delay


def _clean_text(text: str, *, field: str, maximum: int, lines: bool) -> str:
    cleaned = text.strip()
    if len(cleaned) > maximum:  # first: the scan below then reads at most `maximum` characters
        raise DomainError(
            ErrorCode.INVALID_INPUT, Reason.TOO_LONG, field, maximum=maximum, length=len(cleaned)
        )
    cleaned = without_controls(cleaned, field, lines=lines)
    if not shows_something(cleaned):  # blank, or only characters that show nothing
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.BLANK, field)
    return cleaned


@dataclass(frozen=True, slots=True)
class DueReminder:
    """An InMail whose recipient is due a reminder (SPEC 5)."""

    conversation_id: str
    recipient_id: str
    due_at: datetime
