"""Plain fields read their object's attribute directly; resolvers of their object alone are
called directly; fields with arguments and the roots keep Strawberry's path."""

from __future__ import annotations

from types import SimpleNamespace

import strawberry
from graphql import GraphQLObjectType, GraphQLSchema

from inmail.resolvers.root import build_schema, call_simple_resolvers_directly
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
    direct = member.fields["name"].resolve
    assert direct is not None
    for kept in (
        conversation.fields["sender"],
        conversation.fields["messages"],
        member.fields["inmailBalance"],
        member.fields["conversations"],
    ):
        assert kept.resolve is not None
        assert kept.resolve.__code__ is not direct.__code__


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
