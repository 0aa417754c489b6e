"""Keyed requests: what a request made under an idempotency key did or was refused, kept so
that a retry under the key is answered the same."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Final

from inmail.domain.errors import DomainError, ErrorCode, ErrorData, Reason


@dataclass(frozen=True, slots=True)
class KeyedOutcome:
    """What a keyed request did: the record it made (an InMail, a lot) and the credits left."""

    subject_id: str | None
    credits_left: int


@dataclass(frozen=True, slots=True)
class KeyedRefusal:
    """A keyed request's refusal, given again to a retry while its side effects are undone."""

    code: ErrorCode
    reason: Reason
    field: str | None = None
    data: Mapping[str, ErrorData] = dataclass_field(default_factory=dict)

    @classmethod
    def of(cls, error: DomainError) -> KeyedRefusal:
        return cls(error.code, error.reason, error.field, dict(error.data))

    def error(self) -> DomainError:
        return DomainError(self.code, self.reason, self.field, **self.data)


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    member_id: str
    key: str
    operation: str
    request_hash: str
    at: datetime
    outcome: KeyedOutcome | None = None
    refusal: KeyedRefusal | None = None
    intent_id: str | None = None  # a paid request's payment intent, which answers until fulfilled

    @property
    def answered_by_intent(self) -> bool:
        """A paid request's key, taken when its payment intent was recorded: until what the
        charge buys is granted, the intent (charged, declined, refunded) has the answer."""
        return self.outcome is None and self.refusal is None and self.intent_id is not None


SEND: Final = "sendInMail"
"""The operation name a send's key is recorded under (a paid request's: its `IntentKind`)."""
