"""The schema, assembled in one place, with its limits and error masking."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from inmail.resolvers.mutation import Mutation
from inmail.resolvers.query import Query
from inmail.schema.errors import ApiError
from inmail.schema.scalars import DateTime
from inmail.settings import Settings

log = logging.getLogger("inmail.graphql")

EXTRA_TYPES: list[type] = []
"""Roots and types that other modules add (the Subscription root, advanceClock)."""


def is_unexpected(error: GraphQLError) -> bool:
    """An error from inside a resolver that was not raised on purpose: a bug, masked."""
    original = error.original_error
    if original is None or isinstance(original, ApiError):
        return False
    return error.path is not None


class InMailSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        for error in errors:
            if is_unexpected(error):
                log.error("unexpected error in %s", error.path, exc_info=error.original_error)


def build_schema(
    settings: Settings,
    *,
    mutation: type = Mutation,
    subscription: type | None = None,
) -> strawberry.Schema:
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        functools.partial(MaxTokensLimiter, max_token_count=settings.max_tokens),
        functools.partial(QueryDepthLimiter, max_depth=settings.max_query_depth),
        functools.partial(MaxAliasesLimiter, max_alias_count=settings.max_aliases),
        functools.partial(ParserCache, maxsize=256),
        functools.partial(ValidationCache, maxsize=256),
        functools.partial(MaskErrors, should_mask_error=is_unexpected),
    ]
    if not settings.introspection:
        extensions.append(DisableIntrospection)
    scalar_overrides: dict[object, Any] = {datetime: DateTime}
    return InMailSchema(
        query=Query,
        mutation=mutation,
        subscription=subscription,
        extensions=extensions,
        scalar_overrides=scalar_overrides,
    )
