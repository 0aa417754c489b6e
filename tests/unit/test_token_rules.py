"""The token rules of SPEC section 8: numeric `exp`, a maximum lifetime, leeway, a size limit."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from inmail.auth import Role, TokenFault, TokenService
from inmail.cli import main
from inmail.settings import Settings
from support import token_refused

SECRET = "a-test-secret-that-is-long-enough-0123456789"
MAX_LIFETIME = Settings().token_max_lifetime


def signed(**claims: Any) -> str:
    return jwt.encode({"sub": "m1", "role": "member", **claims}, SECRET, algorithm="HS256")


def now() -> int:
    return int(time.time())


def test_an_exp_written_as_a_string_of_digits_is_refused() -> None:
    with token_refused(TokenFault.CLAIM_NOT_A_NUMBER, claim="exp"):
        TokenService(SECRET, MAX_LIFETIME).verify(signed(iat=now(), exp=str(now() + 3600)))


@pytest.mark.parametrize(
    ("claims", "fault", "named"),
    [
        ({"exp": "soon"}, TokenFault.CLAIM_NOT_A_NUMBER, {"claim": "exp"}),
        ({"exp": [1]}, TokenFault.CLAIM_NOT_A_NUMBER, {"claim": "exp"}),
        ({"nbf": "soon"}, TokenFault.CLAIM_NOT_A_NUMBER, {"claim": "nbf"}),
        ({"iat": {"at": 1}}, TokenFault.CLAIM_NOT_A_NUMBER, {"claim": "iat"}),
        ({"sub": 42}, TokenFault.SUBJECT_NOT_MEMBER_ID, {}),
        ({"sub": "\ud800"}, TokenFault.SUBJECT_NOT_MEMBER_ID, {}),  # a lone surrogate
        ({"sub": "m1\n"}, TokenFault.SUBJECT_NOT_MEMBER_ID, {}),
    ],
)
def test_a_signed_claim_of_the_wrong_type_is_named(
    claims: dict[str, Any], fault: TokenFault, named: dict[str, object]
) -> None:
    token = signed(**{"iat": now(), "exp": now() + 3600, **claims})
    with token_refused(fault, **named):
        TokenService(SECRET, MAX_LIFETIME).verify(token)


@pytest.mark.parametrize("subject", ["ops\u200dteam", "José", "運営", "a\u00a0b", "\U0001fae8"])
def test_an_admins_subject_may_be_any_text_without_control_characters(subject: str) -> None:
    token = jwt.encode(
        {"sub": subject, "role": "admin", "iat": now(), "exp": now() + 60}, SECRET, "HS256"
    )
    assert TokenService(SECRET, MAX_LIFETIME).verify(token).is_admin


def test_a_wrongly_signed_token_with_a_bad_claim_is_refused_by_its_signature() -> None:
    token = jwt.encode({"sub": "m1", "exp": "soon"}, "another-secret-" * 3, algorithm="HS256")
    with token_refused(TokenFault.MALFORMED):
        TokenService(SECRET, MAX_LIFETIME).verify(token)


@pytest.mark.parametrize(("claim", "value"), [("aud", "x"), ("jti", 5)])
def test_a_signed_token_that_pyjwt_refuses_on_another_rule_is_refused_naming_the_claim(
    claim: str, value: object
) -> None:
    """An audience, which the service never gives, or a jti that is no string, makes PyJWT
    refuse the token: the refusal names the claim (naming it is only ever said in refusing,
    never a way past a check)."""
    token = signed(iat=now(), exp=now() + 3600, **{claim: value})
    with token_refused(TokenFault.CLAIM_NOT_ACCEPTED, claim=claim):
        TokenService(SECRET, MAX_LIFETIME).verify(token)


def test_a_wrongly_signed_token_with_an_audience_is_refused_by_its_signature() -> None:
    token = jwt.encode({"sub": "m1", "exp": now() + 60, "aud": "x"}, "another-" * 6, "HS256")
    with token_refused(TokenFault.MALFORMED):
        TokenService(SECRET, MAX_LIFETIME).verify(token)


def test_an_exp_of_1e20_is_refused_as_too_long_a_lifetime() -> None:
    with token_refused(TokenFault.LIVES_TOO_LONG, hours=24):
        TokenService(SECRET, MAX_LIFETIME).verify(signed(iat=now(), exp=1e20))


def test_a_token_without_iat_lives_at_most_the_maximum_from_now() -> None:
    tokens = TokenService(SECRET, MAX_LIFETIME)

    assert tokens.verify(signed(exp=now() + 23 * 3600)).member_id == "m1"
    with token_refused(TokenFault.LIVES_TOO_LONG):
        tokens.verify(signed(exp=now() + 25 * 3600))


def test_the_maximum_lifetime_is_configurable() -> None:
    tokens = TokenService(SECRET, max_lifetime=timedelta(hours=1))

    assert tokens.verify(signed(iat=now(), exp=now() + 3600)).subject == "m1"
    with token_refused(TokenFault.LIVES_TOO_LONG, hours=1):
        tokens.verify(signed(iat=now(), exp=now() + 3601))


def test_thirty_seconds_of_clock_skew_are_tolerated_on_iat_nbf_and_exp() -> None:
    tokens = TokenService(SECRET, MAX_LIFETIME)

    assert tokens.verify(signed(iat=now() + 1, nbf=now() + 1, exp=now() + 60)).subject == "m1"
    assert tokens.verify(signed(iat=now() - 60, exp=now() - 10)).subject == "m1"
    with token_refused(TokenFault.NOT_YET_VALID):
        tokens.verify(signed(iat=now() - 10, nbf=now() + 120, exp=now() + 600))
    with token_refused(TokenFault.EXPIRED):
        tokens.verify(signed(iat=now() - 600, exp=now() - 60))


def test_a_token_over_4_kib_is_refused_before_it_is_decoded() -> None:
    huge = signed(iat=now(), exp=now() + 3600, padding="x" * 200_000)

    with token_refused(TokenFault.TOO_LONG, limit=4096):
        TokenService(SECRET, MAX_LIFETIME).verify(huge)


def test_a_minted_token_carries_its_expiry_for_websockets_to_end_at() -> None:
    tokens = TokenService(SECRET, MAX_LIFETIME)
    before = time.time()

    viewer = tokens.verify(tokens.mint("m1", Role.MEMBER, timedelta(hours=2)))

    assert before + 7200 - 1 <= viewer.expires_at <= time.time() + 7200


def test_minting_past_the_maximum_lifetime_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 24 hours"):
        TokenService(SECRET, MAX_LIFETIME).mint("m1", Role.MEMBER, timedelta(hours=25))


def test_the_token_command_refuses_hours_past_the_maximum_lifetime(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("INMAIL_JWT_SECRET", SECRET)
    monkeypatch.setenv("INMAIL_TOKEN_MAX_LIFETIME", "2")
    monkeypatch.setenv("INMAIL_DATA_DIR", str(tmp_path))  # no server's database to look in
    monkeypatch.delenv("INMAIL_MONGODB_URI", raising=False)
    m1 = "6650a1c2e4b0f1a2b3c4d5e6"

    refused = main(["token", "--member", m1, "--hours", "3"])
    minted = main(["token", "--member", m1, "--hours", "2"])

    out, err = capsys.readouterr()
    assert refused == 2
    assert "at most 2" in err
    assert minted == 0
    assert TokenService(SECRET, MAX_LIFETIME).verify(out.strip()).subject == m1
