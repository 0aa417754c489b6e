"""Error messages quote a large value literal by its start only, in every module of graphql-core
that quotes one."""

from __future__ import annotations

import sys

from graphql import parse
from graphql.language import FieldNode, ObjectValueNode, OperationDefinitionNode

from inmail.schema.quoting import (
    QUOTED_LITERAL,
    QUOTING_MODULES,
    quote_briefly,
    quote_client_values_briefly,
    quote_value,
)
from support import graphql_core_modules_naming


def test_every_module_of_graphql_core_that_quotes_a_literal_quotes_it_briefly() -> None:
    """A graphql-core upgrade that quotes literals in a module of its own fails here."""
    quoting = graphql_core_modules_naming("print_for_error", "graphql.language.printer")
    quote_client_values_briefly()

    assert quoting == set(QUOTING_MODULES)
    assert all(vars(sys.modules[name])["print_for_error"] is quote_briefly for name in quoting)
    # The same modules quote a variable's value, found wrong by its type.
    assert all(vars(sys.modules[name])["inspect"] is quote_value for name in quoting)


def argument_value(document: str) -> ObjectValueNode:
    operation = parse(document).definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    field = operation.selection_set.selections[0]
    assert isinstance(field, FieldNode)
    assert field.arguments
    value = field.arguments[0].value
    assert isinstance(value, ObjectValueNode)
    return value


def test_a_short_literal_is_quoted_as_graphql_core_prints_it() -> None:
    assert quote_briefly(argument_value("{ f(a: {x: 1,   y: [2, 3]}) }")) == "{ x: 1, y: [2, 3] }"


def test_a_quote_never_ends_in_half_a_surrogate_pair() -> None:
    """A text sent as CESU-8 holds each emoji as two surrogates, which the lexer takes: a cut
    between them would leave half a character, which strict JSON readers refuse."""
    pair = "\ud83d\ude00"
    for offset in range(2):
        document = "{ f(a: {" + "x" * (1 + offset) + ': "' + pair * 60 + '"}) }'
        quote = quote_briefly(argument_value(document))
        assert quote.endswith("…")
        body = quote[:-1]
        assert body.count("\ud83d") == body.count("\ude00")
        assert len(body) in (QUOTED_LITERAL - 1, QUOTED_LITERAL)


def test_a_long_literal_is_quoted_by_its_first_characters_as_written() -> None:
    items = " ".join(str(i) for i in range(1000))
    document = f"{{ f(a: {{x: [{items}]}}) }}"

    quote = quote_briefly(argument_value(document))

    assert quote == document[document.index("{x") :][:QUOTED_LITERAL] + "…"
