"""Who may send an InMail, message, respond or buy credits, and why not: written once.

`sendInMail` raises the first refusal; the compose window (`compose`) shows it without writing.
The order is SPEC section 4's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from inmail.domain.billing import PaymentMethod
from inmail.domain.conversations import ConversationState, within_credit_back_window
from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.model import Conversation, ConversationKind, Member
from inmail.domain.plans import PlanTable


@dataclass(frozen=True, slots=True)
class ComposeInfo:
    """What the compose window shows: whether the viewer can InMail the recipient now, the
    first refusal if not, and the credits left."""

    can_send: bool
    reason: ErrorCode | None
    credits_left: int
    recipient_is_connection: bool
    retry_after_seconds: int | None = None  # with RATE_LIMITED: when a send would be taken


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
    member: Member,
    *,
    plans: PlanTable,
    now: datetime,
    quantity: int,
    balance: int,
    charged: bool = False,
) -> DomainError | None:
    """`charged`: asked of a purchase paid for already, which the card's state since cannot
    undo (the plan, the subscription and the cap still refuse it, and its charge is refunded)."""
    refusal = _premium_refusal(member, plans, now, purchasing=True, card=not charged)
    if refusal:
        return refusal
    cap = member.policy(plans).max_balance
    if balance + quantity > cap:
        return DomainError(
            ErrorCode.CAP_EXCEEDED, Reason.OVER_CAP, "quantity", balance=balance + quantity, cap=cap
        )
    return None


def _premium_refusal(
    member: Member, plans: PlanTable, now: datetime, *, purchasing: bool, card: bool = True
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
    return card_refusal(member.payment_method, now, required=purchasing) if card else None


def card_refusal(
    card: PaymentMethod | None, now: datetime, *, required: bool, plan_change: bool = False
) -> DomainError | None:
    """An expired card on file refuses a send or a charge; a missing one refuses a charge
    (`required`). A paid plan change's refusal says what the change needs. The card on file is
    no input of the request: these errors name no field."""
    if card is None and not required:
        return None
    if card is not None and not card.is_expired(now):
        return None
    if plan_change:
        return DomainError(ErrorCode.PAYMENT_METHOD_EXPIRED, Reason.PAID_CHANGE_NEEDS_CARD)
    if card is None:
        return DomainError(ErrorCode.PAYMENT_METHOD_EXPIRED, Reason.NO_PAYMENT_METHOD)
    return DomainError(ErrorCode.PAYMENT_METHOD_EXPIRED, Reason.CARD_EXPIRED)


def message_refusal(
    member_id: str, sender: Member | None, recipient: Member | None
) -> DomainError | None:
    """A free message outside an InMail goes to a 1st-degree connection only (SPEC 4)."""
    if recipient is None:
        return DomainError(ErrorCode.NOT_FOUND, Reason.NO_SUCH_MEMBER, "recipientId")
    if recipient.id == member_id:
        return DomainError(ErrorCode.CANNOT_MESSAGE_SELF, Reason.MESSAGE_TO_SELF, "recipientId")
    if sender is None or not sender.is_connected_to(recipient.id):
        return DomainError(ErrorCode.NOT_CONNECTED, Reason.NOT_CONNECTED, "recipientId")
    return None


def reply_refusal(member_id: str, conversation: Conversation | None) -> DomainError | None:
    """A message in a conversation comes from one of its two parties, and in an InMail only
    once it had its response (SPEC 5)."""
    if conversation is None or not conversation.has_party(member_id):
        return DomainError(ErrorCode.NOT_FOUND, Reason.NO_SUCH_CONVERSATION, "conversationId")
    if conversation.state is ConversationState.AWAITING_RESPONSE:
        return DomainError(
            ErrorCode.AWAITING_RESPONSE, Reason.INMAIL_NOT_ANSWERED, "conversationId"
        )
    return None


def response_refusal(member_id: str, conversation: Conversation | None) -> DomainError | None:
    """Only an InMail's recipient responds, and once (SPEC 5). Another member's conversation
    is NOT_FOUND, as if it did not exist."""
    if (
        conversation is None
        or not conversation.has_party(member_id)
        or conversation.kind is not ConversationKind.INMAIL
    ):
        return DomainError(ErrorCode.NOT_FOUND, Reason.NO_SUCH_INMAIL, "conversationId")
    if conversation.recipient_id != member_id:
        return DomainError(ErrorCode.NOT_RECIPIENT, Reason.NOT_RECIPIENT, "conversationId")
    if conversation.responded_at is not None:
        return already_responded()
    return None


def already_responded() -> DomainError:
    return DomainError(ErrorCode.ALREADY_RESPONDED, Reason.ALREADY_RESPONDED, "conversationId")


def earns_credit_back(conversation: Conversation, sender: Member | None, now: datetime) -> bool:
    """A response at `now` credits the sender back when it comes within the window and the
    sender's subscription is active (SPEC 5; the cap is the wallet's)."""
    return (
        within_credit_back_window(conversation.sent_at, now)
        and sender is not None
        and sender.subscription is not None
        and sender.subscription.is_active
    )
