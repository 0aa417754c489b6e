"""The bounds of a document's text, its length and its lines, held before it is parsed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from graphql import Source, get_introspection_query
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.workloads import MEMBER_PAGE
from inmail.resolvers.limits import line_count, too_many_lines
from inmail.resolvers.root import build_schema
from support import test_settings as settings_for_tests


@given(st.text(alphabet="\n\r{} #x\u2028", max_size=60))
def test_lines_are_counted_as_graphql_core_numbers_them(text: str) -> None:
    # graphql-core's line of the end of the text: one more than the breaks before it.
    assert line_count(text) == Source(text).get_location(len(text)).line


@pytest.mark.parametrize(
    ("text", "lines"),
    [("", 1), ("{ now }", 1), ("\n", 2), ("\r\n", 2), ("\r", 2), ("\n\r", 3), ("\r\r\n", 3)],
)
def test_each_kind_of_line_break_counts_once(text: str, lines: int) -> None:
    assert line_count(text) == lines


@pytest.mark.parametrize("breaks", ["\n", "\r", "\r\n", "\n\r\r\n"])
def test_the_refusal_points_at_the_start_of_the_first_line_past_the_bound(breaks: str) -> None:
    text = breaks * 40 + "{ now }"

    error = too_many_lines(text, 12)

    assert error.message == "Syntax Error: Document contains more than 12 lines. Parsing aborted."
    assert error.locations == [(13, 1)]


def test_the_documents_clients_send_are_well_within_the_default_bounds() -> None:
    settings = settings_for_tests()
    for document in (get_introspection_query(descriptions=True), MEMBER_PAGE):
        assert len(document) < settings.max_query_length // 4
        assert line_count(document) < settings.max_query_lines // 4


def typename_of_length(length: int) -> str:
    return "{ __typename }\n#" + "x" * (length - 16)


def typename_of_lines(lines: int) -> str:
    return "\n" * (lines - 1) + "{ __typename }"


@pytest.mark.parametrize(
    ("padded", "bound", "message"),
    [
        (
            typename_of_length,
            1024,
            "Syntax Error: Source contains more than 1024 code points. Parsing aborted.",
        ),
        (
            typename_of_lines,
            10,
            "Syntax Error: Document contains more than 10 lines. Parsing aborted.",
        ),
    ],
    ids=["length", "lines"],
)
async def test_the_schema_holds_the_bounds_its_settings_give(
    padded: Callable[[int], str], bound: int, message: str
) -> None:
    schema = build_schema(settings_for_tests(max_query_length=1024, max_query_lines=10))

    refused = await schema.execute(padded(bound + 1))
    at_the_bound = await schema.execute(padded(bound))

    assert refused.data is None
    assert [(e.message, e.extensions) for e in refused.errors or []] == [
        (message, {"code": "GRAPHQL_PARSE_FAILED"})
    ]
    assert at_the_bound.errors is None
    assert at_the_bound.data == {"__typename": "Query"}
