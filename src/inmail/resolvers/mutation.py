"""The Mutation root: business failures come back in `errors`, access failures as errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import strawberry

from inmail.domain.billing import validate_payment_method
from inmail.domain.errors import DomainError
from inmail.resolvers import clock as clock_resolvers
from inmail.schema.errors import UserError
from inmail.schema.inputs import (
    AdvanceClockInput,
    ChangePlanInput,
    ConnectMembersInput,
    CreateMemberInput,
    PaymentMethodInput,
    PurchaseInMailCreditsInput,
    RespondToInMailInput,
    SendInMailInput,
    SendMessageInput,
)
from inmail.schema.payloads import (
    AdvanceClockPayload,
    CancelSubscriptionPayload,
    ChangePlanPayload,
    ConnectMembersPayload,
    CreateMemberPayload,
    PurchaseInMailCreditsPayload,
    RespondToInMailPayload,
    SendInMailPayload,
    SendMessagePayload,
    UpdatePaymentMethodPayload,
)
from inmail.schema.types import (
    Conversation,
    CreditLot,
    GraphInfo,
    Member,
    Message,
    PremiumSubscription,
    ctx,
)
from inmail.services import inmail as inmail_service
from inmail.services import members as member_service
from inmail.services.purchases import purchase_credits

P = TypeVar("P")


async def _attempt(failed: Callable[[list[UserError]], P], work: Callable[[], Awaitable[P]]) -> P:
    try:
        return await work()
    except DomainError as error:
        return failed([UserError.from_domain(error)])


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def send_in_mail(self, info: GraphInfo, input: SendInMailInput) -> SendInMailPayload:
        c = ctx(info)
        sender = c.require_member()

        async def work() -> SendInMailPayload:
            result = await inmail_service.send_inmail(
                c.deps,
                sender,
                str(input.recipient_id),
                input.subject,
                input.body,
                input.idempotency_key,
            )
            return SendInMailPayload(
                conversation=Conversation.from_domain(result.conversation),
                credits_left=result.credits_left,
            )

        return await _attempt(lambda e: SendInMailPayload(errors=e), work)

    @strawberry.mutation
    async def respond_to_in_mail(
        self, info: GraphInfo, input: RespondToInMailInput
    ) -> RespondToInMailPayload:
        c = ctx(info)
        member = c.require_member()

        async def work() -> RespondToInMailPayload:
            result = await inmail_service.respond(
                c.deps, member, str(input.conversation_id), input.response, input.body
            )
            return RespondToInMailPayload(
                conversation=Conversation.from_domain(result.conversation),
                credited_back=result.credited_back,
            )

        return await _attempt(lambda e: RespondToInMailPayload(errors=e), work)

    @strawberry.mutation
    async def send_message(self, info: GraphInfo, input: SendMessageInput) -> SendMessagePayload:
        c = ctx(info)
        member = c.require_member()

        async def work() -> SendMessagePayload:
            conversation, message = await inmail_service.send_message(
                c.deps,
                member,
                input.body,
                recipient_id=str(input.recipient_id) if input.recipient_id else None,
                conversation_id=str(input.conversation_id) if input.conversation_id else None,
            )
            return SendMessagePayload(
                conversation=Conversation.from_domain(conversation),
                message=Message.from_domain(message),
            )

        return await _attempt(lambda e: SendMessagePayload(errors=e), work)

    @strawberry.mutation
    async def purchase_in_mail_credits(
        self, info: GraphInfo, input: PurchaseInMailCreditsInput
    ) -> PurchaseInMailCreditsPayload:
        c = ctx(info)
        member = c.require_member()

        async def work() -> PurchaseInMailCreditsPayload:
            result = await purchase_credits(
                c.deps, c.container.gateway, member, input.quantity, input.idempotency_key
            )
            return PurchaseInMailCreditsPayload(
                lot=CreditLot.from_domain(result.lot) if result.lot else None,
                credits_left=result.credits_left,
            )

        return await _attempt(lambda e: PurchaseInMailCreditsPayload(errors=e), work)

    @strawberry.mutation
    async def update_payment_method(
        self, info: GraphInfo, input: PaymentMethodInput
    ) -> UpdatePaymentMethodPayload:
        c = ctx(info)
        member_id = c.require_member()

        async def work() -> UpdatePaymentMethodPayload:
            member = await member_service.update_payment_method(
                c.deps, member_id, input.brand, input.last4, input.exp_month, input.exp_year
            )
            return UpdatePaymentMethodPayload(
                subscription=PremiumSubscription.from_domain(member, c.deps.plans, c.deps.now())
            )

        return await _attempt(lambda e: UpdatePaymentMethodPayload(errors=e), work)

    @strawberry.mutation
    async def change_plan(self, info: GraphInfo, input: ChangePlanInput) -> ChangePlanPayload:
        c = ctx(info)
        by_admin = input.member_id is not None
        if by_admin:
            c.require_admin()
        member_id = str(input.member_id) if by_admin else c.require_member()

        async def work() -> ChangePlanPayload:
            member = await member_service.change_plan(
                c.deps,
                member_id,
                input.plan,
                input.monthly_allotment,
                idempotency_key=input.idempotency_key,
                by_admin=by_admin,
                gateway=c.container.gateway,
            )
            c.loaders.clear()
            return ChangePlanPayload(member=Member.from_domain(member))

        return await _attempt(lambda e: ChangePlanPayload(errors=e), work)

    @strawberry.mutation
    async def cancel_subscription(self, info: GraphInfo) -> CancelSubscriptionPayload:
        c = ctx(info)
        member_id = c.require_member()

        async def work() -> CancelSubscriptionPayload:
            member = await member_service.cancel_subscription(c.deps, member_id)
            c.loaders.clear()
            return CancelSubscriptionPayload(member=Member.from_domain(member))

        return await _attempt(lambda e: CancelSubscriptionPayload(errors=e), work)

    @strawberry.mutation(description="Admin only.")
    async def create_member(self, info: GraphInfo, input: CreateMemberInput) -> CreateMemberPayload:
        c = ctx(info)
        c.require_admin()

        async def work() -> CreateMemberPayload:
            card = input.payment_method
            new = member_service.NewMember(
                name=input.name,
                plan=input.plan,
                headline=input.headline,
                billing_day=input.billing_day,
                payment_method=validate_payment_method(
                    card.brand, card.last4, card.exp_month, card.exp_year
                )
                if card
                else None,
                monthly_allotment=input.monthly_allotment,
            )
            member = await member_service.create_member(c.deps, new)
            return CreateMemberPayload(member=Member.from_domain(member))

        return await _attempt(lambda e: CreateMemberPayload(errors=e), work)

    @strawberry.mutation(description="Admin only: makes two members 1st-degree connections.")
    async def connect_members(
        self, info: GraphInfo, input: ConnectMembersInput
    ) -> ConnectMembersPayload:
        c = ctx(info)
        c.require_admin()

        async def work() -> ConnectMembersPayload:
            await member_service.connect_members(
                c.deps, str(input.member_id), str(input.other_member_id)
            )
            return ConnectMembersPayload(ok=True)

        return await _attempt(lambda e: ConnectMembersPayload(errors=e), work)

    @strawberry.mutation(
        description="Admin only, and only while the clock is manual: moves time forward and "
        "runs every job that became due."
    )
    async def advance_clock(self, info: GraphInfo, input: AdvanceClockInput) -> AdvanceClockPayload:
        return await clock_resolvers.advance_clock(info, input)
