"""Errors as the API shows them: business failures as data, access failures as GraphQL errors.

The service's errors carry codes and data; every word a client reads about them is here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import strawberry
from graphql import GraphQLError

from inmail.domain.access import ReadRefused, Refusal
from inmail.domain.errors import DomainError, RateLimited
from inmail.schema.enums import ErrorCode


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
        retry_after = error.retry_after_seconds if isinstance(error, RateLimited) else None
        return cls(
            code=error.code,
            message=error.message,
            field=error.field,
            retry_after_seconds=retry_after,
        )


class ApiError(GraphQLError):
    """A GraphQL error the client is meant to see, with a stable `extensions.code`."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, extensions={"code": code})


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
        f"memberId: no member with id {e.data['member_id']!r}."
    ),
    Refusal.TOO_MANY_IDS: lambda e: bad_input(
        f"ids: at most {e.data['maximum']} ids at a time; ask for the rest in another request."
    ),
}


def refused(error: ReadRefused) -> ApiError:
    """A read refused by the service, worded for the client."""
    return _REFUSALS[error.refusal](error)
