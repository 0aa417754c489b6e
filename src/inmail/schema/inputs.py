"""Mutation inputs, as API.graphql names them."""

from __future__ import annotations

import strawberry

from inmail.schema.enums import InMailResponse, PlanType


@strawberry.input
class SendInMailInput:
    recipient_id: strawberry.ID
    subject: str
    body: str
    idempotency_key: str


@strawberry.input
class RespondToInMailInput:
    conversation_id: strawberry.ID
    response: InMailResponse
    body: str | None = strawberry.field(
        default=None, description="Required for REPLY; an optional note otherwise."
    )


@strawberry.input
class SendMessageInput:
    recipient_id: strawberry.ID | None = strawberry.field(
        default=None, description="A 1st-degree connection to write to, or"
    )
    conversation_id: strawberry.ID | None = strawberry.field(
        default=None, description="a conversation that has had a response."
    )
    body: str


@strawberry.input
class PurchaseInMailCreditsInput:
    quantity: int
    idempotency_key: str


@strawberry.input
class PaymentMethodInput:
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@strawberry.input
class ChangePlanInput:
    plan: PlanType
    monthly_allotment: int | None = strawberry.field(
        default=None,
        description="For LEGACY_PREMIUM (admin only): the grandfathered monthly allotment.",
    )
    member_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="Admin only: the member whose plan changes (a member changes their own).",
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description=(
            "Required for a member's paid change: a retry never charges twice. Optional for "
            "a member's change to BASIC, where a retry then cancels nothing again. An admin's "
            "change (memberId) is not charged and takes no key: it is ignored there."
        ),
    )


@strawberry.input
class CreateMemberInput:
    name: str
    headline: str | None = None
    plan: PlanType
    billing_day: int | None = strawberry.field(
        default=None, description="Billing anchor day; defaults to the day of month of the start."
    )
    payment_method: PaymentMethodInput | None = None
    monthly_allotment: int | None = strawberry.field(
        default=None, description="For LEGACY_PREMIUM: the grandfathered monthly allotment."
    )


@strawberry.input
class ConnectMembersInput:
    member_id: strawberry.ID
    other_member_id: strawberry.ID


@strawberry.input
class AdvanceClockInput:
    days: int | None = None
    hours: int | None = None


@strawberry.input
class MarkNotificationsReadInput:
    ids: list[strawberry.ID] | None = strawberry.field(
        default=None, description="These notifications of the viewer, or"
    )
    all: bool | None = strawberry.field(default=None, description="every unread one.")
