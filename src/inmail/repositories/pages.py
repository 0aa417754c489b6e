"""Keyset pagination: a page is the `first` documents after a cursor, in a fixed sort order."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, TypeVar

from inmail.domain.pages import BadCursor, Cursor, CursorText, Page
from inmail.repositories.mongo import Collection, Doc, Mongo

T = TypeVar("T")


_DATETIME_FIELDS = frozenset({"at", "grantedAt", "sentAt"})
_FIELD_TYPES: dict[str, type[int | str]] = {"seq": int}  # every other sort field is a string id


def list_name(collection: Collection, scope: str | None = None) -> str:
    """The name a list's cursors carry: its collection's, and the scope within it (the member
    whose list it is, the conversation of a thread's messages), so that a cursor of one list is
    refused by another."""
    return collection.name if scope is None else f"{collection.name}:{scope}"


CursorValue = datetime | int | str
"""A sort value a cursor holds, as it is stored."""

MAX_CURSOR_LENGTH: Final = 512
"""The longest cursor decoded: the API's own are under 120 characters."""


def decode_cursor(
    cursor: str, sort: Sequence[tuple[str, int]], list_name: str
) -> list[CursorValue]:
    """The sort values of a cursor this service made for the list `list_name`; BadCursor for
    any other text, a cursor of another list included."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise BadCursor("the cursor is not valid")
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeError, RecursionError):
        # RecursionError: JSON nested deeper than the parser goes (still within the length).
        raise BadCursor("the cursor is not valid") from None
    if not isinstance(values, list) or len(values) != len(sort) + 1:
        raise BadCursor("the cursor is not valid")
    named, *values = values
    if named != list_name:
        raise BadCursor("the cursor is of another list")
    return [_cursor_value(value, name) for value, (name, _) in zip(values, sort, strict=True)]


_BSON_INT64: Final = range(-(2**63), 2**63)


def _cursor_value(value: object, name: str) -> CursorValue:
    """One value of a cursor, as it is stored; BadCursor for any value this service could not
    have written there (of another type, which would compare in another BSON type bracket and
    give a silently empty or wrong page, or one that BSON cannot hold)."""
    if name in _DATETIME_FIELDS:
        if not isinstance(value, str):  # a number, a list, null: no time
            raise BadCursor("the cursor is not valid")
        try:
            when = datetime.fromisoformat(value)
            # A time with an offset, in UTC as stored (which may overflow); one without (a
            # cursor written by hand) is UTC already, as the server reads it.
            return when if when.tzinfo is None else when.astimezone(UTC)
        except (ValueError, OverflowError):
            raise BadCursor("the cursor is not valid") from None
    kind = _FIELD_TYPES.get(name, str)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadCursor("the cursor is not valid")
    if isinstance(value, int) and value not in _BSON_INT64:
        raise BadCursor("the cursor is not valid")
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate, from a JSON escape
            raise BadCursor("the cursor is not valid") from None
    return value


def _after(sort: Sequence[tuple[str, int]], values: Sequence[object]) -> Doc:
    """The documents strictly after `values` in the sort order (lexicographic keyset)."""
    return _beyond(sort, values, forward=True)


def after_key(
    query: Mapping[str, object], sort: Sequence[tuple[str, int]], key: Sequence[object] | None
) -> Doc:
    """`query` narrowed to the documents strictly after `key` (their values of the `sort`
    fields) in that order; `query` itself for no key. A pass over a keyset resumes so, never
    meeting a document twice."""
    if key is None:
        return dict(query)
    return _narrowed(query, _after(sort, key))


def _narrowed(query: Mapping[str, object], condition: Doc) -> Doc:
    """`query` and `condition` together, the condition inside each branch of the query's
    top-level `$or`. MongoDB plans each branch on an index of its own (a member's conversations:
    those they sent, those they received) and bounds that index's scan by the conditions inside
    the branch only: beside the `$or`, a keyset would be checked on every document each branch
    meets, and a page deep in a long list would read every item before it."""
    branches = query.get("$or")
    if not isinstance(branches, list):
        return {"$and": [dict(query), condition]}
    rest = [{name: value} for name, value in query.items() if name != "$or"]
    return {"$or": [{"$and": [branch, *rest, condition]} for branch in branches]}


def _up_to(sort: Sequence[tuple[str, int]], values: Sequence[object]) -> Doc:
    """The documents at or before `values` in the sort order: those before a page after it."""
    at = {name: value for (name, _), value in zip(sort, values, strict=True)}
    return {"$or": [*_beyond(sort, values, forward=False)["$or"], at]}


def _beyond(sort: Sequence[tuple[str, int]], values: Sequence[object], *, forward: bool) -> Doc:
    clauses: list[Doc] = []
    for i, (name, direction) in enumerate(sort):
        clause: Doc = {sort[j][0]: values[j] for j in range(i)}
        greater = (direction > 0) == forward
        clause[name] = {"$gt" if greater else "$lt": values[i]}
        clauses.append(clause)
    return {"$or": clauses}


async def keyset_page(
    mongo: Mongo,
    collection: Collection,
    query: Mapping[str, object],
    sort: Sequence[tuple[str, int]],
    first: int,
    after: str | None,
    projection: Mapping[str, object] | None = None,
    *,
    scope: str | None = None,
) -> Page[Doc]:
    """The `first` documents after the cursor; whether more follow, and whether any precede.

    Pagination is forward only (`first`/`after`): a page has previous items when an `after`
    cursor was given and a document of the list sorts at or before it (Relay's rule for
    forward pagination, asked with one indexed `limit 1` query when a client selects it).

    The page is read from one snapshot of the database, and the list's count and whether
    anything precedes are read later from the same one: while other requests add to the list,
    `totalCount` still agrees with the page's items and `hasNextPage` (the read service shares
    the first page's count with the request's other pages of the list).
    """
    named = list_name(collection, scope)
    values = decode_cursor(after, sort, named) if after is not None else None
    full = after_key(query, sort, values)
    before = _narrowed(query, _up_to(sort, values)) if values is not None else None

    # For `first: 0` too: the one document it reads says whether a next page holds any.
    docs, at = await mongo.read_page(
        collection, full, projection=projection, sort=sort, limit=first + 1
    )

    async def count() -> int:
        return await mongo.count_at(collection, query, at)

    async def precedes() -> bool:
        return before is not None and await mongo.any_at(collection, before, sort, at)

    items: list[tuple[CursorText, Doc]] = [
        (Cursor([doc[name] for name, _ in sort], named), doc) for doc in docs[:first]
    ]
    return Page(items=items, has_next=len(docs) > first, count=count, previous=precedes)
