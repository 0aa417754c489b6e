"""What each kind of paid request's charge buys, for reconciliation to finish a request that
never came back (services/charges.py `reconcile_charges`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from inmail.domain.intents import IntentKind
from inmail.services import members, purchases
from inmail.services.charges import Fulfil

FULFILMENTS: Final[Mapping[IntentKind, Fulfil]] = {
    IntentKind.PURCHASE: purchases.grant_purchase,
    IntentKind.PLAN_CHANGE: members.apply_paid_change,
}
