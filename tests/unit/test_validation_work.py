"""The work budget of validation bounds what graphql-core's rule that fields can be merged does:
pairs of fields of one response name, and their sub-selections compared level by level."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    OverlappingFieldsCanBeMergedRule,
    SelectionSetNode,
    build_schema,
    parse,
    validate,
)
from graphql.validation.rules import overlapping_fields_can_be_merged as overlapping
from hypothesis import given, settings
from hypothesis import strategies as st

from inmail.resolvers.limits import (
    SUBSELECTION_PAIR_WORK,
    DocumentShapes,
    QueryRefused,
    check_document,
)

SCHEMA = build_schema(
    "type Query { a: Node b: Node x: Int }  type Node { a: Node b: Node x: Int y: Int }"
)


# Fragments a generated selection may spread: with fields, spreading another, in a cycle (C and
# D, which the rule meets and steps out of), with no field (E0-E3), and U, which no definition
# names.
FRAGMENTS = (
    "fragment F0 on Node { x a { x } }  fragment F1 on Node { ...F0 b { x y } }  "
    "fragment C on Node { ...D x }  fragment D on Node { ...C }  "
    + "  ".join(f"fragment E{i} on Node {{ ...U }}" for i in range(4))
)
SPREADS = ["...F0", "...F1", "...C", "...U", "...E0", "...E1", "...E2", "...E3"]


def _selections(depth: int) -> st.SearchStrategy[str]:
    """A selection set's text: fields of few names (so that names repeat), aliased or not,
    objects with a sub-selection while `depth` lasts, inline fragments, and spreads of named
    ones."""
    leaf = st.builds(
        lambda alias, name: f"{alias}{name}", st.sampled_from(["", "x: "]), st.just("x")
    )
    spread = st.sampled_from(SPREADS)
    if depth == 0:
        choices = st.one_of(leaf, spread)
    else:
        below = _selections(depth - 1)
        field = st.builds(
            lambda alias, name, sub: f"{alias}{name} {sub}",
            st.sampled_from(["", "a: ", "b: "]),
            st.sampled_from(["a", "b"]),
            below,
        )
        inline = st.builds(lambda sub: f"... on Node {sub}", below)
        choices = st.one_of(leaf, field, field, inline, spread)
    return st.lists(choices, min_size=1, max_size=6).map(
        lambda items: "{ " + " ".join(items) + " }"
    )


def _sets(selection_set: SelectionSetNode) -> Iterator[SelectionSetNode]:
    yield selection_set
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode | InlineFragmentNode) and selection.selection_set:
            yield from _sets(selection.selection_set)


# What the rule does once per comparison: of two fields, of fields with a fragment, of two
# fragments (each made even where nothing is to compare).
COMPARISONS = (
    "find_conflict",
    "collect_conflicts_between_fields_and_fragment",
    "collect_conflicts_between_fragments",
)


@settings(max_examples=300, deadline=None)
@given(body=_selections(3))
def test_the_budget_bounds_the_comparisons_graphql_core_makes(body: str) -> None:
    document = parse(f"query {{ a {body} b {body} a {body} }} {FRAGMENTS}")
    compared = 0

    def counting(function: Any) -> Any:
        def counted(*args: Any) -> Any:
            nonlocal compared
            compared += 1
            return function(*args)

        return counted

    with pytest.MonkeyPatch.context() as patch:
        for name in COMPARISONS:
            patch.setattr(overlapping, name, counting(getattr(overlapping, name)))
        validate(SCHEMA, document, [OverlappingFieldsCanBeMergedRule])

    shapes = DocumentShapes(document)
    bound = 0.0
    for definition in document.definitions:
        assert isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode)
        for selection_set in _sets(definition.selection_set):
            width = shapes.of(selection_set).width + shapes.spreads(selection_set)
            pairs = shapes.pair_work(selection_set) / SUBSELECTION_PAIR_WORK
            bound += width * width + pairs + 1
    assert compared <= bound


@pytest.mark.parametrize(
    "document",
    [
        # 150 same-named fields, each a chain of three: about 200 ms of graphql-core's time
        "{ " + " ".join(["viewer { subscription { plan { type } } }"] * 150) + " }",
        # 200 same-named fields with an argument and a sub-selection: about 150 ms
        "{ " + " ".join(['member(id: "1") { id }'] * 200) + " }",
        # 16 same-named fields, each spreading the same 42 fragments, which select nothing:
        # about 130 ms (each spread is compared with each of the other field's)
        "{ "
        + " ".join(["viewer { " + " ".join(f"...F{i}" for i in range(42)) + " }"] * 16)
        + " } "
        + " ".join(f"fragment F{i} on Member {{ ...X }}" for i in range(42)),
        # 150 fragments that each select the same field with a sub-selection: about 180 ms
        "{ "
        + " ".join(f"...F{i}" for i in range(150))
        + " } "
        + " ".join(f"fragment F{i} on Query {{ viewer {{ id name }} }}" for i in range(150)),
    ],
    ids=["chains", "arguments", "spreads", "fragments"],
)
def test_same_named_fields_with_sub_selections_are_refused_before_they_are_compared(
    document: str,
) -> None:
    with pytest.raises(QueryRefused, match="too large to validate"):
        check_document(parse(document), max_depth=12, max_aliases=30)


def test_same_named_fields_a_client_asks_for_stay_well_within_the_budget() -> None:
    """Fragments of a page that each ask for the same connection, as a component tree does."""
    page = "conversations(first: 20) { nodes { id subject sentAt sender { id name } } }"
    fragments = " ".join(f"fragment P{i} on Member {{ id {page} }}" for i in range(6))
    document = parse(f"{{ viewer {{ {' '.join(f'...P{i}' for i in range(6))} }} }} {fragments}")
    check_document(document, max_depth=12, max_aliases=30)
