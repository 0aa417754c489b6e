"""Mutation payloads: the result, or `errors` with stable codes, never both; and, on those of
a member's own mutations, the `viewer` as the mutation left them."""

from __future__ import annotations

from datetime import datetime

import strawberry

from inmail.domain import model, plans
from inmail.schema.context import GraphInfo, reads
from inmail.schema.errors import UserError
from inmail.schema.types import (
    Conversation,
    CreditLot,
    Member,
    Message,
    PaymentMethod,
    PremiumSubscription,
)


@strawberry.type
class _ViewerAfter:
    @strawberry.field(
        description="The viewer as the mutation left them (their balance, lots, conversations), "
        "read after it, whether it succeeded or not: a client updates its cache from it."
    )
    async def viewer(self, info: GraphInfo) -> Member | None:
        profile = await reads(info).viewer_profile()
        return None if profile is None else Member.from_domain(profile)


@strawberry.type
class SendInMailPayload(_ViewerAfter):
    conversation: Conversation | None = None
    credits_left: int | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RespondToInMailPayload(_ViewerAfter):
    conversation: Conversation | None = None
    credited_back: bool = False
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class SendMessagePayload(_ViewerAfter):
    conversation: Conversation | None = None
    message: Message | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class PurchaseInMailCreditsPayload(_ViewerAfter):
    lot: CreditLot | None = None
    credits_left: int | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class UpdatePaymentMethodPayload(_ViewerAfter):
    subscription: PremiumSubscription | None = None
    payment_method: PaymentMethod | None = strawberry.field(
        default=None,
        description="The card now on file, with or without a subscription (a Basic member "
        "keeps one for a later paid plan change).",
    )
    errors: list[UserError] = strawberry.field(default_factory=list)

    @classmethod
    def of(
        cls, member: model.Member, table: plans.PlanTable, now: datetime
    ) -> UpdatePaymentMethodPayload:
        card = member.payment_method
        return cls(
            subscription=PremiumSubscription.from_domain(member, table, now),
            payment_method=PaymentMethod.from_domain(card, now) if card else None,
        )


@strawberry.type
class _MemberPayload:
    """The payload of a mutation whose result is the member it changed or made."""

    member: Member | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ChangePlanPayload(_MemberPayload):
    pass


@strawberry.type
class CancelSubscriptionPayload(_MemberPayload):
    pass


@strawberry.type
class CreateMemberPayload(_MemberPayload):
    pass


@strawberry.type
class ConnectMembersPayload:
    ok: bool = False
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class AdvanceClockPayload:
    now: datetime
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class MarkNotificationsReadPayload(_ViewerAfter):
    unread_count: int
    errors: list[UserError] = strawberry.field(default_factory=list)
