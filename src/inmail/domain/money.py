"""Money: an integer amount in the currency's minor unit (cents) and an ISO 4217 code."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_CURRENCY = re.compile(r"^[A-Z]{3}$")
AMOUNT_MAX = 10**12  # far above any price here; keeps a misconfigured figure from overflowing


@dataclass(frozen=True, slots=True)
class Money:
    amount: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise ValueError(f"a money amount is an integer of minor units, got {self.amount!r}")
        if not 0 <= self.amount <= AMOUNT_MAX:
            raise ValueError(f"a money amount must be 0 to {AMOUNT_MAX}, got {self.amount}")
        if not isinstance(self.currency, str) or not _CURRENCY.match(self.currency):
            raise ValueError(f"a currency is an ISO 4217 code such as USD, got {self.currency!r}")

    def times(self, count: int) -> Money:
        return Money(self.amount * count, self.currency)

    def to_doc(self) -> dict[str, object]:
        return {"amount": self.amount, "currency": self.currency}

    @classmethod
    def from_doc(cls, doc: Mapping[str, object]) -> Money:
        """From stored or configured JSON: {"amount": 2999, "currency": "USD"}."""
        if not isinstance(doc, Mapping) or set(doc) != {"amount", "currency"}:
            raise ValueError(
                f'money is {{"amount": <minor units>, "currency": "USD"}}, got {doc!r}'
            )
        amount, currency = doc["amount"], doc["currency"]
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValueError(f"a money amount is an integer of minor units, got {amount!r}")
        if not isinstance(currency, str):
            raise ValueError(f"a currency is an ISO 4217 code such as USD, got {currency!r}")
        return cls(amount, currency)

    def __str__(self) -> str:
        return f"{self.currency} {self.amount // 100}.{self.amount % 100:02d}"
