"""Bearer tokens (HS256 JWT) -> the viewer a request acts as."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

import jwt

ALGORITHM = "HS256"
DEV_SECRET_FILE = "jwt-secret"


class Role(StrEnum):
    MEMBER = "member"
    ADMIN = "admin"


class AuthError(Exception):
    """The request's credentials are missing, malformed, wrongly signed or expired."""


@dataclass(frozen=True, slots=True)
class Viewer:
    subject: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def member_id(self) -> str | None:
        return self.subject if self.role is Role.MEMBER else None


class TokenService:
    def __init__(self, secret: str) -> None:
        self._secret = secret

    def mint(self, subject: str, role: Role, ttl: timedelta = timedelta(hours=12)) -> str:
        now = datetime.now(UTC)
        claims = {"sub": subject, "role": role.value, "iat": now, "exp": now + ttl}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Viewer:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.PyJWTError:
            raise AuthError("the token is malformed or wrongly signed") from None
        subject, role = claims.get("sub"), claims.get("role", Role.MEMBER.value)
        if not isinstance(subject, str) or not subject or len(subject) > 64:
            raise AuthError("the token's subject is not a member id")
        if role not in (Role.MEMBER.value, Role.ADMIN.value):
            raise AuthError("the token's role is neither member nor admin")
        return Viewer(subject=subject, role=Role(role))

    def viewer_from_header(self, header: str | None) -> Viewer | None:
        """None when no credentials were sent; AuthError when they were sent and are bad."""
        if header is None or header.strip() == "":
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        return self.verify(token.strip())


def development_secret(data_dir: Path) -> str:
    """A random secret kept in the data folder, so that `serve` and `token` agree."""
    path = data_dir / DEV_SECRET_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if len(existing) >= 32:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret
