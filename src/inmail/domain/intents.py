"""Payment intents: every charge is made for one intent, recorded before the card is charged.

An intent fixes what a keyed paid request is (its fingerprint, quantity or plan, and amount)
before the card is charged. Its status moves only forward:

    PENDING -> CHARGED -> COMPLETED          (the grant or plan change, in one transaction)
    PENDING -> DECLINED                      (refused, and the gateway had no charge for it)
    PENDING -> ABANDONED                     (no charge was ever made; found by reconciliation)
    CHARGED | DECLINED | ABANDONED -> REFUNDING -> REFUNDED

CHARGED -> COMPLETED and CHARGED -> REFUNDING exclude each other: that single transition decides
whether a charge buys what it was for or is given back. DECLINED and ABANDONED are given up as
never charged: a charge found under the intent afterwards (made by an attempt still under way, or
by one whose answer was lost) is refunded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from inmail.domain.keyed import KeyedOutcome, KeyedRefusal
from inmail.domain.money import Money
from inmail.domain.plans import PlanType


class IntentKind(StrEnum):
    """The operation names of the requests paid for through a payment intent."""

    PURCHASE = "purchaseInMailCredits"
    PLAN_CHANGE = "changePlan"


class IntentStatus(StrEnum):
    PENDING = "PENDING"
    CHARGED = "CHARGED"
    COMPLETED = "COMPLETED"
    DECLINED = "DECLINED"
    ABANDONED = "ABANDONED"
    REFUNDING = "REFUNDING"
    REFUNDED = "REFUNDED"


OPEN_STATUSES: Final = (IntentStatus.PENDING, IntentStatus.CHARGED, IntentStatus.REFUNDING)
UNDER_WAY: Final = (IntentStatus.PENDING, IntentStatus.CHARGED)  # may still be charged or applied
"""An intent in one of these may hold money that has not yet bought anything nor been returned."""
GIVEN_UP: Final = (IntentStatus.DECLINED, IntentStatus.ABANDONED)
"""Ended as never charged; a charge found at the gateway under one of these later is refunded."""


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    id: str
    member_id: str
    key: str
    kind: IntentKind
    request_hash: str
    amount: Money
    created_at: datetime
    status: IntentStatus = IntentStatus.PENDING
    quantity: int | None = None  # a purchase's credits
    plan: PlanType | None = None  # a plan change's new plan
    charge_id: str | None = None
    outcome: KeyedOutcome | None = None
    refusal: KeyedRefusal | None = None
    # A plan change's: the member's terms when it was asked for (`Member.terms`); None in
    # intents recorded before they were kept.
    terms: str | None = None
    recheck_at: datetime | None = None  # a given-up intent's next look at the gateway
    given_up_at: datetime | None = None  # when it was declined or abandoned
