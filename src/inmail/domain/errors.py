"""Domain errors: a stable code, a human message and, for input errors, the offending field."""

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


class DomainError(Exception):
    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        return (
            f"DomainError(code={self.code.value!r}, message={self.message!r}, field={self.field!r})"
        )


class RateLimited(DomainError):
    """Past a per-member limit: nothing was done, and the same request may succeed later."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(ErrorCode.RATE_LIMITED, message)
        self.retry_after_seconds = retry_after_seconds
