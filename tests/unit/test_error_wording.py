"""The service's refusals carry codes and data; the API words every one of them, as before."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

from inmail.domain.errors import DomainError, ErrorCode, RateLimited, Reason
from inmail.repositories.records import Refusal, refusal_from_doc, refusal_to_doc
from inmail.schema import errors as schema_errors
from inmail.schema.errors import UserError, worded

SRC = Path(__file__).resolve().parents[2] / "src" / "inmail"

E = ErrorCode

# One error of every reason, with representative data, and the words clients have always read.
SAMPLES: list[tuple[DomainError, str]] = [
    (DomainError(E.INVALID_INPUT, Reason.BLANK, "subject"), "subject must not be blank."),
    (
        DomainError(E.INVALID_INPUT, Reason.TOO_LONG, "body", maximum=5000, length=5001),
        "body must be at most 5000 characters (got 5001).",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.NAME_LENGTH, "name", maximum=100),
        "name must be 1 to 100 characters.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.HEADLINE_TOO_LONG, "headline", maximum=220),
        "headline must be at most 220 characters.",
    ),
    (
        DomainError(
            E.INVALID_INPUT, Reason.BILLING_DAY_OUT_OF_RANGE, "billingDay", minimum=1, maximum=31
        ),
        "billingDay must be between 1 and 31.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.BRAND_LENGTH, "brand", maximum=30),
        "brand must be 1 to 30 characters.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.LAST4_NOT_FOUR_DIGITS, "last4"),
        "last4 must be exactly 4 digits.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.EXP_MONTH_OUT_OF_RANGE, "expMonth"),
        "expMonth must be between 1 and 12.",
    ),
    (
        DomainError(
            E.INVALID_INPUT, Reason.EXP_YEAR_OUT_OF_RANGE, "expYear", minimum=2000, maximum=2100
        ),
        "expYear must be between 2000 and 2100.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.CARD_ALREADY_EXPIRED, "expYear"),
        "That card has already expired.",
    ),
    (
        DomainError(
            E.INVALID_INPUT,
            Reason.ALLOTMENT_OUT_OF_RANGE,
            "monthlyAllotment",
            minimum=1,
            maximum=1000,
        ),
        "monthlyAllotment must be between 1 and 1000.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.ALLOTMENT_LEGACY_ONLY, "monthlyAllotment"),
        "monthlyAllotment applies to LEGACY_PREMIUM only.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.CONNECT_TO_SELF, "otherMemberId"),
        "A member cannot connect to themselves.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.QUANTITY_OUT_OF_RANGE, "quantity", maximum=50),
        "quantity must be 1 to 50.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.KEY_LENGTH, "idempotencyKey", maximum=100),
        "idempotencyKey must be 1 to 100 characters.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.PAID_CHANGE_NEEDS_KEY, "idempotencyKey"),
        "A change to a paid plan needs an idempotencyKey.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.ALREADY_ON_PLAN, "plan", plan="PREMIUM_BUSINESS"),
        "You are already on PREMIUM_BUSINESS.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.RECIPIENT_OR_CONVERSATION, "recipientId"),
        "Give either recipientId or conversationId, not both.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.IDS_OR_ALL, "ids"),
        "Give either ids or all, not both.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.IDS_OR_ALL_MISSING, "ids"),
        "Give the ids to mark read, or all: true.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.TOO_MANY_IDS, "ids", maximum=100),
        "Mark at most 100 ids at a time.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.IDS_NOT_TEXT, "ids"),
        "ids must be valid Unicode text.",
    ),
    (DomainError(E.INVALID_INPUT, Reason.NEGATIVE, "hours"), "hours must not be negative."),
    (
        DomainError(E.INVALID_INPUT, Reason.ADVANCE_TOO_FAR, maximum_days=400),
        "The clock moves at most 400 days at a time.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.ADVANCE_TOO_SHORT),
        "Advance the clock by at least one hour (days and/or hours).",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.CLOCK_NOT_MANUAL),
        "The clock is not manual: start the service with INMAIL_CLOCK=manual.",
    ),
    (
        DomainError(E.INVALID_INPUT, Reason.REQUEST_LAPSED, "idempotencyKey"),
        "This request was never charged and has lapsed; send it again under a new idempotency key.",
    ),
    (DomainError(E.NOT_FOUND, Reason.NO_SUCH_MEMBER, "recipientId"), "No such member."),
    (DomainError(E.NOT_FOUND, Reason.OWN_MEMBER_MISSING), "Your member record does not exist."),
    (DomainError(E.NOT_FOUND, Reason.NO_SUCH_INMAIL, "conversationId"), "No such InMail."),
    (
        DomainError(E.NOT_FOUND, Reason.NO_SUCH_CONVERSATION, "conversationId"),
        "No such conversation.",
    ),
    (
        DomainError(E.CANNOT_MESSAGE_SELF, Reason.INMAIL_TO_SELF, "recipientId"),
        "You cannot InMail yourself.",
    ),
    (
        DomainError(E.CANNOT_MESSAGE_SELF, Reason.MESSAGE_TO_SELF, "recipientId"),
        "You cannot message yourself.",
    ),
    (
        DomainError(E.RECIPIENT_IS_CONNECTION, Reason.RECIPIENT_IS_CONNECTION, "recipientId"),
        "This member is a 1st-degree connection: message them for free with sendMessage.",
    ),
    (
        DomainError(E.NOT_CONNECTED, Reason.NOT_CONNECTED, "recipientId"),
        "Only 1st-degree connections can be messaged for free.",
    ),
    (
        DomainError(E.UPGRADE_REQUIRED, Reason.UPGRADE_TO_SEND),
        "Upgrade to Premium to send InMail.",
    ),
    (
        DomainError(E.AWAITING_RESPONSE, Reason.AWAITING_RESPONSE, "recipientId"),
        "Your earlier InMail to this member has no response yet.",
    ),
    (
        DomainError(E.AWAITING_RESPONSE, Reason.INMAIL_NOT_ANSWERED, "conversationId"),
        "This InMail has no response yet.",
    ),
    (DomainError(E.INSUFFICIENT_CREDITS, Reason.NO_CREDITS_LEFT), "No InMail credits left."),
    (
        DomainError(E.NOT_RECIPIENT, Reason.NOT_RECIPIENT, "conversationId"),
        "Only the recipient can respond.",
    ),
    (
        DomainError(E.ALREADY_RESPONDED, Reason.ALREADY_RESPONDED, "conversationId"),
        "This InMail already has a response.",
    ),
    (
        RateLimited(Reason.TOO_MANY_SENDS, 12, limit=30, action="inmail"),
        "You can send at most 30 InMails a minute. Try again in 12 s.",
    ),
    (
        DomainError(E.SUBSCRIPTION_INACTIVE, Reason.SUBSCRIPTION_CANCELLED),
        "Your Premium subscription is cancelled.",
    ),
    (
        DomainError(E.SUBSCRIPTION_INACTIVE, Reason.NOTHING_TO_CANCEL),
        "There is no active subscription to cancel.",
    ),
    (
        DomainError(E.PURCHASE_NOT_ALLOWED, Reason.PLAN_CANNOT_BUY, plan="SALES_NAVIGATOR"),
        "Extra InMail credits cannot be bought on the SALES_NAVIGATOR plan.",
    ),
    (
        DomainError(E.CAP_EXCEEDED, Reason.OVER_CAP, "quantity", balance=25, cap=15),
        "That would take your balance to 25; the most you can hold is 15.",
    ),
    (
        DomainError(E.PAYMENT_METHOD_EXPIRED, Reason.NO_PAYMENT_METHOD, "paymentMethod"),
        "Add a payment method first.",
    ),
    (
        DomainError(E.PAYMENT_METHOD_EXPIRED, Reason.CARD_EXPIRED, "paymentMethod"),
        "The card on file has expired: update your payment method first.",
    ),
    (
        DomainError(E.PAYMENT_METHOD_EXPIRED, Reason.PAID_CHANGE_NEEDS_CARD, "paymentMethod"),
        "Add a valid payment method before changing to a paid plan.",
    ),
    (
        DomainError(E.PLAN_NOT_AVAILABLE, Reason.LEGACY_NOT_OFFERED, "plan"),
        "LEGACY_PREMIUM and its grandfathered terms are no longer offered.",
    ),
    (
        DomainError(
            E.PAYMENT_DECLINED,
            Reason.PAYMENT_DECLINED,
            "paymentMethod",
            detail="the card was declined",
        ),
        "The payment was declined: the card was declined.",
    ),
    (
        DomainError(E.IDEMPOTENCY_KEY_REUSED, Reason.KEY_REUSED, "idempotencyKey"),
        "This idempotency key was used for a different request.",
    ),
    (
        DomainError(E.CAP_EXCEEDED, Reason.RECORDED, "quantity", message="Over the cap."),
        "Over the cap.",
    ),
]

SAMPLE_DATA: Mapping[Reason, frozenset[str]] = {
    error.reason: frozenset(error.data) for error, _ in SAMPLES
}


def test_every_reason_has_its_wording_in_the_api() -> None:
    unworded = [reason for reason in Reason if reason not in schema_errors._WORDING]
    assert unworded == []


def test_every_reason_has_a_sample_here_and_each_sample_is_one_reason() -> None:
    reasons = [error.reason for error, _ in SAMPLES]
    assert len(reasons) == len(set(reasons))
    assert set(reasons) == set(Reason)


@pytest.mark.parametrize(
    ("error", "message"), SAMPLES, ids=[error.reason.value for error, _ in SAMPLES]
)
def test_each_reason_is_worded_with_its_data_exactly_as_clients_have_always_read_it(
    error: DomainError, message: str
) -> None:
    assert worded(error) == message


def test_a_user_error_has_the_code_field_and_words_of_the_domain_error() -> None:
    error = DomainError(E.CAP_EXCEEDED, Reason.OVER_CAP, "quantity", balance=40, cap=35)
    assert UserError.from_domain(error) == UserError(
        code=E.CAP_EXCEEDED,
        message="That would take your balance to 40; the most you can hold is 35.",
        field="quantity",
        retry_after_seconds=None,
    )


def test_a_rate_limited_message_says_when_to_try_again_in_words_and_in_its_field() -> None:
    error = RateLimited(Reason.TOO_MANY_SENDS, 1, limit=60, action="message")
    assert UserError.from_domain(error) == UserError(
        code=E.RATE_LIMITED,
        message="You can send at most 60 messages a minute. Try again in 1 s.",
        field=None,
        retry_after_seconds=1,
    )


def test_data_named_like_the_errors_own_parts_is_still_data() -> None:
    error = DomainError(E.INVALID_INPUT, Reason.BLANK, "subject", field="x", code="y")
    assert (error.code, error.field, error.data) == (
        E.INVALID_INPUT,
        "subject",
        {"field": "x", "code": "y"},
    )


def test_a_stored_refusal_comes_back_with_its_reason_and_data() -> None:
    refusal = Refusal.of(
        DomainError(E.PAYMENT_DECLINED, Reason.PAYMENT_DECLINED, "paymentMethod", detail="stolen")
    )
    back = refusal_from_doc(refusal_to_doc(refusal))
    assert back == refusal
    assert worded(back.error()) == "The payment was declined: stolen."


def test_a_refusal_stored_with_its_words_by_an_older_service_is_given_those_words_again() -> None:
    doc = {
        "code": "CAP_EXCEEDED",
        "message": "That would take your balance to 30; the most you can hold is 15.",
        "field": "quantity",
    }
    error = refusal_from_doc(doc).error()
    assert (error.code, error.field) == (E.CAP_EXCEEDED, "quantity")
    assert worded(error) == "That would take your balance to 30; the most you can hold is 15."


def _raised_reasons() -> list[tuple[str, Reason, frozenset[str]]]:
    """Every error the service builds with a named reason: where, which, and its data's names."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            at = {"DomainError": 1, "RateLimited": 0, "Refusal": 1}.get(node.func.id)
            if at is None or len(node.args) <= at:
                continue
            reason = node.args[at]
            if not (
                isinstance(reason, ast.Attribute)
                and isinstance(reason.value, ast.Name)
                and reason.value.id == "Reason"
            ):
                continue
            names = {k.arg for k in node.keywords if k.arg is not None}
            if node.func.id == "Refusal" and len(node.args) > 3:
                data = node.args[3]
                assert isinstance(data, ast.Dict), f"{path}:{node.lineno}: data not a literal"
                names = {str(k.value) for k in data.keys if isinstance(k, ast.Constant)}
            where = f"{path.relative_to(SRC)}:{node.lineno}"
            found.append((where, Reason[reason.attr], frozenset(str(n) for n in names)))
    return found


def test_every_error_the_service_raises_passes_the_data_its_wording_uses() -> None:
    raised = _raised_reasons()
    assert len(raised) > 50
    mismatched = [
        (where, reason.value, sorted(names), sorted(SAMPLE_DATA[reason]))
        for where, reason, names in raised
        if names != SAMPLE_DATA[reason]
    ]
    assert mismatched == []


def test_every_reason_is_given_somewhere_in_the_service() -> None:
    assert {reason for _, reason, _ in _raised_reasons()} == set(Reason)


def test_the_domain_and_the_services_build_no_error_with_words_in_it() -> None:
    worded_here = []
    for layer in ("domain", "services"):
        for path in sorted((SRC / layer).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ("DomainError", "RateLimited", "Refusal")
                ):
                    continue
                for arg in ast.walk(node):
                    words = isinstance(arg, ast.JoinedStr) or (
                        isinstance(arg, ast.Constant)
                        and isinstance(arg.value, str)
                        and " " in arg.value
                    )
                    if words:
                        worded_here.append(f"{layer}/{path.name}:{node.lineno}")
    assert worded_here == []
