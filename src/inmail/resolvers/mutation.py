"""The Mutation root: business failures come back in `errors`, access failures as errors."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, Protocol, TypeVar, cast

import strawberry

from inmail.domain.access import ReadRefused
from inmail.domain.billing import PaymentMethod
from inmail.domain.errors import DomainError, Reason
from inmail.resolvers import clock as clock_resolvers
from inmail.resolvers.context import ResolverInfo, ctx
from inmail.schema.errors import UserError, refused
from inmail.schema.inputs import (
    AdvanceClockInput,
    ChangePlanInput,
    ConnectMembersInput,
    CreateMemberInput,
    MarkNotificationsReadInput,
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
    MarkNotificationsReadPayload,
    PurchaseInMailCreditsPayload,
    RespondToInMailPayload,
    SendInMailPayload,
    SendMessagePayload,
    UpdatePaymentMethodPayload,
)
from inmail.schema.types import Conversation, CreditLot, Member, Message
from inmail.services import inmail as inmail_service
from inmail.services import members as member_service
from inmail.services import notifications as notification_service
from inmail.services.purchases import purchase_credits

P = TypeVar("P")
P_co = TypeVar("P_co", covariant=True)
Args = ParamSpec("Args")


class Failed(Protocol[P_co]):
    """A payload class: it can be made from errors alone."""

    def __call__(self, *, errors: list[UserError]) -> P_co: ...


def errors_in(
    payload: Failed[P],
) -> Callable[[Callable[Args, Awaitable[P]]], Callable[Args, Awaitable[P]]]:
    """A domain error from the mutation comes back in the payload's `errors`, worded; a
    refusal of the caller (domain/access.py) is a GraphQL error instead, and so is a member's
    own record found missing (`Context.own_record_missing`: the token is refused).

    What the request read before the mutation is forgotten once it has written: its payload,
    and the mutations and fields after it, read what it wrote."""

    def decorate(mutation: Callable[Args, Awaitable[P]]) -> Callable[Args, Awaitable[P]]:
        @functools.wraps(mutation)
        async def attempt(*args: Args.args, **kwargs: Args.kwargs) -> P:
            # Strawberry hands every resolver its `info` by that name: each mutation takes it.
            info = cast("ResolverInfo", kwargs["info"])
            try:
                done = await mutation(*args, **kwargs)
            except ReadRefused as refusal:
                raise refused(refusal) from None
            except DomainError as error:
                if _names_the_callers_record(error):
                    missing = ctx(info).own_record_missing()
                    if missing is not None:
                        raise missing from None
                return payload(errors=[UserError.from_domain(error)])
            ctx(info).reads.clear()
            return done

        return attempt

    return decorate


def _names_the_callers_record(error: DomainError) -> bool:
    """Whether `error` says the member a mutation acts on has no record, that member named by
    no input: for a member's token, the caller (a member acts on no one else)."""
    return error.reason is Reason.OWN_MEMBER_MISSING or (
        error.reason is Reason.NO_SUCH_MEMBER and error.field is None
    )


@strawberry.type(name="Mutation")
class ProductionMutation:
    """Every mutation production serves: all but advanceClock, which does not exist there
    (SPEC 7)."""

    @strawberry.mutation
    @errors_in(SendInMailPayload)
    async def send_in_mail(self, info: ResolverInfo, input: SendInMailInput) -> SendInMailPayload:
        c = ctx(info)
        result = await c.run(
            inmail_service.send_inmail,
            c.require_member(),
            str(input.recipient_id),
            input.subject,
            input.body,
            input.idempotency_key,
        )
        return SendInMailPayload(
            conversation=Conversation.from_domain(result.conversation),
            credits_left=result.credits_left,
        )

    @strawberry.mutation
    @errors_in(RespondToInMailPayload)
    async def respond_to_in_mail(
        self, info: ResolverInfo, input: RespondToInMailInput
    ) -> RespondToInMailPayload:
        c = ctx(info)
        result = await c.run(
            inmail_service.respond,
            c.require_member(),
            str(input.conversation_id),
            input.response,
            input.body,
        )
        return RespondToInMailPayload(
            conversation=Conversation.from_domain(result.conversation),
            credited_back=result.credited_back,
        )

    @strawberry.mutation
    @errors_in(SendMessagePayload)
    async def send_message(self, info: ResolverInfo, input: SendMessageInput) -> SendMessagePayload:
        c = ctx(info)
        conversation, message = await c.run(
            inmail_service.send_message,
            c.require_member(),
            input.body,
            recipient_id=str(input.recipient_id) if input.recipient_id else None,
            conversation_id=str(input.conversation_id) if input.conversation_id else None,
        )
        return SendMessagePayload(
            conversation=Conversation.from_domain(conversation),
            message=Message.from_domain(message),
        )

    @strawberry.mutation
    @errors_in(PurchaseInMailCreditsPayload)
    async def purchase_in_mail_credits(
        self, info: ResolverInfo, input: PurchaseInMailCreditsInput
    ) -> PurchaseInMailCreditsPayload:
        c = ctx(info)
        result = await c.run(
            purchase_credits, c.require_member(), input.quantity, input.idempotency_key
        )
        return PurchaseInMailCreditsPayload(
            lot=CreditLot.from_domain(result.lot) if result.lot else None,
            credits_left=result.credits_left,
        )

    @strawberry.mutation
    @errors_in(UpdatePaymentMethodPayload)
    async def update_payment_method(
        self, info: ResolverInfo, input: PaymentMethodInput
    ) -> UpdatePaymentMethodPayload:
        c = ctx(info)
        member = await c.run(
            member_service.update_payment_method,
            c.require_member(),
            input.brand,
            input.last4,
            input.exp_month,
            input.exp_year,
        )
        return UpdatePaymentMethodPayload.of(member, c.reads.plans, c.reads.now())

    @strawberry.mutation
    @errors_in(ChangePlanPayload)
    async def change_plan(self, info: ResolverInfo, input: ChangePlanInput) -> ChangePlanPayload:
        c = ctx(info)
        member = await c.run(
            member_service.change_plan,
            c.viewer(),
            input.plan,
            input.monthly_allotment,
            member_id=None if input.member_id is None else str(input.member_id),
            idempotency_key=input.idempotency_key,
        )
        return ChangePlanPayload(member=Member.from_domain(member))

    @strawberry.mutation
    @errors_in(CancelSubscriptionPayload)
    async def cancel_subscription(self, info: ResolverInfo) -> CancelSubscriptionPayload:
        c = ctx(info)
        member = await c.run(member_service.cancel_subscription, c.require_member())
        return CancelSubscriptionPayload(member=Member.from_domain(member))

    @strawberry.mutation(
        description=(
            "Marks the viewer's notifications read: `ids` (an id that names no notification "
            "of the viewer's is NOT_FOUND, and then none is marked) or `all`. Returns the "
            "unread count after."
        )
    )
    async def mark_notifications_read(
        self, info: ResolverInfo, input: MarkNotificationsReadInput
    ) -> MarkNotificationsReadPayload:
        c = ctx(info)
        member = c.require_member()
        ids = [str(i) for i in input.ids] if input.ids is not None else None
        try:
            count = await c.run(notification_service.mark_read, member, ids, input.all)
        except DomainError as error:  # refused: the payload still carries the unread count
            count = await c.run(notification_service.unread_count, member)
            errors = [UserError.from_domain(error)]
            return MarkNotificationsReadPayload(unread_count=count, errors=errors)
        return MarkNotificationsReadPayload(unread_count=count)

    @strawberry.mutation(description="Admin only.")
    @errors_in(CreateMemberPayload)
    async def create_member(
        self, info: ResolverInfo, input: CreateMemberInput
    ) -> CreateMemberPayload:
        c = ctx(info)
        card = input.payment_method
        new = member_service.NewMember(
            name=input.name,
            plan=input.plan,
            headline=input.headline,
            billing_day=input.billing_day,
            payment_method=PaymentMethod(card.brand, card.last4, card.exp_month, card.exp_year)
            if card
            else None,
            monthly_allotment=input.monthly_allotment,
        )
        member = await c.run(member_service.create_member_as, c.viewer(), new)
        return CreateMemberPayload(member=Member.from_domain(member))

    @strawberry.mutation(description="Admin only: makes two members 1st-degree connections.")
    @errors_in(ConnectMembersPayload)
    async def connect_members(
        self, info: ResolverInfo, input: ConnectMembersInput
    ) -> ConnectMembersPayload:
        c = ctx(info)
        await c.run(
            member_service.connect_members,
            c.viewer(),
            str(input.member_id),
            str(input.other_member_id),
        )
        return ConnectMembersPayload(ok=True)


@strawberry.type(name="Mutation")
class Mutation(ProductionMutation):
    """Every mutation, advanceClock included: outside production (where the clock may be
    manual)."""

    @strawberry.mutation(
        description="Admin only, and only while the clock is manual: moves time forward and "
        "runs every job that became due."
    )
    async def advance_clock(
        self, info: ResolverInfo, input: AdvanceClockInput
    ) -> AdvanceClockPayload:
        return await clock_resolvers.advance_clock(info, input)
