"""Who may see and do what (SPEC 8): tokens, private fields, admin-only mutations, hostile input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from support import TEST_SECRET, Api, Person, charges_of, graphql_error_codes

PRIVATE_FIELDS = {
    "inmailBalance": "inmailBalance",
    "creditLots": "creditLots { totalCount }",
    "ledger": "ledger { totalCount }",
    "subscription": "subscription { status paymentMethod { last4 } }",
    "conversations": "conversations { totalCount }",
}


def signed(claims: dict[str, Any], secret: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def claims_for(member_id: str, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": member_id,
        "role": "member",
        "exp": datetime.now(UTC) + timedelta(hours=1),
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def no_data(body: dict[str, Any]) -> bool:
    """Nothing came back: no data at all, or only nulls at the root."""
    return not any((body.get("data") or {}).values())


async def two_members(api: Api) -> tuple[Person, Person]:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", headline="Analyst")
    grace = await api.create_member("Grace Hopper", "PREMIUM_BUSINESS", headline="Admiral")
    return ada, grace


ANONYMOUS_ATTEMPTS = [
    "{ viewer { id } }",
    '{ member(id: "x") { name } }',
    '{ conversation(id: "x") { id } }',
    "{ creditLots { totalCount } }",
    '{ compose(recipientId: "x") { canSend } }',
    'mutation { sendInMail(input: {recipientId: "x", subject: "s", body: "b", '
    'idempotencyKey: "k"}) { errors { code } } }',
    'mutation { purchaseInMailCredits(input: {quantity: 1, idempotencyKey: "k"}) '
    "{ errors { code } } }",
    "mutation { cancelSubscription { errors { code } } }",
]


async def test_an_anonymous_request_gets_unauthenticated(api: Api) -> None:
    for query in ANONYMOUS_ATTEMPTS:
        body = await api.raw(query)

        assert graphql_error_codes(body) == ["UNAUTHENTICATED"], query
        assert no_data(body), query


@pytest.mark.parametrize("field", list(PRIVATE_FIELDS))
async def test_another_members_private_fields_are_forbidden_and_carry_no_data(
    api: Api, field: str
) -> None:
    ada, grace = await two_members(api)

    body = await api.raw(
        f"query($id: ID!) {{ member(id: $id) {{ name {PRIVATE_FIELDS[field]} }} }}",
        {"id": grace.id},
        ada.token,
    )

    assert graphql_error_codes(body) == ["FORBIDDEN"]
    assert body["errors"][0]["path"] == ["member", field]
    assert body["data"]["member"] == {"name": "Grace Hopper", field: None}


async def test_the_owner_sees_their_own_private_fields(api: Api) -> None:
    ada, _grace = await two_members(api)
    fields = " ".join(PRIVATE_FIELDS.values())

    data = await api.gql(
        f"query($id: ID!) {{ member(id: $id) {{ {fields} }} }}", {"id": ada.id}, ada.token
    )

    assert data["member"]["inmailBalance"] == 5
    assert data["member"]["subscription"]["paymentMethod"] == {"last4": "4242"}
    assert data["member"]["creditLots"]["totalCount"] == 1


async def test_a_member_sees_another_members_public_profile(api: Api) -> None:
    ada, grace = await two_members(api)
    await api.connect(ada, grace)
    linus = await api.create_member("Linus Torvalds", "BASIC")

    data = await api.gql(
        "query($g: ID!, $l: ID!) { grace: member(id: $g) { id name headline isConnection "
        "plan { type } } linus: member(id: $l) { isConnection } }",
        {"g": grace.id, "l": linus.id},
        ada.token,
    )

    assert data["grace"] == {
        "id": grace.id,
        "name": "Grace Hopper",
        "headline": "Admiral",
        "isConnection": True,
        "plan": {"type": "PREMIUM_BUSINESS"},
    }
    assert data["linus"] == {"isConnection": False}


async def test_another_members_credit_lots_by_member_id_are_forbidden(api: Api) -> None:
    ada, grace = await two_members(api)

    body = await api.raw(
        "query($id: ID) { creditLots(memberId: $id) { totalCount } }", {"id": grace.id}, ada.token
    )

    assert graphql_error_codes(body) == ["FORBIDDEN"]
    assert body["data"] is None


async def test_private_fields_stay_private_when_reached_through_a_conversation(api: Api) -> None:
    ada, grace = await two_members(api)
    sent = await api.send(ada, grace)

    body = await api.raw(
        "query($id: ID!) { conversation(id: $id) { subject sender { name inmailBalance } } }",
        {"id": sent["conversation"]["id"]},
        grace.token,
    )

    assert graphql_error_codes(body) == ["FORBIDDEN"]
    assert body["data"]["conversation"]["sender"] == {"name": "Ada Lovelace", "inmailBalance": None}


async def test_a_conversation_is_visible_to_its_two_parties_only(api: Api) -> None:
    ada, grace = await two_members(api)
    mallory = await api.create_member("Mallory Meddler", "PREMIUM_CAREER")
    sent = await api.send(ada, grace, subject="Just between us")
    query = "query($id: ID!) { conversation(id: $id) { subject } }"
    variables = {"id": sent["conversation"]["id"]}

    seen_by = {
        "sender": await api.gql(query, variables, ada.token),
        "recipient": await api.gql(query, variables, grace.token),
        "admin": await api.gql(query, variables, api.admin),
        "stranger": await api.gql(query, variables, mallory.token),
    }

    assert seen_by["sender"]["conversation"] == {"subject": "Just between us"}
    assert seen_by["recipient"]["conversation"] == {"subject": "Just between us"}
    assert seen_by["admin"]["conversation"] == {"subject": "Just between us"}
    assert seen_by["stranger"]["conversation"] is None


async def test_an_admin_sees_every_members_private_fields(api: Api) -> None:
    ada, _grace = await two_members(api)
    fields = " ".join(PRIVATE_FIELDS.values())

    data = await api.gql(
        f"query($id: ID!) {{ member(id: $id) {{ {fields} }} "
        "creditLots(memberId: $id) { totalCount } }",
        {"id": ada.id},
        api.admin,
    )

    assert data["member"]["inmailBalance"] == 5
    assert data["member"]["ledger"]["totalCount"] == 1
    assert data["creditLots"]["totalCount"] == 1


async def test_only_admins_may_create_members(api: Api) -> None:
    ada, _grace = await two_members(api)
    before = await api.container.mongo.c.members.count_documents({})

    body = await api.raw(
        'mutation { createMember(input: {name: "Eve", plan: RECRUITER_LITE}) '
        "{ member { id } errors { code } } }",
        token=ada.token,
    )

    assert graphql_error_codes(body) == ["FORBIDDEN"]
    assert body["data"] is None
    assert await api.container.mongo.c.members.count_documents({}) == before


async def test_only_admins_may_connect_members(api: Api) -> None:
    ada, grace = await two_members(api)

    body = await api.raw(
        "mutation($i: ConnectMembersInput!) { connectMembers(input: $i) { ok } }",
        {"i": {"memberId": ada.id, "otherMemberId": grace.id}},
        ada.token,
    )

    assert graphql_error_codes(body) == ["FORBIDDEN"]
    data = await api.gql(
        "query($id: ID!) { member(id: $id) { isConnection } }", {"id": grace.id}, ada.token
    )
    assert data["member"]["isConnection"] is False


async def test_admin_mutations_refuse_unknown_ids_and_bad_input_and_change_nothing(
    api: Api,
) -> None:
    ada, _grace = await two_members(api)
    connect = (
        "mutation($i: ConnectMembersInput!) { connectMembers(input: $i) "
        "{ ok errors { code field } } }"
    )
    create = (
        "mutation($i: CreateMemberInput!) { createMember(input: $i) "
        "{ member { id } errors { code field } } }"
    )

    unknown = await api.gql(
        connect, {"i": {"memberId": ada.id, "otherMemberId": "nope"}}, api.admin
    )
    to_self = await api.gql(
        connect, {"i": {"memberId": ada.id, "otherMemberId": ada.id}}, api.admin
    )
    long_name = await api.gql(create, {"i": {"name": "N" * 101, "plan": "BASIC"}}, api.admin)
    blank_name = await api.gql(create, {"i": {"name": "  ", "plan": "BASIC"}}, api.admin)
    moved = [
        await api.gql(
            "mutation($i: ChangePlanInput!) { changePlan(input: $i) { errors { code field } } }",
            {"i": {"plan": plan, "memberId": "nope"}},
            api.admin,
        )
        for plan in ("PREMIUM_BUSINESS", "BASIC")
    ]
    lots = await api.raw(
        "query($m: ID) { creditLots(memberId: $m) { totalCount } }", {"m": "nope"}, api.admin
    )

    assert unknown["connectMembers"] == {
        "ok": False,
        "errors": [{"code": "NOT_FOUND", "field": "otherMemberId"}],
    }
    assert to_self["connectMembers"]["errors"][0]["code"] == "INVALID_INPUT"
    assert long_name["createMember"]["errors"] == [{"code": "INVALID_INPUT", "field": "name"}]
    assert blank_name["createMember"]["errors"] == [{"code": "INVALID_INPUT", "field": "name"}]
    for answer in moved:
        assert answer["changePlan"]["errors"] == [{"code": "NOT_FOUND", "field": "memberId"}]
    assert graphql_error_codes(lots) == ["BAD_USER_INPUT"]  # not a member without lots
    assert await api.container.mongo.c.members.count_documents({}) == 2
    assert await api.container.mongo.c.members.count_documents({"connections": {"$ne": []}}) == 0


# Each admin mutation with input it would refuse too: the caller is refused first.
ADMIN_MUTATIONS_WITH_BAD_INPUT: dict[str, tuple[str, dict[str, Any]]] = {
    "createMember": (
        "mutation($i: CreateMemberInput!) { createMember(input: $i) { errors { code } } }",
        {
            "name": " ",
            "plan": "LEGACY_PREMIUM",
            "monthlyAllotment": -1,
            "paymentMethod": {"brand": "", "last4": "42", "expMonth": 13, "expYear": 1999},
        },
    ),
    "connectMembers": (
        "mutation($i: ConnectMembersInput!) { connectMembers(input: $i) { ok } }",
        {"memberId": "nope", "otherMemberId": "nope"},
    ),
    "changePlan": (
        "mutation($i: ChangePlanInput!) { changePlan(input: $i) { errors { code } } }",
        {"plan": "LEGACY_PREMIUM", "monthlyAllotment": -1, "memberId": "nope"},
    ),
    "advanceClock": (
        "mutation($i: AdvanceClockInput!) { advanceClock(input: $i) { now } }",
        {"days": -1, "hours": -1},
    ),
}


def refusal_of(body: dict[str, Any]) -> list[tuple[str, str | None, list[str]]]:
    return [
        (error["message"], (error.get("extensions") or {}).get("code"), error.get("path"))
        for error in body.get("errors") or []
    ]


@pytest.mark.parametrize("mutation", list(ADMIN_MUTATIONS_WITH_BAD_INPUT))
async def test_an_admin_mutation_refuses_anyone_else_before_it_reads_its_input(
    api: Api, mutation: str
) -> None:
    ada, _grace = await two_members(api)
    query, bad_input = ADMIN_MUTATIONS_WITH_BAD_INPUT[mutation]

    anonymous = await api.raw(query, {"i": bad_input})
    by_a_member = await api.raw(query, {"i": bad_input}, ada.token)

    assert refusal_of(anonymous) == [
        ("Sign in: send 'Authorization: Bearer <token>'.", "UNAUTHENTICATED", [mutation])
    ]
    assert refusal_of(by_a_member) == [("Only admins may do this.", "FORBIDDEN", [mutation])]
    assert anonymous["data"] is by_a_member["data"] is None
    assert api.clock.now() == datetime(2026, 1, 15, 9, tzinfo=UTC)
    assert await api.container.mongo.c.members.count_documents({}) == 2


async def test_an_admin_changing_a_plan_must_name_the_member(api: Api) -> None:
    query, bad_input = ADMIN_MUTATIONS_WITH_BAD_INPUT["changePlan"]
    unnamed = {key: value for key, value in bad_input.items() if key != "memberId"}

    by_an_admin = await api.raw(query, {"i": unnamed}, api.admin)
    anonymous = await api.raw(query, {"i": unnamed})

    assert refusal_of(by_an_admin) == [
        ("This needs a member's token, not an admin's.", "FORBIDDEN", ["changePlan"])
    ]
    assert refusal_of(anonymous) == [
        ("Sign in: send 'Authorization: Bearer <token>'.", "UNAUTHENTICATED", ["changePlan"])
    ]


async def test_an_admin_is_no_member_and_cannot_send_inmail(api: Api) -> None:
    _ada, grace = await two_members(api)

    viewer = await api.gql("{ viewer { id } }", token=api.admin)
    body = await api.raw(
        "mutation($i: SendInMailInput!) { sendInMail(input: $i) { errors { code } } }",
        {"i": {"recipientId": grace.id, "subject": "s", "body": "b", "idempotencyKey": "k"}},
        api.admin,
    )

    assert viewer == {"viewer": None}
    assert graphql_error_codes(body) == ["FORBIDDEN"]


async def test_a_bad_token_is_unauthenticated_and_never_a_server_error(api: Api) -> None:
    ada, _grace = await two_members(api)
    headers = {
        "expired": f"Bearer {signed(claims_for(ada.id, exp=datetime.now(UTC) - timedelta(1)))}",
        "garbage": "Bearer not.a.jwt",
        "wrong-secret": f"Bearer {signed(claims_for(ada.id), secret='x' * 48)}",
        "alg-none": f"Bearer {jwt.encode(claims_for(ada.id), None, algorithm='none')}",
        "no-sub": f"Bearer {signed(claims_for(ada.id, sub=None))}",
        "no-exp": f"Bearer {signed({'sub': ada.id, 'role': 'member'})}",
        "exp-past-any-float": f"Bearer {signed({'sub': ada.id, 'role': 'member', 'exp': 10**400})}",
        "nbf-past-any-float": f"Bearer {signed({**claims_for(ada.id), 'nbf': -(10**400)})}",
        "unknown-role": f"Bearer {signed(claims_for(ada.id, role='superuser'))}",
        "basic-scheme": "Basic YWRhOmxvdmVsYWNl",
        "bearer-without-token": "Bearer ",
    }

    for credentials, header in headers.items():
        response = await api.client.post(
            "/graphql",
            json={"query": "{ viewer { inmailBalance } }"},
            headers={"Authorization": header},
        )

        assert response.status_code == 200, credentials
        body = response.json()
        assert graphql_error_codes(body) == ["UNAUTHENTICATED"], credentials
        assert no_data(body), credentials
        assert "Traceback" not in response.text


async def test_several_authorization_headers_are_refused_even_when_each_is_good(
    api: Api,
) -> None:
    """Which of several headers counts would depend on who reads them: a proxy in front may
    take the last, so none counts."""
    ada, grace = await two_members(api)
    headers = [("authorization", f"Bearer {ada.token}"), ("authorization", f"Bearer {grace.token}")]

    response = await api.client.post(
        "/graphql", json={"query": "{ now viewer { id } }"}, headers=httpx.Headers(headers)
    )
    same_twice = await api.client.post(
        "/graphql",
        json={"query": "{ viewer { id } }"},
        headers=httpx.Headers([headers[0], headers[0]]),
    )

    for refused in (response, same_twice):
        body = refused.json()
        assert graphql_error_codes(body) == ["UNAUTHENTICATED"]
        assert "several Authorization headers" in body["errors"][0]["message"]
        assert body["data"]["viewer"] is None
    assert response.json()["data"]["now"]


async def test_a_good_token_signed_with_the_secret_is_accepted(api: Api) -> None:
    ada, _grace = await two_members(api)
    token = signed(claims_for(ada.id))

    data = await api.gql("{ viewer { id inmailBalance } }", token=token)

    assert data["viewer"] == {"id": ada.id, "inmailBalance": 5}


async def test_a_token_for_a_member_who_does_not_exist_is_unauthenticated_and_cannot_send(
    api: Api,
) -> None:
    _ada, grace = await two_members(api)
    ghost = api.token("000000000000000000000000")

    viewer = await api.raw("{ viewer { id } }", token=ghost)
    sent = await api.raw(
        "mutation($i: SendInMailInput!) { sendInMail(input: $i) { errors { code } } }",
        {"i": {"recipientId": grace.id, "subject": "s", "body": "b", "idempotencyKey": "k"}},
        ghost,
    )

    assert graphql_error_codes(viewer) == ["UNAUTHENTICATED"]
    assert graphql_error_codes(sent) == ["UNAUTHENTICATED"]
    assert sent["data"] is None


async def test_unknown_ids_are_null_not_errors(api: Api) -> None:
    ada, _grace = await two_members(api)

    data = await api.gql(
        '{ member(id: "000000000000000000000000") { id } conversation(id: "nope") { id } }',
        token=ada.token,
    )

    assert data == {"member": None, "conversation": None}


async def test_wrong_types_get_a_clear_error_and_change_nothing(api: Api) -> None:
    ada, _grace = await two_members(api)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"q": "ten", "k": "k"}, "Int"),
        ({"q": 1.5, "k": "k"}, "Int"),
        ({"q": 2**40, "k": "k"}, "Int"),
        ({"q": 1, "k": None}, "String!"),
        ({"q": 1, "k": ["k"]}, "String"),
    ]

    for variables, fragment in cases:
        body = await api.raw(
            "mutation($q: Int!, $k: String!) { purchaseInMailCredits(input: "
            "{quantity: $q, idempotencyKey: $k}) { errors { code } } }",
            variables,
            ada.token,
        )

        assert body.get("data") is None, variables
        assert len(body["errors"]) == 1
        assert fragment in body["errors"][0]["message"]
        assert "Traceback" not in str(body)
    assert await api.balance(ada) == 5
    assert await charges_of(api, ada) == []


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("k" * 101, "must be 1 to 100 characters, not counting white space at either end"),
        ("   ", "must be 1 to 100 characters, not counting white space at either end"),
        ("key\x00one", "must not hold control characters (found U+0000)"),
        ("key\tone", "must not hold control characters (found U+0009)"),
        ("key\u0085one", "must not hold control characters (found U+0085)"),
    ],
    ids=["over 100", "blank", "a NUL", "a tab", "a next line"],
)
async def test_an_idempotency_key_too_long_blank_or_with_a_control_character_is_invalid_input(
    api: Api, key: str, words: str
) -> None:
    """A key is a token nobody reads: a control character in it is refused, not turned into
    a space (which would make `key\tone` and `key one` one key)."""
    ada, grace = await two_members(api)

    result = await api.send(ada, grace, key=key)

    assert [e["code"] for e in result["errors"]] == ["INVALID_INPUT"]
    assert result["errors"][0]["field"] == "idempotencyKey"
    assert words in result["errors"][0]["message"]
    assert await api.balance(ada) == 5


async def test_a_query_nested_too_deep_is_refused(api: Api) -> None:
    ada, _grace = await two_members(api)
    nested = "id"
    for _ in range(8):
        nested = f"conversations {{ nodes {{ sender {{ {nested} }} }} }}"

    body = await api.raw(f"{{ viewer {{ {nested} }} }}", token=ada.token)

    assert body.get("data") is None
    assert "depth" in body["errors"][0]["message"]


async def test_a_query_with_too_many_aliases_is_refused(api: Api) -> None:
    ada, _grace = await two_members(api)
    aliases = " ".join(f"a{i}: inmailBalance" for i in range(200))

    body = await api.raw(f"{{ viewer {{ {aliases} }} }}", token=ada.token)

    assert body.get("data") is None
    assert "alias" in body["errors"][0]["message"].lower()


async def test_a_query_with_too_many_tokens_is_refused(api: Api) -> None:
    ada, _grace = await two_members(api)
    fields = " ".join(["id"] * 3000)

    body = await api.raw(f"{{ viewer {{ {fields} }} }}", token=ada.token)

    assert body.get("data") is None
    assert "token" in body["errors"][0]["message"].lower()


async def test_an_oversized_request_body_is_refused_with_413(api: Api) -> None:
    ada, grace = await two_members(api)

    response = await api.post(
        "mutation($i: SendInMailInput!) { sendInMail(input: $i) { errors { code } } }",
        {
            "i": {
                "recipientId": grace.id,
                "subject": "s",
                "body": "b" * 2_000_000,
                "idempotencyKey": "k",
            }
        },
        ada.token,
    )

    assert response.status_code == 413
    assert await api.balance(ada) == 5


async def test_errors_never_carry_stack_traces_or_internals(api: Api) -> None:
    ada, _grace = await two_members(api)

    responses = [
        await api.raw("{ viewer { inmailBalance } }", token="Bearer broken"),
        await api.raw("{ viewer { ledger(first: 999) { totalCount } } }", token=ada.token),
        await api.raw("{ viewer { noSuchField } }", token=ada.token),
    ]

    for body in responses:
        assert body["errors"], body
        for error in body["errors"]:
            assert set(error.get("extensions") or {}) <= {"code"}
            assert "Traceback" not in str(error)
            assert "pymongo" not in str(error).lower()
