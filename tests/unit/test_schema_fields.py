"""Plain fields read their object's attribute directly; fields with resolvers keep them."""

from __future__ import annotations

from types import SimpleNamespace

from graphql import GraphQLObjectType, GraphQLSchema

from inmail.resolvers.root import build_schema
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
