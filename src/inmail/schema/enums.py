"""GraphQL enums: the domain's own enum classes, registered under the contract's names."""

from __future__ import annotations

import strawberry

from inmail.domain.conversations import ConversationRole, ConversationState, InMailResponse
from inmail.domain.credits import CreditSource, LedgerKind, LotStatus
from inmail.domain.errors import ErrorCode
from inmail.domain.model import ConversationKind, PurchaseStatus, SubscriptionStatus
from inmail.domain.notifications import ConversationEventKind, NotificationKind
from inmail.domain.plans import PlanType

strawberry.enum(PlanType, name="PlanType")
strawberry.enum(SubscriptionStatus, name="SubscriptionStatus")
strawberry.enum(CreditSource, name="CreditSource")
strawberry.enum(LotStatus, name="CreditLotStatus")
strawberry.enum(LedgerKind, name="LedgerEntryKind")
strawberry.enum(ConversationState, name="ConversationState")
strawberry.enum(
    ConversationKind,
    name="ConversationKind",
    description="INMAIL costs a credit; DIRECT is a free thread between 1st-degree connections.",
)
strawberry.enum(InMailResponse, name="InMailResponse")
strawberry.enum(
    ConversationRole,
    name="ConversationRole",
    description="SENT: conversations the member started; RECEIVED: those started with them.",
)
strawberry.enum(ErrorCode, name="ErrorCode")
strawberry.enum(PurchaseStatus, name="PurchaseStatus")

CreditLotStatus = LotStatus
LedgerEntryKind = LedgerKind

__all__ = [
    "ConversationKind",
    "ConversationRole",
    "ConversationState",
    "CreditLotStatus",
    "CreditSource",
    "ErrorCode",
    "InMailResponse",
    "LedgerEntryKind",
    "PlanType",
    "PurchaseStatus",
    "SubscriptionStatus",
]

# Notifications and live conversation events (SPEC 5a).
strawberry.enum(NotificationKind, name="NotificationKind")
strawberry.enum(ConversationEventKind, name="ConversationEventKind")
__all__ += ["ConversationEventKind", "NotificationKind"]
