"""Errors as the API shows them: business failures as data, access failures as GraphQL errors.

The service's errors carry codes and data; every word a client reads about them is here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

import strawberry
from graphql import GraphQLError

from inmail.auth import AuthError, TokenFault
from inmail.domain.access import ReadRefused, Refusal
from inmail.domain.errors import DomainError, RateLimited, Reason
from inmail.schema.enums import ErrorCode
from inmail.schema.quoting import quote_value


@strawberry.type
class UserError:
    code: ErrorCode
    message: str
    field: str | None = strawberry.field(
        default=None, description="The input field at fault, when there is one."
    )
    retry_after_seconds: int | None = strawberry.field(
        default=None, description="For RATE_LIMITED: when to try again."
    )

    @classmethod
    def from_domain(cls, error: DomainError) -> UserError:
        return cls(
            code=error.code,
            message=worded(error),
            field=error.field,
            retry_after_seconds=_retry_after(error),
        )


def _retry_after(error: DomainError) -> int | None:
    return error.retry_after_seconds if isinstance(error, RateLimited) else None


_SENT = {"inmail": "InMails", "message": "messages"}

_WORDING: Mapping[Reason, Callable[[DomainError], str]] = {
    Reason.BLANK: lambda e: f"{e.field} must not be blank.",
    Reason.TOO_LONG: lambda e: (
        f"{e.field} must be at most {e.data['maximum']} characters (got {e.data['length']})."
    ),
    Reason.CONTROL_CHARACTER: lambda e: (
        f"{e.field} must not hold control characters (found U+{e.data['codepoint']:04X})."
    ),
    Reason.DIRECTION_CONTROL: lambda e: (
        f"{e.field} must not hold characters that change the direction of the text "
        f"(found U+{e.data['codepoint']:04X})."
    ),
    Reason.NAME_LENGTH: lambda e: f"name must be 1 to {e.data['maximum']} characters.",
    Reason.HEADLINE_TOO_LONG: lambda e: f"headline must be at most {e.data['maximum']} characters.",
    Reason.BILLING_DAY_OUT_OF_RANGE: lambda e: (
        f"billingDay must be between {e.data['minimum']} and {e.data['maximum']}."
    ),
    Reason.BRAND_LENGTH: lambda e: f"brand must be 1 to {e.data['maximum']} characters.",
    Reason.LAST4_NOT_FOUR_DIGITS: lambda _: "last4 must be exactly 4 digits.",
    Reason.EXP_MONTH_OUT_OF_RANGE: lambda _: "expMonth must be between 1 and 12.",
    Reason.EXP_YEAR_OUT_OF_RANGE: lambda e: (
        f"expYear must be between {e.data['minimum']} and {e.data['maximum']}."
    ),
    Reason.CARD_ALREADY_EXPIRED: lambda _: "That card has already expired.",
    Reason.ALLOTMENT_OUT_OF_RANGE: lambda e: (
        f"monthlyAllotment must be between {e.data['minimum']} and {e.data['maximum']}."
    ),
    Reason.ALLOTMENT_LEGACY_ONLY: lambda _: "monthlyAllotment applies to LEGACY_PREMIUM only.",
    Reason.CONNECT_TO_SELF: lambda _: "A member cannot connect to themselves.",
    Reason.QUANTITY_OUT_OF_RANGE: lambda e: f"quantity must be 1 to {e.data['maximum']}.",
    Reason.KEY_LENGTH: lambda e: (
        f"idempotencyKey must be 1 to {e.data['maximum']} characters, "
        "not counting white space at either end."
    ),
    Reason.PAID_CHANGE_NEEDS_KEY: lambda _: "A change to a paid plan needs an idempotencyKey.",
    Reason.ALREADY_ON_PLAN: lambda e: f"You are already on {e.data['plan']}.",
    Reason.SUBSCRIPTION_CHANGED: lambda _: (
        "Your subscription changed after this plan change was asked for (another change or a "
        "cancellation): it was not applied, and its charge is refunded."
    ),
    Reason.CHANGED_MEANWHILE: lambda _: (
        "Your plan changed, or another change of it is under way, since this change was asked "
        "for: it was not applied, and nothing was charged for it. Read your plan, then ask "
        "again if you still want this change (a change still under way holds up another for "
        "two minutes at most)."
    ),
    Reason.RECIPIENT_OR_CONVERSATION: lambda _: (
        "Give either recipientId or conversationId, not both."
    ),
    Reason.RECIPIENT_OR_CONVERSATION_MISSING: lambda _: (
        "Give recipientId (a new thread with a connection) or conversationId (a reply)."
    ),
    Reason.IDS_OR_ALL: lambda _: "Give either ids or all, not both.",
    Reason.IDS_OR_ALL_MISSING: lambda _: "Give the ids to mark read, or all: true.",
    Reason.TOO_MANY_IDS: lambda e: f"Mark at most {e.data['maximum']} ids at a time.",
    Reason.IDS_NOT_TEXT: lambda _: "ids must be valid Unicode text.",
    Reason.NEGATIVE: lambda e: f"{e.field} must not be negative.",
    Reason.ADVANCE_TOO_FAR: lambda e: (
        f"The clock moves at most {e.data['maximum_days']} days at a time."
    ),
    Reason.ADVANCE_TOO_SHORT: lambda _: (
        "Advance the clock by at least one hour (days and/or hours)."
    ),
    Reason.CLOCK_NOT_MANUAL: lambda _: (
        "The clock is not manual: start the service with INMAIL_CLOCK=manual."
    ),
    Reason.CLOCK_IN_SEVERAL_WORKERS: lambda _: (
        "Each worker keeps its own manual clock: to move it, run one worker (INMAIL_WORKERS=1)."
    ),
    Reason.REQUEST_LAPSED: lambda e: (
        "This request lapsed before its charge was recorded, and that charge is refunded; send it "
        "again under a new idempotency key."
        if e.data.get("refunded")
        else "This request was never charged and has lapsed; send it again under a new "
        "idempotency key."
    ),
    Reason.NO_SUCH_MEMBER: lambda _: "No such member.",
    Reason.OWN_MEMBER_MISSING: lambda _: "Your member record does not exist.",
    Reason.NO_SUCH_INMAIL: lambda _: "No such InMail.",
    Reason.NO_SUCH_CONVERSATION: lambda _: "No such conversation.",
    Reason.NO_SUCH_NOTIFICATIONS: lambda e: (
        f"{e.data['unknown']} of the ids name no notification of yours; none was marked read."
    ),
    Reason.INMAIL_TO_SELF: lambda _: "You cannot InMail yourself.",
    Reason.MESSAGE_TO_SELF: lambda _: "You cannot message yourself.",
    Reason.RECIPIENT_IS_CONNECTION: lambda _: (
        "This member is a 1st-degree connection: message them for free with sendMessage."
    ),
    Reason.NOT_CONNECTED: lambda _: "Only 1st-degree connections can be messaged for free.",
    Reason.UPGRADE_TO_SEND: lambda _: "Upgrade to Premium to send InMail.",
    Reason.AWAITING_RESPONSE: lambda _: "Your earlier InMail to this member has no response yet.",
    Reason.INMAIL_NOT_ANSWERED: lambda _: "This InMail has no response yet.",
    Reason.NO_CREDITS_LEFT: lambda _: "No InMail credits left.",
    Reason.NOT_RECIPIENT: lambda _: "Only the recipient can respond.",
    Reason.ALREADY_RESPONDED: lambda _: "This InMail already has a response.",
    Reason.TOO_MANY_SENDS: lambda e: (
        f"You can send at most {e.data['limit']} {_SENT[str(e.data['action'])]} a minute. "
        f"Try again in {_retry_after(e)} s."
    ),
    Reason.SUBSCRIPTION_CANCELLED: lambda _: "Your Premium subscription is cancelled.",
    Reason.NOTHING_TO_CANCEL: lambda _: "There is no active subscription to cancel.",
    Reason.PLAN_CANNOT_BUY: lambda e: (
        f"Extra InMail credits cannot be bought on the {e.data['plan']} plan."
    ),
    Reason.OVER_CAP: lambda e: (
        f"That would take your balance to {e.data['balance']}; the most you can hold is "
        f"{e.data['cap']}."
    ),
    Reason.NO_PAYMENT_METHOD: lambda _: "Add a payment method first.",
    Reason.CARD_EXPIRED: lambda _: (
        "The card on file has expired: update your payment method first."
    ),
    Reason.PAID_CHANGE_NEEDS_CARD: lambda _: (
        "Add a valid payment method before changing to a paid plan."
    ),
    Reason.LEGACY_NOT_OFFERED: lambda _: (
        "LEGACY_PREMIUM and its grandfathered terms are no longer offered."
    ),
    Reason.ALLOTMENT_NOT_OFFERED: lambda _: (
        "A plan comes with its own monthly allotment: monthlyAllotment is not yours to set."
    ),
    Reason.PAYMENT_DECLINED: lambda e: f"The payment was declined: {e.data['detail']}.",
    Reason.KEY_REUSED: lambda _: "This idempotency key was used for a different request.",
    Reason.RECORDED: lambda e: str(e.data["message"]),
}


_SAY_REFUNDED: Final = frozenset({Reason.REQUEST_LAPSED, Reason.SUBSCRIPTION_CHANGED})
"""Refusals whose own words say what became of the request's charge."""


def worded(error: DomainError) -> str:
    """A refusal of the service, worded for the client; a request refused after its charge
    (`data["refunded"]`: the cap was reached, or the subscription ended, meanwhile) says that
    the charge is refunded."""
    words = _WORDING[error.reason](error)
    if error.data.get("refunded") and error.reason not in _SAY_REFUNDED:
        words += " Your card was charged for this request, and that charge is refunded."
    return words


class ApiError(GraphQLError):
    """A GraphQL error the client is meant to see, with a stable `extensions.code`."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, extensions={"code": code})


_TOKEN_WORDING: Final[Mapping[TokenFault, Callable[[Mapping[str, str | float]], str]]] = {
    TokenFault.NOT_BEARER: lambda _: "the Authorization header must be 'Bearer <token>'",
    TokenFault.TOO_LONG: lambda d: f"the token is longer than {d['limit']} bytes",
    TokenFault.MALFORMED: lambda _: "the token is malformed or wrongly signed",
    TokenFault.EXPIRED: lambda _: "the token has expired",
    TokenFault.NOT_YET_VALID: lambda _: "the token is not valid yet",
    TokenFault.MISSING_CLAIM: lambda d: f"the token has no {d['claim']} claim",
    TokenFault.CLAIM_NOT_A_NUMBER: lambda d: f"the token's {d['claim']} is not a number",
    TokenFault.CLAIM_OUT_OF_RANGE: lambda d: f"the token's {d['claim']} is out of range",
    TokenFault.LIVES_TOO_LONG: lambda d: (
        f"the token lives longer than the {d['hours']:g} hours allowed"
    ),
    TokenFault.SUBJECT_NOT_MEMBER_ID: lambda _: "the token's subject is not a member id",
    TokenFault.UNKNOWN_ROLE: lambda _: "the token's role is neither member nor admin",
    TokenFault.CLAIM_NOT_ACCEPTED: lambda d: f"the token's {d['claim']} claim is not accepted here",
}


def credentials_refused(error: AuthError) -> str:
    """Why a request's token is refused, naming the check it failed."""
    return f"Invalid credentials: {_TOKEN_WORDING[error.fault](error.data)}."


UNKNOWN_MEMBER: Final = "Invalid credentials: the token's member does not exist."
TOKEN_EXPIRED_MESSAGE: Final = credentials_refused(AuthError(TokenFault.EXPIRED))
SEVERAL_AUTHORIZATIONS: Final = (
    "Invalid credentials: the request has several Authorization headers; send one."
)
SEVERAL_SOCKET_TOKENS: Final = (
    "Invalid credentials: connection_init's payload has several Authorization keys; send one."
)
SOCKET_TOKEN_NOT_TEXT: Final = (
    "Invalid credentials: connection_init's Authorization must be the text 'Bearer <token>'."
)


def unauthenticated(message: str = "Sign in: send 'Authorization: Bearer <token>'.") -> ApiError:
    return ApiError(message, "UNAUTHENTICATED")


def forbidden(message: str = "You are not allowed to see or do this.") -> ApiError:
    return ApiError(message, "FORBIDDEN")


def bad_input(message: str) -> ApiError:
    return ApiError(message, "BAD_USER_INPUT")


_REFUSALS: Mapping[Refusal, Callable[[ReadRefused], ApiError]] = {
    Refusal.SIGN_IN: lambda _: unauthenticated(),
    Refusal.MEMBERS_ONLY: lambda _: forbidden("This needs a member's token, not an admin's."),
    Refusal.ADMINS_ONLY: lambda _: forbidden("Only admins may do this."),
    Refusal.OWNER_OR_ADMIN: lambda _: forbidden("Only this member (or an admin) can see this."),
    Refusal.PAGE_SIZE: lambda e: bad_input(f"first must be between 0 and {e.data['maximum']}."),
    Refusal.BAD_CURSOR: lambda e: bad_input(f"after: {e.data['reason']}."),
    Refusal.WATCHED_MEMBER_REQUIRED: lambda _: bad_input(
        "memberId is required: an admin watches one member at a time."
    ),
    Refusal.NO_SUCH_MEMBER: lambda e: bad_input(
        f"memberId: no member with id {quote_value(e.data['member_id'])}."
    ),
    Refusal.TOO_MANY_IDS: lambda e: bad_input(
        f"ids: at most {e.data['maximum']} ids at a time; ask for the rest in another request."
    ),
}


def refused(error: ReadRefused) -> ApiError:
    """A read refused by the service, worded for the client."""
    return _REFUSALS[error.refusal](error)
