"""A page of a list: its items with their cursors, whether more follow, its size when asked."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


class BadCursor(ValueError):
    """The `after` cursor was not made by this service for this list."""


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
