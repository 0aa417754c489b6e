"""Error messages quote a variable's value as the JSON it came in, cut to a few items, levels
and characters however large it is."""

from __future__ import annotations

import json
from typing import Any

from graphql import Undefined
from hypothesis import given
from hypothesis import strategies as st

from inmail.schema.quoting import QUOTED_ITEMS, QUOTED_LITERAL, quote_value

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=QUOTED_LITERAL)
)


def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=QUOTED_ITEMS) | st.dictionaries(
        st.text(max_size=QUOTED_LITERAL), inner, max_size=QUOTED_ITEMS
    )


# Values the quote holds whole: two levels of lists and objects at the most, each small enough.
within_bounds = leaves | containers(leaves) | containers(leaves | containers(leaves))


@given(within_bounds)
def test_a_value_within_the_bounds_is_quoted_whole_as_json(value: Any) -> None:
    assert json.loads(quote_value(value)) == value


def test_json_literals_are_written_as_json_writes_them() -> None:
    assert quote_value(True) == "true"
    assert quote_value(False) == "false"
    assert quote_value(None) == "null"
    assert quote_value({"$ne": None}) == '{"$ne": null}'
    assert quote_value(["a", 1, 1.5]) == '["a", 1, 1.5]'
    assert quote_value('say "hi"\n') == '"say \\"hi\\"\\n"'


def test_a_long_string_is_quoted_by_its_start() -> None:
    assert quote_value("x" * 200_000) == '"' + "x" * QUOTED_LITERAL + '"…'
    assert quote_value("x" * QUOTED_LITERAL) == '"' + "x" * QUOTED_LITERAL + '"'


def test_a_cut_string_never_ends_in_half_a_surrogate_pair() -> None:
    pair = "\ud83d\ude00"
    for offset in range(2):
        quote = quote_value("x" * offset + pair * 60)
        assert quote.endswith('"…')
        kept = json.loads(quote[: -len("…")])
        assert kept.count("\ud83d") == kept.count("\ude00")


def test_long_lists_and_objects_are_quoted_by_their_first_items() -> None:
    many = list(range(1_000_000))
    assert quote_value(many) == "[" + ", ".join(map(str, range(QUOTED_ITEMS))) + ", ...]"
    fields = {f"k{i}": i for i in range(100_000)}
    shown = ", ".join(f'"k{i}": {i}' for i in range(QUOTED_ITEMS))
    assert quote_value(fields) == "{" + shown + ", ...}"


def test_levels_past_the_second_are_elided() -> None:
    assert quote_value([[[1]], {"a": {"b": 1}}]) == '[[[...]], {"a": {...}}]'
    deep: Any = 1
    for _ in range(10_000):
        deep = [deep]
    assert quote_value(deep) == "[[[...]]]"


def test_a_value_json_cannot_hold_is_quoted_as_graphql_core_quotes_it() -> None:
    assert quote_value(Undefined) == "Undefined"
    assert quote_value((1, 2)) == "(1, 2)"
