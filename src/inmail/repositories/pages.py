"""Keyset pagination: a page is the `first` documents after a cursor, in a fixed sort order."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Generic, TypeVar

from inmail.repositories.mongo import Collection, Doc, Mongo

T = TypeVar("T")


_DATETIME_FIELDS = frozenset({"at", "grantedAt", "sentAt"})
_FIELD_TYPES: dict[str, type[int | str]] = {"seq": int}  # every other sort field is a string id


class BadCursor(ValueError):
    """The `after` cursor was not made by this service for this list."""


def list_name(collection: Collection, scope: str | None = None) -> str:
    """The name a list's cursors carry: its collection's, and the scope within it (the member
    whose list it is, the conversation of a thread's messages), so that a cursor of one list is
    refused by another."""
    return collection.name if scope is None else f"{collection.name}:{scope}"


U = TypeVar("U")


async def _nothing_precedes() -> bool:
    return False


class Cursor:
    """An item's place in its list, written as the opaque cursor text only when asked (`str`):
    a page of 100 items is usually shown with one cursor, its `endCursor`."""

    __slots__ = ("_list", "_text", "_values")

    def __init__(self, values: Sequence[object], list_name: str) -> None:
        self._values = values
        self._list = list_name
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            self._text = encode_cursor(self._values, self._list)
        return self._text

    def __repr__(self) -> str:
        return f"Cursor({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Cursor | str):
            return str(self) == str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))


CursorText = str | Cursor
"""A cursor as a page holds it: its text, or what its text is made of when asked."""


class Ends:
    """The cursors of a list's first and last items, as text (None for an empty list)."""

    __slots__ = ()
    items: Sequence[tuple[CursorText, object]]  # (cursor, item)

    @property
    def start_cursor(self) -> str | None:
        return str(self.items[0][0]) if self.items else None

    @property
    def end_cursor(self) -> str | None:
        return str(self.items[-1][0]) if self.items else None


@dataclass(frozen=True, slots=True)
class Page(Ends, Generic[T]):
    items: Sequence[tuple[CursorText, T]]  # (cursor, item)
    has_next: bool
    # The size of the whole list, as of the same snapshot as the items: asked only when wanted.
    count: Callable[[], Awaitable[int]] = field(compare=False)
    # Whether an `after` cursor was given and items precede this page: asked only when wanted.
    previous: Callable[[], Awaitable[bool]] = field(default=_nothing_precedes, compare=False)

    def map(self, convert: Callable[[T], U | None]) -> Page[U]:
        """The same page of other items; an item converted to None is left out."""
        items = [(cursor, new) for cursor, item in self.items if (new := convert(item)) is not None]
        return Page(items, self.has_next, self.count, self.previous)


def encode_cursor(values: Sequence[object], list_name: str) -> str:
    """The cursor text: the list's name, then the item's sort values."""
    plain = [list_name, *(v.isoformat() if isinstance(v, datetime) else v for v in values)]
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode()


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
