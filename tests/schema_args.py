"""Every argument position of the schema's root fields, for tests that plant bad values there.

Made from the schema the service serves, so a field added tomorrow is covered tomorrow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import graphql
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
)

from inmail.resolvers.root import build_schema
from support import test_settings

SCHEMA = graphql.build_schema(build_schema(test_settings()).as_str())
TEXT_SCALARS = ("String", "ID")


@dataclass(frozen=True)
class Position:
    """One place a value goes: an argument of a root field, or a field inside its input."""

    operation: str
    field: str
    argument: str
    path: tuple[str, ...]
    scalar: str

    @property
    def name(self) -> str:
        return ".".join((self.field, self.argument, *self.path))

    @property
    def is_payload_mutation(self) -> bool:
        returned = graphql.get_named_type(self._field.type)
        return isinstance(returned, GraphQLObjectType) and "errors" in returned.fields

    @property
    def _field(self) -> graphql.GraphQLField:
        root = SCHEMA.mutation_type if self.operation == "mutation" else SCHEMA.query_type
        assert root is not None
        field: graphql.GraphQLField = root.fields[self.field]
        return field

    def document(self) -> str:
        args = self._field.args
        declared = ", ".join(f"${n}: {a.type}" for n, a in args.items())
        passed = ", ".join(f"{n}: ${n}" for n in args)
        returned = graphql.get_named_type(self._field.type)
        selection = ""
        if self.is_payload_mutation:
            selection = "{ errors { code field } }"
        elif isinstance(returned, GraphQLObjectType | GraphQLInterfaceType):
            selection = "{ __typename }"
        return f"{self.operation}({declared}) {{ {self.field}({passed}) {selection} }}"

    def variables(self, planted: Any) -> dict[str, Any]:
        """Well-formed values for every argument, and `planted` at this position."""
        values = {name: placeholder(a.type) for name, a in self._field.args.items()}
        values[self.argument] = _plant(values[self.argument], self.path, planted)
        return values


def placeholder(kind: GraphQLInputType) -> Any:
    if isinstance(kind, GraphQLNonNull):
        return placeholder(kind.of_type)
    if isinstance(kind, GraphQLList):
        return [placeholder(kind.of_type)]
    if isinstance(kind, GraphQLEnumType):
        return next(iter(kind.values))
    if isinstance(kind, GraphQLInputObjectType):
        return {name: placeholder(f.type) for name, f in kind.fields.items()}
    assert isinstance(kind, GraphQLScalarType)
    return {"Int": 1, "Float": 1.0, "Boolean": True, "DateTime": "2026-01-15T09:00:00Z"}.get(
        kind.name, "000000000000000000000000"
    )


def _plant(value: Any, path: tuple[str, ...], planted: Any) -> Any:
    if not path:
        return [planted] if isinstance(value, list) else planted
    if isinstance(value, list):
        return [_plant(value[0], path, planted)]
    return {**value, path[0]: _plant(value[path[0]], path[1:], planted)}


def _leaves(kind: GraphQLInputType, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    while isinstance(kind, GraphQLNonNull | GraphQLList):
        kind = kind.of_type
    if isinstance(kind, GraphQLInputObjectType):
        for name, field in kind.fields.items():
            yield from _leaves(field.type, (*path, name))
    else:
        yield path, kind.name


def positions(*, text_only: bool = False) -> list[Position]:
    found = []
    for operation, root in (("query", SCHEMA.query_type), ("mutation", SCHEMA.mutation_type)):
        assert root is not None
        for field_name, field in root.fields.items():
            for arg_name, arg in field.args.items():
                for path, scalar in _leaves(arg.type, ()):
                    if not text_only or scalar in TEXT_SCALARS:
                        found.append(Position(operation, field_name, arg_name, path, scalar))
    return found
