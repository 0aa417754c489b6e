"""The payment gateway interface, and the built-in gateway that records charges."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from inmail.domain.billing import PaymentMethod
from inmail.repositories.records import ChargeRepository


@dataclass(frozen=True, slots=True)
class Charge:
    id: str
    quantity: int


class PaymentDeclined(Exception):
    """The provider refused the charge; nothing was taken."""


class PaymentGateway(Protocol):
    async def charge(
        self,
        member_id: str,
        idempotency_key: str,
        quantity: int,
        card: PaymentMethod,
        at: datetime,
    ) -> Charge:
        """Charge the card once per (member, key): a retry returns the first charge."""

    async def refund(self, charge: Charge, at: datetime) -> None: ...

    async def find(self, member_id: str, idempotency_key: str) -> Charge | None:
        """The standing (not refunded) charge made under this key, if any."""


class BuiltinGateway:
    """Accepts any unexpired card and records the charge; a real provider plugs in instead."""

    def __init__(self, charges: ChargeRepository) -> None:
        self._charges = charges

    async def charge(
        self,
        member_id: str,
        idempotency_key: str,
        quantity: int,
        card: PaymentMethod,
        at: datetime,
    ) -> Charge:
        if card.is_expired(at):
            raise PaymentDeclined("the card has expired")
        record = await self._charges.charge_once(
            member_id, idempotency_key, quantity=quantity, card_last4=card.last4, at=at
        )
        return Charge(id=record.id, quantity=record.quantity)

    async def refund(self, charge: Charge, at: datetime) -> None:
        await self._charges.refund(charge.id, at)

    async def find(self, member_id: str, idempotency_key: str) -> Charge | None:
        record = await self._charges.standing(member_id, idempotency_key)
        return Charge(id=record.id, quantity=record.quantity) if record else None
