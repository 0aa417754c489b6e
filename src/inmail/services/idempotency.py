"""Requests under a client-chosen key: a retry gets the first answer, another request an error.

A key is looked up, then taken, or answered, or refused. Every keyed operation cleans its key
and fingerprints its request with `KeyedRequest.of`, looks it up with `replay` (what a record
under the key answers: the first run's outcome or refusal, or another request's key refused)
and takes it with the record of its own first run. Then:

- a send (services/inmail.py) looks its key up in its transaction and takes it with its
  conversation, whose one insert carries the record (the unique `send_key_once` index refuses
  a twin; an optimistic attempt skips the look-up and leaves a reused key to it);
- a purchase and a paid plan change look their key up before their transaction (None also
  while their own payment intent has the answer), then take it with `take_key` with their
  payment intent (services/charges.py `open_intent`); a purchase's grant writes what it bought
  into that record (`remember_fulfilled`), and a plan change's intent goes on answering its
  retries;
- a plan change under a key to the plan already held, which charges nothing, takes its key
  with `take_key` and what it answered (services/members.py).

A send's record and the others' live in two collections, each with its own unique index, so
neither index sees a twin in the other. A send writes its sender; `take_key` takes the member's
turn (writes the member) before it takes a free key. Of any two requests under one key that
arrive together, one transaction then conflicts with the other and is retried, and the retry
finds the key taken.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.keyed import IdempotencyRecord, KeyedOutcome, KeyedRefusal
from inmail.domain.text import without_any_controls
from inmail.repositories.records import IdempotencyReader, IdempotencyRepository
from inmail.services.unit_of_work import Transaction

IDEMPOTENCY_KEY_MAX = 100

__all__ = [
    "IDEMPOTENCY_KEY_MAX",
    "KeyedOutcome",
    "KeyedRequest",
    "remember_fulfilled",
    "replay",
    "take_key",
]


def clean_idempotency_key(key: str) -> str:
    """The key as it is kept: without spaces at either end, 1 to IDEMPOTENCY_KEY_MAX characters
    long, and no control character in it."""
    key = key.strip()
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise DomainError(
            ErrorCode.INVALID_INPUT,
            Reason.KEY_LENGTH,
            "idempotencyKey",
            maximum=IDEMPOTENCY_KEY_MAX,
        )
    return without_any_controls(key, "idempotencyKey")


def request_hash(operation: str, **fields: object) -> str:
    """A fingerprint of a request, to tell a retry from another request under the same key."""
    canonical = json.dumps({"op": operation, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyedRequest:
    member_id: str
    key: str
    operation: str
    fingerprint: str

    @classmethod
    def of(cls, member_id: str, key: str, operation: str, **fields: object) -> KeyedRequest:
        return cls(
            member_id, clean_idempotency_key(key), operation, request_hash(operation, **fields)
        )

    def record(
        self,
        at: datetime,
        outcome: KeyedOutcome | None = None,
        refusal: KeyedRefusal | None = None,
        *,
        intent_id: str | None = None,
    ) -> IdempotencyRecord:
        return IdempotencyRecord(
            member_id=self.member_id,
            key=self.key,
            operation=self.operation,
            request_hash=self.fingerprint,
            at=at,
            outcome=outcome,
            refusal=refusal,
            intent_id=intent_id,
        )


def reused_key() -> DomainError:
    return DomainError(ErrorCode.IDEMPOTENCY_KEY_REUSED, Reason.KEY_REUSED, "idempotencyKey")


async def replay(records: IdempotencyReader, request: KeyedRequest) -> KeyedOutcome | None:
    """What the first run under this key answered; None if this is the first run, or if the
    key is this very paid request's and its payment intent has the answer (not yet fulfilled).

    Raises if the key was used for another request, or if the first run was refused and its
    side effects are still being undone (then it gets that refusal again).
    """
    prior = await records.find(request.member_id, request.key)
    return _answer(prior, request) if prior is not None else None


def _answer(prior: IdempotencyRecord, request: KeyedRequest) -> KeyedOutcome | None:
    """The answer a retry gets from the record of the first run under its key (`replay`)."""
    if prior.request_hash != request.fingerprint:
        raise reused_key()
    if prior.refusal is not None:
        raise prior.refusal.error()
    if prior.answered_by_intent:
        return None
    assert prior.outcome is not None, "a record holds an outcome or a refusal, or an intent"
    return prior.outcome


async def take_key(
    tx: Transaction,
    request: KeyedRequest,
    record: IdempotencyRecord,
    *,
    once_free: Callable[[], Awaitable[None]] | None = None,
) -> KeyedOutcome | None:
    """Take the request's key with `record`, in the transaction `tx`.

    Free, the key is taken in the member's turn (see above): `once_free` runs first (what the
    record follows in the transaction: a payment intent, checked and inserted), then `record`
    is inserted; None. Held, the key answers a retry of this very request as `replay` does
    (None: its payment intent answers) and refuses another request, or any request when
    `record` is a payment intent's.
    """
    records: IdempotencyRepository = tx.idempotency
    prior = await records.find(request.member_id, request.key)
    if prior is None:
        await tx.members.take_turn(request.member_id)
        if once_free is not None:
            await once_free()
        await records.insert(record)
        return None
    if record.intent_id is not None:
        # A paid request's own key holds its intent, looked for first: the record is another
        # request's (an InMail that took the key since the request looked or, before intents,
        # a request whose record has no intent). Keys are one namespace; nothing was charged.
        raise reused_key()
    return _answer(prior, request)


async def remember_fulfilled(
    records: IdempotencyRepository, request: KeyedRequest, outcome: KeyedOutcome, at: datetime
) -> None:
    """What a paid request bought, in the record its intent took the key with."""
    await records.fulfil(request.record(at, outcome))
