"""Bearer tokens (HS256 JWT) -> the viewer a request acts as."""

from __future__ import annotations

import math
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Final

import jwt

ALGORITHM = "HS256"
DEV_SECRET_FILE = "jwt-secret"
MIN_SECRET_LENGTH = 32  # characters of an HS256 secret, INMAIL_JWT_SECRET or the file
# Clocks of the machine that mints a token and of this one may disagree by this much.
LEEWAY_SECONDS = 30.0
# A token is a few hundred bytes; anything much longer is refused before it is decoded.
MAX_TOKEN_BYTES = 4096


class Role(StrEnum):
    MEMBER = "member"
    ADMIN = "admin"


class TokenFault(StrEnum):
    """Which check a token, or the header carrying it, failed (`schema/errors.py` words each)."""

    NOT_BEARER = "NOT_BEARER"
    TOO_LONG = "TOO_LONG"  # data: limit (bytes)
    MALFORMED = "MALFORMED"  # or wrongly signed: a forger learns nothing of which
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    MISSING_CLAIM = "MISSING_CLAIM"  # data: claim
    CLAIM_NOT_A_NUMBER = "CLAIM_NOT_A_NUMBER"  # data: claim
    CLAIM_OUT_OF_RANGE = "CLAIM_OUT_OF_RANGE"  # data: claim
    LIVES_TOO_LONG = "LIVES_TOO_LONG"  # data: hours (the longest allowed)
    SUBJECT_NOT_MEMBER_ID = "SUBJECT_NOT_MEMBER_ID"
    UNKNOWN_ROLE = "UNKNOWN_ROLE"
    CLAIM_NOT_ACCEPTED = "CLAIM_NOT_ACCEPTED"  # data: claim (an audience, a jti of no string)


class AuthError(Exception):
    """The request's credentials are malformed, wrongly signed or expired: which check failed,
    and what the words for it need."""

    def __init__(self, fault: TokenFault, **data: str | float) -> None:
        super().__init__(fault, data)
        self.fault = fault
        self.data = data

    def __str__(self) -> str:
        return f"{self.fault.value} {self.data}" if self.data else self.fault.value

    def __reduce__(self) -> tuple[object, ...]:  # copied or pickled whole, data included
        return (_auth_error, (self.fault, self.data))


def _auth_error(fault: TokenFault, data: dict[str, str | float]) -> AuthError:
    return AuthError(fault, **data)


@dataclass(frozen=True, slots=True)
class Viewer:
    subject: str
    role: Role
    expires_at: float = math.inf
    """The token's `exp`, in seconds since the epoch."""

    @property
    def usable_until(self) -> float:
        """When an HTTP request's token is refused: its `exp`, and the clock skew allowed (a
        websocket's authentication ends at `exp` itself)."""
        return self.expires_at + LEEWAY_SECONDS

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def member_id(self) -> str | None:
        return self.subject if self.role is Role.MEMBER else None


class TokenService:
    """Mints and checks tokens against the real time (never a manual clock: tokens are real)."""

    def __init__(
        self,
        secret: str,
        max_lifetime: timedelta,
        *,
        remembered: int = 4096,
    ) -> None:
        self._secret = secret
        self.max_lifetime = max_lifetime
        # Tokens that passed every check, with their viewer: a client sends the same token on
        # every request, and its signature need not be computed again until it expires.
        # Only tokens signed with the secret get in; past `remembered`, the least recently used
        # is forgotten (and checked in full when it comes back).
        self._verified: OrderedDict[str, Viewer] = OrderedDict()
        self._remembered = remembered

    def mint(self, subject: str, role: Role, ttl: timedelta = timedelta(hours=12)) -> str:
        if ttl > self.max_lifetime:
            raise ValueError(
                f"a token lives at most {self.max_lifetime.total_seconds() / 3600:g} hours"
            )
        issued = int(time.time())
        claims = {
            "sub": subject,
            "role": role.value,
            "iat": issued,
            "exp": issued + int(ttl.total_seconds()),
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Viewer:
        known = self._verified.get(token)
        if known is not None and time.time() < known.usable_until:
            self._verified.move_to_end(token)
            return known
        viewer = self._check(token)
        self._verified[token] = viewer
        if len(self._verified) > self._remembered:
            self._verified.popitem(last=False)
        return viewer

    def _check(self, token: str) -> Viewer:
        """Every check of a token: size, signature, claims, lifetime."""
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(TokenFault.TOO_LONG, limit=MAX_TOKEN_BYTES)
        if not token.isascii():  # a JWT is base64url and dots; a websocket's may hold anything
            raise AuthError(TokenFault.MALFORMED)
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp"]},
                leeway=LEEWAY_SECONDS,
            )
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError) as exc:
            # The signature holds. PyJWT reads a claim of `true` as 1: such a claim is said to
            # be no number, not to have expired.
            _times(self._claims_unchecked(token))
            expired = isinstance(exc, jwt.ExpiredSignatureError)
            raise AuthError(TokenFault.EXPIRED if expired else TokenFault.NOT_YET_VALID) from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(TokenFault.MISSING_CLAIM, claim=exc.claim) from None
        except jwt.InvalidSignatureError:
            raise AuthError(TokenFault.MALFORMED) from None
        except jwt.PyJWTError as refused:
            self._refuse_a_signed_claim(token, refused)
            raise AuthError(TokenFault.MALFORMED) from None
        expires_at = self._check_lifetime(claims)
        subject, role = _member_id(claims.get("sub")), claims.get("role", Role.MEMBER.value)
        if role not in (Role.MEMBER.value, Role.ADMIN.value):
            raise AuthError(TokenFault.UNKNOWN_ROLE)
        return Viewer(subject=subject, role=Role(role), expires_at=expires_at)

    def _refuse_a_signed_claim(self, token: str, refused: jwt.PyJWTError) -> None:
        """For a token PyJWT `refused`: when its signature holds, the claim at fault is named (an
        `exp` of "soon", a `sub` that is no string, an audience, which the service never gives)
        instead of "malformed"; the token is refused either way."""
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.PyJWTError:
            return
        _times(claims)
        _member_id(claims.get("sub"))
        for error, claim in _CLAIM_ERRORS:
            if isinstance(refused, error):
                raise AuthError(TokenFault.CLAIM_NOT_ACCEPTED, claim=claim) from None

    @staticmethod
    def _claims_unchecked(token: str) -> dict[str, object]:
        """The claims of a token whose signature was found to hold (PyJWT raised its time's
        error past that check), read again with no check at all: a token that also breaks
        another of PyJWT's claim rules (`aud`, a `sub` or `jti` that is no string) is refused
        by its time, not by an error nobody catches."""
        claims: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
        return claims

    def _check_lifetime(self, claims: dict[str, object]) -> float:
        """`exp` (and `iat`, `nbf` when present) are numbers; the token lives at most so long."""
        times = _times(claims)
        longest = self.max_lifetime.total_seconds()
        issued = times.get("iat")
        if issued is None:
            lifetime = times["exp"] - time.time() - LEEWAY_SECONDS
        else:
            lifetime = times["exp"] - issued
        if lifetime > longest:
            raise AuthError(TokenFault.LIVES_TOO_LONG, hours=longest / 3600)
        return times["exp"]

    def viewer_from_header(self, header: str | None) -> Viewer | None:
        """None when no credentials were sent; AuthError when they were sent and are bad."""
        if header is None or header.strip() == "":
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(TokenFault.NOT_BEARER)
        return self.verify(token.strip())


_CLAIM_ERRORS: Final = (
    (jwt.InvalidAudienceError, "aud"),
    (jwt.exceptions.InvalidJTIError, "jti"),
)
"""PyJWT's refusals of a claim the service does not check itself, and the claim each names."""


_NOT_IN_A_SUBJECT: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""A control character, or a lone UTF-16 surrogate (which no database query can carry)."""


def _member_id(subject: object) -> str:
    """The `sub` claim, a member id (AuthError otherwise): text of 1-64 characters, none of
    them a control character or a lone surrogate (format characters, such as a zero-width
    joiner, are text: an admin's subject may hold them)."""
    if (
        not isinstance(subject, str)
        or not subject
        or len(subject) > 64
        or _NOT_IN_A_SUBJECT.search(subject)
    ):
        raise AuthError(TokenFault.SUBJECT_NOT_MEMBER_ID)
    return subject


def _times(claims: dict[str, object]) -> dict[str, float]:
    """`exp`, and `iat` and `nbf` where present, each a finite number that a float holds
    (AuthError otherwise: an integer past any float is refused, not left to overflow)."""
    times: dict[str, float] = {}
    for claim in ("exp", "iat", "nbf"):
        value = claims.get(claim)
        if value is None and claim != "exp":
            continue
        # PyJWT takes "exp": "1999999999" (a string of digits) as a number: refuse it.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AuthError(TokenFault.CLAIM_NOT_A_NUMBER, claim=claim)
        try:
            seconds = float(value)
        except OverflowError:
            raise AuthError(TokenFault.CLAIM_OUT_OF_RANGE, claim=claim) from None
        if not math.isfinite(seconds):
            raise AuthError(TokenFault.CLAIM_NOT_A_NUMBER, claim=claim)
        times[claim] = seconds
    return times


class UnusableSecret(ValueError):
    """The data folder's development secret file is there but holds no usable secret."""


def existing_development_secret(data_dir: Path) -> str | None:
    """The development secret kept in the data folder; None if there is none yet (this never
    creates it). A file there that cannot be read, is not text or holds under 32 characters is
    UnusableSecret: it is never taken for absent, nor replaced, since someone put it there."""
    path = data_dir / DEV_SECRET_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        if path.is_symlink():
            raise UnusableSecret(
                f"{path.absolute()} is a link to a file that is not there"
            ) from None
        return None
    except UnicodeDecodeError:
        raise UnusableSecret(f"{path.absolute()} is not text") from None
    except OSError as exc:
        raise UnusableSecret(f"cannot read {path.absolute()}: {exc.strerror or exc}") from None
    if len(existing) < MIN_SECRET_LENGTH:
        raise UnusableSecret(
            f"{path.absolute()} holds {len(existing)} characters; a secret needs "
            f"{MIN_SECRET_LENGTH} or more (remove the file to have a new one made)"
        )
    return existing


def development_secret(data_dir: Path) -> str:
    """A random secret kept in the data folder, so that `serve` and `token` agree. It is
    written whole or not at all (a new file linked into place), never over another's."""
    existing = existing_development_secret(data_dir)
    if existing is not None:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    draft = data_dir / f".{DEV_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secret)
        _put_in_place(draft, data_dir / DEV_SECRET_FILE)
    except FileExistsError:
        # Another first start kept its secret first: that one is everybody's.
        kept = existing_development_secret(data_dir)
        if kept is None:
            raise UnusableSecret(f"{(data_dir / DEV_SECRET_FILE).absolute()} vanished") from None
        return kept
    finally:
        draft.unlink(missing_ok=True)
    return secret


def _put_in_place(draft: Path, path: Path) -> None:
    """`draft` at `path`, whole, unless something is there already (FileExistsError): a hard
    link where the file system makes them, else a copy created only where nothing is."""
    try:
        os.link(draft, path)
        return
    except FileExistsError:
        raise
    except OSError:  # no hard links here (EPERM, ENOTSUP, ...)
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(draft.read_text())


class KnownMembers:
    """Ids of member tokens' members this process found in the database lately.

    The API deletes no member, so a token's member found once need not be looked up again on
    every request (a mutation would otherwise spend a round trip on it first). A record erased
    from the database by other means is still noticed: an id is trusted for `ttl` seconds
    after it was found, and forgotten at once when a request finds its record missing.
    Bounded: past `capacity` ids, the least recently seen is forgotten and looked up again
    when it comes back.
    """

    def __init__(
        self,
        capacity: int = 10_000,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ids: OrderedDict[str, float] = OrderedDict()  # id -> trusted until
        self._capacity = capacity
        self._ttl = ttl
        self._clock = clock

    def seen(self, member_id: str) -> bool:
        until = self._ids.get(member_id)
        if until is None:
            return False
        if self._clock() >= until:
            del self._ids[member_id]
            return False
        self._ids.move_to_end(member_id)
        return True

    def add(self, member_id: str) -> None:
        self._ids[member_id] = self._clock() + self._ttl
        self._ids.move_to_end(member_id)
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)

    def forget(self, member_id: str) -> None:
        """The member's record was found missing: look it up again next time."""
        self._ids.pop(member_id, None)
