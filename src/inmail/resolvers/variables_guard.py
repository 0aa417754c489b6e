"""Variables holding more values than any operation takes are refused before they are coerced.

graphql-core coerces every value of a list variable before any resolver (or any check of the
service) looks at it: 520,000 ids in `nodes(ids: $i)` took 0.73 s of CPU only to be refused
for holding more than 100. The body limit (1 MiB) and the JSON nesting limit (64) bound how
much a client sends, not how many values it holds. `VariablesGuard` counts them first, before
the document is parsed, validated or the variables coerced, and stops counting as soon as a
bound is passed: a list of a million ids costs one look at its length.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from strawberry.extensions import SchemaExtension

from inmail.schema.errors import bad_input

MAX_VARIABLE_VALUES: Final = 10_000
"""Values the variables of one operation may hold in all: every scalar, list and object counts
one (a list of 100 ids is 101 values). The largest lists the schema takes are 100 ids; a form
of the web client holds a few dozen values."""

MAX_LIST_VARIABLE: Final = 1_000
"""Items one list in the variables may hold, at any depth: ten times the longest list any
argument of the schema accepts (`nodes(ids:)`, 100)."""

MAX_FIELD_NAME: Final = 100
"""Characters a field name of an object in the variables may hold: no input field of the schema
is a tenth as long. graphql-core names an unknown field whole in its error ("not to include
unknown field ..."): a name of 200 KB was answered 200 KB."""

_END: Final = object()


def _too_many_values(maximum: int) -> str:
    return f"Variables hold more than {maximum} values."


def _list_too_long(maximum: int) -> str:
    return f"A list in the variables holds more than {maximum} values."


def _name_too_long(maximum: int) -> str:
    return (
        f"An object in the variables has a field name over {maximum} characters: no input "
        "of the schema has one."
    )


def variables_refusal(
    variables: object,
    *,
    max_values: int = MAX_VARIABLE_VALUES,
    max_list: int = MAX_LIST_VARIABLE,
    max_name: int = MAX_FIELD_NAME,
) -> str | None:
    """Why `variables` (the operation's, as JSON decoded them) hold too much, or a field name
    longer than any input's, or None.

    The walk keeps its own stack (the interpreter's recursion limit plays no part) and stops at
    the first bound passed: it looks at no more than `max_values + 1` values, and a list's
    length is checked before any of its items is. The map of variables itself is no value; each
    variable's value is one, and so is everything it holds.
    """
    if not variables:
        return None
    values = 0
    stack: list[Iterator[object]] = [
        iter(variables.values()) if isinstance(variables, dict) else iter((variables,))
    ]
    while stack:
        value = next(stack[-1], _END)
        if value is _END:
            stack.pop()
            continue
        values += 1
        if values > max_values:
            return _too_many_values(max_values)
        if isinstance(value, dict):
            if len(value) > max_values:
                return _too_many_values(max_values)
            if any(len(name) > max_name for name in value):
                return _name_too_long(max_name)
            stack.append(iter(value.values()))
        elif isinstance(value, list | tuple):
            if len(value) > max_list:
                return _list_too_long(max_list)
            stack.append(iter(value))
    return None


class VariablesGuard(SchemaExtension):
    """Refuses, with BAD_USER_INPUT, an operation whose variables pass `MAX_VARIABLE_VALUES`,
    hold a list longer than `MAX_LIST_VARIABLE` or a field name longer than `MAX_FIELD_NAME`,
    before any other work on it.

    The variables are measured, and refused, in `on_parse`, before the document is parsed
    (this extension comes before ParserCache): a GraphQLError raised by a parsing hook is made
    the operation's answer by `InMailSchema._prepare_operation_async`, over HTTP and websockets
    alike, where one raised by an operation hook would escape a websocket operation's task
    instead of answering it.
    """

    def on_parse(self) -> Iterator[None]:
        reason = variables_refusal(self.execution_context.variables)
        if reason is not None:
            raise bad_input(reason)
        yield


__all__ = [
    "MAX_FIELD_NAME",
    "MAX_LIST_VARIABLE",
    "MAX_VARIABLE_VALUES",
    "VariablesGuard",
    "variables_refusal",
]
