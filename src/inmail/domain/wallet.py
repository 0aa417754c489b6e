"""A member's credits during one change: every movement becomes a ledger entry, in time order.

The wallet keeps the running balance equal to the sum of deltas it wrote: before each event at
time t it first expires every lot that lapsed by t (`expire_lapsed`), so an entry's balanceAfter
is the balance at its own time, however late the change is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime

from inmail.domain.billing import cycle_starts
from inmail.domain.credits import (
    LAPSED,
    CreditLot,
    CreditSource,
    LedgerKind,
    LotStatus,
    clamp_grant,
    cycle_grant_key,
    expiry_for,
    pick_lot,
    spend_order_key,
)
from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.model import RENEWAL_DUE, LedgerEntry, Subscription
from inmail.domain.plans import PlanTable, PlanType

_KIND_OF_SOURCE = {
    CreditSource.MONTHLY_ALLOTMENT: LedgerKind.GRANT,
    CreditSource.PURCHASE: LedgerKind.GRANT,
    CreditSource.CREDIT_BACK: LedgerKind.CREDIT_BACK,
}


class Wallet:
    def __init__(
        self,
        member_id: str,
        active_lots: Iterable[CreditLot],
        last_seq: int,
        new_id: Callable[[], str],
    ) -> None:
        self.member_id = member_id
        self._lots = {lot.id: lot for lot in active_lots if lot.status is LotStatus.ACTIVE}
        self._new_id = new_id
        self._seq = last_seq
        self._changed: set[str] = set()
        self._created: list[str] = []
        self.entries: list[LedgerEntry] = []
        # The GRANT entries of the allotments granted here (a cycle's start, a subscription's
        # first): each is reported to its member as RENEWED (SPEC 5a).
        self.allotments: list[LedgerEntry] = []
        # The lots expired here with credits left, as they were: each was due a CREDITS_EXPIRING
        # notice before it expired (SPEC 5a), which no process may have been running to give.
        self.lapsed: list[CreditLot] = []
        self._running = sum(lot.remaining for lot in self._lots.values())

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def running_balance(self) -> int:
        return self._running

    @property
    def created_lots(self) -> list[CreditLot]:
        return [self._lots[i] for i in self._created]

    @property
    def updated_lots(self) -> list[CreditLot]:
        return [self._lots[i] for i in self._changed if i not in self._created]

    def active_lots(self) -> Iterator[CreditLot]:
        return (lot for lot in self._lots.values() if lot.status is LotStatus.ACTIVE)

    def expire_lapsed(self, until: datetime) -> None:
        """Expire, in expiry order, every lot whose 90 days ended at or before `until`."""
        lapsed = sorted(
            (lot for lot in self.active_lots() if LAPSED.matches(lot, until)),
            key=spend_order_key,
        )
        for lot in lapsed:
            self.lapsed.append(lot)
            self._put(replace(lot, remaining=0, status=LotStatus.EXPIRED))
            self._record_of_lot(lot.expires_at, LedgerKind.EXPIRE, lot)

    def grant(
        self,
        source: CreditSource,
        quantity: int,
        at: datetime,
        cap: int,
        *,
        grant_key: str,
        conversation_id: str | None = None,
        purchase_id: str | None = None,
    ) -> CreditLot | None:
        """Add a lot clamped to the cap; a grant clamped to nothing still leaves its entry."""
        self.expire_lapsed(at)
        granted = clamp_grant(quantity, self._running, cap)
        lot: CreditLot | None = None
        if granted > 0:
            lot = CreditLot(
                id=self._new_id(),
                member_id=self.member_id,
                source=source,
                quantity=granted,
                remaining=granted,
                granted_at=at,
                expires_at=expiry_for(at),
                status=LotStatus.ACTIVE,
                conversation_id=conversation_id,
                purchase_id=purchase_id,
            )
            self._put(lot)
            self._created.append(lot.id)
        self._record(
            at,
            _KIND_OF_SOURCE[source],
            granted,
            lot_id=lot.id if lot else None,
            conversation_id=conversation_id,
            purchase_id=purchase_id,
            grant_key=grant_key,
            requested=quantity,
        )
        return lot

    def spend(self, at: datetime, conversation_id: str) -> CreditLot:
        """Take one credit from the lot that expires soonest."""
        self.expire_lapsed(at)
        lot = pick_lot(self.active_lots(), at)
        if lot is None:
            raise DomainError(ErrorCode.INSUFFICIENT_CREDITS, Reason.NO_CREDITS_LEFT)
        remaining = lot.remaining - 1
        spent = replace(
            lot, remaining=remaining, status=LotStatus.ACTIVE if remaining else LotStatus.DEPLETED
        )
        self._put(spent)
        self._record(at, LedgerKind.DEBIT, -1, lot_id=lot.id, conversation_id=conversation_id)
        return spent

    def forfeit_all(self, at: datetime) -> None:
        """Zero the balance at once: every lot still holding credits is forfeited."""
        self.expire_lapsed(at)
        holding = sorted(
            (lot for lot in self.active_lots() if lot.remaining > 0),
            key=spend_order_key,
        )
        for lot in holding:
            self._put(replace(lot, remaining=0, status=LotStatus.FORFEITED))
            self._record_of_lot(at, LedgerKind.FORFEIT, lot)

    def renew(self, subscription: Subscription, plans: PlanTable, until: datetime) -> Subscription:
        """Grant every cycle that started by `until`, each at its own start, in order."""
        if not RENEWAL_DUE.is_due(subscription, until):
            return subscription
        current = subscription
        for start in cycle_starts(subscription.period_start, until, subscription.billing_day):
            policy = plans.policy(current.plan, current.monthly_allotment)
            self.grant(
                CreditSource.MONTHLY_ALLOTMENT,
                policy.monthly_allotment,
                start,
                policy.max_balance,
                grant_key=cycle_grant_key(current.id, start),
            )
            self.allotments.append(self.entries[-1])
            current = current.renewed(start)
        return current

    def restart(
        self, plan: PlanType, allotment: int | None, plans: PlanTable, now: datetime
    ) -> Subscription:
        """A change of plan (SPEC 2): credits do not transfer (every lot is forfeited), the new
        plan's cycle starts today, on today's day of the month, and its allotment is granted at
        once. The new subscription."""
        self.forfeit_all(now)
        subscription = Subscription.start(self._new_id(), plan, now, now.day, allotment)
        self.start_subscription(subscription, plans)
        return subscription

    def start_subscription(self, subscription: Subscription, plans: PlanTable) -> None:
        """A new subscription's first allotment, granted at once (SPEC 2)."""
        policy = plans.policy(subscription.plan, subscription.monthly_allotment)
        if subscription.plan is PlanType.BASIC:
            return
        self.grant(
            CreditSource.MONTHLY_ALLOTMENT,
            policy.monthly_allotment,
            subscription.started_at,
            policy.max_balance,
            grant_key=cycle_grant_key(subscription.id, subscription.period_start),
        )
        self.allotments.append(self.entries[-1])

    def _put(self, lot: CreditLot) -> None:
        previous = self._lots.get(lot.id)
        before = previous.remaining if previous and previous.status is LotStatus.ACTIVE else 0
        after = lot.remaining if lot.status is LotStatus.ACTIVE else 0
        self._running += after - before
        self._lots[lot.id] = lot
        self._changed.add(lot.id)

    def _record_of_lot(self, at: datetime, kind: LedgerKind, lot: CreditLot) -> None:
        """Append the entry that takes what is left of `lot` away, naming what it came from."""
        self._record(
            at,
            kind,
            -lot.remaining,
            lot_id=lot.id,
            conversation_id=lot.conversation_id,
            purchase_id=lot.purchase_id,
        )

    def _record(
        self,
        at: datetime,
        kind: LedgerKind,
        delta: int,
        *,
        lot_id: str | None = None,
        conversation_id: str | None = None,
        purchase_id: str | None = None,
        grant_key: str | None = None,
        requested: int | None = None,
    ) -> None:
        """Append the entry of a change already applied to the lots (`_put` comes first)."""
        self._seq += 1
        self.entries.append(
            LedgerEntry(
                id=self._new_id(),
                member_id=self.member_id,
                seq=self._seq,
                at=at,
                kind=kind,
                delta=delta,
                balance_after=self._running,
                lot_id=lot_id,
                conversation_id=conversation_id,
                purchase_id=purchase_id,
                grant_key=grant_key,
                requested=requested,
            )
        )
