"""Balance updates: what a ledger entry tells a live subscriber."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from inmail.domain.credits import LedgerKind
from inmail.domain.model import LedgerEntry


@dataclass(frozen=True, slots=True)
class BalanceUpdate:
    member_id: str
    balance: int
    delta: int
    reason: LedgerKind
    at: datetime
    seq: int

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
        """Tell this process's subscribers about committed entries (others learn by other means)."""


class FanOut:
    """Hands committed entries to every listener in this process (live updates, metrics)."""

    def __init__(self) -> None:
        self.listeners: list[BalancePublisher] = []

    async def publish(self, entries: Sequence[LedgerEntry]) -> None:
        if entries:
            for listener in self.listeners:
                await listener.publish(entries)
