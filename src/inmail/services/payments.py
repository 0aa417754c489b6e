"""The payment gateway interface, and the built-in gateway that records charges and refunds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from inmail.domain.billing import ChargeRecord, ChargeStatus, PaymentMethod
from inmail.domain.money import Money
from inmail.repositories.records import ChargeRepository

DECLINED_LAST4: Final = "0002"
"""The built-in gateway declines cards ending 0002, as the payment industry's test card does."""


@dataclass(frozen=True, slots=True)
class Charge:
    id: str
    amount: Money
    refunded: bool = False


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """One charge asked of a gateway: at most one is taken per (member, key)."""

    member_id: str
    idempotency_key: str
    amount: Money
    card: PaymentMethod
    at: datetime
    description: str


class PaymentDeclined(Exception):
    """The provider refused the charge; nothing was taken."""


class PaymentGateway(Protocol):
    async def charge(self, request: ChargeRequest) -> Charge:
        """Charge the card once per (member, key): a retry returns the first charge."""

    async def refund(self, charge: Charge, at: datetime) -> None:
        """Give the charge back; refunding it again changes nothing."""

    async def find(self, member_id: str, idempotency_key: str) -> Charge | None:
        """The charge made under this key, if any (refunded or not)."""


def _why_declined(card: PaymentMethod, at: datetime) -> str | None:
    if card.is_expired(at):
        return "the card has expired"
    if card.last4 == DECLINED_LAST4:
        return "the card was declined"
    return None


def _charge(record: ChargeRecord) -> Charge:
    return Charge(record.id, record.amount, record.status == ChargeStatus.REFUNDED)


class BuiltinGateway:
    """Accepts any unexpired card but one ending 0002, and records the charge; a real provider
    plugs in instead behind the same interface."""

    def __init__(self, charges: ChargeRepository) -> None:
        self._charges = charges

    async def charge(self, request: ChargeRequest) -> Charge:
        card = request.card
        declined = _why_declined(card, request.at)
        if declined is not None:
            # A retry under a key already charged gets that charge, whatever the card is now.
            first = await self.find(request.member_id, request.idempotency_key)
            if first is None:
                raise PaymentDeclined(declined)
            return first
        record = await self._charges.charge_once(
            request.member_id,
            request.idempotency_key,
            amount=request.amount,
            description=request.description,
            card_last4=card.last4,
            at=request.at,
        )
        return _charge(record)

    async def refund(self, charge: Charge, at: datetime) -> None:
        await self._charges.refund(charge.id, at)

    async def find(self, member_id: str, idempotency_key: str) -> Charge | None:
        record = await self._charges.under_key(member_id, idempotency_key)
        return _charge(record) if record else None
