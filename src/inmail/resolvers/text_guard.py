"""Arguments that are no text at all (a lone UTF-16 surrogate) are refused before any resolver.

JSON can carry "\\ud800", a string no UTF-8 encoder (MongoDB's included) accepts. Every field
that takes arguments is checked on entry, once per call and only over its own arguments: a
mutation answers INVALID_INPUT in its payload's `errors`, any other field a BAD_USER_INPUT
error. Literals in the document never get this far: GraphQL's lexer refuses them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from graphql import (
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    default_field_resolver,
    get_nullable_type,
)

from inmail.domain.errors import ErrorCode
from inmail.schema.errors import UserError, bad_input

_SURROGATE = re.compile("[\ud800-\udfff]")
_GUARDED = "inmail-text-guard"


def first_unencodable(value: object, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The path of the first string in `value` that UTF-8 cannot encode, or None."""
    if isinstance(value, str):
        return None if value.isascii() or not _SURROGATE.search(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = first_unencodable(item, (*path, str(key)))
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for item in value:
            found = first_unencodable(item, path)
            if found is not None:
                return found
    return None


def _message(path: tuple[str, ...]) -> str:
    return f"{'.'.join(path)} is not valid text (it holds a lone UTF-16 surrogate)."


def _payload_class(field: GraphQLField) -> type | None:
    """A mutation payload's class when the field returns one (a type with `errors`)."""
    returned = get_nullable_type(field.type)
    if not isinstance(returned, GraphQLObjectType) or "errors" not in returned.fields:
        return None
    definition = (returned.extensions or {}).get("strawberry-definition")
    origin = getattr(definition, "origin", None)
    return origin if isinstance(origin, type) else None


def _guarded(resolve: Callable[..., object], payload: type | None) -> Callable[..., object]:
    def guarded(source: object, info: object, **kwargs: object) -> object:
        path = first_unencodable(kwargs)
        if path is None:
            return resolve(source, info, **kwargs)
        if payload is None:
            raise bad_input(_message(path))
        error = UserError(code=ErrorCode.INVALID_INPUT, message=_message(path), field=path[-1])
        try:
            return payload(errors=[error])
        except TypeError:
            # A payload with other required fields (markNotificationsRead's unreadCount) is
            # answered by its own use case, which refuses such input with INVALID_INPUT.
            return resolve(source, info, **kwargs)

    return guarded


def refuse_unencodable_arguments(schema: GraphQLSchema) -> None:
    """Wrap the resolver (and subscriber) of every field with arguments; idempotent."""
    if (schema.extensions or {}).get(_GUARDED):
        return
    mutation = schema.mutation_type
    for kind in schema.type_map.values():
        if not isinstance(kind, GraphQLObjectType) or kind.name.startswith("__"):
            continue
        for field in kind.fields.values():
            if not field.args:
                continue
            payload = _payload_class(field) if kind is mutation else None
            field.resolve = _guarded(field.resolve or default_field_resolver, payload)
            if field.subscribe is not None:
                field.subscribe = _guarded(field.subscribe, None)
    schema.extensions = {**(schema.extensions or {}), _GUARDED: True}
