"""The nesting bound on request JSON, read without parsing, agrees with the parsed nesting, and
with a plain reading of any text at all (strings that never close, stray backslashes)."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from inmail.endpoint.json_text import MAX_JSON_DEPTH, load_json, nested_deeper_than

# Strings full of what could mislead a reader of brackets: brackets, quotes and backslashes.
tricky_text = st.text(st.sampled_from('[]{}"\\ a\u00e9\u2028\u225b\u5b5b'), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=40,
)
limits = st.integers(min_value=0, max_value=8)


def depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def read_depth(text: str) -> int:
    """The deepest bracket outside strings, read one character at a time: a string runs from a
    quote to the next unescaped quote, or to the end."""
    deepest = level = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


@given(value=json_values, limit=limits, ascii_only=st.booleans())
def test_the_bound_agrees_with_the_parsed_nesting(
    value: object, limit: int, ascii_only: bool
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert nested_deeper_than(text, limit) == (depth(value) > limit)


@given(text=st.text(st.sampled_from('[]{}"\\ a'), max_size=60), limit=limits)
@example(text='"[\\', limit=0)  # a string that never closes, ending in a lone backslash
@example(text='["\\"[', limit=1)  # an escaped quote does not close its string
def test_any_text_is_read_as_a_plain_reading_reads_it(text: str, limit: int) -> None:
    assert nested_deeper_than(text, limit) == (read_depth(text) > limit)


def test_nesting_reached_without_a_long_run_of_openers_is_counted() -> None:
    zigzag = "[]"
    for _ in range(70):
        zigzag = f"[[],{zigzag}]"  # 71 deep, never more than two openers in a row
    assert depth(json.loads(zigzag)) == 71
    assert nested_deeper_than(zigzag, 70)
    assert not nested_deeper_than(zigzag, 71)


def test_escaped_quotes_and_brackets_in_strings_are_no_nesting() -> None:
    """An escaped quote does not end a string, and a bracket inside one opens nothing."""
    tricky = {"s": '\\"[[[\u225b' + "\u5b5b" * 80, "v": [[[0]]]}
    assert load_json(json.dumps(tricky, ensure_ascii=False)) == tricky
    too_deep = '{"s": "\\"", "v": ' + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "}"
    with pytest.raises(json.JSONDecodeError, match="nested more than"):
        load_json(too_deep)
