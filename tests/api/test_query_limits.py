"""Hostile documents through the API (SPEC section 8): refused fast, every answer with its cost."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from graphql import DocumentNode
from strawberry.extensions.parser_cache import _get_parse_cache

from benchmarks.workloads import MEMBER_PAGE
from inmail.repositories.mongo import Mongo
from inmail.resolvers.cost import ROUND_TRIP as R
from inmail.resolvers.root import PARSED_DOCUMENTS
from inmail.schema.quoting import QUOTED_LITERAL
from reliability.servers import running
from support import Api, Person, ada_and_grace, graphql_error_codes, new_key, serve_api
from support import test_settings as settings_for_tests
from wsclient import TRANSPORT_WS, GraphQLSocket, OperationError, graphql_ws_url

MAXIMUM = 50_000
MILLION = (
    "{ viewer { conversations(first: 100) { nodes { sender { conversations(first: 100) "
    "{ nodes { sender { conversations(first: 100) { nodes { id } } } } } } } } } }"
)


def bomb(levels: int = 40) -> str:
    fragments = "".join(
        f"fragment F{i} on Query {{ now ...F{i + 1} ...F{i + 1} }} " for i in range(levels)
    )
    return f"query {{ ...F0 }} {fragments}fragment F{levels} on Query {{ now }}"


def cost_of(body: dict[str, Any]) -> dict[str, int]:
    cost: dict[str, int] = body["extensions"]["cost"]
    return cost


async def a_member_with_threads(api: Api, threads: int) -> Person:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", monthly_allotment=None)
    for i in range(threads):
        reader = await api.create_member(f"Reader {i}", "BASIC")
        assert (await api.send(ada, reader, subject=f"Engines, part {i}"))["errors"] == []
    return ada


async def test_a_forty_level_fragment_bomb_is_refused_as_too_large_to_validate(api: Api) -> None:
    started = time.monotonic()
    body = await api.raw(bomb(40))
    # A bound, not a speed: expanding the bomb used to take more than ten minutes.
    assert time.monotonic() - started < 60

    assert body.get("data") is None
    assert graphql_error_codes(body) == ["QUERY_TOO_LARGE"]
    assert "too large to validate" in body["errors"][0]["message"]
    assert cost_of(body)["maximumAvailable"] == MAXIMUM


async def test_the_million_object_query_is_refused_before_any_resolver_runs(api: Api) -> None:
    ada = await a_member_with_threads(api, 1)

    body = await api.raw(MILLION, token=ada.token)

    assert "data" not in body or body["data"] is None  # not even `viewer` was resolved
    assert graphql_error_codes(body) == ["QUERY_TOO_COSTLY"], body
    error = body["errors"][0]
    assert error["extensions"]["requestedQueryCost"] == 1_333_332
    assert error["extensions"]["maximumAvailable"] == MAXIMUM
    assert cost_of(body) == {"requestedQueryCost": 1_333_332, "maximumAvailable": MAXIMUM}


async def test_a_costly_mutation_is_refused_before_it_writes_anything(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    balance = await api.balance(ada)
    nested = "id"
    for party in ("sender", "recipient", "sender"):
        nested = f"{party} {{ conversations(first: 100) {{ nodes {{ {nested} }} }} }}"
    mutation = (
        "mutation($i: SendInMailInput!) { sendInMail(input: $i) "
        f"{{ conversation {{ {nested} }} errors {{ code }} }} }}"
    )
    payload = {"recipientId": grace.id, "subject": "Hi", "body": "Hello", "idempotencyKey": "k-1"}

    body = await api.raw(mutation, {"i": payload}, ada.token)

    assert graphql_error_codes(body) == ["QUERY_TOO_COSTLY"], body
    assert body.get("data") is None
    assert await api.balance(ada) == balance


async def test_the_member_page_of_a_hundred_conversations_is_answered_with_its_cost(
    api: Api,
) -> None:
    ada = await a_member_with_threads(api, 3)

    body = await api.raw(MEMBER_PAGE, {"n": 100}, ada.token)

    assert body.get("errors") is None
    assert len(body["data"]["viewer"]["conversations"]["nodes"]) == 3
    assert cost_of(body) == {"requestedQueryCost": 20_510 + 4 * R, "maximumAvailable": MAXIMUM}


async def test_the_page_size_given_in_a_variable_sets_the_cost(api: Api) -> None:
    ada = await a_member_with_threads(api, 2)
    threads = (
        "query($n: Int) { viewer { conversations(first: $n) { nodes { id sender { id } } } } }"
    )
    nested = (
        "query($n: Int) { viewer { conversations(first: $n) { nodes { sender { "
        "conversations(first: $n) { nodes { sender { conversations(first: $n) "
        "{ nodes { id } } } } } } } } } }"
    )

    small = await api.raw(threads, {"n": 1}, ada.token)
    default = await api.raw(threads, {}, ada.token)
    few = await api.raw(nested, {"n": 3}, ada.token)
    many = await api.raw(nested, {"n": 100}, ada.token)

    assert len(small["data"]["viewer"]["conversations"]["nodes"]) == 1
    assert cost_of(small)["requestedQueryCost"] == 1 + (1 + R) + 1 * 2
    assert cost_of(default)["requestedQueryCost"] == 1 + (1 + R) + 20 * 2
    assert few.get("errors") is None
    assert cost_of(few)["requestedQueryCost"] == 1 + (1 + R) + 3 * (
        2 + (1 + R) + 3 * (2 + (1 + R) + 3)
    )
    assert graphql_error_codes(many) == ["QUERY_TOO_COSTLY"]


async def test_a_page_size_left_to_the_variables_default_is_costed_at_that_default(
    api: Api,
) -> None:
    ada = await a_member_with_threads(api, 2)
    nested = (
        "query($n: Int = 100) { viewer { conversations(first: $n) { nodes { sender { "
        "conversations(first: $n) { nodes { sender { conversations(first: $n) "
        "{ nodes { id } } } } } } } } } }"
    )
    threads = "query($n: Int = 1) { viewer { conversations(first: $n) { nodes { id } } } }"

    # Asked first with the variable sent as null (the page size's own default, 20), then left
    # out (its declared default, 100): the second is not taken for the first.
    sent_null = await api.raw(nested, {"n": None}, ada.token)
    left_out = await api.raw(nested, {}, ada.token)
    one = await api.raw(threads, {}, ada.token)

    assert sent_null.get("errors") is None
    assert cost_of(sent_null)["requestedQueryCost"] == 1 + (1 + R) + 20 * (
        2 + (1 + R) + 20 * (2 + (1 + R) + 20)
    )
    assert graphql_error_codes(left_out) == ["QUERY_TOO_COSTLY"], left_out
    assert left_out.get("data") is None
    assert len(one["data"]["viewer"]["conversations"]["nodes"]) == 1
    assert cost_of(one)["requestedQueryCost"] == 1 + (1 + R) + 1


@pytest.mark.parametrize(
    ("query", "token_needed", "codes", "requested"),
    [
        ("{ now }", False, [], 0),  # a scalar of the root costs nothing
        ("{ viewer { id } }", True, [], 1),
        ("{ viewer { id } }", False, ["UNAUTHENTICATED"], 1),
        ("{ nowhere }", False, ["GRAPHQL_VALIDATION_FAILED"], 0),  # never measured
        ("{ now", False, ["GRAPHQL_PARSE_FAILED"], 0),
        ("query($n: Int!) { now }", False, ["GRAPHQL_VALIDATION_FAILED"], 0),  # $n never used
        ("query($t: ID!) { node(id: $t) { id } }", True, ["BAD_USER_INPUT"], 1),  # $t not sent
        ("mutation { cancelSubscription { errors { code } } }", True, [], 2),
    ],
)
async def test_every_response_carries_its_cost(
    api: Api, query: str, token_needed: bool, codes: list[str | None], requested: int
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    body = await api.raw(query, token=ada.token if token_needed else None)

    assert graphql_error_codes(body) == codes
    cost = cost_of(body)
    assert cost["maximumAvailable"] == MAXIMUM
    assert cost["requestedQueryCost"] == requested


async def test_depth_is_still_limited_through_fragments(api: Api) -> None:
    ada = await a_member_with_threads(api, 1)
    level = "fragment L{i} on Member {{ conversations {{ nodes {{ sender {{ ...L{j} }} }} }} }} "
    fragments = "".join(level.format(i=i, j=i + 1) for i in range(4)) + (
        "fragment L4 on Member { id }"
    )

    body = await api.raw(f"query Deep {{ viewer {{ ...L0 }} }} {fragments}", token=ada.token)

    assert body.get("data") is None
    assert graphql_error_codes(body) == ["QUERY_TOO_DEEP"]
    assert "exceeds maximum operation depth of 12" in body["errors"][0]["message"]


async def test_aliases_are_counted_through_every_spread_of_a_fragment(api: Api) -> None:
    ada = await a_member_with_threads(api, 1)
    eight = " ".join(f"b{i}: inmailBalance" for i in range(8))
    spread = "{{ viewer {{ {spreads} }} }} fragment Eight on Member {{ {eight} }}"
    nested = "{ viewer { ...Twice ...Twice } } fragment Twice on Member { ...Eight ...Eight } "

    three = await api.raw(spread.format(spreads="...Eight " * 3, eight=eight), token=ada.token)
    four = await api.raw(nested + f"fragment Eight on Member {{ {eight} }}", token=ada.token)

    assert three.get("errors") is None
    assert graphql_error_codes(four) == ["TOO_MANY_ALIASES"]
    assert "32 aliases found. Allowed: 30" in four["errors"][0]["message"]


# --- websockets ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def served_socket(
    mongodb_uri: str, db_name: str, folder: Path, token: str
) -> AsyncIterator[GraphQLSocket]:
    """A graphql-transport-ws socket, with `token`, to one service process on the database."""
    with running(1, mongodb_uri, db_name, folder) as (server,):
        async with GraphQLSocket.open(graphql_ws_url(server.url), token, TRANSPORT_WS) as ws:
            yield ws


async def test_over_a_websocket_a_costly_query_is_an_error_of_that_operation(
    api: Api, tmp_path: Path, mongodb_uri: str, db_name: str
) -> None:
    ada = await a_member_with_threads(api, 1)
    async with served_socket(mongodb_uri, db_name, tmp_path, ada.token) as ws:
        refused = await ws.subscribe(MILLION)
        with pytest.raises(OperationError) as error:
            await ws.result(refused)
        answered = await ws.subscribe("{ viewer { name } }")
        result = await ws.result(answered)

    errors = error.value.payload
    assert [e["extensions"]["code"] for e in errors] == ["QUERY_TOO_COSTLY"]
    assert errors[0]["extensions"]["requestedQueryCost"] == 1_333_332
    assert result["data"] == {"viewer": {"name": "Ada Lovelace"}}
    assert result["extensions"]["cost"] == {"requestedQueryCost": 1, "maximumAvailable": MAXIMUM}


async def test_over_a_websocket_each_subscription_update_carries_its_cost(
    api: Api, tmp_path: Path, mongodb_uri: str, db_name: str
) -> None:
    ada = await a_member_with_threads(api, 0)
    async with served_socket(mongodb_uri, db_name, tmp_path, ada.token) as ws:
        op = await ws.subscribe("subscription { balanceChanged { balance } }")
        update = await ws.result(op)

    assert update["data"]["balanceChanged"]["balance"] == 5  # the plan's first allotment
    assert update["extensions"]["cost"] == {"requestedQueryCost": 1, "maximumAvailable": MAXIMUM}


# --- a real server process ----------------------------------------------------------------


async def test_health_checks_keep_answering_while_bombs_arrive(
    tmp_path: Path, mongodb_uri: str, db_name: str
) -> None:
    with running(1, mongodb_uri, db_name, tmp_path) as (server,):
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def send_bombs() -> list[dict[str, Any]]:
                bodies = []
                for _ in range(10):
                    response = await client.post("/graphql", json={"query": bomb(40)})
                    bodies.append(response.json())
                return bodies

            async def check_health() -> list[float]:
                waits = []
                for _ in range(20):
                    started = time.monotonic()
                    response = await client.get("/healthz")
                    waits.append(time.monotonic() - started)
                    assert response.status_code == 200
                    await asyncio.sleep(0.05)
                return waits

            bodies, waits = await asyncio.gather(send_bombs(), check_health())

    assert all(graphql_error_codes(body) == ["QUERY_TOO_LARGE"] for body in bodies)
    # The process never stalls: a bound, not a speed (expanding one bomb held it for minutes).
    assert max(waits) < 10


# --- the document's text: its length and its lines, bounded before it is parsed ------------

MAX_LENGTH = 32_768  # INMAIL_MAX_QUERY_LENGTH's default, in code points
MAX_LINES = 2_000  # INMAIL_MAX_QUERY_LINES's default
TOO_LONG = f"Syntax Error: Source contains more than {MAX_LENGTH} code points. Parsing aborted."
TOO_MANY_LINES = f"Syntax Error: Document contains more than {MAX_LINES} lines. Parsing aborted."
SEND = "mutation($i: SendInMailInput!) { sendInMail(input: $i) { creditsLeft errors { code } } }"


def of_length(document: str, length: int) -> str:
    """`document` and a comment after it, `length` code points in all: the comment's are two
    bytes each in UTF-8, so a bound in bytes would refuse a document this one allows."""
    return document + "\n#" + "é" * (length - len(document) - 2)


def of_lines(document: str, lines: int) -> str:
    """`document` (one line) after empty lines, `lines` lines in all, their breaks of the three
    kinds GraphQL knows in turn (a lone `\\r` never just before a `\\n`: the two are one)."""
    breaks = ("\n", "\r", "\r\n")
    return "".join(breaks[i % 3] for i in range(lines - 1)) + document


TEXT_BOUNDS = pytest.mark.parametrize(
    ("padded", "bound", "message"),
    [(of_length, MAX_LENGTH, TOO_LONG), (of_lines, MAX_LINES, TOO_MANY_LINES)],
    ids=["length", "lines"],
)


@TEXT_BOUNDS
async def test_a_document_past_a_bound_of_its_text_is_refused_and_runs_nothing(
    api: Api, padded: Callable[[str, int], str], bound: int, message: str
) -> None:
    ada, grace = await ada_and_grace(api)
    balance = await api.balance(ada)

    def sending(key: str) -> dict[str, Any]:
        return {
            "i": {"recipientId": grace.id, "subject": "Hi", "body": "Hello", "idempotencyKey": key}
        }

    over = await api.raw(padded(SEND, bound + 1), sending(new_key()), ada.token)
    balance_after_over = await api.balance(ada)
    at = await api.raw(padded(SEND, bound), sending(new_key()), ada.token)

    assert over.get("data") is None
    assert [(e["message"], e["extensions"]["code"]) for e in over["errors"]] == [
        (message, "GRAPHQL_PARSE_FAILED")
    ]
    assert balance_after_over == balance  # sendInMail never ran
    assert at.get("errors") is None, at
    assert at["data"]["sendInMail"] == {"creditsLeft": balance - 1, "errors": []}


async def test_the_line_refusal_points_at_the_first_line_past_the_bound(api: Api) -> None:
    body = await api.raw(of_lines("{ now }", MAX_LINES + 5))

    assert body["errors"][0]["locations"] == [{"line": MAX_LINES + 1, "column": 1}]


async def test_half_a_million_line_breaks_before_a_hundred_errors_are_refused_unvalidated(
    api: Api,
) -> None:
    """Each of the 100 validation errors of 120 unknown fields would be located by a loop over
    the 500,000 line breaks before it (seconds of CPU): the document is refused for its lines
    before it is parsed, let alone validated."""
    fields = " ".join(f"f{i}" for i in range(120))

    body = await api.raw("\n" * 500_000 + f"{{ {fields} }}")

    assert body.get("data") is None
    assert [(e["message"], e["extensions"]["code"]) for e in body["errors"]] == [
        (TOO_MANY_LINES, "GRAPHQL_PARSE_FAILED")
    ]


def unknown_fields_around(literal: str, fields: int = 100) -> str:
    keys = " ".join(f"k{i}: 1" for i in range(fields))
    return f"mutation {{ createMember(input: {{ {keys} z: {literal} }}) {{ errors {{ code }} }} }}"


async def test_errors_about_a_large_literal_quote_only_its_start(api: Api) -> None:
    """graphql-core quotes an input object whole in the error about each unknown field of it:
    100 unknown fields around a list of 1,680 items (4 KB, no token) answered 1.3 MB of errors
    after 0.4 s of CPU, and the validation cache kept them. Each quote is now the literal's
    first characters, and the answer a few kilobytes."""
    document = unknown_fields_around("[" + " ".join(["1"] * 1680) + "]")
    assert len(document) < 5_000

    response = await api.post(document)
    body = response.json()

    assert body.get("data") is None
    messages = [e["message"] for e in body["errors"]]
    assert len(messages) > 99  # graphql-core's own cap of validation errors
    quote = document[document.index("{ k0") :][:QUOTED_LITERAL] + "…"
    assert (
        "Expected value of type 'CreateMemberInput' not to include unknown field 'k0', found: "
        f"{quote}."
    ) in messages
    assert max(len(m) for m in messages) < 300
    assert len(response.content) < 50_000


async def test_errors_about_a_short_literal_quote_it_whole_as_graphql_core_prints_it(
    api: Api,
) -> None:
    body = await api.raw(
        "mutation { createMember(input: { k0: 1, name: 2, plan: BASIC }) { errors { code } } }"
    )

    assert [e["message"] for e in body["errors"]] == [
        "String cannot represent a non string value: 2",
        "Expected value of type 'CreateMemberInput' not to include unknown field 'k0', found: "
        "{ k0: 1, name: 2, plan: BASIC }.",
    ]


# A variable found wrong by its type, in each kind of input: the value is quoted as the JSON it
# came in, as graphql-js quotes it (graphql-core wrote `True`, `None`, `{'$ne': None}`).
WRONG_VARIABLES = [
    ("Int", "viewer { conversations(first: $v) { totalCount } }", True,
     "Int cannot represent non-integer value: true"),
    ("Int", "viewer { conversations(first: $v) { totalCount } }", {"$ne": None},
     'Int cannot represent non-integer value: {"$ne": null}'),
    ("Int", "viewer { conversations(first: $v) { totalCount } }", "12",
     'Int cannot represent non-integer value: "12"'),
    ("ID!", "member(id: $v) { id }", [1, "a", None, False, 1.5, {"a": [2]}],
     'ID cannot represent value: [1, "a", null, false, 1.5, {"a": [...]}]'),
    ("Boolean", "viewer { notifications(unreadOnly: $v) { totalCount } }", 1,
     "Boolean cannot represent a non boolean value: 1"),
    ("ConversationState", "viewer { conversations(state: $v) { totalCount } }", 7,
     "Enum 'ConversationState' cannot represent non-string value: 7."),
    ("ConversationState", "viewer { conversations(state: $v) { totalCount } }", "OPEN",
     "Value \"OPEN\" does not exist in 'ConversationState' enum."),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "selection", "value", "words"), WRONG_VARIABLES)
async def test_a_wrong_variable_is_quoted_as_the_json_it_came_in(
    api: Api, kind: str, selection: str, value: Any, words: str
) -> None:
    body = await api.raw(f"query($v: {kind}) {{ {selection} }}", {"v": value}, api.admin)

    assert body.get("data") is None
    [error] = body["errors"]
    assert error["message"] == f"Variable '$v' has invalid value: {words}"
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


async def test_an_unknown_enum_name_in_a_variable_is_quoted_by_its_start(api: Api) -> None:
    """graphql-core wrote the unknown name into its message whole: a 200 KB name answered
    200 KB."""
    response = await api.post(
        "query($v: ConversationState) { viewer { conversations(state: $v) { totalCount } } }",
        {"v": "Q" * 200_000},
        api.admin,
    )

    [error] = response.json()["errors"]
    assert error["message"] == (
        "Variable '$v' has invalid value: "
        f"Value \"{'Q' * QUOTED_LITERAL}\"… does not exist in 'ConversationState' enum."
    )
    assert len(response.content) < 1_000


async def test_an_unknown_field_of_a_variable_named_at_length_is_refused_unquoted(
    api: Api,
) -> None:
    """graphql-core names an unknown field of an input whole: a field name of 200 KB in a
    variable was answered 200 KB, to a caller without a token too."""
    response = await api.post(
        "mutation($v: CreateMemberInput!) { createMember(input: $v) { member { id } } }",
        {"v": {"name": "Ada", "plan": "BASIC", "Z" * 200_000: 1}},
    )

    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "field name over" in error["message"]
    assert len(response.content) < 1_000


async def test_an_unknown_member_id_is_quoted_by_its_start(api: Api) -> None:
    """An admin's unknown memberId is named in the refusal: briefly, as JSON quotes it (a
    900 KB id was answered whole)."""
    response = await api.post(
        "query($m: ID!) { creditLots(memberId: $m) { totalCount } }",
        {"m": "7" * 200_000},
        api.admin,
    )

    [error] = response.json()["errors"]
    assert error["message"] == f'memberId: no member with id "{"7" * QUOTED_LITERAL}"….'
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert len(response.content) < 1_000


async def test_a_refused_document_is_not_kept_by_the_parser_cache(api: Api) -> None:
    """The parse cache keeps the documents it parsed, whole: a refused one never reaches it.
    The document at the bound, which is kept, shows that the count would see one that was."""
    cache = cast("functools._lru_cache_wrapper[DocumentNode]", _get_parse_cache(PARSED_DOCUMENTS))
    cache.cache_clear()

    kept = await api.raw(of_length("{ now }", MAX_LENGTH))
    refused = [
        await api.raw(padded(f"{{ now }} # {i}", size))
        for i in range(10)
        for padded, size in ((of_length, 150_000), (of_lines, MAX_LINES + 1))
    ]

    assert kept.get("errors") is None, kept
    assert all(graphql_error_codes(body) == ["GRAPHQL_PARSE_FAILED"] for body in refused)
    assert cache.cache_info().currsize == 1


@TEXT_BOUNDS
async def test_over_a_websocket_a_document_past_a_bound_of_its_text_fails_to_parse(
    mongodb_uri: str,
    db_name: str,
    protocol: str,
    padded: Callable[[str, int], str],
    bound: int,
    message: str,
) -> None:
    """As any document that does not parse: the operation is answered with the error, and
    the document at the bound is served on the same socket."""
    viewer = "{ viewer { name } }"
    async with serve_api(settings_for_tests(), Mongo.connect(mongodb_uri, db_name)) as live:
        ada = await live.api.create_member("Ada Lovelace")
        async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
            refused = await ws.subscribe(padded(viewer, bound + 1))
            with pytest.raises(OperationError) as error:
                await ws.result(refused)
            served = await ws.result(await ws.subscribe(padded(viewer, bound)))

    payload = error.value.payload
    errors = payload if isinstance(payload, list) else [payload]
    assert [(e["message"], e["extensions"]["code"]) for e in errors] == [
        (message, "GRAPHQL_PARSE_FAILED")
    ]
    assert served["data"] == {"viewer": {"name": "Ada Lovelace"}}
