"""Balance updates: what a ledger entry tells a live subscriber."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from inmail.domain.credits import LedgerKind
from inmail.domain.model import LedgerEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BalanceUpdate:
    member_id: str
    balance: int
    delta: int
    reason: LedgerKind
    at: datetime
    seq: int  # the sequence number of the last ledger entry it says
    first_seq: int | None = None  # of the first, when it says several (None: `seq`'s alone)

    @property
    def starts(self) -> int:
        return self.seq if self.first_seq is None else self.first_seq

    def following(self, seq: int, balance: int) -> BalanceUpdate:
        """This update as it reads after the change numbered `seq`, which left `balance`: what
        it adds past there. Part of it may have been said already (a merged update straddling
        a change given before it), or changes between may have gone unsaid (a catch-up after a
        gap): either way its delta is what moved since `balance`."""
        if self.starts == seq + 1:
            return self
        return replace(self, delta=self.balance - balance, first_seq=seq + 1)

    @classmethod
    def from_entry(cls, entry: LedgerEntry) -> BalanceUpdate:
        return cls(
            member_id=entry.member_id,
            balance=entry.balance_after,
            delta=entry.delta,
            reason=entry.kind,
            at=entry.at,
            seq=entry.seq,
        )


class BalancePublisher(Protocol):
    async def publish(self, entries: Sequence[LedgerEntry]) -> None:
        """Hand on entries this process committed (live subscribers learn of them from the
        ledger's feed instead, whichever process wrote them)."""


class FanOut:
    """Hands committed entries to every listener in this process (the ledger metrics; tests add
    their own).

    What was handed on is committed already: a listener that fails is logged, and neither
    stops the others nor turns the request that committed them into an error."""

    def __init__(self) -> None:
        self.listeners: list[BalancePublisher] = []

    async def publish(self, entries: Sequence[LedgerEntry]) -> None:
        if entries:
            for listener in self.listeners:
                try:
                    await listener.publish(entries)
                except Exception:
                    log.exception("a listener of committed ledger entries failed")
