"""Plain fields read their object's attribute directly; resolvers of their object alone are
called directly; fields with arguments and the roots keep Strawberry's path."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import strawberry
from graphql import GraphQLObjectType, GraphQLSchema
from strawberry.extensions import SchemaExtension

from inmail.resolvers.root import (
    AttributeReader,
    PlainLeavesExecutionContext,
    build_schema,
    call_simple_resolvers_directly,
    read_plain_fields_directly,
)
from inmail.settings import Settings


def _core() -> GraphQLSchema:
    core = build_schema(Settings())._schema
    assert isinstance(core, GraphQLSchema)
    return core


def _object(core: GraphQLSchema, name: str) -> GraphQLObjectType:
    kind = core.type_map[name]
    assert isinstance(kind, GraphQLObjectType)
    return kind


def test_a_plain_field_reads_the_attribute_its_python_name_names() -> None:
    conversation = _object(_core(), "Conversation")
    source = SimpleNamespace(subject="Your Rust talk", sent_at="2026-02-15T09:05:00Z")
    for field, expected in (("subject", "Your Rust talk"), ("sentAt", "2026-02-15T09:05:00Z")):
        resolve = conversation.fields[field].resolve
        assert resolve is not None
        assert resolve(source, None) == expected


def test_a_field_renamed_in_the_schema_reads_its_python_attribute() -> None:
    plan = _object(_core(), "Plan")
    resolve = plan.fields["canSendInMail"].resolve
    assert resolve is not None
    assert resolve(SimpleNamespace(can_send_in_mail=True), None) is True


def test_fields_with_resolvers_or_arguments_keep_their_own() -> None:
    core = _core()
    member = _object(core, "Member")
    conversation = _object(core, "Conversation")
    assert isinstance(member.fields["name"].resolve, AttributeReader)
    for kept in (
        conversation.fields["sender"],
        conversation.fields["messages"],
        member.fields["inmailBalance"],
        member.fields["conversations"],
    ):
        assert kept.resolve is not None
        assert not isinstance(kept.resolve, AttributeReader)


@strawberry.type
class Author:
    name: str

    @strawberry.field
    def greeting(self, info: strawberry.Info) -> str:
        assert isinstance(info, strawberry.Info)
        return f"{info.context['salutation']}, {self.name} ({info.field_name})"

    @strawberry.field
    async def later(self) -> str:
        return self.name.upper()

    @strawberry.field
    def shout(self, times: int) -> str:
        return self.name * times


@strawberry.type
class Root:
    @strawberry.field
    def author(self) -> Author:
        return Author(name="Ada")


async def test_a_resolver_of_its_object_alone_is_called_directly_with_strawberrys_info() -> None:
    schema = strawberry.Schema(query=Root)
    query = "{ author { greeting later shout(times: 2) } }"
    context = {"salutation": "Dear"}
    before = await schema.execute(query, context_value=context)
    call_simple_resolvers_directly(schema)
    fields = _object(schema._schema, "Author").fields
    direct = {name for name, f in fields.items() if _is_direct(f.resolve)}
    assert direct == {"greeting", "later"}
    assert not _is_direct(_object(schema._schema, "Root").fields["author"].resolve)
    after = await schema.execute(query, context_value=context)
    assert after.errors is None
    assert (
        after.data
        == before.data
        == {"author": {"greeting": "Dear, Ada (greeting)", "later": "ADA", "shout": "AdaAda"}}
    )


def _is_direct(resolve: object) -> bool:
    return getattr(resolve, "__qualname__", "").startswith("_direct_call")


def test_the_apis_per_item_resolvers_are_direct_and_roots_and_arguments_are_not() -> None:
    core = _core()
    for type_name, field in (("Conversation", "sender"), ("Message", "author")):
        assert _is_direct(_object(core, type_name).fields[field].resolve), (type_name, field)
    for type_name, field in (
        ("Member", "conversations"),
        ("Member", "creditLots"),
        ("Query", "viewer"),
        ("Query", "compose"),
    ):
        assert not _is_direct(_object(core, type_name).fields[field].resolve), (type_name, field)


@strawberry.enum
class Mood(enum.Enum):
    CALM = "calm"


@strawberry.type
class Card:
    title: str
    mood: Mood
    at: datetime
    note: str | None
    count: int

    @strawberry.field
    def shown(self) -> str:
        return self.title


@strawberry.type
class Deck:
    @strawberry.field
    def cards(self) -> list[Card | None]:
        at = datetime(2026, 2, 15, 9, 5, tzinfo=UTC)
        return [
            Card(title="plain", mood=Mood.CALM, at=at, note=None, count=1),
            # What graphql-core refuses: null for a non-null field, a value the type refuses.
            Card(title=None, mood=Mood.CALM, at=at, note="n", count=2),  # type: ignore[arg-type]
            Card(title="t", mood="sad", at=at, note="n", count=3),  # type: ignore[arg-type]
            Card(title="t", mood=Mood.CALM, at=at, note="n", count="many"),  # type: ignore[arg-type]
        ]


DECK = "{ cards { title mood at note count shown __typename } }"


def _deck_schemas(extensions: list[type[SchemaExtension]]) -> tuple[strawberry.Schema, ...]:
    plain = strawberry.Schema(query=Deck, extensions=extensions)
    short = strawberry.Schema(
        query=Deck, extensions=extensions, execution_context_class=PlainLeavesExecutionContext
    )
    read_plain_fields_directly(short._schema)
    return plain, short


ALL_LEAVES = "{ cards { title mood at n: note count again: count } }"
FIRST_CARD = {"title": "plain", "mood": "CALM", "at": "2026-02-15T09:05:00+00:00", "count": 1}


@pytest.mark.parametrize(
    ("document", "first_card"),
    [
        (DECK, {**FIRST_CARD, "note": None, "shown": "plain", "__typename": "Card"}),
        # Plain leaves alone, one of them asked twice.
        (ALL_LEAVES, {**FIRST_CARD, "n": None, "again": 1}),
    ],
    ids=["with-other-fields", "leaves-alone"],
)
async def test_plain_leaves_answer_and_fail_exactly_as_graphql_core_does(
    document: str, first_card: dict[str, object]
) -> None:
    plain, short = _deck_schemas([])
    expected, answered = await plain.execute(document), await short.execute(document)
    assert answered.data == expected.data
    assert answered.data is not None
    assert expected.data is not None
    assert answered.data["cards"][0] == first_card
    assert list(answered.data["cards"][0]) == list(expected.data["cards"][0])  # as asked
    assert answered.data["cards"][1:] == [None, None, None]
    assert [(e.message, e.path) for e in answered.errors or []] == [
        (e.message, e.path) for e in expected.errors or []
    ]
    assert {tuple(e.path or ()) for e in answered.errors or []} == {
        ("cards", 1, "title"),
        ("cards", 2, "mood"),
        ("cards", 3, "count"),
    }


class CountsFields(SchemaExtension):
    seen: ClassVar[list[str]] = []

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        CountsFields.seen.append(info.field_name)
        return _next(root, info, *args, **kwargs)


async def test_with_an_extension_that_resolves_fields_every_field_goes_through_it() -> None:
    _, short = _deck_schemas([CountsFields])
    CountsFields.seen.clear()
    answered = await short.execute("{ cards { note at } }")
    assert answered.data is not None
    assert CountsFields.seen.count("note") == 4
    assert CountsFields.seen.count("at") == 4
