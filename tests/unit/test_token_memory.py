"""A token checked once is answered from memory until it expires, and never past that."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest

from inmail.auth import LEEWAY_SECONDS, Role, TokenFault, TokenService
from inmail.settings import Settings
from support import token_refused

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
MAX_LIFETIME = Settings().token_max_lifetime


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature is checked, from now on, in order."""
    checked: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: object, **kwargs: object) -> object:
        checked.append(token)
        return real_decode(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting_decode)
    return checked


def test_a_remembered_token_is_answered_without_checking_its_signature_again(
    decoded: list[str],
) -> None:
    tokens = TokenService(SECRET, MAX_LIFETIME)
    token = tokens.mint("m-ada", Role.MEMBER)
    first = tokens.verify(token)
    assert tokens.verify(token) == first
    assert decoded == [token]


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    tokens = TokenService(SECRET, MAX_LIFETIME)
    now = time.time()
    expires = int(now - LEEWAY_SECONDS) + 2  # valid, with the leeway, for one to two seconds
    token = jwt.encode({"sub": "m-ada", "iat": int(now), "exp": expires}, SECRET, "HS256")
    assert tokens.verify(token).member_id == "m-ada"
    time.sleep(max(0.0, expires + LEEWAY_SECONDS - time.time()) + 0.1)
    with token_refused(TokenFault.EXPIRED):
        tokens.verify(token)


def test_a_token_refused_once_is_checked_and_refused_again(decoded: list[str]) -> None:
    tokens = TokenService(SECRET, MAX_LIFETIME)
    forged = TokenService("another-secret-that-is-long-enough-0123", MAX_LIFETIME).mint(
        "m-eve", Role.ADMIN
    )
    for _ in range(2):
        with token_refused(TokenFault.MALFORMED):
            tokens.verify(forged)
    assert decoded == [forged, forged]


def test_memory_holds_at_most_so_many_tokens_and_forgets_the_least_recently_used(
    decoded: list[str],
) -> None:
    tokens = TokenService(SECRET, MAX_LIFETIME, remembered=2)
    ada, bo, cy = (tokens.mint(m, Role.MEMBER, ttl=timedelta(hours=1)) for m in ("ada", "bo", "cy"))
    for token in (ada, bo, ada, cy):  # bo is the least recently used when cy arrives
        tokens.verify(token)
    decoded.clear()
    assert [tokens.verify(t).member_id for t in (ada, cy, bo)] == ["ada", "cy", "bo"]
    assert decoded == [bo]
