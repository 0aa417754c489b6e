"""Domain errors: a stable public code, the precise reason, the field at fault and the data.

No words here: `schema/errors.py` words every reason for the client, from the error's data.
Each reason's comment names the data its wording needs.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    CANNOT_MESSAGE_SELF = "CANNOT_MESSAGE_SELF"
    RECIPIENT_IS_CONNECTION = "RECIPIENT_IS_CONNECTION"
    NOT_CONNECTED = "NOT_CONNECTED"
    UPGRADE_REQUIRED = "UPGRADE_REQUIRED"
    SUBSCRIPTION_INACTIVE = "SUBSCRIPTION_INACTIVE"
    PAYMENT_METHOD_EXPIRED = "PAYMENT_METHOD_EXPIRED"
    AWAITING_RESPONSE = "AWAITING_RESPONSE"
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    NOT_RECIPIENT = "NOT_RECIPIENT"
    ALREADY_RESPONDED = "ALREADY_RESPONDED"
    PURCHASE_NOT_ALLOWED = "PURCHASE_NOT_ALLOWED"
    CAP_EXCEEDED = "CAP_EXCEEDED"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    RATE_LIMITED = "RATE_LIMITED"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    PLAN_NOT_AVAILABLE = "PLAN_NOT_AVAILABLE"


class Reason(StrEnum):
    """Why exactly a request was refused; the public `ErrorCode` is coarser."""

    # Input, on the error's field.
    BLANK = "BLANK"  # the field is blank
    TOO_LONG = "TOO_LONG"  # data: maximum, length
    CONTROL_CHARACTER = "CONTROL_CHARACTER"  # data: codepoint (an int)
    DIRECTION_CONTROL = "DIRECTION_CONTROL"  # data: codepoint (an int)
    NAME_LENGTH = "NAME_LENGTH"  # data: maximum
    HEADLINE_TOO_LONG = "HEADLINE_TOO_LONG"  # data: maximum
    BILLING_DAY_OUT_OF_RANGE = "BILLING_DAY_OUT_OF_RANGE"  # data: minimum, maximum
    BRAND_LENGTH = "BRAND_LENGTH"  # data: maximum
    LAST4_NOT_FOUR_DIGITS = "LAST4_NOT_FOUR_DIGITS"
    EXP_MONTH_OUT_OF_RANGE = "EXP_MONTH_OUT_OF_RANGE"
    EXP_YEAR_OUT_OF_RANGE = "EXP_YEAR_OUT_OF_RANGE"  # data: minimum, maximum
    CARD_ALREADY_EXPIRED = "CARD_ALREADY_EXPIRED"
    ALLOTMENT_OUT_OF_RANGE = "ALLOTMENT_OUT_OF_RANGE"  # data: minimum, maximum
    ALLOTMENT_LEGACY_ONLY = "ALLOTMENT_LEGACY_ONLY"
    CONNECT_TO_SELF = "CONNECT_TO_SELF"
    QUANTITY_OUT_OF_RANGE = "QUANTITY_OUT_OF_RANGE"  # data: maximum
    KEY_LENGTH = "KEY_LENGTH"  # data: maximum
    PAID_CHANGE_NEEDS_KEY = "PAID_CHANGE_NEEDS_KEY"
    ALREADY_ON_PLAN = "ALREADY_ON_PLAN"  # data: plan
    SUBSCRIPTION_CHANGED = "SUBSCRIPTION_CHANGED"  # since a paid change was asked for
    CHANGED_MEANWHILE = "CHANGED_MEANWHILE"  # or another change is under way; not charged
    RECIPIENT_OR_CONVERSATION = "RECIPIENT_OR_CONVERSATION"
    RECIPIENT_OR_CONVERSATION_MISSING = "RECIPIENT_OR_CONVERSATION_MISSING"
    IDS_OR_ALL = "IDS_OR_ALL"
    IDS_OR_ALL_MISSING = "IDS_OR_ALL_MISSING"
    TOO_MANY_IDS = "TOO_MANY_IDS"  # data: maximum
    IDS_NOT_TEXT = "IDS_NOT_TEXT"
    NEGATIVE = "NEGATIVE"  # the field is negative
    ADVANCE_TOO_FAR = "ADVANCE_TOO_FAR"  # data: maximum_days
    ADVANCE_TOO_SHORT = "ADVANCE_TOO_SHORT"
    CLOCK_NOT_MANUAL = "CLOCK_NOT_MANUAL"
    CLOCK_IN_SEVERAL_WORKERS = "CLOCK_IN_SEVERAL_WORKERS"
    REQUEST_LAPSED = "REQUEST_LAPSED"
    # Records that are not there (or not the caller's).
    NO_SUCH_MEMBER = "NO_SUCH_MEMBER"
    OWN_MEMBER_MISSING = "OWN_MEMBER_MISSING"
    NO_SUCH_INMAIL = "NO_SUCH_INMAIL"
    NO_SUCH_CONVERSATION = "NO_SUCH_CONVERSATION"
    NO_SUCH_NOTIFICATIONS = "NO_SUCH_NOTIFICATIONS"  # data: unknown (how many ids)
    # Sending, responding, messaging.
    INMAIL_TO_SELF = "INMAIL_TO_SELF"
    MESSAGE_TO_SELF = "MESSAGE_TO_SELF"
    RECIPIENT_IS_CONNECTION = "RECIPIENT_IS_CONNECTION"
    NOT_CONNECTED = "NOT_CONNECTED"
    UPGRADE_TO_SEND = "UPGRADE_TO_SEND"
    AWAITING_RESPONSE = "AWAITING_RESPONSE"
    INMAIL_NOT_ANSWERED = "INMAIL_NOT_ANSWERED"
    NO_CREDITS_LEFT = "NO_CREDITS_LEFT"
    NOT_RECIPIENT = "NOT_RECIPIENT"
    ALREADY_RESPONDED = "ALREADY_RESPONDED"
    TOO_MANY_SENDS = "TOO_MANY_SENDS"  # data: limit, action ("inmail" or "message")
    # Plans, subscriptions and payment.
    SUBSCRIPTION_CANCELLED = "SUBSCRIPTION_CANCELLED"
    NOTHING_TO_CANCEL = "NOTHING_TO_CANCEL"
    PLAN_CANNOT_BUY = "PLAN_CANNOT_BUY"  # data: plan
    OVER_CAP = "OVER_CAP"  # data: balance (what it would be), cap
    NO_PAYMENT_METHOD = "NO_PAYMENT_METHOD"
    CARD_EXPIRED = "CARD_EXPIRED"
    PAID_CHANGE_NEEDS_CARD = "PAID_CHANGE_NEEDS_CARD"
    LEGACY_NOT_OFFERED = "LEGACY_NOT_OFFERED"
    ALLOTMENT_NOT_OFFERED = "ALLOTMENT_NOT_OFFERED"
    PAYMENT_DECLINED = "PAYMENT_DECLINED"  # data: detail (the gateway's reason)
    KEY_REUSED = "KEY_REUSED"
    # A refusal recorded by an older version of the service, with its words: data: message.
    RECORDED = "RECORDED"


ErrorData = str | int
"""What an error's data may hold: plain values, so that a recorded refusal stores as they are."""


class DomainError(Exception):
    def __init__(
        self, code: ErrorCode, reason: Reason, field: str | None = None, /, **data: ErrorData
    ) -> None:
        super().__init__(code.value, reason.value, field, data)
        self.code = code
        self.reason = reason
        self.field = field
        self.data = data

    def __str__(self) -> str:
        at = f" on {self.field}" if self.field else ""
        return f"{self.code.value}/{self.reason.value}{at} {self.data}"

    def __repr__(self) -> str:
        return (
            f"DomainError(code={self.code.value!r}, reason={self.reason.value!r}, "
            f"field={self.field!r}, data={self.data!r})"
        )


class RateLimited(DomainError):
    """Past a per-member limit: nothing was done, and the same request may succeed later."""

    def __init__(self, reason: Reason, retry_after_seconds: int, /, **data: ErrorData) -> None:
        super().__init__(ErrorCode.RATE_LIMITED, reason, None, **data)
        self.retry_after_seconds = retry_after_seconds


def whole_number_within(
    value: int, minimum: int, maximum: int, /, *, reason: Reason, field: str
) -> int:
    """`value` when it is an int from `minimum` to `maximum` (GraphQL's `Int` has made it a
    whole number); refused with `reason` on `field`, the range as its data, otherwise.

    A bool is an int to Python but never a number to a client, so it is refused too.
    """
    if isinstance(value, bool) or not minimum <= value <= maximum:
        raise DomainError(ErrorCode.INVALID_INPUT, reason, field, minimum=minimum, maximum=maximum)
    return value
