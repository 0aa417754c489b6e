"""Extension hooks found once per class run exactly as Strawberry runs them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from inmail.resolvers.hooks import HookTable, PreparedHooksRunner


class Log(SchemaExtension):
    lines: ClassVar[list[str]] = []


class Generators(Log):
    def on_operation(self) -> Iterator[None]:
        Log.lines.append(f"{id(self)} operation in")
        yield
        Log.lines.append(f"{id(self)} operation out")

    async def on_execute(self) -> AsyncIterator[None]:
        Log.lines.append(f"{id(self)} execute in")
        yield
        Log.lines.append(f"{id(self)} execute out")


class Calls(Log):
    def on_parse(self) -> None:  # type: ignore[override]
        Log.lines.append("parse called")

    async def on_validate(self) -> None:  # type: ignore[override]
        Log.lines.append("validate awaited")


class Refuses(Log):
    def on_execute(self) -> Iterator[None]:
        Log.lines.append("refusing")
        raise ValueError("refused before execution")
        yield


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        Log.lines.append("resolved")
        return "hi"


class Prepared(strawberry.Schema):
    table = HookTable()

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> PreparedHooksRunner:
        return PreparedHooksRunner(execution_context, extensions, self.table)


async def _run(schema: strawberry.Schema) -> tuple[Any, list[str]]:
    Log.lines.clear()
    first = await schema.execute("{ hello }")
    second = await schema.execute("{ hello }")  # the table is used again
    shown = [(r.data, [e.message for e in r.errors or []]) for r in (first, second)]
    # An extension's id is its own per request: compare the order of the lines, not the ids.
    return shown, [line.split(" ", 1)[1] if line[0].isdigit() else line for line in Log.lines]


@pytest.mark.parametrize(
    "extensions",
    [[Generators, Calls], [Calls, Generators, Generators], [Generators, Refuses], []],
    ids=["two", "repeated", "refusing", "none"],
)
async def test_prepared_hooks_run_as_strawberrys_own(extensions: list[type[Log]]) -> None:
    theirs = await _run(strawberry.Schema(query=Query, extensions=extensions))
    ours = await _run(Prepared(query=Query, extensions=extensions))
    assert ours == theirs
    assert theirs[1]  # something ran


class Holds(Log):
    """An execution hook holding something for the execution, released in its `finally`."""

    def on_execute(self) -> Iterator[None]:
        Log.lines.append("held")
        try:
            yield
        finally:
            Log.lines.append("released")


class HoldsAwaiting(Log):
    async def on_execute(self) -> AsyncIterator[None]:
        Log.lines.append("held")
        try:
            yield
        finally:
            Log.lines.append("released")


@pytest.mark.parametrize("holder", [Holds, HoldsAwaiting])
async def test_a_hook_entered_before_one_that_fails_is_left_at_once(holder: type[Log]) -> None:
    """Strawberry leaves it open until the collector closes it, perhaps in another context (a
    context variable it set can then not be reset); here it is left before the answer."""
    Log.lines.clear()
    result = await Prepared(query=Query, extensions=[holder, Refuses]).execute("{ hello }")
    assert [e.message for e in result.errors or []] == ["refused before execution"]
    assert Log.lines == ["held", "refusing", "released"]
