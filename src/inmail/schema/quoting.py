"""How error messages quote what a client sent: briefly, and in the client's own notation.

graphql-core quotes a client's value in the errors about it: a value literal whole, as it
prints it (every unknown field of an input object quotes the whole object again), and a
variable's value as Python writes it (`True`, `None`, `{'$ne': None}`), an unknown enum name
whole. Here a literal is quoted by its first QUOTED_LITERAL characters as written, and a
variable's value as the JSON it came in (`true`, `null`, `{"$ne": null}`), cut to a few items,
levels and characters: an error never costs more than its quote, however large the value.
"""

from __future__ import annotations

import importlib
import itertools
import json
from collections.abc import Callable
from typing import Any, Final

from graphql import GraphQLEnumType, GraphQLError, GraphQLSchema, Node
from graphql.language.printer import print_for_error
from graphql.pyutils import inspect
from graphql.type.definition import did_you_mean_enum_value

QUOTED_LITERAL: Final = 100
"""The most characters of a value literal, or of a string in a variable's value, an error
message quotes."""

QUOTED_ITEMS: Final = 10
"""The most items of a list, or fields of an object, in a variable's value an error quotes."""

QUOTED_LEVELS: Final = 2
"""The most levels of lists and objects in a variable's value an error quotes."""

# The modules of graphql-core that quote a client's value: a literal (`print_for_error`) and a
# variable's value (`inspect`). A 4 KB document of 100 unknown fields around a list of 1,680
# items took 0.4 s of CPU to validate and answered 1.3 MB of errors, which the validation cache
# then kept (256 such documents: 330 MB). A test checks that no other module quotes a literal.
QUOTING_MODULES: Final = (
    "graphql.utilities.validate_input_value",
    "graphql.type.scalars",
    "graphql.type.definition",
)


def briefly(text: str) -> str:
    """A client's text as an error message quotes it: whole when it is short, else its first
    QUOTED_LITERAL characters and an ellipsis, never ending in half a surrogate pair."""
    if len(text) <= QUOTED_LITERAL:
        return text
    quoted = text[:QUOTED_LITERAL]
    if "\ud800" <= quoted[-1] <= "\udbff":  # a text sent as CESU-8 keeps its pairs apart
        quoted = quoted[:-1]
    return quoted + "…"


def quote_briefly(node: Node) -> str:
    """A value literal as an error message quotes it: as graphql-core prints it when its text
    is short, else its first QUOTED_LITERAL characters as written, taken from the source
    (constant work, however large the literal), never ending in half a surrogate pair."""
    loc = node.loc
    if loc is None or loc.end - loc.start <= QUOTED_LITERAL:
        return print_for_error(node)
    return briefly(loc.source.body[loc.start : loc.start + QUOTED_LITERAL + 1])


def quote_value(value: object) -> str:
    """A variable's value as an error message quotes it: as JSON, the notation it came in, with
    QUOTED_ITEMS items of a list or object, QUOTED_LEVELS levels and QUOTED_LITERAL characters
    of a string at the most (`...` and `…` where it was cut). A value JSON cannot hold (one the
    service made, never a client's) is quoted as graphql-core quotes it."""
    return _quoted(value, QUOTED_LEVELS)


def _quoted(value: object, levels: int) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return _quoted_string(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return briefly(repr(value))  # JSON's numbers are finite: the reader refuses the rest
    if isinstance(value, list):
        if levels == 0:
            return "[...]"
        items = [_quoted(item, levels - 1) for item in value[:QUOTED_ITEMS]]
        return "[" + ", ".join(_with_more(items, len(value))) + "]"
    if isinstance(value, dict):
        if levels == 0:
            return "{...}"
        fields = [
            f"{_quoted_string(str(name))}: {_quoted(item, levels - 1)}"
            for name, item in itertools.islice(value.items(), QUOTED_ITEMS)
        ]
        return "{" + ", ".join(_with_more(fields, len(value))) + "}"
    return inspect(value)


def _quoted_string(text: str) -> str:
    if len(text) <= QUOTED_LITERAL:
        return json.dumps(text, ensure_ascii=False)
    kept = briefly(text[: QUOTED_LITERAL + 1])[: -len("…")]
    return json.dumps(kept, ensure_ascii=False) + "…"  # the quote closes on what was kept


def _with_more(items: list[str], length: int) -> list[str]:
    return [*items, "..."] if length > len(items) else items


def quote_client_values_briefly() -> None:
    """Make graphql-core's error messages quote literals with `quote_briefly` and variables'
    values with `quote_value`, in every module of it that quotes them. Idempotent."""
    for name in QUOTING_MODULES:
        # Each module imported the names for itself: they are replaced where they are looked up.
        module = vars(importlib.import_module(name))
        module["print_for_error"] = quote_briefly
        module["inspect"] = quote_value


def quote_enum_names_briefly(schema: GraphQLSchema) -> None:
    """Make each enum of the schema quote an unknown name in a variable with `quote_value`:
    graphql-core writes it into its message whole (a 200 KB name answered 200 KB)."""
    for type_ in schema.type_map.values():
        if isinstance(type_, GraphQLEnumType):
            # An attribute of the instance: what graphql-core's coercion calls, in its place.
            vars(type_)["coerce_input_value"] = _coercing_with_brief_quotes(type_)


def _coercing_with_brief_quotes(enum: GraphQLEnumType) -> Callable[[Any, bool], Any]:
    coerce = enum.coerce_input_value

    def coerce_input_value(input_value: Any, hide_suggestions: bool = False) -> Any:
        if isinstance(input_value, str) and input_value not in enum.values:
            guess = "" if hide_suggestions else did_you_mean_enum_value(enum, input_value)
            raise GraphQLError(
                f"Value {quote_value(input_value)} does not exist in '{enum.name}' enum.{guess}"
            )
        return coerce(input_value, hide_suggestions)

    return coerce_input_value


__all__ = [
    "QUOTED_ITEMS",
    "QUOTED_LEVELS",
    "QUOTED_LITERAL",
    "QUOTING_MODULES",
    "briefly",
    "quote_briefly",
    "quote_client_values_briefly",
    "quote_enum_names_briefly",
    "quote_value",
]
