"""What every use case shares: its dependencies, and a member's credits opened for change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Concatenate, Final, ParamSpec, TypeAlias, TypeVar

from inmail.clock import Clock
from inmail.domain.credits import CreditLot
from inmail.domain.model import LedgerEntry, Member, RecentSends, Subscription
from inmail.domain.notifications import Notification
from inmail.domain.plans import PlanTable, PlanType
from inmail.domain.wallet import Wallet
from inmail.services.events import BalancePublisher
from inmail.services.payments import PaymentGateway
from inmail.services.rate_limits import RateLimits
from inmail.services.unit_of_work import Reads, Transaction, UnitOfWork, new_id


@dataclass(frozen=True, slots=True)
class Limits:
    """The use cases' bounds, given by the composition root from the settings."""

    max_purchase_quantity: int
    reminder_delay: timedelta
    expiry_notice: timedelta


class NullPublisher:
    async def publish(self, entries: object) -> None:
        return None


@dataclass(frozen=True)
class Deps:
    uow: UnitOfWork
    clock: Clock
    plans: PlanTable
    limits: Limits
    rate_limits: RateLimits
    gateway: PaymentGateway  # what paid requests charge, and reconciliation asks and refunds
    publisher: BalancePublisher = field(default_factory=NullPublisher)

    @property
    def reads(self) -> Reads:
        return self.uow.reads

    def now(self) -> datetime:
        return self.clock.now()


P = ParamSpec("P")
R = TypeVar("R")
UseCase: TypeAlias = Callable[Concatenate[Deps, P], Awaitable[R]]
"""A use case: an async function of the service's dependencies first, then its own arguments."""


def allotment_notices(allotments: Iterable[LedgerEntry]) -> list[Notification]:
    """RENEWED for each allotment granted (a cycle's, a new subscription's first), also one the
    cap clamped to nothing (SPEC 5a)."""
    return [
        Notification.renewed(entry.member_id, entry.grant_key, entry.lot_id, entry.at)
        for entry in allotments
        if entry.grant_key is not None
    ]


async def unwritten_changes(deps: Deps, member_id: str) -> list[LedgerEntry]:
    """What the member's next write would record first, as of now: lapsed lots expired and the
    cycles that started granted (nothing is written). Their sequence numbers are the ones that
    write will give them."""
    account = await Account.load(deps.reads, deps.plans, member_id, deps.now())
    return [] if account is None else list(account.wallet.entries)


async def bring_up_to_date(deps: Deps, member_id: str) -> None:
    """Write what is already true of the member's credits as of now, as its next write would
    first: the cycles that started granted, lapsed lots expired. Nothing when nothing is due
    (or another request wrote it meanwhile)."""
    entries = await deps.uow.run(_up_to_date, deps, member_id, deps.now())
    if entries:
        await deps.publisher.publish(entries)


async def _up_to_date(
    tx: Transaction, deps: Deps, member_id: str, now: datetime
) -> list[LedgerEntry]:
    account = await Account.load(tx, deps.plans, member_id, now)
    if account is None or not account.changed:
        return []
    return await account.save(tx)


CLOCK_SKEW: Final = timedelta(seconds=1)
"""How far ahead of this process's clock another process's may run with the ledger still kept in
time order: a member's latest entry dated up to this far ahead dates the next change after it.
One dated further ahead (a clock set wrong, a manual clock restarted behind the data) is not
followed: the member's changes, and their rate limit's minute, are not held in the future."""


def change_time(asked: datetime, clock_now: datetime, ledger_at: datetime | None) -> datetime:
    """When a change of a member's credits is dated: not before the time it was asked at, nor the
    clock's reading as its transaction opens the member's credits (run again after another change
    of the member committed, it took its time before that change), nor the member's latest entry
    when that is at most CLOCK_SKEW ahead of the clock."""
    at = max(asked, clock_now)
    if ledger_at is not None and ledger_at <= clock_now + CLOCK_SKEW:
        at = max(at, ledger_at)
    return at


@dataclass
class Account:
    """A member's credits opened inside one transaction, as of `now`. Opened for a change (given
    the clock's reading, `latest`), `now` is the change's time (`change_time`), at which it is
    dated, so that the ledger stays in time order whatever time the change was asked at."""

    member: Member
    wallet: Wallet
    subscription: Subscription | None
    now: datetime
    recent_inmails: RecentSends = field(default_factory=RecentSends)  # what the limit counts

    @classmethod
    async def open(
        cls,
        tx: Transaction | Reads,
        plans: PlanTable,
        member: Member,
        now: datetime,
        *,
        latest: datetime | None = None,
    ) -> Account:
        """Load the member's live lots and bring them up to `now`: due renewals, lapsed lots."""
        lots = await tx.lots.active_for(member.id)
        return cls.brought_up_to(plans, member, lots, now, latest=latest)

    @classmethod
    async def load(
        cls,
        tx: Transaction | Reads,
        plans: PlanTable,
        member_id: str,
        now: datetime,
        *,
        latest: datetime | None = None,
    ) -> Account | None:
        """`open` for a member not read yet: the member and its live lots in one read; None
        when there is no such member."""
        found, lots = await tx.members.get_many_with_lots([], member_id)
        member = found.get(member_id)
        if member is None:
            return None
        return cls.brought_up_to(plans, member, lots, now, latest=latest)

    @classmethod
    def brought_up_to(
        cls,
        plans: PlanTable,
        member: Member,
        active_lots: Iterable[CreditLot],
        now: datetime,
        *,
        latest: datetime | None = None,
    ) -> Account:
        """`open` for a member whose ACTIVE lots were already read (a batch reads many at once)."""
        if latest is not None:
            now = change_time(now, latest, member.ledger_at)
        wallet = Wallet(member.id, active_lots, member.ledger_seq, new_id)
        subscription = member.subscription
        if subscription is not None:
            subscription = wallet.renew(subscription, plans, now)
        wallet.expire_lapsed(now)
        return cls(
            member=member,
            wallet=wallet,
            subscription=subscription,
            now=now,
            recent_inmails=member.recent_inmails,
        )

    @property
    def changed(self) -> bool:
        return bool(self.wallet.entries) or self.subscription is not self.member.subscription

    @property
    def balance(self) -> int:
        return self.wallet.running_balance

    def updated(self, plan: PlanType | None = None) -> Member:
        """The member as this change leaves it: new ledger position and time, subscription,
        plan."""
        times = [entry.at for entry in self.wallet.entries]
        if self.member.ledger_at is not None:
            times.append(self.member.ledger_at)
        return replace(
            self.member,
            ledger_seq=self.wallet.last_seq,
            ledger_at=max(times, default=None),
            subscription=self.subscription,
            plan=plan or self.member.plan,
            recent_inmails=self.recent_inmails,
        )

    async def save(self, tx: Transaction, plan: PlanType | None = None) -> list[LedgerEntry]:
        """Write what this account changed (and `plan`, a plan change): `save_all` of one."""
        return await save_all(tx, [(self, self.updated(plan))])


async def save_all(tx: Transaction, changes: Sequence[tuple[Account, Member]]) -> list[LedgerEntry]:
    """Write what each account changed, its member as updated beside it, together: the members
    first (the point where concurrent changes collide), then their lots, ledger entries and
    allotment notices, and the expiry notices of lots that lapsed before anyone gave them. The
    entries written, in order."""
    await tx.members.write_each_unless_moved(
        [(account.member, updated) for account, updated in changes]
    )
    wallets = [account.wallet for account, _ in changes]
    await tx.lots.write(
        [lot for wallet in wallets for lot in wallet.created_lots],
        [lot for wallet in wallets for lot in wallet.updated_lots],
    )
    entries = [entry for wallet in wallets for entry in wallet.entries]
    await tx.ledger.append(entries)
    await tx.notifications.add_new(
        allotment_notices(entry for wallet in wallets for entry in wallet.allotments)
    )
    await tx.notifications.give_missed_expiry_notices(
        [lot for wallet in wallets for lot in wallet.lapsed]
    )
    return entries
