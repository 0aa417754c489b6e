"""Members and their subscriptions: create, connect, pay, change plan, cancel."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from inmail.auth import Viewer
from inmail.domain import access
from inmail.domain.billing import (
    PaymentMethod,
    validate_anchor_day,
    validate_payment_method,
)
from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.intents import UNDER_WAY, IntentKind, IntentStatus, PaymentIntent
from inmail.domain.keyed import KeyedOutcome
from inmail.domain.model import LedgerEntry, Member, Subscription
from inmail.domain.money import Money
from inmail.domain.plans import PlanTable, PlanType, validate_legacy_allotment
from inmail.domain.profiles import clean_headline, clean_name
from inmail.domain.rules import card_refusal
from inmail.services import charges
from inmail.services.base import Account, Deps
from inmail.services.idempotency import KeyedRequest, replay, take_key
from inmail.services.unit_of_work import Reads, Transaction, new_id


@dataclass(frozen=True, slots=True)
class NewMember:
    """A member as asked for: the service cleans and checks every field, the card first."""

    name: str
    plan: PlanType
    headline: str | None = None
    billing_day: int | None = None
    payment_method: PaymentMethod | None = None
    monthly_allotment: int | None = None


def _legacy_terms(plan: PlanType, monthly_allotment: int | None) -> int | None:
    if monthly_allotment is None:
        return None
    if plan is not PlanType.LEGACY_PREMIUM:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.ALLOTMENT_LEGACY_ONLY, "monthlyAllotment")
    return validate_legacy_allotment(monthly_allotment)


async def create_member_as(deps: Deps, viewer: Viewer | None, new: NewMember) -> Member:
    """An admin's createMember (SPEC 8): the caller is checked before anything asked for."""
    access.admin(viewer)
    return await create_member(deps, new)


async def create_member(deps: Deps, new: NewMember) -> Member:
    """The member opened, with no caller to check (`create_member_as` checks a request's)."""
    member = _new_member(new, deps.now(), deps.plans)
    entries = await deps.uow.run(_open_account, deps, member)
    await deps.publisher.publish(entries)
    return await _require_member(deps.reads, member.id)


def _new_member(new: NewMember, now: datetime, plans: PlanTable) -> Member:
    card = _checked_card(new.payment_method)
    name, headline = clean_name(new.name), clean_headline(new.headline)
    allotment = plans.grandfathered_allotment(
        new.plan, _legacy_terms(new.plan, new.monthly_allotment)
    )
    billing_day = validate_anchor_day(new.billing_day) if new.billing_day is not None else now.day
    subscription = None
    if new.plan is not PlanType.BASIC:
        subscription = Subscription.start(new_id(), new.plan, now, billing_day, allotment)
    return Member(
        id=new_id(),
        name=name,
        headline=headline,
        plan=new.plan,
        created_at=now,
        subscription=subscription,
        payment_method=card,
    )


def _checked_card(card: PaymentMethod | None) -> PaymentMethod | None:
    """A new member's card, checked; a fault names its field within the input's
    `paymentMethod` (`paymentMethod.last4`)."""
    if card is None:
        return None
    try:
        return validate_payment_method(card.brand, card.last4, card.exp_month, card.exp_year)
    except DomainError as fault:
        field = "paymentMethod" if fault.field is None else f"paymentMethod.{fault.field}"
        raise DomainError(fault.code, fault.reason, field, **fault.data) from None


async def _open_account(tx: Transaction, deps: Deps, member: Member) -> list[LedgerEntry]:
    """The member, with the first cycle's allotment of a paid plan (SPEC 2)."""
    await tx.members.insert(member)
    account = await Account.open(tx, deps.plans, member, member.created_at)
    if member.subscription is not None:
        account.wallet.start_subscription(member.subscription, deps.plans)
    return await account.save(tx)


async def connect_members(deps: Deps, viewer: Viewer | None, member_id: str, other_id: str) -> None:
    """Two members become 1st-degree connections: admins only (SPEC 8)."""
    access.admin(viewer)
    if member_id == other_id:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.CONNECT_TO_SELF, "otherMemberId")
    await deps.uow.run(_connect, member_id, other_id)


async def _connect(tx: Transaction, member_id: str, other_id: str) -> None:
    found = await tx.members.get_many([member_id, other_id])
    for field, wanted in (("memberId", member_id), ("otherMemberId", other_id)):
        if wanted not in found:
            raise DomainError(ErrorCode.NOT_FOUND, Reason.NO_SUCH_MEMBER, field)
    await tx.members.connect(member_id, other_id)


async def _require_member(
    members: Reads | Transaction, member_id: str, field: str | None = None
) -> Member:
    """The member; NOT_FOUND (on `field`, the input that named them, if any) when there is none."""
    member = await members.members.get(member_id)
    if member is None:
        raise DomainError(ErrorCode.NOT_FOUND, Reason.NO_SUCH_MEMBER, field)
    return member


async def update_payment_method(
    deps: Deps, member_id: str, brand: str, last4: str, exp_month: int, exp_year: int
) -> Member:
    card = validate_payment_method(brand, last4, exp_month, exp_year)
    now = deps.now()
    if card.is_expired(now):
        # This year's card is refused for its month; an earlier year's, for its year.
        field = "expMonth" if exp_year == now.year else "expYear"
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.CARD_ALREADY_EXPIRED, field)
    await deps.uow.run(_set_payment_method, member_id, card)
    return await _require_member(deps.reads, member_id)


async def _set_payment_method(tx: Transaction, member_id: str, card: PaymentMethod) -> None:
    await _require_member(tx, member_id)
    await tx.members.set_payment_method(member_id, card)


async def change_plan(
    deps: Deps,
    viewer: Viewer | None,
    plan: PlanType,
    monthly_allotment: int | None = None,
    *,
    member_id: str | None = None,
    idempotency_key: str | None = None,
) -> Member:
    """A new plan restarts the billing cycle today; old credits are forfeited (SPEC 2).

    A member changes their own plan; an admin names the member (`member_id`). A member's change
    to a Premium plan is charged the plan's monthly price first, under the request's idempotency
    key; an admin's change stands for the billing system and is not.
    """
    by_admin = member_id is not None
    whose = access.acting_for(viewer, member_id)
    allotment = _terms_offered(plan, monthly_allotment, by_admin=by_admin)
    if plan is PlanType.BASIC:
        return await _change_to_basic(deps, whose, by_admin=by_admin, key=idempotency_key)
    member = await _require_member(deps.reads, whose, "memberId" if by_admin else None)
    if by_admin:
        entries = await deps.uow.run(_change_plan, deps, whose, plan, allotment, deps.now())
    else:
        entries = await _own_change(deps, member, plan, idempotency_key)
    await deps.publisher.publish(entries)
    return await _require_member(deps.reads, whose)


def _terms_offered(plan: PlanType, monthly_allotment: int | None, *, by_admin: bool) -> int | None:
    """LEGACY_PREMIUM and its allotment are an admin's to give, never a member's to take."""
    if not by_admin and plan is PlanType.LEGACY_PREMIUM:
        raise DomainError(ErrorCode.PLAN_NOT_AVAILABLE, Reason.LEGACY_NOT_OFFERED, "plan")
    if not by_admin and monthly_allotment is not None:
        raise DomainError(
            ErrorCode.PLAN_NOT_AVAILABLE, Reason.ALLOTMENT_NOT_OFFERED, "monthlyAllotment"
        )
    return _legacy_terms(plan, monthly_allotment)


async def _change_to_basic(
    deps: Deps, member_id: str, *, by_admin: bool, key: str | None
) -> Member:
    if by_admin:
        await _require_member(deps.reads, member_id, "memberId")
    if key is None or by_admin:
        return await _cancel(deps, member_id, to_basic=True)
    # Under a key, the key is taken in the cancellation's transaction: one another request
    # took is refused (keys are one namespace), and a retry changes nothing again (not even a
    # subscription started since).
    request = KeyedRequest.of(member_id, key, IntentKind.PLAN_CHANGE, plan=PlanType.BASIC.value)
    return await _cancel(deps, member_id, to_basic=True, under=request)


async def _cancel_under_key(
    tx: Transaction, deps: Deps, request: KeyedRequest, now: datetime
) -> list[LedgerEntry]:
    outcome = KeyedOutcome(request.member_id, 0)
    if await take_key(tx, request, request.record(now, outcome)) is not None:
        return []  # a retry of this very change: nothing is done again (the member as they are)
    return await _forfeit_and_stop(tx, deps, request.member_id, True, now)


async def _own_change(
    deps: Deps,
    member: Member,
    plan: PlanType,
    key: str | None,
) -> list[LedgerEntry]:
    """A member's own change: to the plan they are on, nothing; to another, charged first,
    under the request's key."""
    if _already_on(member, plan, None):
        # Changes nothing and charges nothing (SPEC 2). Nothing of the plan is written either:
        # were the member to cancel or change plan meanwhile, a write here would start the plan
        # again, unpaid. Only its key is kept, so that a retry answers the same.
        if key is not None:
            await _keep_unchanged(deps, member, plan, key)
        return []
    if key is None:
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.PAID_CHANGE_NEEDS_KEY, "idempotencyKey")
    price = deps.plans.policy(plan).monthly_price
    return await _paid_change(deps, member, plan, price, key)


def _already_on(member: Member, plan: PlanType, allotment: int | None) -> bool:
    current = member.subscription
    return (
        current is not None
        and current.is_active
        and member.plan is plan
        and allotment in (None, current.monthly_allotment)
    )


async def _paid_change(
    deps: Deps,
    member: Member,
    plan: PlanType,
    price: Money,
    key: str,
) -> list[LedgerEntry]:
    request = KeyedRequest.of(member.id, key, IntentKind.PLAN_CHANGE, plan=plan.value)
    intent = await charges.existing_intent(deps, request)
    if intent is None:
        # Another request's key (an InMail) is refused; this change's, when it changed nothing
        # (the member was on the plan then), answers so again, without a charge.
        if await replay(deps.reads.idempotency, request) is not None:
            return []
        refusal = card_refusal(member.payment_method, deps.now(), required=True, plan_change=True)
        if refusal is not None:
            raise refusal
        fresh = charges.new_intent(request, price, deps.now(), plan=plan, terms=member.terms)
        intent = await charges.open_intent(deps, fresh, request, _nothing_changed_meanwhile)
    done = await charges.pay_and_fulfil(deps, intent, apply_paid_change)
    return done.entries


async def _nothing_changed_meanwhile(tx: Transaction, intent: PaymentIntent) -> None:
    """A paid change is refused before any charge when the member's subscription changed since
    the request read it, or while another change, recorded moments ago under another key, may
    still be charged or applied: of changes asked for together (a double click, two tabs), one
    is charged, not each, to have all but one refunded when applied. Checked in the transaction
    that records the intent, in the member's turn (`idempotency.take_key`), so that changes
    recorded together see each other. A change left open longer than RECONCILE_AFTER is
    reconciliation's (its process died): it holds up no new change."""
    member = await _require_member(tx, intent.member_id)
    since = intent.created_at - charges.RECONCILE_AFTER
    if intent.terms != member.terms or await tx.intents.plan_change_since(
        member.id, since, UNDER_WAY
    ):
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.CHANGED_MEANWHILE, "plan")


async def _keep_unchanged(deps: Deps, member: Member, plan: PlanType, key: str) -> None:
    """The key of a change to the plan the member is on, kept with its answer (nothing changed,
    nothing charged): a retry under it answers the same, even after a later change of plan."""
    request = KeyedRequest.of(member.id, key, IntentKind.PLAN_CHANGE, plan=plan.value)
    balances = await deps.reads.lots.balances([member.id], deps.now())
    outcome = KeyedOutcome(member.id, balances.get(member.id, 0))
    await deps.uow.run(_take_key_unless_taken, request, outcome, deps.now())


async def _take_key_unless_taken(
    tx: Transaction, request: KeyedRequest, outcome: KeyedOutcome, now: datetime
) -> None:
    # Held by this change already, the key answers the same; by another request, it is refused.
    await take_key(tx, request, request.record(now, outcome))


async def apply_paid_change(
    tx: Transaction, deps: Deps, intent: PaymentIntent, now: datetime
) -> charges.Fulfilled:
    """What a plan change's charge paid for: the forfeit, the new cycle and its grant."""
    assert intent.plan is not None
    member = await _require_member(tx, intent.member_id)
    if intent.terms is not None and intent.terms != member.terms:
        # The member changed plan or cancelled after asking (say, while a process that died
        # held this change, charged, for reconciliation): the charge must not undo that.
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.SUBSCRIPTION_CHANGED, "plan")
    if await tx.intents.plan_change_since(
        intent.member_id, intent.created_at, (*UNDER_WAY, IntentStatus.COMPLETED)
    ):
        # A change asked for since, not yet applied: a change left by a process that died, and
        # completed by reconciliation, must not be applied over the member's newer request.
        raise DomainError(ErrorCode.INVALID_INPUT, Reason.SUBSCRIPTION_CHANGED, "plan")
    if _already_on(member, intent.plan, None):
        # Another change to this plan was applied since: this charge buys nothing, so it is
        # refunded.
        raise DomainError(
            ErrorCode.INVALID_INPUT, Reason.ALREADY_ON_PLAN, "plan", plan=intent.plan.value
        )
    entries = await _change_plan(tx, deps, intent.member_id, intent.plan, None, now)
    balance = entries[-1].balance_after if entries else 0
    return charges.Fulfilled(KeyedOutcome(intent.member_id, balance), entries)


async def _change_plan(
    tx: Transaction,
    deps: Deps,
    member_id: str,
    plan: PlanType,
    requested_allotment: int | None,
    now: datetime,
) -> list[LedgerEntry]:
    member = await _require_member(tx, member_id)
    if _already_on(member, plan, requested_allotment):
        return []  # nothing to restart
    current = member.subscription
    account = await Account.open(tx, deps.plans, member, now, latest=deps.now())
    allotment = requested_allotment
    if allotment is None and plan is PlanType.LEGACY_PREMIUM and current is not None:
        allotment = current.monthly_allotment
    allotment = deps.plans.grandfathered_allotment(plan, allotment)
    account.subscription = account.wallet.restart(plan, allotment, deps.plans, account.now)
    return await account.save(tx, plan)


async def cancel_subscription(deps: Deps, member_id: str) -> Member:
    return await _cancel(deps, member_id, to_basic=False)


async def _cancel(
    deps: Deps, member_id: str, *, to_basic: bool, under: KeyedRequest | None = None
) -> Member:
    """Cancelling zeroes the balance at once and stops renewals (SPEC 2); `under` a request's
    key, the key is taken in the same transaction (to BASIC only)."""
    if under is None:
        entries = await deps.uow.run(_forfeit_and_stop, deps, member_id, to_basic, deps.now())
    else:
        entries = await deps.uow.run(_cancel_under_key, deps, under, deps.now())
    await deps.publisher.publish(entries)
    return await _require_member(deps.reads, member_id)


async def _forfeit_and_stop(
    tx: Transaction, deps: Deps, member_id: str, to_basic: bool, now: datetime
) -> list[LedgerEntry]:
    member = await _require_member(tx, member_id)
    subscription = member.subscription
    basic = PlanType.BASIC if to_basic else None
    if subscription is None or not subscription.is_active:
        if not to_basic:
            raise DomainError(ErrorCode.SUBSCRIPTION_INACTIVE, Reason.NOTHING_TO_CANCEL)
        if member.plan is not PlanType.BASIC:
            await tx.members.write_unless_moved(member, replace(member, plan=PlanType.BASIC))
        return []
    account = await Account.open(tx, deps.plans, member, now, latest=deps.now())
    account.wallet.forfeit_all(account.now)
    account.subscription = (account.subscription or subscription).canceled()
    return await account.save(tx, basic)
