"""Errors as the API shows them: business failures as data, access failures as GraphQL errors."""

from __future__ import annotations

import strawberry
from graphql import GraphQLError

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
