"""Who may send an InMail or buy credits, and why not: written once, for doing and for asking.

`sendInMail` raises the first refusal; the compose window (`compose`) shows it without writing.
The order is SPEC section 4's.
"""

from __future__ import annotations

from datetime import datetime

from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.model import Member
from inmail.domain.plans import PlanTable


def inmail_refusal(
    sender: Member,
    recipient: Member | None,
    *,
    plans: PlanTable,
    now: datetime,
    awaiting_response: bool,
    balance: int,
) -> DomainError | None:
    if recipient is None:
        return DomainError(ErrorCode.NOT_FOUND, Reason.NO_SUCH_MEMBER, "recipientId")
    if recipient.id == sender.id:
        return DomainError(ErrorCode.CANNOT_MESSAGE_SELF, Reason.INMAIL_TO_SELF, "recipientId")
    if sender.is_connected_to(recipient.id):
        return DomainError(
            ErrorCode.RECIPIENT_IS_CONNECTION, Reason.RECIPIENT_IS_CONNECTION, "recipientId"
        )
    refusal = _premium_refusal(sender, plans, now, purchasing=False)
    if refusal:
        return refusal
    if awaiting_response:
        return DomainError(ErrorCode.AWAITING_RESPONSE, Reason.AWAITING_RESPONSE, "recipientId")
    if balance <= 0:
        return DomainError(ErrorCode.INSUFFICIENT_CREDITS, Reason.NO_CREDITS_LEFT)
    return None


def check_purchase_quantity(quantity: int, maximum: int) -> None:
    """A purchase buys 1 to `maximum` credits (the operator's bound); checked before anything
    is read."""
    if isinstance(quantity, bool) or not 1 <= quantity <= maximum:
        raise DomainError(
            ErrorCode.INVALID_INPUT, Reason.QUANTITY_OUT_OF_RANGE, "quantity", maximum=maximum
        )


def purchase_refusal(
    member: Member, *, plans: PlanTable, now: datetime, quantity: int, balance: int
) -> DomainError | None:
    refusal = _premium_refusal(member, plans, now, purchasing=True)
    if refusal:
        return refusal
    cap = member.policy(plans).max_balance
    if balance + quantity > cap:
        return DomainError(
            ErrorCode.CAP_EXCEEDED, Reason.OVER_CAP, "quantity", balance=balance + quantity, cap=cap
        )
    return None


def _premium_refusal(
    member: Member, plans: PlanTable, now: datetime, *, purchasing: bool
) -> DomainError | None:
    policy = member.policy(plans)
    if purchasing and not policy.can_purchase:
        return DomainError(
            ErrorCode.PURCHASE_NOT_ALLOWED, Reason.PLAN_CANNOT_BUY, plan=member.plan.value
        )
    if not purchasing and not policy.can_send_inmail:
        return DomainError(ErrorCode.UPGRADE_REQUIRED, Reason.UPGRADE_TO_SEND)
    if member.subscription is None or not member.subscription.is_active:
        return DomainError(ErrorCode.SUBSCRIPTION_INACTIVE, Reason.SUBSCRIPTION_CANCELLED)
    # The card on file is no input of the request: these errors name no field.
    card = member.payment_method
    if purchasing and card is None:
        return DomainError(ErrorCode.PAYMENT_METHOD_EXPIRED, Reason.NO_PAYMENT_METHOD)
    if card is not None and card.is_expired(now):
        return DomainError(ErrorCode.PAYMENT_METHOD_EXPIRED, Reason.CARD_EXPIRED)
    return None
