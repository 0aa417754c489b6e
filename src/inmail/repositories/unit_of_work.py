"""The unit of work on MongoDB: repositories bound to one session, and transactions retried.

`reads` holds the repositories for plain reads: they have no write methods, so nothing can be
written outside a transaction by mistake. `transaction()` opens one attempt at a transaction and
hands out repositories bound to its session; `run(step, ...)` runs a step in a transaction and
runs it again, from the start, when it raced a concurrent change.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from inmail.domain.errors import DomainError
from inmail.repositories.conversations import ConversationReader, ConversationRepository
from inmail.repositories.credit_lots import CreditLotReader, CreditLotRepository
from inmail.repositories.intents import PaymentIntentReader, PaymentIntentRepository
from inmail.repositories.ledger import LedgerReader, LedgerRepository
from inmail.repositories.members import MemberReader, MemberRepository, StaleMember
from inmail.repositories.messages import MessageReader, MessageRepository
from inmail.repositories.mongo import (
    NO_TRANSACTION,
    DuplicateKeyError,
    Mongo,
    TransactionSession,
    deadline,
    writes_until,
)
from inmail.repositories.notifications import (
    DEFAULT_NOTICES,
    NoticeOptions,
    NotificationReader,
    NotificationRepository,
)
from inmail.repositories.outbox import OutboxRepository
from inmail.repositories.rate_limits import RateLimitReader, RateLimitRepository
from inmail.repositories.records import (
    IdempotencyReader,
    IdempotencyRepository,
    PurchaseReader,
    PurchaseRepository,
)

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

RETRIES = 8


class Conflict(Exception):
    """What a step raises when it finds what a unique index would refuse of its writes (a key
    another request holds): the attempt is rolled back and the step runs again, carefully, as
    after a refused insert."""


@dataclass(frozen=True, slots=True)
class Reads:
    """Repositories for reads outside any transaction; none of them can write."""

    members: MemberReader
    lots: CreditLotReader
    ledger: LedgerReader
    conversations: ConversationReader
    idempotency: IdempotencyReader
    purchases: PurchaseReader
    notifications: NotificationReader
    rate_limits: RateLimitReader
    messages: MessageReader
    intents: PaymentIntentReader

    @classmethod
    def on(cls, mongo: Mongo) -> Reads:
        return cls(
            members=MemberReader(mongo, NO_TRANSACTION),
            lots=CreditLotReader(mongo, NO_TRANSACTION),
            ledger=LedgerReader(mongo, NO_TRANSACTION),
            conversations=ConversationReader(mongo, NO_TRANSACTION),
            idempotency=IdempotencyReader(mongo, NO_TRANSACTION),
            purchases=PurchaseReader(mongo, NO_TRANSACTION),
            notifications=NotificationReader(mongo, NO_TRANSACTION),
            rate_limits=RateLimitReader(mongo, NO_TRANSACTION),
            messages=MessageReader(mongo, NO_TRANSACTION),
            intents=PaymentIntentReader(mongo, NO_TRANSACTION),
        )


@dataclass(frozen=True, slots=True)
class Transaction:
    """Repositories bound to one transaction: what they read is its snapshot, what they write
    is committed together or not at all."""

    members: MemberRepository
    lots: CreditLotRepository
    ledger: LedgerRepository
    conversations: ConversationRepository
    idempotency: IdempotencyRepository
    purchases: PurchaseRepository
    notifications: NotificationRepository
    rate_limits: RateLimitRepository
    messages: MessageRepository
    outbox: OutboxRepository
    intents: PaymentIntentRepository
    # False on an optimistic attempt (`run_optimistically`): a step may then leave to unique
    # indexes what it would otherwise look for first.
    careful: bool = True

    @classmethod
    def on(
        cls,
        mongo: Mongo,
        session: TransactionSession,
        *,
        careful: bool = True,
        notices: NoticeOptions = DEFAULT_NOTICES,
    ) -> Transaction:
        return cls(
            members=MemberRepository(mongo, session),
            lots=CreditLotRepository(mongo, session),
            ledger=LedgerRepository(mongo, session),
            conversations=ConversationRepository(mongo, session),
            idempotency=IdempotencyRepository(mongo, session),
            purchases=PurchaseRepository(mongo, session),
            notifications=NotificationRepository(mongo, session, notices),
            rate_limits=RateLimitRepository(mongo, session),
            messages=MessageRepository(mongo, session),
            outbox=OutboxRepository(mongo, session),
            intents=PaymentIntentRepository(mongo, session),
            careful=careful,
        )


class MongoUnitOfWork:
    """`notices`: how its transactions write notifications; `timeout`: the seconds a request's
    database work may take in all (`deadline`), None for no bound."""

    def __init__(
        self,
        mongo: Mongo,
        *,
        retries: int = RETRIES,
        notices: NoticeOptions = DEFAULT_NOTICES,
        timeout: float | None = None,
    ) -> None:
        self._mongo = mongo
        self._retries = retries
        self._notices = notices
        self._timeout = timeout
        self.reads = Reads.on(mongo)

    @contextlib.contextmanager
    def deadline(self, ends_by: float | None = None, *, timed: bool = True) -> Iterator[None]:
        """Bounds the database work of what runs under it, reads, transactions and their
        retries together, to the unit's timeout from now (unless not `timed`); past it that
        work raises an error for which `unanswered` is true. With `ends_by` (unix seconds), no
        transaction begun under it commits from then on (WriteWindowClosed, rolled back)."""
        with deadline(self._timeout if timed else None), writes_until(ends_by):
            yield

    def _bound(self, session: TransactionSession, *, careful: bool = True) -> Transaction:
        return Transaction.on(self._mongo, session, careful=careful, notices=self._notices)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One attempt: committed when the block ends, rolled back if it raises; no retry."""
        async with self._mongo.session_transaction() as session:
            yield self._bound(session)

    async def run(
        self,
        step: Callable[Concatenate[Transaction, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `step(tx, *args, **kwargs)` in one transaction, again if it raced a change.

        The server's transient errors and unknown commit results are retried by the driver; a
        unique index that another request won (DuplicateKeyError, or a `Conflict` a step found
        first) or a member that moved under us (StaleMember) means the checks must be made
        afresh, and the rerun sees what the winner wrote.
        """

        async def attempt(session: TransactionSession) -> T:
            return await step(self._bound(session), *args, **kwargs)

        for attempt_no in range(self._retries):
            try:
                return await self._mongo.run_transaction(attempt)
            except (DuplicateKeyError, Conflict, StaleMember) as exc:
                if attempt_no == self._retries - 1:
                    raise
                log.debug("retrying a transaction after %s", type(exc).__name__)
        raise AssertionError("unreachable")  # pragma: no cover

    async def run_optimistically(
        self,
        step: Callable[Concatenate[Transaction, P], Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`run`, first as one optimistic attempt (`tx.careful` False).

        The step may then skip its reads for conflicts that a unique index refuses anyway (a
        reused idempotency key, a second awaiting InMail). Any failure of that attempt (a
        refused insert, a race, or a refusal that a skipped read might have answered first:
        the retry of a request that succeeded) rolls it back, and the step runs again
        carefully under `run`, so every answer is the one a careful run gives.
        """

        async def optimistic(session: TransactionSession) -> T:
            return await step(self._bound(session, careful=False), *args, **kwargs)

        try:
            return await self._mongo.run_transaction(optimistic)
        except (DuplicateKeyError, Conflict, StaleMember, DomainError) as exc:
            log.debug("an optimistic attempt gave way after %s", type(exc).__name__)
        return await self.run(step, *args, **kwargs)
