"""The bounds on what an operation's variables hold: the walk, and the extension on a schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import strawberry

from inmail.resolvers.variables_guard import (
    MAX_FIELD_NAME,
    MAX_LIST_VARIABLE,
    MAX_VARIABLE_VALUES,
    VariablesGuard,
    variables_refusal,
)

TOO_MANY = f"Variables hold more than {MAX_VARIABLE_VALUES} values."
TOO_LONG = f"A list in the variables holds more than {MAX_LIST_VARIABLE} values."


class Watched(list[object]):
    """A list that counts the items read out of it."""

    read = 0

    def __iter__(self) -> Iterator[object]:
        for item in super().__iter__():
            Watched.read += 1
            yield item


@pytest.fixture(autouse=True)
def _nothing_read() -> None:
    Watched.read = 0


def full_lists(values: int) -> dict[str, object]:
    """Variables holding exactly `values` values: lists of ids as long as allowed, one id more
    or less in the last."""
    variables: dict[str, object] = {}
    while values:
        items = min(values - 1, MAX_LIST_VARIABLE)  # the list itself is one value
        variables[f"v{len(variables)}"] = ["1"] * items
        values -= items + 1
    return variables


def test_no_variables_hold_nothing() -> None:
    assert variables_refusal(None) is None
    assert variables_refusal({}) is None
    assert variables_refusal({"first": 10, "after": None}) is None


def test_the_values_in_all_are_allowed_up_to_the_bound_and_not_one_more() -> None:
    at_the_bound = full_lists(MAX_VARIABLE_VALUES)
    assert variables_refusal(at_the_bound) is None
    assert variables_refusal({**at_the_bound, "one_more": None}) == TOO_MANY


def test_a_list_is_allowed_up_to_its_bound_and_not_one_item_more() -> None:
    assert variables_refusal({"ids": ["1"] * MAX_LIST_VARIABLE}) is None
    assert variables_refusal({"ids": ["1"] * (MAX_LIST_VARIABLE + 1)}) == TOO_LONG


def test_every_scalar_list_and_object_counts_one_at_any_depth() -> None:
    # The object, its list, 1, the inner object, 2 and the empty list: six values.
    variables = {"input": {"a": [1, {"b": 2}], "c": []}}
    assert variables_refusal(variables, max_values=6) is None
    assert variables_refusal(variables, max_values=5) is not None


def test_a_long_list_is_found_inside_objects_and_lists() -> None:
    inner = {"input": {"filters": [{"status": ["ACTIVE"] * (MAX_LIST_VARIABLE + 1)}]}}
    assert variables_refusal(inner) == TOO_LONG
    matrix = {"rows": [["1"] * 10, ["1"] * (MAX_LIST_VARIABLE + 1)]}
    assert variables_refusal(matrix) == TOO_LONG


def test_a_field_name_is_allowed_up_to_its_bound_at_any_depth_and_not_one_character_more() -> None:
    """graphql-core names an unknown field of an input whole in its error: a name of 200 KB was
    answered 200 KB. No input of the schema has a name a tenth as long as the bound."""
    longest = "n" * MAX_FIELD_NAME
    assert variables_refusal({"input": {longest: 1, "list": [{longest: None}]}}) is None
    for variables in (
        {"input": {longest + "n": 1}},
        {"input": {"ok": [{"deeper": {"z" * 200_000: 1}}]}},
    ):
        refusal = variables_refusal(variables)
        assert refusal is not None
        assert f"over {MAX_FIELD_NAME} characters" in refusal
        assert len(refusal) < 200


def test_a_million_ids_are_refused_without_reading_one() -> None:
    million = Watched([1] * 1_000_000)
    assert variables_refusal({"ids": million}) == TOO_LONG
    assert Watched.read == 0


def test_the_walk_stops_once_the_values_pass_their_bound() -> None:
    row = Watched(["1"] * MAX_LIST_VARIABLE)
    # A thousand lists of a thousand ids: a million values, each list within its bound.
    assert variables_refusal({"rows": [row] * MAX_LIST_VARIABLE}) == TOO_MANY
    assert Watched.read <= MAX_VARIABLE_VALUES


def test_nesting_far_deeper_than_the_interpreter_recurses_is_walked() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert variables_refusal({"deep": deep}) == TOO_MANY
    assert variables_refusal({"deep": deep}, max_values=200_000) is None


# --- on a schema -----------------------------------------------------------------------------


@strawberry.type
class Query:
    calls: strawberry.Private[list[str]]

    @strawberry.field
    def nodes(self, ids: list[strawberry.ID]) -> int:
        self.calls.append("nodes")
        return len(ids)

    @strawberry.field
    def grid(self, rows: list[list[strawberry.ID]]) -> int:
        self.calls.append("grid")
        return sum(len(row) for row in rows)


SCHEMA = strawberry.Schema(Query, extensions=[VariablesGuard])
NODES = "query($i: [ID!]!) { nodes(ids: $i) }"
GRID = "query($r: [[ID!]!]!) { grid(rows: $r) }"


async def run(
    query: str, variables: dict[str, Any]
) -> tuple[strawberry.types.ExecutionResult, list[str]]:
    calls: list[str] = []
    result = await SCHEMA.execute(query, variables, root_value=Query(calls=calls))
    return result, calls


def refusal(result: strawberry.types.ExecutionResult) -> tuple[str, object]:
    assert result.data is None
    assert result.errors is not None
    [error] = result.errors
    return error.message, (error.extensions or {}).get("code")


async def test_a_hundred_ids_run() -> None:
    result, calls = await run(NODES, {"i": [str(n) for n in range(100)]})
    assert result.errors is None
    assert result.data == {"nodes": 100}
    assert calls == ["nodes"]


async def test_a_list_past_its_bound_is_refused_before_the_resolver_runs() -> None:
    result, calls = await run(NODES, {"i": ["1"] * (MAX_LIST_VARIABLE + 1)})
    assert refusal(result) == (TOO_LONG, "BAD_USER_INPUT")
    assert calls == []


async def test_values_past_their_bound_are_refused_before_the_resolver_runs() -> None:
    # Ten rows of a thousand ids: 10,011 values.
    result, calls = await run(GRID, {"r": [["1"] * MAX_LIST_VARIABLE] * 10})
    assert refusal(result) == (TOO_MANY, "BAD_USER_INPUT")
    assert calls == []
    allowed, calls = await run(GRID, {"r": [["1"] * 998] * 10})  # 9,991 values
    assert allowed.data == {"grid": 9_980}
    assert calls == ["grid"]
