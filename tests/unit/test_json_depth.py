"""The nesting bound on request JSON, read without parsing, agrees with the parsed nesting."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from inmail.graphql_app import nested_deeper_than

# Strings full of what could mislead a reader of brackets: brackets, quotes and backslashes.
tricky_text = st.text(st.sampled_from('[]{}"\\ a\u00e9\u2028'), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=40,
)


def depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@given(value=json_values, limit=st.integers(min_value=0, max_value=8), ascii_only=st.booleans())
def test_the_bound_agrees_with_the_parsed_nesting_as_text_and_as_bytes(
    value: object, limit: int, ascii_only: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert nested_deeper_than(text, limit) == (depth(value) > limit)
    assert nested_deeper_than(text.encode(), limit) == (depth(value) > limit)


def test_nesting_reached_without_a_long_run_of_openers_is_counted() -> None:
    zigzag = "[]"
    for _ in range(70):
        zigzag = f"[[],{zigzag}]"  # 71 deep, never more than two openers in a row
    assert depth(json.loads(zigzag)) == 71
    assert nested_deeper_than(zigzag, 70)
    assert not nested_deeper_than(zigzag, 71)
