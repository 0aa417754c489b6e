"""The depth, alias, size and cost calculators: each fragment measured once, by arithmetic."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import (
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    Visitor,
    get_introspection_query,
    parse,
    visit,
)

from benchmarks.workloads import MEMBER_PAGE
from inmail.resolvers import cost
from inmail.resolvers.cost import (
    KNOWN_DOCUMENTS,
    KNOWN_SHAPES,
    LIST_CAPS,
    ROUND_TRIP,
    CostLimits,
    CostModel,
)
from inmail.resolvers.limits import DocumentShapes, QueryRefused, check_document
from inmail.resolvers.root import build_schema
from support import test_settings as settings_for_tests

MILLION = (
    "{ viewer { conversations(first: 100) { nodes { sender { conversations(first: 100) "
    "{ nodes { sender { conversations(first: 100) { nodes { id } } } } } } } } } }"
)


def bomb(levels: int) -> str:
    fragments = "".join(
        f"fragment F{i} on Query {{ now ...F{i + 1} ...F{i + 1} }} " for i in range(levels)
    )
    return f"query {{ ...F0 }} {fragments}fragment F{levels} on Query {{ now }}"


@pytest.fixture(scope="module")
def model() -> CostModel:
    schema = build_schema(settings_for_tests())
    return CostModel(schema._schema, CostLimits(maximum=50_000, max_page_size=100))


def test_a_fragment_bomb_is_measured_by_arithmetic_not_by_expanding_it() -> None:
    shape = DocumentShapes(parse(bomb(40))).fragment("F0")

    # Every `now` the expanded operation would hold: 2**41 - 1 fields, which no expansion
    # could count in the life of the test run.
    assert shape.size == 2**41 - 1
    assert shape.depth == 0


def test_a_fragment_bomb_is_refused_as_too_large_to_validate() -> None:
    with pytest.raises(QueryRefused) as refused:
        check_document(parse(bomb(40)), max_depth=12, max_aliases=30)

    assert refused.value.extensions is not None
    assert refused.value.extensions["code"] == "QUERY_TOO_LARGE"


def test_depth_counts_the_fields_nested_inside_spread_fragments() -> None:
    document = parse(
        "query Deep { viewer { ...Threads } } "
        "fragment Threads on Member { conversations { nodes { sender { ...Names } } } } "
        "fragment Names on Member { name plan { type } }"
    )
    shape = DocumentShapes(document).of(document.definitions[0].selection_set)  # type: ignore[attr-defined]

    assert shape.depth == 5  # viewer > conversations > nodes > sender > plan > type
    check_document(document, max_depth=5, max_aliases=30)
    with pytest.raises(QueryRefused, match="'Deep' exceeds maximum operation depth of 4"):
        check_document(document, max_depth=4, max_aliases=30)


def test_aliases_multiply_through_every_spread_of_a_fragment() -> None:
    ten = " ".join(f"a{i}: now" for i in range(10))
    three_times = "{ ...Twice ...Once } fragment Twice on Query { ...Ten ...Ten } " + (
        f"fragment Once on Query {{ ...Ten }} fragment Ten on Query {{ {ten} }}"
    )
    document = parse(three_times)

    check_document(document, max_depth=12, max_aliases=30)
    with pytest.raises(QueryRefused, match=r"30 aliases found\. Allowed: 29"):
        check_document(document, max_depth=12, max_aliases=29)


def test_fragments_that_spread_each_other_are_measured_without_looping() -> None:
    document = parse(
        "{ ...Ping } fragment Ping on Query { now ...Pong } fragment Pong on Query { ...Ping }"
    )

    shape = DocumentShapes(document).fragment("Ping")

    assert shape.size == 1


def test_hundreds_of_fragments_compared_pairwise_are_refused_before_they_are_compared() -> None:
    count = 300
    spreads = " ".join(f"...G{i}" for i in range(count))
    fragments = " ".join(f"fragment G{i} on Member {{ id name }}" for i in range(count))

    with pytest.raises(QueryRefused, match="too large to validate"):
        check_document(
            parse(f"{{ viewer {{ {spreads} }} }} {fragments}"), max_depth=12, max_aliases=30
        )


def test_every_list_field_of_the_schema_has_a_cap() -> None:
    schema = build_schema(settings_for_tests())._schema
    lists = set()
    for type_ in schema.type_map.values():
        if type_.name.startswith("__") or not isinstance(type_, GraphQLObjectType):
            continue
        for name, field in type_.fields.items():
            field_type = field.type
            if isinstance(field_type, GraphQLNonNull):
                field_type = field_type.of_type
            if isinstance(field_type, GraphQLList):
                lists.add(f"{type_.name}.{name}")

    assert lists == set(LIST_CAPS)


def test_a_connection_multiplies_what_it_holds_by_its_first(model: CostModel) -> None:
    # viewer + connection (and its page's read) + 7 nodes, each with its sender
    assert (
        model.cost(parse("{ viewer { conversations(first: 7) { nodes { id sender { id } } } } }"))
        == 1 + 1 + ROUND_TRIP + 7 * 2
    )


def test_a_connection_without_first_counts_the_default_page(model: CostModel) -> None:
    assert model.cost(parse("{ viewer { ledger { nodes { id } } } }")) == 1 + 1 + ROUND_TRIP + 20
    assert (
        model.cost(parse("{ viewer { ledger(first: null) { nodes { id } } } }")) == 22 + ROUND_TRIP
    )


def test_a_page_over_the_maximum_counts_as_the_largest_page(model: CostModel) -> None:
    assert (
        model.cost(parse("{ viewer { ledger(first: 5000) { edges { node { id } } } } }"))
        == 1 + 1 + ROUND_TRIP + 100 * 2
    )


def test_the_page_size_of_a_variable_is_honoured(model: CostModel) -> None:
    query = parse("query($n: Int) { viewer { creditLots(first: $n) { nodes { id } } } }")

    assert model.cost(query, None, {"n": 3}) == 5 + ROUND_TRIP
    assert model.cost(query, None, {"n": 100}) == 102 + ROUND_TRIP
    assert model.cost(query, None, {}) == 22 + ROUND_TRIP


def test_a_count_and_a_look_back_are_round_trips_of_their_own(model: CostModel) -> None:
    counted = "{ viewer { ledger(first: 0) { totalCount pageInfo { hasPreviousPage } } } }"
    plain = "{ viewer { ledger(first: 0) { pageInfo { hasNextPage endCursor } } } }"

    assert model.cost(parse(counted)) == 1 + (1 + ROUND_TRIP) + ROUND_TRIP + (1 + ROUND_TRIP)
    assert model.cost(parse(plain)) == 1 + (1 + ROUND_TRIP) + 1


def test_connections_aliased_under_many_ids_cost_their_reads_and_are_refused(
    model: CostModel,
) -> None:
    """Empty pages cost few objects, but each alias under each id is three reads of its own."""
    fields = " ".join(
        f"l{i}: ledger(first: 0) {{ totalCount pageInfo {{ hasPreviousPage }} }}" for i in range(30)
    )
    query = parse(f"query($ids: [ID!]!) {{ nodes(ids: $ids) {{ ... on Member {{ {fields} }} }} }}")

    cost = model.cost(query, None, {"ids": ["m1"] * 100})

    assert cost == 100 * (1 + 30 * (1 + 3 * ROUND_TRIP + 1))
    assert cost > model.limits.maximum
    assert model.cost(query, None, {"ids": ["m1"] * 5}) < model.limits.maximum


def test_messages_count_the_latest_hundred(model: CostModel) -> None:
    query = '{ conversation(id: "c1") { messages { body author { name } } } }'

    assert model.cost(parse(query)) == 1 + 100 * 2


def test_a_fragment_is_costed_with_the_page_of_each_connection_it_is_spread_in(
    model: CostModel,
) -> None:
    query = parse(
        "{ viewer { small: conversations(first: 2) { ...Threads } "
        "big: conversations(first: 50) { ...Threads } } } "
        "fragment Threads on ConversationConnection { nodes { id } }"
    )

    assert model.cost(query) == 1 + (1 + ROUND_TRIP + 2) + (1 + ROUND_TRIP + 50)


def test_the_member_page_fits_and_the_million_object_query_does_not(model: CostModel) -> None:
    page = model.cost(parse(MEMBER_PAGE), None, {"n": 100})
    million = model.cost(parse(MILLION))

    assert page == 20_510 + 4 * ROUND_TRIP  # three connections and one totalCount
    # A connection: itself, its read and 100 nodes; a node here: itself, its sender and the
    # sender's connection.
    innermost = 1 + ROUND_TRIP + 100 * 1
    middle = 1 + ROUND_TRIP + 100 * (1 + 1 + innermost)
    assert million == 1 + (1 + ROUND_TRIP + 100 * (1 + 1 + middle))
    assert million == 1_333_332
    assert page < model.limits.maximum < million


def test_the_introspection_query_of_graphiql_fits_under_the_default_maximum(
    model: CostModel,
) -> None:
    assert 0 < model.cost(parse(get_introspection_query())) < model.limits.maximum


def test_introspection_nested_through_types_is_costed_as_what_it_could_return(
    model: CostModel,
) -> None:
    nested = "name"
    for _ in range(3):
        nested = f"fields {{ type {{ ofType {{ {nested} }} }} }}"
    nested = f"{{ __schema {{ types {{ {nested} }} }} }}"

    assert model.cost(parse(nested)) > model.limits.maximum


def test_a_selection_below_the_schemas_types_is_costed_once_not_once_per_type(
    model: CostModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each type under `__schema { types }` is costed with its own caps, which end at its own
    lists: below them the same selection was walked again for each of the schema's types (a
    2,000-token tree took 100 ms to cost, before it was refused)."""

    def tree(level: int) -> str:
        names = "name " * 5
        if level <= 0:
            return names
        fields = f"fields {{ {names} type {{ {tree(level - 2)} }} }}"
        return f"{names} ofType {{ {tree(level - 1)} }} {fields}"

    document = parse(f"{{ __schema {{ types {{ {tree(6)} }} }} }}")
    walked = 0
    walk = cost._Costing._of

    def counted(self: Any, *args: Any) -> int:
        nonlocal walked
        walked += 1
        return walk(self, *args)

    monkeypatch.setattr(cost._Costing, "_of", counted)
    total = model.cost(document)

    sets = 0

    class Sets(Visitor):
        def enter_selection_set(self, *_: object) -> None:
            nonlocal sets
            sets += 1

    visit(document, Sets())
    assert total > model.limits.maximum
    assert sets > 50
    assert walked <= len(model.types) + sets  # the types' own sets, then each set once


def test_the_cost_of_a_named_operation_is_that_operation_s(model: CostModel) -> None:
    document = parse(
        "query Small { viewer { id } } query Big { viewer { ledger(first: 9) { nodes { id } } } }"
    )

    assert model.cost(document, "Small") == 1
    assert model.cost(document, "Big") == 1 + 1 + ROUND_TRIP + 9
    assert model.cost(document, "Missing") == 0


def test_a_remembered_cost_follows_the_variables_that_change_it(model: CostModel) -> None:
    """One document, costed again and again: each answer is what a model that never saw it
    computes."""
    text = (
        "query($n: Int, $ids: [ID!]!, $s: String) {"
        " viewer { creditLots(first: $n) { nodes { id } } }"
        " nodes(ids: $ids) { id } member(id: $s) { id } }"
    )
    query = parse(text)
    asked: list[dict[str, object]] = [
        {"n": 3, "ids": ["a"], "s": "x"},
        {"n": 3, "ids": ["a"], "s": "y"},  # a variable the cost does not read
        {"n": 100, "ids": ["a"]},
        {"n": 3, "ids": ["a", "b", "c"]},
        {"ids": []},
        {"n": "three", "ids": "a"},
        {"n": True, "ids": ["a"]},
        {"n": 3, "ids": ["a"], "s": "x"},
    ]
    for variables in asked:
        fresh = CostModel(model.schema, model.limits)
        remembered = model.cost(query, None, variables, text=text)
        assert remembered == fresh.cost(query, None, variables), variables
    assert model.cost(query, None, {"n": 3, "ids": ["a"]}, text=text) != model.cost(
        query, None, {"n": 4, "ids": ["a"]}, text=text
    )


def test_remembered_costs_are_bounded(model: CostModel) -> None:
    for n in range(KNOWN_DOCUMENTS + 50):
        text = f"{{ viewer {{ ledger(first: {n % 100}) {{ nodes {{ id }} }} }} }} # {n}"
        assert model.cost(parse(text), text=text) == 1 + 1 + ROUND_TRIP + n % 100
    text = "query($n: Int) { viewer { ledger(first: $n) { nodes { id } } } }"
    for n in range(KNOWN_SHAPES + 50):
        assert (
            model.cost(parse(text), None, {"n": n % 100}, text=text) == 1 + 1 + ROUND_TRIP + n % 100
        )
    assert len(model._known) <= KNOWN_DOCUMENTS
    assert all(len(known.costs) <= KNOWN_SHAPES for known in model._known.values())
