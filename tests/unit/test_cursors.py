"""Cursors: opaque text that decodes to the sort values it was made of, written out only when a
client asks for it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from inmail.domain import pages
from inmail.domain.pages import BadCursor, Cursor, Page, encode_cursor
from inmail.repositories.pages import decode_cursor

SORT = (("sentAt", -1), ("_id", -1))
AT = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)


async def _never_counted() -> int:
    raise AssertionError("the page was not meant to be counted")


def test_a_cursor_reads_as_its_text_and_decodes_to_its_values() -> None:
    cursor = Cursor([AT, "m-1"], "messages")
    text = str(cursor)
    assert text == encode_cursor([AT, "m-1"], "messages")
    assert cursor == text
    assert text == cursor
    assert hash(cursor) == hash(text)
    assert decode_cursor(text, SORT, "messages") == [AT, "m-1"]
    with pytest.raises(BadCursor):
        decode_cursor(text, (("seq", 1),), "messages")


def test_a_cursor_of_another_list_of_the_same_shape_is_refused() -> None:
    text = encode_cursor([AT, "c-1"], "conversations")
    with pytest.raises(BadCursor, match="another list"):
        decode_cursor(text, SORT, "notifications")
    with pytest.raises(BadCursor):
        decode_cursor(encode_cursor([AT, "m-1"], "messages:c-1"), SORT, "messages:c-2")


def test_a_page_writes_out_only_the_cursors_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[list[object]] = []
    real = pages.encode_cursor

    def counting(values: list[object], list_name: str) -> str:
        written.append(list(values))
        return real(values, list_name)

    monkeypatch.setattr(pages, "encode_cursor", counting)
    items = [(Cursor([AT, f"m-{n}"], "messages"), n) for n in range(100)]
    page = Page(items, has_next=True, count=_never_counted)
    assert written == []
    end = page.end_cursor
    assert end is not None
    assert decode_cursor(end, SORT, "messages") == [AT, "m-99"]
    assert page.end_cursor == end  # written once, then kept
    assert written == [[AT, "m-99"]]
    assert page.map(lambda n: n * 2).items[0][0] == str(Cursor([AT, "m-0"], "messages"))
