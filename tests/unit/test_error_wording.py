"""The service's refusals carry codes and data; the API words every one of them, as before."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from inmail.auth import AuthError, TokenFault
from inmail.domain.errors import DomainError, ErrorCode, RateLimited, Reason
from inmail.domain.keyed import KeyedRefusal
from inmail.repositories.records import refusal_from_doc, refusal_to_doc
from inmail.schema import errors as schema_errors
from inmail.schema.errors import UserError, credentials_refused, worded

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src" / "inmail"

E = ErrorCode


def _sample(reason: str, row: dict[str, Any]) -> tuple[DomainError, str]:
    """One table of error_wording.toml: the error it describes, and its words."""
    data = row.get("data", {})
    if "retry_after" not in row:
        error = DomainError(ErrorCode[row["code"]], Reason[reason], row.get("field"), **data)
        return error, row["words"]
    assert (row["code"], row.get("field")) == ("RATE_LIMITED", None), reason  # as RateLimited sets
    return RateLimited(Reason[reason], row["retry_after"], **data), row["words"]


# One error of every reason, with representative data, and the words clients have always read.
SAMPLES: list[tuple[DomainError, str]] = [
    _sample(reason, row)
    for reason, row in tomllib.loads((HERE / "error_wording.toml").read_text()).items()
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
    refusal = KeyedRefusal.of(
        DomainError(E.PAYMENT_DECLINED, Reason.PAYMENT_DECLINED, None, detail="stolen")
    )
    back = refusal_from_doc(refusal_to_doc(refusal))
    assert back == refusal
    assert worded(back.error()) == "The payment was declined: stolen."


def test_a_refusal_stored_naming_the_card_on_file_as_its_field_comes_back_naming_none() -> None:
    """The card on file is no input of any request: a refusal recorded when it was named as
    one is answered as the same refusal made today."""
    stored = refusal_to_doc(
        KeyedRefusal.of(DomainError(E.PAYMENT_DECLINED, Reason.PAYMENT_DECLINED, None, detail="x"))
    )
    back = refusal_from_doc({**stored, "field": "paymentMethod"})
    assert (back.code, back.reason, back.field) == (
        E.PAYMENT_DECLINED,
        Reason.PAYMENT_DECLINED,
        None,
    )


def test_a_refusal_stored_with_its_words_by_an_older_service_is_given_those_words_again() -> None:
    doc = {
        "code": "CAP_EXCEEDED",
        "message": "That would take your balance to 30; the most you can hold is 15.",
        "field": "quantity",
    }
    error = refusal_from_doc(doc).error()
    assert (error.code, error.field) == (E.CAP_EXCEEDED, "quantity")
    assert worded(error) == "That would take your balance to 30; the most you can hold is 15."


def _range_rule_data() -> frozenset[str]:
    """The names of the data `whole_number_within` raises its refusal with."""
    tree = ast.parse((SRC / "domain" / "errors.py").read_text())
    (rule,) = [
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "whole_number_within"
    ]
    (raised,) = [
        n
        for n in ast.walk(rule)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "DomainError"
    ]
    return frozenset(str(k.arg) for k in raised.keywords if k.arg is not None)


def _raised_reasons() -> list[tuple[str, Reason, frozenset[str]]]:
    """Every error the service builds with a named reason: where, which, and its data's names."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            if node.func.id == "whole_number_within":
                # The range rule raises the reason it is given with the data it passes itself.
                (reason,) = [k.value for k in node.keywords if k.arg == "reason"]
                where = f"{path.relative_to(SRC)}:{node.lineno}"
                assert isinstance(reason, ast.Attribute), f"{where}: reason not named"
                found.append((where, Reason[reason.attr], _range_rule_data()))
                continue
            at = {"DomainError": 1, "RateLimited": 0, "KeyedRefusal": 1}.get(node.func.id)
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
            if node.func.id == "KeyedRefusal" and len(node.args) > 3:
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
                    and node.func.id in ("DomainError", "RateLimited", "KeyedRefusal")
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


def test_a_refusal_after_the_charge_says_once_that_the_charge_is_refunded() -> None:
    over_cap = DomainError(E.CAP_EXCEEDED, Reason.OVER_CAP, "quantity", balance=50, cap=45)
    refunded = DomainError(
        E.CAP_EXCEEDED, Reason.OVER_CAP, "quantity", balance=50, cap=45, refunded=1
    )
    changed = DomainError(E.INVALID_INPUT, Reason.SUBSCRIPTION_CHANGED, "plan", refunded=1)
    assert worded(refunded) == (
        f"{worded(over_cap)} Your card was charged for this request, and that charge is refunded."
    )
    # Its own words say what became of the charge: they are not said twice.
    assert worded(changed).count("refunded") == 1


# Every check a token can fail, with the words a client has always read for it.
TOKEN_SAMPLES: list[tuple[AuthError, str]] = [
    (AuthError(TokenFault.NOT_BEARER), "the Authorization header must be 'Bearer <token>'"),
    (AuthError(TokenFault.TOO_LONG, limit=4096), "the token is longer than 4096 bytes"),
    (AuthError(TokenFault.MALFORMED), "the token is malformed or wrongly signed"),
    (AuthError(TokenFault.EXPIRED), "the token has expired"),
    (AuthError(TokenFault.NOT_YET_VALID), "the token is not valid yet"),
    (AuthError(TokenFault.MISSING_CLAIM, claim="exp"), "the token has no exp claim"),
    (AuthError(TokenFault.CLAIM_NOT_A_NUMBER, claim="nbf"), "the token's nbf is not a number"),
    (AuthError(TokenFault.CLAIM_OUT_OF_RANGE, claim="iat"), "the token's iat is out of range"),
    (
        AuthError(TokenFault.LIVES_TOO_LONG, hours=24.0),
        "the token lives longer than the 24 hours allowed",
    ),
    (
        AuthError(TokenFault.LIVES_TOO_LONG, hours=0.5),
        "the token lives longer than the 0.5 hours allowed",
    ),
    (AuthError(TokenFault.SUBJECT_NOT_MEMBER_ID), "the token's subject is not a member id"),
    (AuthError(TokenFault.UNKNOWN_ROLE), "the token's role is neither member nor admin"),
    (
        AuthError(TokenFault.CLAIM_NOT_ACCEPTED, claim="aud"),
        "the token's aud claim is not accepted here",
    ),
]


def test_every_token_fault_has_a_sample_here() -> None:
    assert {error.fault for error, _ in TOKEN_SAMPLES} == set(TokenFault)


@pytest.mark.parametrize(
    ("error", "words"), TOKEN_SAMPLES, ids=[words for _, words in TOKEN_SAMPLES]
)
def test_each_token_refusal_names_its_check_as_clients_have_always_read_it(
    error: AuthError, words: str
) -> None:
    assert credentials_refused(error) == f"Invalid credentials: {words}."


def test_the_token_checks_build_no_refusal_with_words_in_it() -> None:
    path = SRC / "auth.py"
    refusals = [
        node
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "AuthError"
    ]
    assert len(refusals) >= 10
    worded_here = [
        node.lineno
        for node in refusals
        for arg in ast.walk(node)
        if isinstance(arg, ast.JoinedStr)
        or (isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    ]
    assert worded_here == []
