"""Input no code path expected is a clear client error, never "Unexpected error." (SPEC 8).

Lone UTF-16 surrogates in every string and id argument of every root field (the list is made
from the schema, so a new field is covered the day it is added), JSON nested thousands deep,
tokens that break the token rules, and tokens whose member does not exist.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import jwt
import pytest

from inmail.endpoint.json_text import MAX_JSON_DEPTH
from inmail.endpoint.media_types import MAX_CONTENT_TYPE_LENGTH
from schema_args import positions
from support import TEST_SECRET, Api, graphql_error_codes

LONE_SURROGATE = "\ud800"
SURROGATE_CASES = [
    pytest.param(p.operation, p.field, p.document(), p.variables(LONE_SURROGATE), id=p.name)
    for p in positions(text_only=True)
]


def test_the_surrogate_cases_cover_the_fields_the_issue_names() -> None:
    covered = {case.values[1] for case in SURROGATE_CASES}
    named = {"sendInMail", "purchaseInMailCredits", "createMember", "conversation", "compose"}
    assert named <= covered
    assert "creditLots" in covered


@pytest.mark.parametrize(("operation", "field", "document", "variables"), SURROGATE_CASES)
async def test_a_lone_surrogate_in_any_text_argument_is_a_client_error_and_logs_nothing(
    api: Api,
    caplog: pytest.LogCaptureFixture,
    operation: str,
    field: str,
    document: str,
    variables: dict[str, Any],
) -> None:
    ada = await api.create_member("Ada Lovelace")
    caplog.clear()
    refused_as_input = 0
    for token in (ada.token, api.admin):
        response = await api.client.post(
            "/graphql",
            content=json.dumps({"query": document, "variables": variables}),
            headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert "Unexpected error." not in response.text
        if operation == "mutation" and graphql_error_codes(body) == ["FORBIDDEN"]:
            continue  # this role may not call it at all (markNotificationsRead for an admin)
        if operation == "mutation":
            assert body.get("errors") is None, body
            errors = body["data"][field]["errors"]
            assert [e["code"] for e in errors] == ["INVALID_INPUT"], body
            assert errors[0]["field"] is not None
            refused_as_input += 1
        else:
            assert graphql_error_codes(body) == ["BAD_USER_INPUT"], body
            refused_as_input += 1
    assert refused_as_input >= 1, "at least one role reaches the input check"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []


async def test_a_lone_surrogate_in_a_send_changes_nothing(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace")
    grace = await api.create_member("Grace Hopper")
    before = await api.balance(ada)

    send = {"recipientId": grace.id, "subject": "Hello \ud83d there", "body": "Coffee?"}
    response = await api.client.post(
        "/graphql",
        content=json.dumps(
            {
                "query": "mutation($i: SendInMailInput!) "
                "{ sendInMail(input: $i) { errors { code field } } }",
                "variables": {"i": {**send, "idempotencyKey": "coffee-1"}},
            }
        ),
        headers={"Authorization": f"Bearer {ada.token}", "content-type": "application/json"},
    )

    errors = response.json()["data"]["sendInMail"]["errors"]
    assert [(e["code"], e["field"]) for e in errors] == [("INVALID_INPUT", "subject")]
    assert await api.balance(ada) == before
    assert await api.container.mongo.c.conversations.count_documents({}) == 0


async def test_json_nested_five_thousand_deep_is_a_400_with_a_json_body_and_a_request_id(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    deep = "[" * 5000 + "]" * 5000
    body = '{"query": "{ now }", "variables": {"v": ' + deep + "}}"

    response = await api.client.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    assert graphql_error_codes(response.json()) == ["BAD_REQUEST"]
    assert [r for r in caplog.records if r.exc_info] == []


def _nested(depth: int) -> str:
    """A request whose JSON nests `depth` deep: its object, `variables`, then lists."""
    lists = depth - 2
    return '{"query": "{ now }", "variables": {"v": ' + "[" * lists + "]" * lists + "}}"


async def test_json_past_its_nesting_bound_is_refused_whatever_the_recursion_limit(
    api: Api,
) -> None:
    """The bound is the service's own (MAX_JSON_DEPTH), not the interpreter's recursion limit,
    which anything in the process may raise."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        answers = {
            depth: await api.client.post(
                "/graphql", content=_nested(depth), headers={"content-type": "application/json"}
            )
            for depth in (MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 5000)
        }
    finally:
        sys.setrecursionlimit(limit)

    assert answers[MAX_JSON_DEPTH].status_code == 200, answers[MAX_JSON_DEPTH].text
    assert "now" in answers[MAX_JSON_DEPTH].json()["data"]
    for depth in (MAX_JSON_DEPTH + 1, 5000):
        assert answers[depth].status_code == 400
        assert graphql_error_codes(answers[depth].json()) == ["BAD_REQUEST"]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_content_type_too_long_to_read_is_refused_unread(api: Api, method: str) -> None:
    """Python's parser of the header takes time in the square of its length: past
    MAX_CONTENT_TYPE_LENGTH it is not read at all."""
    long_type = 'application/json;"' + ";" * 60_000
    response = await api.client.request(
        method,
        "/graphql",
        params={"query": "{ now }"} if method == "GET" else None,
        content=None if method == "GET" else '{"query": "{ now }"}',
        headers={"content-type": long_type},
    )

    assert response.status_code == 415
    assert graphql_error_codes(response.json()) == ["UNSUPPORTED_MEDIA_TYPE"]
    assert str(MAX_CONTENT_TYPE_LENGTH) in response.json()["errors"][0]["message"]


async def test_several_operations_past_the_line_bound_are_refused_as_too_long_not_parsed(
    api: Api,
) -> None:
    lines = api.container.settings.max_query_lines
    query = "\n" * lines + "query a { now } query b { now }"
    response = await api.client.post("/graphql", json={"query": query})

    assert graphql_error_codes(response.json()) == ["GRAPHQL_PARSE_FAILED"]
    assert f"more than {lines} lines" in response.json()["errors"][0]["message"]


async def test_a_body_that_is_not_json_gets_a_json_refusal(api: Api) -> None:
    response = await api.client.post(
        "/graphql", content=b"{ now", headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert graphql_error_codes(response.json()) == ["BAD_REQUEST"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])
async def test_a_body_in_another_encoding_than_utf8_is_refused_not_guessed_at(
    api: Api, encoding: str
) -> None:
    """JSON between systems is UTF-8 (RFC 8259 8.1). Read as UTF-16 here, a body could say one
    thing to a proxy in front that reads it as UTF-8 and another to the service."""
    body = json.dumps({"query": "{ now }"}).encode(encoding)
    response = await api.client.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert graphql_error_codes(response.json()) == ["BAD_REQUEST"]
    # UTF-16-LE without a byte order mark is valid UTF-8 (NULs between the letters), which
    # then does not parse as JSON; the others are no UTF-8 at all, or start with the mark.
    said = {"utf-8-sig": "byte order mark", "utf-16-le": "Unable to parse"}.get(
        encoding, "not UTF-8"
    )
    assert said in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("charset", "status"),
    [
        *[("utf-8", 200), ("UTF-8", 200), ('"utf-8"', 200), ("utf8", 200)],
        *[("latin-1", 415), ("utf-16", 415), ("", 415)],
        *[("latin-1; charset=utf-8", 415), ("utf-8; charset=utf-8", 415)],
    ],
)
async def test_a_charset_other_than_utf8_is_an_unsupported_media_type(
    api: Api, charset: str, status: int
) -> None:
    response = await api.client.post(
        "/graphql",
        content=b'{"query": "{ now }"}',
        headers={"content-type": f"application/json; charset={charset}"},
    )

    assert response.status_code == status, response.text
    if status == 415:
        assert graphql_error_codes(response.json()) == ["UNSUPPORTED_MEDIA_TYPE"]
        assert "read as UTF-8" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    "query",
    [
        "{ viewer { id } }",
        '{ compose(recipientId: "000000000000000000000001") { canSend } }',
        "{ viewer { creditLots(first: 1) { totalCount } } }",
    ],
)
async def test_a_token_whose_member_does_not_exist_is_unauthenticated_on_reads(
    api: Api, query: str, caplog: pytest.LogCaptureFixture
) -> None:
    ghost = api.token("000000000000000000000000")

    body = await api.raw(query, token=ghost)

    assert graphql_error_codes(body) == ["UNAUTHENTICATED"]
    assert "does not exist" in body["errors"][0]["message"]
    assert [r for r in caplog.records if r.exc_info] == []


@pytest.mark.parametrize("subject", ["\ud800", "m1\x00", "\x9b"])
async def test_a_token_whose_subject_is_no_text_a_query_can_carry_is_unauthenticated(
    api: Api, subject: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A signed token whose `sub` holds a lone surrogate (which no database query can carry)
    or a control character is refused by its subject, on reads and mutations alike, with
    nothing logged as a failure."""
    token = api.token(subject)

    read = await api.raw("{ viewer { id } }", token=token)
    bought = await api.raw(
        'mutation { purchaseInMailCredits(input: {quantity: 1, idempotencyKey: "k"}) '
        "{ errors { code } } }",
        token=token,
    )

    for body in (read, bought):
        assert graphql_error_codes(body) == ["UNAUTHENTICATED"], body
        assert "the token's subject is not a member id" in body["errors"][0]["message"]
    assert [r for r in caplog.records if r.exc_info] == []


async def test_a_token_whose_member_does_not_exist_cannot_send_or_buy(api: Api) -> None:
    grace = await api.create_member("Grace Hopper")
    ghost = api.token("000000000000000000000000")

    sent = await api.raw(
        "mutation($i: SendInMailInput!) { sendInMail(input: $i) { errors { code } } }",
        {"i": {"recipientId": grace.id, "subject": "s", "body": "b", "idempotencyKey": "k1"}},
        ghost,
    )
    bought = await api.raw(
        "mutation($i: PurchaseInMailCreditsInput!) "
        "{ purchaseInMailCredits(input: $i) { errors { code } } }",
        {"i": {"quantity": 1, "idempotencyKey": "k2"}},
        ghost,
    )

    assert graphql_error_codes(sent) == ["UNAUTHENTICATED"]
    assert graphql_error_codes(bought) == ["UNAUTHENTICATED"]


async def test_a_member_erased_from_the_database_after_the_process_met_them_is_unknown(
    api: Api,
) -> None:
    """The API deletes no member, but an operator may erase one in the database: their token,
    seen before (and so not looked up on every request), is refused as soon as a request
    finds the record missing, on reads and writes alike, and from then on."""
    ada = await api.create_member("Ada Lovelace")
    grace = await api.create_member("Grace Hopper")
    assert (await api.gql("{ viewer { id } }", token=ada.token))["viewer"] == {"id": ada.id}
    assert (await api.gql("{ viewer { id } }", token=grace.token))["viewer"] == {"id": grace.id}
    erased = await api.container.mongo.c.members.delete_many({"_id": {"$in": [ada.id, grace.id]}})
    assert erased.deleted_count == 2

    read = await api.raw("{ now viewer { id } }", token=ada.token)
    sent = await api.raw(
        "mutation($i: SendInMailInput!) { sendInMail(input: $i) { errors { code } } }",
        {"i": {"recipientId": ada.id, "subject": "s", "body": "b", "idempotencyKey": "k1"}},
        grace.token,
    )
    # Neither reads the member's record: refused because the two requests above found it gone.
    marked = "mutation { markNotificationsRead(input: { ids: [] }) { errors { code } } }"
    after_read = await api.raw(marked, token=ada.token)
    after_send = await api.raw(marked, token=grace.token)

    for body in (read, sent, after_read, after_send):
        assert graphql_error_codes(body) == ["UNAUTHENTICATED"], body
        assert "does not exist" in body["errors"][0]["message"]
    assert read["data"] == {"now": read["data"]["now"], "viewer": None}
    assert await api.container.mongo.c.conversations.count_documents({}) == 0


@pytest.mark.parametrize(
    "mutation",
    [
        "mutation { cancelSubscription { errors { code } } }",
        "mutation { changePlan(input: { plan: BASIC }) { errors { code } } }",
        'mutation { updatePaymentMethod(input: { brand: "Visa", last4: "4242", '
        "expMonth: 12, expYear: 2030 }) { errors { code } } }",
    ],
    ids=["cancel", "change plan", "card"],
)
async def test_a_mutation_on_the_erased_members_own_record_refuses_their_token(
    api: Api, mutation: str
) -> None:
    """As a send or a purchase does; an admin acting on an erased member is told it is not
    found, and keeps their credentials."""
    ada = await api.create_member("Ada Lovelace")
    assert (await api.gql("{ viewer { id } }", token=ada.token))["viewer"] == {"id": ada.id}
    await api.container.mongo.c.members.delete_one({"_id": ada.id})

    acted = await api.raw(mutation, token=ada.token)
    marked = await api.raw(
        "mutation { markNotificationsRead(input: { ids: [] }) { errors { code } } }",
        token=ada.token,
    )
    by_admin = await api.raw(
        "mutation($m: ID!) { changePlan(input: { memberId: $m, plan: BASIC }) "
        "{ errors { code field } } }",
        {"m": ada.id},
        api.admin,
    )

    assert graphql_error_codes(acted) == ["UNAUTHENTICATED"], acted
    assert graphql_error_codes(marked) == ["UNAUTHENTICATED"], marked
    assert by_admin["data"]["changePlan"]["errors"] == [{"code": "NOT_FOUND", "field": "memberId"}]
    assert (await api.raw("{ now }", token=api.admin)).get("errors") is None


@pytest.mark.parametrize(
    "operation",
    [
        "{ now viewer { id } }",
        "mutation { markNotificationsRead(input: { ids: [] }) { errors { code } } }",
    ],
    ids=["query", "mutation"],
)
async def test_a_token_whose_member_does_not_exist_is_answered_as_a_bad_signature_is(
    api: Api, operation: str
) -> None:
    """Both are refused credentials: field errors in a 200, the same status, data and paths,
    whether the refusal is found before the operation runs or after its resolvers."""
    forged = jwt.encode(
        {"sub": "000000000000000000000000", "role": "member", "exp": int(time.time()) + 3600},
        "not-the-service-secret-" * 2,
        algorithm="HS256",
    )
    answers = []
    for token in (api.token("000000000000000000000000"), forged):
        response = await api.client.post(
            "/graphql",
            json={"query": operation},
            headers={
                "Accept": "application/graphql-response+json",
                "Authorization": f"Bearer {token}",
            },
        )
        body = response.json()
        answers.append(
            (
                response.status_code,
                body.get("data"),
                [(e["path"], e["extensions"]["code"]) for e in body["errors"]],
            )
        )

    ghost, bad_signature = answers
    assert ghost[0] == 200, ghost
    assert [code for _, code in ghost[2]] == ["UNAUTHENTICATED"]
    assert ghost[:1] + ghost[2:] == bad_signature[:1] + bad_signature[2:]
    if operation.startswith("{"):
        assert set(ghost[1]) == {"now", "viewer"}
        assert ghost[1]["viewer"] is None
        assert ghost[1]["now"]
        assert bad_signature[1]["now"]


async def test_anonymous_fields_still_answer_a_request_with_a_bad_token(api: Api) -> None:
    body = await api.raw("{ now }", token=api.token("000000000000000000000000"))

    assert body["data"]["now"]
    assert not body.get("errors")


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "admin", "role": "admin", "iat": now, "exp": now + 3600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(_claims(exp=str(int(time.time()) + 3600)), id="exp-as-a-string"),
        pytest.param(_claims(exp=1e20), id="exp-1e20"),
        pytest.param(_claims(exp=None), id="no-exp"),
        pytest.param(_claims(exp=int(time.time()) + 25 * 3600), id="a-25-hour-lifetime"),
        pytest.param(_claims(iat=None, exp=int(time.time()) + 25 * 3600), id="25-hours-no-iat"),
        pytest.param(_claims(padding="x" * 200_000), id="a-200-KB-token"),
        # Expired, or not valid yet, and breaking another of PyJWT's claim rules besides.
        pytest.param(_claims(exp=int(time.time()) - 3600, aud="other"), id="expired-with-aud"),
        pytest.param(_claims(exp=int(time.time()) - 3600, sub=5), id="expired-sub-a-number"),
        pytest.param(_claims(exp=int(time.time()) - 3600, jti=7), id="expired-jti-a-number"),
        pytest.param(_claims(nbf=int(time.time()) + 3600, aud="other"), id="future-with-aud"),
    ],
)
async def test_tokens_that_break_the_token_rules_are_unauthenticated_over_http(
    api: Api, claims: dict[str, Any]
) -> None:
    token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")

    body = await api.raw("{ viewer { id } }", token=token)

    assert graphql_error_codes(body) == ["UNAUTHENTICATED"]


async def test_a_token_issued_a_second_in_the_future_is_accepted_over_http(api: Api) -> None:
    now = int(time.time())
    token = jwt.encode(
        {"sub": "admin", "role": "admin", "iat": now + 1, "nbf": now + 1, "exp": now + 3600},
        TEST_SECRET,
        algorithm="HS256",
    )

    body = await api.raw('{ member(id: "000000000000000000000000") { id } }', token=token)

    assert not body.get("errors"), body


CREATE = (
    "mutation($i: CreateMemberInput!) { createMember(input: $i) "
    "{ member { name headline } errors { code field message } } }"
)


@pytest.mark.parametrize(
    ("member", "field", "words"),
    [
        ({"name": "\u3164"}, "name", "name must not be blank."),
        ({"name": "\u200b\u200b"}, "name", "name must not be blank."),
        ({"name": "Ada\x00Lovelace"}, "name", "found U+0000"),
        ({"name": "Ada", "headline": "Analyst\x1b[31m"}, "headline", "found U+001B"),
    ],
    ids=["hangul filler", "zero-width", "nul", "escape"],
)
async def test_a_name_or_headline_that_shows_nothing_or_holds_controls_creates_no_member(
    api: Api, member: dict[str, str], field: str, words: str
) -> None:
    before = await api.container.mongo.c.members.count_documents({})

    created = await api.payload(
        "createMember", CREATE, {"i": {"plan": "BASIC", **member}}, api.admin
    )

    [error] = created["errors"]
    assert (error["code"], error["field"]) == ("INVALID_INPUT", field)
    assert words in error["message"]
    assert created["member"] is None
    assert await api.container.mongo.c.members.count_documents({}) == before


async def test_a_headline_that_shows_nothing_is_no_headline(api: Api) -> None:
    created = await api.payload(
        "createMember",
        CREATE,
        {"i": {"plan": "BASIC", "name": "Ada", "headline": "\u200b "}},
        api.admin,
    )
    assert created == {"member": {"name": "Ada", "headline": None}, "errors": []}


HUGE = "9" * 5000  # past the 4,300 digits Python converts to an int


@pytest.mark.parametrize(
    ("method", "request_parts"),
    [
        ("POST", {"content": '{"query": "{ now }", "variables": {"n": ' + HUGE + "}}"}),
        ("POST", {"content": '{"query": "{ now }", "extensions": {"n": ' + HUGE + "}}"}),
        ("GET", {"params": {"query": "{ now }", "variables": '{"n": ' + HUGE + "}"}}),
        ("GET", {"params": {"query": "{ now }", "extensions": '{"n": ' + HUGE + "}"}}),
    ],
    ids=["post-variables", "post-extensions", "get-variables", "get-extensions"],
)
async def test_a_json_number_of_thousands_of_digits_is_a_bad_request_and_logs_nothing(
    api: Api, caplog: pytest.LogCaptureFixture, method: str, request_parts: dict[str, Any]
) -> None:
    message = await _refused_json(api, caplog, method, request_parts)
    assert "digits" in message


@pytest.mark.parametrize(
    ("method", "request_parts", "key"),
    [
        # A proxy that keeps the first "query" would see `{ now }`; the service, the second.
        ("POST", {"content": '{"query": "{ now }", "query": "{ plans { type } }"}'}, "query"),
        ("POST", {"content": '{"query": "{ now }", "variables": {"n": 1, "n": 2}}'}, "n"),
        ("GET", {"params": {"query": "{ now }", "variables": '{"a": {"b": 1, "b": 2}}'}}, "b"),
    ],
    ids=["post-query", "post-variables", "get-variables-nested"],
)
async def test_a_json_object_naming_a_key_twice_is_a_bad_request(
    api: Api, caplog: pytest.LogCaptureFixture, method: str, request_parts: dict[str, Any], key: str
) -> None:
    message = await _refused_json(api, caplog, method, request_parts)
    assert f'names the key "{key}" twice' in message


@pytest.mark.parametrize(
    ("method", "request_parts", "said"),
    [
        ("POST", {"content": '{"query": "{ now }", "variables": {"x": NaN}}'}, "NaN is no"),
        ("POST", {"content": '{"query": "{ now }", "variables": {"x": -Infinity}}'}, "Infinity"),
        ("POST", {"content": '{"query": "{ now }", "variables": {"x": 1e999999}}'}, "too large"),
        ("GET", {"params": {"query": "{ now }", "variables": '{"x": Infinity}'}}, "Infinity"),
    ],
    ids=["nan", "minus-infinity", "past-a-double", "get-infinity"],
)
async def test_a_number_json_does_not_have_is_a_bad_request(
    api: Api,
    caplog: pytest.LogCaptureFixture,
    method: str,
    request_parts: dict[str, Any],
    said: str,
) -> None:
    """RFC 8259 has no NaN nor infinities: Python's reader takes them (and reads 1e999999 as
    infinity), and a Float variable would then carry one into the service."""
    message = await _refused_json(api, caplog, method, request_parts)
    assert said in message


async def test_a_body_of_too_many_arrays_is_refused_before_it_is_read(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Under the body limit, a mebibyte of empty lists cost 140 ms to read, each a list."""
    lists = ",".join(["[]"] * 300_000)
    body = '{"query": "{ now }", "variables": {"x": [' + lists + "]}}"
    message = await _refused_json(api, caplog, "POST", {"content": body})
    assert "more than 10000 opening brackets" in message


@pytest.mark.parametrize("name", ["query", "variables", "operationName"])
async def test_a_get_naming_a_request_parameter_twice_is_a_bad_request(
    api: Api, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """As with a JSON key named twice: a proxy that reads the first and the service the last
    would not check the same request."""
    twice = {
        "query": [("query", "{ now }"), ("query", "{ plans { type } }")],
        "variables": [("query", "{ now }"), ("variables", "{}"), ("variables", '{"a": 1}')],
        "operationName": [
            ("query", "query A { now }"),
            ("operationName", "A"),
            ("operationName", "A"),
        ],
    }[name]
    message = await _refused_json(api, caplog, "GET", {"params": twice})
    assert message == f"The `{name}` parameter is given more than once."


async def _refused_json(
    api: Api, caplog: pytest.LogCaptureFixture, method: str, request_parts: dict[str, Any]
) -> str:
    """Send a request whose JSON is refused: a 400 that logs nothing; its error's message."""
    caplog.clear()
    response = await api.client.request(
        method,
        "/graphql",
        headers={"content-type": "application/json", "accept": "application/json"},
        **request_parts,
    )
    assert response.status_code == 400, response.text
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    message: str = response.json()["errors"][0]["message"]
    return message


@pytest.mark.parametrize(
    "document",
    [
        f"{{ creditLots(first: {HUGE}) {{ totalCount }} }}",
        f"{{ creditLots(first: -{HUGE}) {{ totalCount }} }}",
        f'mutation {{ purchaseInMailCredits(input: {{quantity: {HUGE}, idempotencyKey: "k"}}) '
        "{ errors { code } } }",
    ],
    ids=["page-size", "negative-page-size", "quantity"],
)
async def test_an_int_literal_of_thousands_of_digits_is_a_validation_error_naming_no_internals(
    api: Api, caplog: pytest.LogCaptureFixture, document: str
) -> None:
    ada = await api.create_member("Ada Lovelace")
    caplog.clear()
    response = await api.client.post(
        "/graphql",
        json={"query": document},
        headers={"Authorization": f"Bearer {ada.token}", "accept": "application/json"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert graphql_error_codes(body) == ["GRAPHQL_VALIDATION_FAILED"], body
    assert "at most 20 digits" in body["errors"][0]["message"]
    assert "set_int_max_str_digits" not in response.text
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
