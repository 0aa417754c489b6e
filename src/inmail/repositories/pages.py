"""Keyset pagination: a page is the `first` documents after a cursor, in a fixed sort order."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from inmail.repositories.mongo import Collection, Doc, Mongo

T = TypeVar("T")


_DATETIME_FIELDS = frozenset({"at", "grantedAt", "sentAt"})
_FIELD_TYPES: dict[str, type] = {"seq": int}  # every other sort field is a string id


class BadCursor(ValueError):
    """The `after` cursor was not made by this service for this list."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[tuple[str, T]]  # (cursor, item)
    has_next: bool

    @property
    def end_cursor(self) -> str | None:
        return self.items[-1][0] if self.items else None


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str, sort: Sequence[tuple[str, int]]) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeError):
        raise BadCursor("the cursor is not valid") from None
    if not isinstance(values, list) or len(values) != len(sort):
        raise BadCursor("the cursor is not valid")
    decoded: list[Any] = []
    for value, (name, _) in zip(values, sort, strict=True):
        if name in _DATETIME_FIELDS:
            try:
                decoded.append(datetime.fromisoformat(value))
            except (TypeError, ValueError):
                raise BadCursor("the cursor is not valid") from None
        elif isinstance(value, _FIELD_TYPES.get(name, str)) and not isinstance(value, bool):
            decoded.append(value)
        else:
            # A value of another type would compare in another BSON type bracket: a silently
            # empty or wrong page instead of an error.
            raise BadCursor("the cursor is not valid")
    return decoded


def _after(sort: Sequence[tuple[str, int]], values: Sequence[Any]) -> Doc:
    """The documents strictly after `values` in the sort order (lexicographic keyset)."""
    clauses: list[Doc] = []
    for i, (name, direction) in enumerate(sort):
        clause: Doc = {sort[j][0]: values[j] for j in range(i)}
        clause[name] = {"$lt" if direction < 0 else "$gt": values[i]}
        clauses.append(clause)
    return {"$or": clauses}


async def keyset_page(
    mongo: Mongo,
    collection: Collection,
    query: Mapping[str, Any],
    sort: Sequence[tuple[str, int]],
    first: int,
    after: str | None,
    projection: Mapping[str, Any] | None = None,
) -> Page[Doc]:
    full: Doc = dict(query)
    if after is not None:
        full = {"$and": [dict(query), _after(sort, decode_cursor(after, sort))]}
    docs = (
        await mongo.find_all(collection, full, projection=projection, sort=sort, limit=first + 1)
        if first > 0
        else []
    )
    items = [(encode_cursor([doc[name] for name, _ in sort]), doc) for doc in docs[:first]]
    return Page(items=items, has_next=len(docs) > first)
