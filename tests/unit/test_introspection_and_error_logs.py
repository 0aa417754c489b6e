"""Introspection's `isOneOf` on every kind of type, and how many tracebacks one operation logs."""

from __future__ import annotations

import logging

import pytest
from graphql import GraphQLError, graphql_sync

from inmail.resolvers.root import LOGGED_TRACEBACKS, build_schema
from support import test_settings as settings_for_tests


def test_is_one_of_answers_for_wrapped_types_and_every_kind_without_an_error() -> None:
    schema = build_schema(settings_for_tests())
    result = graphql_sync(
        schema._schema,
        "{ __schema { types { kind name isOneOf fields { type { kind isOneOf "
        "ofType { kind isOneOf ofType { kind isOneOf } } } } } } }",
    )

    assert result.errors is None
    types = result.data["__schema"]["types"]  # type: ignore[index]
    for type_ in types:
        expected = None if type_["kind"] != "INPUT_OBJECT" else False
        assert type_["isOneOf"] is expected, type_["name"]
    wrapped = [
        field["type"]
        for type_ in types
        for field in type_["fields"] or []
        if field["type"]["kind"] in ("NON_NULL", "LIST")
    ]
    assert wrapped
    assert all(type_["isOneOf"] is None for type_ in wrapped)


def test_one_operations_unexpected_errors_log_a_few_tracebacks_and_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = build_schema(settings_for_tests())
    errors = [
        GraphQLError("boom", path=["items", n], original_error=RuntimeError(f"bug {n}"))
        for n in range(1000)
    ]

    with caplog.at_level(logging.ERROR):
        schema.process_errors(errors)

    with_traceback = [record for record in caplog.records if record.exc_info]
    assert len(with_traceback) == LOGGED_TRACEBACKS
    (summary,) = [record for record in caplog.records if not record.exc_info]
    assert summary.getMessage().startswith(f"{1000 - LOGGED_TRACEBACKS} more unexpected errors")
