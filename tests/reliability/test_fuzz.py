"""Hostile input: generated operations over HTTP never get a 500, leak nothing, change nothing.

hypothesis-graphql writes valid queries and mutations from the schema the service serves (and,
in NEGATIVE mode, operations with one violation each), with random arguments; another strategy
sends fixed operations with random JSON as their variables. Every one goes to a real uvicorn
process as one of five callers (nobody, two members, an admin, a forged token). Then:

- the status is never 5xx, and no response carries a stack trace or an internal name;
- nothing is "Unexpected error.": that is a bug the masking hid;
- when the operation was refused (a GraphQL error on the operation, or a payload `errors`), the
  database is exactly as it was before.

Then the limits, one by one: depth, aliases, tokens, page size, string lengths, body size,
non-JSON bodies, forged tokens, introspection switched off, and the masking of a real failure.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import graphql
import httpx
import jwt
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, mutations, nodes, queries
from pymongo import MongoClient

from inmail import logs
from inmail.auth import Role, TokenService
from inmail.resolvers.root import build_schema
from inmail.services.base import Account
from reliability.conftest import drop_database
from reliability.servers import running
from schema_args import Position, positions
from support import GOOD_CARD, TEST_SECRET, Api
from support import test_settings as service_settings

pytestmark = pytest.mark.slow

Doc = dict[str, Any]
SDL = build_schema(service_settings()).as_str()
SCHEMA = graphql.build_schema(SDL)
assert SCHEMA.query_type is not None
assert SCHEMA.mutation_type is not None
QUERY_FIELDS = sorted(SCHEMA.query_type.fields)
MUTATION_FIELDS = sorted(SCHEMA.mutation_type.fields)
COLLECTIONS = (
    "members",
    "credit_lots",
    "ledger",
    "conversations",
    "purchases",
    "charges",
    "idempotency",
    "notifications",
)
# What would tell an attacker how the service is built. Type names of our own schema that end
# in "Error" (UserError) are public; any other FooError/FooException is an exception's name.
INTERNALS = re.compile(
    r"Traceback|File \"|pymongo|bson|motor|strawberry\.|site-packages|\.py\b|"
    r"\b(?!UserError\b)[A-Z][A-Za-z]*(?:Error|Exception)\b"
)

_tokens = TokenService(TEST_SECRET, service_settings().token_max_lifetime)


@dataclass
class Target:
    """The service in a uvicorn process, its database, and who may call it."""

    client: httpx.Client
    db: Any
    callers: dict[str, str | None]
    ids: list[str]
    log: Callable[[], str]


def post_json(client: httpx.Client, body: object, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/graphql", json=body, headers=headers)


def seed(client: httpx.Client) -> tuple[dict[str, str | None], list[str]]:
    admin = _tokens.mint("admin", Role.ADMIN)

    def call(query: str, variables: dict[str, Any], token: str) -> Any:
        body = post_json(client, {"query": query, "variables": variables}, token).json()
        assert not body.get("errors"), body
        return body["data"]

    def create(name: str, plan: str) -> str:
        payload: dict[str, Any] = {"name": name, "plan": plan}
        if plan != "BASIC":
            payload["paymentMethod"] = GOOD_CARD
        data = call(
            "mutation($i: CreateMemberInput!) { createMember(input: $i) { member { id } } }",
            {"i": payload},
            admin,
        )
        member_id: str = data["createMember"]["member"]["id"]
        return member_id

    ada, cy = create("Ada", "PREMIUM_CAREER"), create("Cy", "PREMIUM_BUSINESS")
    bob, dee, eve, fay = (create(name, "BASIC") for name in ("Bob", "Dee", "Eve", "Fay"))
    call(
        "mutation($i: ConnectMembersInput!) { connectMembers(input: $i) { ok } }",
        {"i": {"memberId": ada, "otherMemberId": cy}},
        admin,
    )
    send = "mutation($i: SendInMailInput!) { sendInMail(input: $i) { conversation { id } } }"
    conversations = []
    for sender in (ada, cy):
        data = call(
            send,
            {"i": {"recipientId": bob, "subject": "Hi", "body": "Hello", "idempotencyKey": "k"}},
            _tokens.mint(sender, Role.MEMBER),
        )
        conversations.append(data["sendInMail"]["conversation"]["id"])
    callers: dict[str, str | None] = {
        "nobody": None,
        "ada": _tokens.mint(ada, Role.MEMBER),
        "cy": _tokens.mint(cy, Role.MEMBER),
        "bob": _tokens.mint(bob, Role.MEMBER),
        "admin": admin,
        "forged": jwt.encode(
            {"sub": ada, "role": "admin", "exp": datetime.now(UTC) + timedelta(hours=1)},
            "not-the-secret-not-the-secret-not-the-secret",
            algorithm="HS256",
        ),
    }
    return callers, [ada, cy, bob, dee, eve, fay, *conversations]


@pytest.fixture(scope="module")
def target(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    db_name = f"fz_{uuid.uuid4().hex[:16]}"
    mongo: MongoClient[Doc] = MongoClient(mongodb_uri, tz_aware=True)
    try:
        with (
            running(1, mongodb_uri, db_name, tmp_path_factory.mktemp("fuzz")) as [server],
            httpx.Client(base_url=server.url, timeout=60) as client,
        ):
            callers, ids = seed(client)
            yield Target(client, mongo[db_name], callers, ids, server.log)
    finally:
        mongo.close()
        drop_database(mongodb_uri, db_name)


def snapshot(db: Any) -> dict[str, list[Doc]]:
    return {name: list(db[name].find({}).sort("_id", 1)) for name in COLLECTIONS}


def assert_nothing_internal(text: str) -> None:
    leak = INTERNALS.search(text)
    assert leak is None, f"internal detail {leak.group(0)!r} in {text[:2000]}"
    assert "Unexpected error." not in text, f"an unexpected error (a bug) for: {text[:2000]}"


def refused(body: dict[str, Any], field: str) -> bool:
    """Whether the operation as a whole was refused (its nested fields may fail on their own)."""
    errors = body.get("errors") or []
    if any(len(error.get("path") or []) <= 1 for error in errors):
        return True
    payload = (body.get("data") or {}).get(field)
    return payload is None or bool(payload.get("errors"))


def with_payload_errors(document: str) -> str:
    """Select `errors { code }` on the mutation's payload, so a refusal can be told apart."""
    tree = graphql.parse(document)
    extra = graphql.parse("{ errors { code } }").definitions[0]
    assert isinstance(extra, graphql.OperationDefinitionNode)
    operations = []
    for operation in tree.definitions:
        assert isinstance(operation, graphql.OperationDefinitionNode)
        fields = []
        for field in operation.selection_set.selections:
            assert isinstance(field, graphql.FieldNode)
            if field.selection_set is not None:
                selections = (*field.selection_set.selections, *extra.selection_set.selections)
                field = replace(
                    field, selection_set=replace(field.selection_set, selections=selections)
                )
            fields.append(field)
        selection_set = replace(operation.selection_set, selections=tuple(fields))
        operations.append(replace(operation, selection_set=selection_set))
    return graphql.print_ast(replace(tree, definitions=tuple(operations)))


def exchange(target: Target, body: object, caller: str, field: str | None) -> None:
    """Send one request; check the answer and, when it was refused, that nothing changed."""
    before = snapshot(target.db)
    response = post_json(target.client, body, target.callers[caller])
    assert response.status_code < 500, response.text
    assert_nothing_internal(response.text)
    after = snapshot(target.db)
    if response.status_code != 200 or field is None:
        assert after == before, "a refused or read-only request changed the database"
        return
    answer = response.json()
    if refused(answer, field):
        assert after == before, f"a refused {field} changed the database: {answer}"
        payload = (answer.get("data") or {}).get(field) or {}
        why = [e.get("code") for e in payload.get("errors") or []] or [
            (e.get("extensions") or {}).get("code", e["message"][:40])
            for e in answer.get("errors") or []
        ]
        event(f"{field}: refused {why}")
    else:
        event(f"{field}: done")


PLAUSIBLE = st.sampled_from(["4242", "Visa", "Hello there", "A short note.", "key-1", "key-2"])


def scalars(target_ids: list[str]) -> dict[str, st.SearchStrategy[graphql.ValueNode]]:
    """Known ids and plausible values often, anything at all otherwise: so that some
    operations get through and change things, and the rest probe the edges."""
    known = st.sampled_from(target_ids)
    ids = known | known | known | st.text(max_size=30)
    return {
        "ID": ids.map(nodes.String),
        "String": (PLAUSIBLE | PLAUSIBLE | st.text(max_size=60)).map(nodes.String),
        "Int": (
            st.integers(-3, 40) | st.integers(2025, 2032) | st.integers(-(2**31), 2**31 - 1)
        ).map(nodes.Int),
        "DateTime": st.sampled_from(["2026-01-01T00:00:00Z", "yesterday", ""]).map(nodes.String),
    }


# Members and the admin more often than strangers: refusals at the door are the easy part.
CALLERS = st.sampled_from(["nobody", "forged", "admin", "admin", "ada", "ada", "cy", "cy", "bob"])


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )


def draw_on_one_field(
    data: st.DataObject,
    target: Target,
    operations: Callable[..., st.SearchStrategy[str]],
    fields: list[str],
) -> tuple[str, str]:
    """One of the fields, and a generated operation on it alone (with the target's ids)."""
    field = data.draw(st.sampled_from(fields), label="field")
    return field, data.draw(operations(SDL, fields=[field], custom_scalars=scalars(target.ids)))


@fuzz(250)
@given(data=st.data(), caller=CALLERS)
def test_generated_queries_answer_without_leaking_and_change_nothing(
    target: Target, data: st.DataObject, caller: str
) -> None:
    _, document = draw_on_one_field(data, target, queries, QUERY_FIELDS)
    exchange(target, {"query": document}, caller, None)


@fuzz(300)
@given(data=st.data(), caller=CALLERS)
def test_generated_mutations_change_nothing_when_refused(
    target: Target, data: st.DataObject, caller: str
) -> None:
    field, document = draw_on_one_field(data, target, mutations, MUTATION_FIELDS)
    exchange(target, {"query": with_payload_errors(document)}, caller, field)


@fuzz(120)
@given(data=st.data(), caller=CALLERS, kind=st.sampled_from(["query", "mutation"]))
def test_operations_with_one_violation_are_refused_cleanly(
    target: Target, data: st.DataObject, caller: str, kind: str
) -> None:
    strategy = queries if kind == "query" else mutations
    document = data.draw(strategy(SDL, custom_scalars=scalars(target.ids), mode=Mode.NEGATIVE))
    exchange(target, {"query": document}, caller, None)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
INPUT_OF = {
    name: field.args["input"].type
    for name, field in SCHEMA.mutation_type.fields.items()
    if "input" in field.args
}


def input_values(target_ids: list[str], field: str) -> st.SearchStrategy[Any]:
    """Random JSON, and objects with the input's own field names holding random JSON."""
    input_type = graphql.get_named_type(INPUT_OF[field])
    assert isinstance(input_type, graphql.GraphQLInputObjectType)
    value = JSON | st.sampled_from(target_ids) | st.text(min_size=1990, max_size=2010)
    shaped = st.fixed_dictionaries({}, optional=dict.fromkeys(input_type.fields, value))
    return JSON | shaped


@fuzz(150)
@given(data=st.data(), caller=CALLERS, field=st.sampled_from(sorted(INPUT_OF)))
def test_random_variables_are_refused_cleanly_or_used_once(
    target: Target, data: st.DataObject, caller: str, field: str
) -> None:
    input_type = INPUT_OF[field]
    document = f"mutation($i: {input_type}) {{ {field}(input: $i) {{ errors {{ code }} }} }}"
    variables = data.draw(input_values(target.ids, field), label="input")
    exchange(target, {"query": document, "variables": {"i": variables}}, caller, field)


DOCUMENTS = st.sampled_from(
    [
        "{ now }",
        "query Q($f: Int) { viewer { ledger(first: $f) { totalCount } } }",
        "mutation M($i: SendInMailInput!) { sendInMail(input: $i) { errors { code } } }",
        "query A { now } query B { plans { type } }",
        "{ viewer { ...F } } fragment F on Member { id ...F }",
    ]
)


@fuzz(100)
@given(
    caller=CALLERS,
    query=DOCUMENTS | st.text(max_size=200),
    variables=st.none() | st.dictionaries(st.sampled_from(["f", "i", "x"]), JSON),
    operation=st.none()
    | st.sampled_from(["A", "B", "Q", "M", "C"])
    | st.text(max_size=10)
    | st.integers()
    | st.lists(st.text(max_size=3), max_size=2),
)
def test_random_request_bodies_never_get_a_500(
    target: Target, caller: str, query: str, variables: Any, operation: object
) -> None:
    body = {"query": query, "variables": variables, "operationName": operation}
    field = None
    if query.startswith("mutation M") and operation in (None, "M"):
        field = "sendInMail"
    exchange(target, body, caller, field)


# Values no code path expects, in every argument of every root field: lone surrogates, numbers
# past any range, JSON nested thousands deep. Sent as raw JSON (an encoder that refuses
# surrogates would never send them), to every caller.

HOSTILE = (
    st.sampled_from(["\ud800", "a\udfffb", "Hello \ud83d", "\udc00" * 3])
    | st.sampled_from([2**80, -(2**80), 10**400, 1e308, -1e308, 2**31, 0.5])
    | st.sampled_from([[], {}, [[["\ud800"]]], {"\ud800": "\ud800"}])
)
POSITIONS = positions()


def deep_json(levels: int) -> str:
    return "[" * levels + "]" * levels


def holds_lone_surrogate(value: Any) -> bool:
    """Whether `value` holds a string with half a surrogate pair, which no argument takes."""
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(holds_lone_surrogate(k) or holds_lone_surrogate(v) for k, v in value.items())
    return isinstance(value, list) and any(holds_lone_surrogate(v) for v in value)


def hostile_exchange(target: Target, body: str, caller: str) -> bool:
    """Sends `body`: never a 500, a JSON answer naming nothing internal, and nothing changed
    by a refusal. Whether it was refused."""
    before = snapshot(target.db)
    token = target.callers[caller]
    headers = {"content-type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = target.client.post("/graphql", content=body.encode("ascii"), headers=headers)
    assert response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    assert_nothing_internal(response.text)
    answer = response.json()
    # A caller without a valid token may be refused as such, before a resolver reads their
    # arguments (markNotificationsRead's payload needs the count of a member's unread ones).
    refused_codes = ("BAD_USER_INPUT", "BAD_REQUEST") + (
        ("UNAUTHENTICATED",) if caller in ("nobody", "forged") else ()
    )
    refusal = any(
        (e.get("extensions") or {}).get("code") in refused_codes
        or "got invalid value" in e["message"]
        for e in answer.get("errors") or []
    ) or any(isinstance(v, dict) and v.get("errors") for v in (answer.get("data") or {}).values())
    if refusal:
        assert snapshot(target.db) == before, f"a refused request changed the database: {answer}"
    return refusal


@fuzz(200)
@given(
    position=st.sampled_from(POSITIONS),
    value=HOSTILE,
    caller=CALLERS,
    deep=st.none() | st.integers(100, 6000),
)
def test_hostile_values_in_any_argument_get_a_json_client_error_and_log_no_traceback(
    target: Target, position: Position, value: Any, caller: str, deep: int | None
) -> None:
    marker = "__DEEP__"
    variables = position.variables(marker if deep else value)
    body = json.dumps({"query": position.document(), "variables": variables})
    if deep:
        body = body.replace(json.dumps(marker), deep_json(deep))
    event(f"{position.name}: {'deep' if deep else type(value).__name__}")
    refused = hostile_exchange(target, body, caller)
    # Some of these fit some arguments (an empty list, a float); these fit none.
    if deep or holds_lone_surrogate(value):
        assert refused, body[:300]


def test_the_hostile_fuzz_left_no_traceback_in_the_server_log(target: Target) -> None:
    for value in ("\ud800", 10**400, deep_json(5000)):
        for position in POSITIONS:
            marker = "__VALUE__"
            body = json.dumps(
                {"query": position.document(), "variables": position.variables(marker)}
            )
            raw = value if isinstance(value, str) and value.startswith("[") else json.dumps(value)
            refused = hostile_exchange(target, body.replace(json.dumps(marker), raw), "ada")
            assert refused or value == 10**400, (position.name, value)
    log = target.log()
    assert "Traceback" not in log, log[-5000:]
    assert "ERROR" not in log, log[-5000:]


# The limits, one by one.


def ask(target: Target, query: str, caller: str = "ada", **variables: Any) -> dict[str, Any]:
    before = snapshot(target.db)
    sent = {"query": query, "variables": variables}
    response = post_json(target.client, sent, target.callers[caller])
    assert response.status_code < 500
    assert_nothing_internal(response.text)
    body: dict[str, Any] = response.json()
    if body.get("errors"):
        assert snapshot(target.db) == before
    return body


def messages(body: dict[str, Any]) -> str:
    return " ".join(error["message"] for error in body.get("errors") or [])


def test_a_query_deeper_than_the_limit_is_refused_before_it_runs(target: Target) -> None:
    level = "conversations {{ nodes {{ sender {{ {} }} }} }}"
    deep = "id"
    for _ in range(6):  # 1 + 6 * 3 + 1 = 20 levels, over the default limit of 12
        deep = level.format(deep)
    deep = "{ viewer { " + deep + " } }"
    body = ask(target, deep)
    assert body.get("data") is None
    assert "exceeds maximum operation depth" in messages(body)


def test_more_aliases_than_the_limit_are_refused(target: Target) -> None:
    body = ask(target, "{ " + " ".join(f"a{i}: now" for i in range(31)) + " }")
    assert body.get("data") is None
    assert "aliases" in messages(body).lower()
    assert ask(target, "{ " + " ".join(f"a{i}: now" for i in range(30)) + " }")["data"]


def test_a_document_over_the_token_limit_is_refused(target: Target) -> None:
    body = ask(target, "{ " + " ".join("now" for _ in range(2100)) + " }")
    assert body.get("data") is None
    assert "token" in messages(body).lower()


@pytest.mark.parametrize("first", [101, 1000, -1])
@pytest.mark.parametrize(
    "query",
    [
        "query($f: Int) { viewer { ledger(first: $f) { totalCount } } }",
        "query($f: Int) { viewer { creditLots(first: $f) { totalCount } } }",
        "query($f: Int) { viewer { conversations(first: $f) { totalCount } } }",
        "query($f: Int) { creditLots(first: $f) { totalCount } }",
    ],
)
def test_page_sizes_outside_0_to_100_are_bad_user_input(
    target: Target, query: str, first: int
) -> None:
    body = ask(target, query, f=first)
    codes = [error["extensions"]["code"] for error in body["errors"]]
    assert codes == ["BAD_USER_INPUT"]
    assert ask(target, query, f=100).get("errors") is None


SEND = (
    "mutation($i: SendInMailInput!) { sendInMail(input: $i) { conversation { id } "
    "errors { code field } } }"
)
CREATE = (
    "mutation($i: CreateMemberInput!) { createMember(input: $i) { member { id } "
    "errors { code field } } }"
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "s" * 201),
        ("body", "b" * 2001),
        ("body", "x" * 900_000),
        ("idempotencyKey", "k" * 101),
        ("subject", "   "),
    ],
)
def test_oversized_or_blank_strings_of_an_inmail_are_invalid_input(
    target: Target, field: str, value: str
) -> None:
    fields = {"subject": "Hello", "body": "A short note.", "idempotencyKey": uuid.uuid4().hex}
    fields.update({"recipientId": target.ids[3], field: value})
    body = ask(target, SEND, i=fields)
    assert body["data"]["sendInMail"]["errors"] == [{"code": "INVALID_INPUT", "field": field}]


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "n" * 101), ("headline", "h" * 221), ("name", "")],
)
def test_oversized_member_strings_are_invalid_input(target: Target, field: str, value: str) -> None:
    fields = {"name": "Grace", "plan": "BASIC", field: value}
    body = ask(target, CREATE, "admin", i=fields)
    assert body["data"]["createMember"]["errors"] == [{"code": "INVALID_INPUT", "field": field}]


def test_a_body_over_the_size_limit_gets_413_and_changes_nothing(target: Target) -> None:
    before = snapshot(target.db)
    payload = json.dumps(
        {
            "query": SEND,
            "variables": {
                "i": {
                    "recipientId": target.ids[3],
                    "subject": "Hi",
                    "body": "x" * (2 * 1024 * 1024),
                    "idempotencyKey": uuid.uuid4().hex,
                }
            },
        }
    )
    response = target.client.post(
        "/graphql",
        content=payload,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {target.callers['ada']}",
        },
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert snapshot(target.db) == before


def test_a_chunked_body_over_the_size_limit_gets_413_too(target: Target) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"query": "{ now }", "pad": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    response = target.client.post(
        "/graphql", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "content",
    [
        b"this is not json",
        b'{"query": ',
        b"\xff\xfe\xfa not utf-8",
        b"[]",
        b'"a string"',
        b"null",
        b"42",
        b'{"query": 42}',
        b'{"query": "{ now }", "variables": [1, 2]}',
        b"{}",
    ],
)
def test_bodies_that_are_no_graphql_request_get_400(target: Target, content: bytes) -> None:
    response = target.client.post(
        "/graphql", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert_nothing_internal(response.text)


def test_a_get_with_a_mutation_is_refused_with_405_without_running_it(target: Target) -> None:
    before = snapshot(target.db)
    mutation = 'mutation { createMember(input: {name: "Mallory", plan: BASIC}) { member { id } } }'
    admin = target.callers["admin"]
    response = target.client.get(
        "/graphql", params={"query": mutation}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "POST"
    assert snapshot(target.db) == before


def _claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "member-1",
        "role": "member",
        "exp": datetime.now(UTC) + timedelta(hours=1),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _hs512(claims: dict[str, Any]) -> str:
    with warnings.catch_warnings():  # the short key is the point: HS512 is not accepted at all
        warnings.simplefilter("ignore")
        return jwt.encode(claims, TEST_SECRET, "HS512")


FORGED_TOKENS = {
    "garbage": "not-a-jwt",
    "wrong secret": jwt.encode(_claims(), "another-secret-another-secret-another", "HS256"),
    "expired": jwt.encode(_claims(exp=datetime.now(UTC) - timedelta(seconds=5)), TEST_SECRET),
    "no expiry": jwt.encode({"sub": "member-1", "role": "member"}, TEST_SECRET, "HS256"),
    "no subject": jwt.encode(_claims(sub=None), TEST_SECRET, "HS256"),
    "unknown role": jwt.encode(_claims(role="superadmin"), TEST_SECRET, "HS256"),
    "alg none": jwt.encode(_claims(role="admin"), key=None, algorithm="none"),
    "HS512": _hs512(_claims()),
    "huge subject": jwt.encode(_claims(sub="m" * 5000), TEST_SECRET, "HS256"),
}


@pytest.mark.parametrize("token", FORGED_TOKENS.values(), ids=FORGED_TOKENS.keys())
def test_forged_or_broken_tokens_are_unauthenticated(target: Target, token: str) -> None:
    before = snapshot(target.db)
    response = post_json(
        target.client,
        {
            "query": CREATE,
            "variables": {"i": {"name": "Mallory", "plan": "RECRUITER_LITE"}},
        },
        token,
    )
    assert response.status_code == 200
    assert_nothing_internal(response.text)
    body = response.json()
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
    assert snapshot(target.db) == before


@pytest.mark.parametrize(
    "header", ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer a b c", "bearer", "Token x"]
)
def test_malformed_authorization_headers_are_unauthenticated(target: Target, header: str) -> None:
    response = target.client.post(
        "/graphql", json={"query": "{ viewer { id } }"}, headers={"Authorization": header}
    )
    assert response.status_code == 200
    codes = [e["extensions"]["code"] for e in response.json()["errors"]]
    assert codes == ["UNAUTHENTICATED"]


INTROSPECTION = "{ __schema { queryType { name } types { name } } }"


def test_introspection_answers_by_default(target: Target) -> None:
    body = ask(target, INTROSPECTION, "nobody")
    assert body["data"]["__schema"]["queryType"] == {"name": "Query"}


def test_introspection_is_refused_when_INMAIL_INTROSPECTION_is_false(
    mongodb_uri: str, tmp_path: Path
) -> None:
    db_name = f"fz_{uuid.uuid4().hex[:16]}"
    try:
        with (
            running(1, mongodb_uri, db_name, tmp_path, INMAIL_INTROSPECTION="false") as [server],
            httpx.Client(base_url=server.url, timeout=60) as client,
        ):
            for query in (INTROSPECTION, '{ __type(name: "Member") { name fields { name } } }'):
                response = post_json(client, {"query": query})
                assert response.status_code < 500
                body = response.json()
                assert body.get("data") is None
                assert "introspection" in messages(body).lower()
            assert post_json(client, {"query": "{ now }"}).json()["data"]["now"]
    finally:
        drop_database(mongodb_uri, db_name)


@pytest.mark.parametrize("name", [5, ["A"], {"x": 1}])
def test_a_non_string_operation_name_is_refused_cleanly(target: Target, name: object) -> None:
    response = post_json(target.client, {"query": "query A { now }", "operationName": name})
    assert response.status_code < 500
    assert "expected string or bytes-like object" not in response.text
    if response.status_code == 200:
        assert "operationName" in messages(response.json())


def test_a_subscription_sent_over_http_is_refused_clearly(target: Target) -> None:
    response = post_json(
        target.client,
        {"query": "subscription { balanceChanged { balance } }"},
        target.callers["ada"],
    )
    assert response.status_code < 500
    assert "Unexpected error." not in response.text
    assert response.status_code == 400 or response.json()["errors"]


def test_an_advance_too_large_for_a_date_is_invalid_input_not_an_unexpected_error(
    target: Target,
) -> None:
    body = ask(
        target,
        "mutation($i: AdvanceClockInput!) { advanceClock(input: $i) { now errors { code } } }",
        "admin",
        i={"days": 2**31 - 1},
    )
    assert body["data"]["advanceClock"]["errors"] == [{"code": "INVALID_INPUT"}]


async def test_an_unexpected_failure_is_masked_and_logged_with_the_request_id(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure nobody planned for (here: the balance's own computation) shows nothing."""
    ada = await api.create_member("Ada", "PREMIUM_CAREER")

    def broken(*args: object, **kwargs: object) -> Account:
        raise RuntimeError("wallet says: secret internals at /srv/inmail/services")

    monkeypatch.setattr(Account, "brought_up_to", broken)
    seen: list[str | None] = []

    class RequestIds(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                seen.append(logs.request_id.get())

    handler = RequestIds()
    logging.getLogger().addHandler(handler)
    try:
        with caplog.at_level(logging.ERROR):
            response = await api.client.post(
                "/graphql",
                json={"query": "{ viewer { name inmailBalance } }"},
                headers={"Authorization": f"Bearer {ada.token}", "X-Request-Id": "req-4711"},
            )
    finally:
        logging.getLogger().removeHandler(handler)

    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-4711"
    body = response.json()
    assert [(e["message"], e["path"]) for e in body["errors"]] == [
        ("Unexpected error.", ["viewer", "inmailBalance"])
    ]
    # No trace: its code is the only extension.
    assert set(body["errors"][0]) <= {"message", "locations", "path", "extensions"}
    assert body["errors"][0]["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    assert body["data"] == {"viewer": {"name": "Ada", "inmailBalance": None}}
    assert "secret internals" not in response.text
    assert "req-4711" in seen
    assert any("secret internals" in (r.exc_text or str(r.exc_info)) for r in caplog.records)
