"""What every use case shares: its dependencies, transactions with retries, and accounts."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from inmail.clock import Clock
from inmail.domain.credits import CreditLot
from inmail.domain.model import LedgerEntry, Member, Subscription
from inmail.domain.plans import PlanTable
from inmail.domain.wallet import Wallet
from inmail.repositories.conversations import ConversationRepository
from inmail.repositories.credit_lots import CreditLotRepository
from inmail.repositories.ledger import LedgerRepository
from inmail.repositories.members import MemberRepository, StaleMember, subscription_to_doc
from inmail.repositories.mongo import DuplicateKeyError, Mongo, Session, new_id
from inmail.repositories.records import (
    ChargeRepository,
    IdempotencyRepository,
    NotificationRepository,
    PurchaseRepository,
)
from inmail.services.events import BalancePublisher
from inmail.services.rate_limits import RateLimits

log = logging.getLogger(__name__)

T = TypeVar("T")

_RETRIES = 8


@dataclass(frozen=True, slots=True)
class Limits:
    max_purchase_quantity: int = 10
    reminder_delay: timedelta = timedelta(hours=48)


class NullPublisher:
    async def publish(self, entries: object) -> None:
        return None


@dataclass
class Deps:
    mongo: Mongo
    clock: Clock
    plans: PlanTable
    limits: Limits = field(default_factory=Limits)
    publisher: BalancePublisher = field(default_factory=NullPublisher)
    rate_limits: RateLimits = field(default_factory=RateLimits)

    def __post_init__(self) -> None:
        self.members = MemberRepository(self.mongo)
        self.lots = CreditLotRepository(self.mongo)
        self.ledger = LedgerRepository(self.mongo)
        self.conversations = ConversationRepository(self.mongo)
        self.idempotency = IdempotencyRepository(self.mongo)
        self.purchases = PurchaseRepository(self.mongo)
        self.charges = ChargeRepository(self.mongo)
        self.notifications = NotificationRepository(self.mongo)

    def now(self) -> datetime:
        return self.clock.now()


async def transact(deps: Deps, work: Callable[[Session], Awaitable[T]]) -> T:
    """Run `work` in one transaction, again from the start if it raced a concurrent change.

    MongoDB retries transient conflicts itself; a unique index that another request won
    (DuplicateKeyError) or a member that moved under us (StaleMember) means the checks must be
    made afresh, and the second run sees what the winner wrote.
    """
    for attempt in range(_RETRIES):
        try:
            return await deps.mongo.transaction(work)
        except (DuplicateKeyError, StaleMember) as exc:
            if attempt == _RETRIES - 1:
                raise
            log.debug("retrying a transaction after %s", type(exc).__name__)
    raise AssertionError("unreachable")  # pragma: no cover


def request_hash(operation: str, **fields: Any) -> str:
    """A fingerprint of a request, to tell a retry from another request under the same key."""
    canonical = json.dumps({"op": operation, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Account:
    """A member's credits opened for change inside one transaction."""

    member: Member
    wallet: Wallet
    subscription: Subscription | None

    @classmethod
    async def open(cls, deps: Deps, member: Member, now: datetime, session: Session) -> Account:
        """Load the member's live lots and bring them up to `now`: due renewals, lapsed lots."""
        lots = await deps.lots.active_for(member.id, session)
        return cls.brought_up_to(deps, member, lots, now)

    @classmethod
    def brought_up_to(
        cls, deps: Deps, member: Member, active_lots: Iterable[CreditLot], now: datetime
    ) -> Account:
        """`open` for a member whose ACTIVE lots were already read (a batch reads many at once)."""
        wallet = Wallet(member.id, active_lots, member.ledger_seq, new_id)
        subscription = member.subscription
        if subscription is not None:
            subscription = wallet.renew(subscription, deps.plans, now)
        wallet.settle(now)
        return cls(member=member, wallet=wallet, subscription=subscription)

    @property
    def changed(self) -> bool:
        return bool(self.wallet.entries) or self.subscription is not self.member.subscription

    def member_changes(self, **changes: Any) -> dict[str, Any]:
        """What `save` writes on the member document besides the new ledger position."""
        member_changes: dict[str, Any] = dict(changes)
        if self.subscription is not self.member.subscription:
            member_changes["subscription"] = subscription_to_doc(self.subscription)
        return member_changes

    @property
    def balance(self) -> int:
        return self.wallet.running_balance

    async def save(self, deps: Deps, session: Session, **changes: Any) -> list[LedgerEntry]:
        """Write the member first (the point where concurrent changes collide), then the rest."""
        await deps.members.commit(
            self.member,
            new_seq=self.wallet.last_seq,
            session=session,
            changes=self.member_changes(**changes),
        )
        await deps.lots.write(self.wallet.created_lots, self.wallet.updated_lots, session)
        await deps.ledger.append(self.wallet.entries, session)
        return list(self.wallet.entries)
