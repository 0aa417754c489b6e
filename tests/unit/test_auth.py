"""Bearer tokens: HS256 JWTs carrying the member id and role."""

from __future__ import annotations

import concurrent.futures
import pickle
import time
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from inmail.auth import (
    AuthError,
    KnownMembers,
    Role,
    TokenFault,
    TokenService,
    UnusableSecret,
    development_secret,
    existing_development_secret,
)
from inmail.settings import Settings
from support import token_refused

SECRET = "a-test-secret-that-is-long-enough-0123456789"
MAX_LIFETIME = Settings().token_max_lifetime


def test_a_minted_member_token_names_the_member() -> None:
    tokens = TokenService(SECRET, MAX_LIFETIME)
    viewer = tokens.viewer_from_header("Bearer " + tokens.mint("m1", Role.MEMBER))
    assert viewer is not None
    assert (viewer.member_id, viewer.is_admin) == ("m1", False)


def test_an_admin_token_is_an_admin_without_a_member_id() -> None:
    tokens = TokenService(SECRET, MAX_LIFETIME)
    viewer = tokens.verify(tokens.mint("ops", Role.ADMIN))
    assert viewer.is_admin
    assert viewer.member_id is None


def test_no_header_means_anonymous() -> None:
    assert TokenService(SECRET, MAX_LIFETIME).viewer_from_header(None) is None


@pytest.mark.parametrize(
    ("header", "fault"),
    [
        ("Bearer", TokenFault.NOT_BEARER),
        ("Basic abc", TokenFault.NOT_BEARER),
        ("Token x.y.z", TokenFault.NOT_BEARER),
        ("Bearer not-a-jwt", TokenFault.MALFORMED),
    ],
)
def test_malformed_credentials_are_refused(header: str, fault: TokenFault) -> None:
    with token_refused(fault):
        TokenService(SECRET, MAX_LIFETIME).viewer_from_header(header)


def test_a_refusal_carries_its_check_and_data_through_a_copy_and_names_both() -> None:
    refusal = AuthError(TokenFault.LIVES_TOO_LONG, hours=24.0)
    copied = pickle.loads(pickle.dumps(refusal))

    assert (copied.fault, copied.data) == (TokenFault.LIVES_TOO_LONG, {"hours": 24.0})
    assert str(copied) == "LIVES_TOO_LONG {'hours': 24.0}"
    assert str(AuthError(TokenFault.EXPIRED)) == "EXPIRED"


def test_a_token_signed_with_another_secret_is_refused() -> None:
    forged = TokenService("another-secret-that-is-long-enough-0123", MAX_LIFETIME).mint(
        "m1", Role.MEMBER
    )
    with token_refused(TokenFault.MALFORMED):
        TokenService(SECRET, MAX_LIFETIME).verify(forged)


def test_an_expired_token_is_refused() -> None:
    tokens = TokenService(SECRET, MAX_LIFETIME)
    with token_refused(TokenFault.EXPIRED):
        tokens.verify(tokens.mint("m1", Role.MEMBER, ttl=timedelta(seconds=-60)))


def test_a_token_with_an_unknown_role_is_refused() -> None:
    token = jwt.encode({"sub": "m1", "role": "root", "exp": time.time() + 3600}, SECRET, "HS256")
    with token_refused(TokenFault.UNKNOWN_ROLE):
        TokenService(SECRET, MAX_LIFETIME).verify(token)


@pytest.mark.parametrize("claims", [{"sub": "m1"}, {"sub": "m1", "exp": None}])
def test_a_token_without_expiry_is_refused_as_such(claims: dict[str, object]) -> None:
    token = jwt.encode({**claims, "role": "member"}, SECRET, "HS256")
    with token_refused(TokenFault.MISSING_CLAIM, claim="exp"):
        TokenService(SECRET, MAX_LIFETIME).verify(token)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_time_claim_of_true_is_no_number_rather_than_a_time(claim: str) -> None:
    claims: dict[str, object] = {"sub": "m1", "role": "member", "exp": time.time() + 3600}
    token = jwt.encode({**claims, claim: True}, SECRET, "HS256")
    with token_refused(TokenFault.CLAIM_NOT_A_NUMBER, claim=claim):
        TokenService(SECRET, MAX_LIFETIME).verify(token)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_a_time_claim_past_any_float_is_refused_as_out_of_range(claim: str, value: int) -> None:
    """Signed with the secret, a time no float holds is a refusal like any other, not an
    overflow in the checks (a 500 over HTTP, a dropped websocket)."""
    claims: dict[str, object] = {"sub": "m1", "role": "member", "exp": time.time() + 3600}
    token = jwt.encode({**claims, claim: value}, SECRET, "HS256")
    with token_refused(TokenFault.CLAIM_OUT_OF_RANGE, claim=claim):
        TokenService(SECRET, MAX_LIFETIME).verify(token)


def test_the_development_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    first = development_secret(tmp_path)
    assert len(first) >= 32
    assert development_secret(tmp_path) == first
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "holds 0 characters"),
        (b"too-short\n", "holds 9 characters; a secret needs 32 or more"),
        (b"\xff\xfe" * 20, "is not text"),
    ],
)
def test_a_development_secret_file_holding_no_secret_is_refused_not_replaced(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    (tmp_path / "jwt-secret").write_bytes(content)
    for read in (existing_development_secret, development_secret):
        with pytest.raises(UnusableSecret, match=reason):
            read(tmp_path)
    assert (tmp_path / "jwt-secret").read_bytes() == content


def test_first_starts_at_once_keep_one_development_secret(tmp_path: Path) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        made = set(pool.map(lambda _: development_secret(tmp_path / "data"), range(32)))
    assert made == {(tmp_path / "data" / "jwt-secret").read_text()}
    assert [path.name for path in (tmp_path / "data").iterdir()] == ["jwt-secret"]


def test_a_development_secret_that_is_a_link_to_nothing_is_refused(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnusableSecret, match="a link to a file that is not there"):
        development_secret(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jwt-secret"]  # no draft left


def test_a_known_member_is_trusted_for_its_ttl_then_looked_up_again() -> None:
    now = [100.0]
    known = KnownMembers(capacity=2, ttl=60.0, clock=lambda: now[0])
    known.add("ada")
    now[0] += 59.9
    assert known.seen("ada")
    now[0] += 0.1
    assert not known.seen("ada"), "trusted for 60 s after it was found, not longer"
    known.add("ada")
    assert known.seen("ada"), "found again, trusted again"


def test_a_known_member_found_missing_is_forgotten_and_the_least_recent_makes_room() -> None:
    known = KnownMembers(capacity=2, ttl=60.0, clock=lambda: 0.0)
    for member_id in ("ada", "grace", "alan"):
        known.add(member_id)
    assert not known.seen("ada"), "past the capacity, the least recently seen goes"
    assert known.seen("grace")
    known.forget("grace")
    assert not known.seen("grace")
    assert known.seen("alan")
