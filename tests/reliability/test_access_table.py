"""Who may do what (SPEC 8), as one table over every field the service serves.

Every Query field, every Mutation, every Subscription, and every field of Member (where a
member's private data lives) has a row: what an anonymous caller, another member, the owner
and an admin get, "allowed" or "refused". The list of fields is read from the running schema,
so a field added without a row fails `test_every_field_the_service_serves_has_a_row`.

"The owner" is the member the data belongs to: Ada for her own records and the InMail she
sent, Bob for the InMail he received (only the recipient responds). "Another member" is Dan,
who is no party to anything of theirs. A refusal is an UNAUTHENTICATED or FORBIDDEN error, or,
where SPEC wants another's record to be indistinguishable from none, a null or a NOT_FOUND.
When anyone but the owner or an admin calls, none of the owner's records may change.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from reliability.conftest import drop_database
from reliability.remote import admin_token, member_token
from reliability.servers import Server, running
from support import GOOD_CARD, Api, Person
from wsclient import graphql_ws_url

CALLERS = ("anonymous", "another", "owner", "admin")
A, R = "allowed", "refused"
NOTHING = "null: nothing to see"  # an admin has no viewer; another's InMail is as if unknown
# (for `nodes`, a null in place of every id asked)
ACCESS_CODES = {"UNAUTHENTICATED", "FORBIDDEN"}
HIDDEN_CODES = {"NOT_FOUND", "NOT_RECIPIENT"}


@dataclass
class World:
    """Ada (PREMIUM_CAREER) sent Bob (BASIC) an InMail that awaits his response; Cy sent Ada
    one that she answered; Dan (PREMIUM_CAREER) and Eve (BASIC) are strangers to both."""

    ada: Person
    bob: Person
    cy: Person
    dan: Person
    eve: Person
    awaiting: str
    answered: str


@dataclass(frozen=True)
class Row:
    document: str
    variables: Callable[[World], dict[str, Any]]
    expected: tuple[str, str, str, str]  # anonymous, another member, owner, admin
    owner: str = "ada"

    def variables_for_subscription(self, member_id: str) -> dict[str, Any]:
        return {"id": member_id} if "$id" in self.document else {}


def none(world: World) -> dict[str, Any]:
    return {}


def ada_id(world: World) -> dict[str, Any]:
    return {"id": world.ada.id}


def _member_field(selection: str, expected: tuple[str, str, str, str]) -> Row:
    return Row(f"query($id: ID!) {{ member(id: $id) {{ {selection} }} }}", ada_id, expected)


def awaiting_id(world: World) -> dict[str, Any]:
    return {"id": world.awaiting}


PUBLIC = (R, A, A, A)  # any signed-in caller
PARTIES = (R, NOTHING, A, A)  # its parties and admins; to anyone else it is as if unknown
PRIVATE = (R, R, A, A)  # the owner and admins only
SELF = (R, A, A, R)  # a member acting on their own account; an admin has none
ADMIN = (R, R, R, A)

ROWS: dict[str, Row] = {
    # Query
    "Query.viewer": Row("{ viewer { id inmailBalance } }", none, (R, A, A, NOTHING)),
    "Query.member": _member_field("id name headline plan { type } isConnection", PUBLIC),
    "Query.conversation": Row(
        "query($id: ID!) { conversation(id: $id) { id subject messages { body } } }",
        awaiting_id,
        PARTIES,
    ),
    "Query.creditLots": Row(
        "query($id: ID) { creditLots(memberId: $id) { totalCount nodes { remaining } } }",
        ada_id,
        PRIVATE,
    ),
    "Query.compose": Row(
        "query($r: ID!) { compose(recipientId: $r) { canSend creditsLeft } }",
        lambda w: {"r": w.eve.id},
        SELF,
    ),
    "Query.plans": Row("{ plans { type maxBalance } }", none, (A, A, A, A)),
    # Any object by id: as its own fields show it (every kind: test_node_reads_every_kind_...)
    "Query.node": Row(
        "query($id: ID!) { node(id: $id) { id ... on Conversation { subject } } }",
        awaiting_id,
        PARTIES,
    ),
    "Query.nodes": Row(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id ... on Conversation { subject } } }",
        lambda w: {"ids": [w.awaiting, w.answered]},
        PARTIES,
    ),
    "Query.now": Row("{ now }", none, (A, A, A, A)),
    # Member: public profile fields, then what is the member's alone
    "Member.id": _member_field("id", PUBLIC),
    "Member.name": _member_field("name", PUBLIC),
    "Member.headline": _member_field("headline", PUBLIC),
    "Member.plan": _member_field("plan { type monthlyAllotment maxBalance }", PUBLIC),
    "Member.isConnection": _member_field("isConnection", PUBLIC),
    "Member.subscription": _member_field(
        "subscription { status billingDay paymentMethod { brand last4 expMonth expYear } }",
        PRIVATE,
    ),
    "Member.inmailBalance": _member_field("inmailBalance", PRIVATE),
    "Member.creditLots": _member_field("creditLots { totalCount nodes { remaining } }", PRIVATE),
    "Member.ledger": _member_field("ledger { totalCount nodes { delta } }", PRIVATE),
    "Member.purchases": _member_field("purchases { totalCount nodes { quantity } }", PRIVATE),
    "Member.notifications": _member_field("notifications { totalCount nodes { kind } }", PRIVATE),
    "Member.conversations": _member_field(
        "conversations { totalCount nodes { subject } }", PRIVATE
    ),
    # Mutation
    "Mutation.sendInMail": Row(
        "mutation($i: SendInMailInput!) { sendInMail(input: $i) { errors { code } } }",
        lambda w: {
            "i": {
                "recipientId": w.eve.id,
                "subject": "Hello",
                "body": "A word about your work.",
                "idempotencyKey": uuid.uuid4().hex,
            }
        },
        SELF,
    ),
    "Mutation.respondToInMail": Row(
        "mutation($i: RespondToInMailInput!) { respondToInMail(input: $i) { errors { code } } }",
        lambda w: {"i": {"conversationId": w.awaiting, "response": "INTERESTED"}},
        (R, R, A, R),
        owner="bob",
    ),
    "Mutation.sendMessage": Row(
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) { errors { code } } }",
        lambda w: {"i": {"conversationId": w.answered, "body": "Thanks, talk soon."}},
        (R, R, A, R),
    ),
    "Mutation.purchaseInMailCredits": Row(
        "mutation($i: PurchaseInMailCreditsInput!) "
        "{ purchaseInMailCredits(input: $i) { errors { code } } }",
        lambda w: {"i": {"quantity": 1, "idempotencyKey": uuid.uuid4().hex}},
        SELF,
    ),
    "Mutation.updatePaymentMethod": Row(
        "mutation($i: PaymentMethodInput!) { updatePaymentMethod(input: $i) { errors { code } } }",
        lambda w: {"i": {"brand": "Amex", "last4": "0005", "expMonth": 6, "expYear": 2031}},
        SELF,
    ),
    "Mutation.changePlan": Row(
        "mutation($i: ChangePlanInput!) { changePlan(input: $i) { errors { code } } }",
        lambda w: {"i": {"plan": "PREMIUM_BUSINESS", "idempotencyKey": "upgrade-1"}},
        SELF,
    ),
    "Mutation.markNotificationsRead": Row(
        "mutation($i: MarkNotificationsReadInput!) "
        "{ markNotificationsRead(input: $i) { unreadCount errors { code } } }",
        lambda w: {"i": {"all": True}},
        SELF,
    ),
    "Mutation.cancelSubscription": Row(
        "mutation { cancelSubscription { errors { code } } }", none, SELF
    ),
    "Mutation.createMember": Row(
        "mutation($i: CreateMemberInput!) { createMember(input: $i) { errors { code } } }",
        lambda w: {"i": {"name": "Mallory", "plan": "RECRUITER_LITE"}},
        ADMIN,
    ),
    "Mutation.connectMembers": Row(
        "mutation($i: ConnectMembersInput!) { connectMembers(input: $i) { errors { code } } }",
        lambda w: {"i": {"memberId": w.dan.id, "otherMemberId": w.ada.id}},
        ADMIN,
    ),
    "Mutation.advanceClock": Row(
        "mutation($i: AdvanceClockInput!) { advanceClock(input: $i) { errors { code } } }",
        lambda w: {"i": {"hours": 1}},
        ADMIN,
    ),
    # Subscription (over a websocket; see test_subscription_rows)
    "Subscription.balanceChanged": Row(
        "subscription($id: ID) { balanceChanged(memberId: $id) { memberId balance } }",
        ada_id,
        PRIVATE,
    ),
    # The viewer's own events: a member's token, no member id to name.
    "Subscription.notificationReceived": Row(
        "subscription { notificationReceived { id kind } }", none, SELF
    ),
    "Subscription.conversationUpdated": Row(
        "subscription { conversationUpdated { kind } }", none, SELF
    ),
}

SCHEMA_FIELDS = """{
  __schema {
    queryType { fields { name } }
    mutationType { fields { name } }
    subscriptionType { fields { name } }
  }
  member: __type(name: "Member") { fields { name } }
}"""


async def served_fields(api: Api) -> set[str]:
    data = await api.gql(SCHEMA_FIELDS)
    schema = data["__schema"]
    roots = {"Query": "queryType", "Mutation": "mutationType", "Subscription": "subscriptionType"}
    names = {
        f"{root}.{field['name']}"
        for root, key in roots.items()
        if schema[key] is not None
        for field in schema[key]["fields"]
    }
    return names | {f"Member.{field['name']}" for field in data["member"]["fields"]}


async def test_every_field_the_service_serves_has_a_row(api: Api) -> None:
    served = await served_fields(api)
    assert sorted(served - ROWS.keys()) == [], "fields without a row in the access table"
    assert sorted(ROWS.keys() - served) == [], "rows for fields the service does not serve"


async def build_world(api: Api) -> World:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    bob = await api.create_member("Bob Basic", "BASIC", card=None)
    cy = await api.create_member("Cy Business", "PREMIUM_BUSINESS")
    dan = await api.create_member("Dan Stranger", "PREMIUM_CAREER")
    eve = await api.create_member("Eve Reader", "BASIC", card=None)
    awaiting = (await api.send(ada, bob))["conversation"]["id"]
    answered = (await api.send(cy, ada))["conversation"]["id"]
    assert (await api.respond(ada, answered))["errors"] == []
    return World(ada, bob, cy, dan, eve, awaiting, answered)


def token_of(api: Api, world: World, caller: str, owner: str) -> str | None:
    people: dict[str, Person] = {"another": world.dan, "owner": getattr(world, owner)}
    if caller == "anonymous":
        return None
    if caller == "admin":
        return api.admin
    return people[caller].token


def outcome(body: dict[str, Any]) -> str:
    errors = body.get("errors") or []
    codes = {(error.get("extensions") or {}).get("code") for error in errors}
    if errors:
        assert codes <= ACCESS_CODES, f"not an access refusal: {errors}"
        return R
    [value] = body["data"].values()
    if value is None or (isinstance(value, list) and value and all(v is None for v in value)):
        return NOTHING
    if isinstance(value, dict) and value.get("errors"):
        payload_codes = {error["code"] for error in value["errors"]}
        assert payload_codes <= HIDDEN_CODES, f"not an access refusal: {value['errors']}"
        return R
    return A


async def owners_records(api: Api, member_id: str) -> list[Any]:
    c = api.container.mongo.c
    return [
        await c.members.find_one({"_id": member_id}),
        [d async for d in c.credit_lots.find({"memberId": member_id}).sort("_id")],
        [d async for d in c.ledger.find({"memberId": member_id}).sort("_id")],
        [
            d
            async for d in c.conversations.find(
                {"$or": [{"senderId": member_id}, {"recipientId": member_id}]}
            ).sort("_id")
        ],
        await c.purchases.count_documents({"memberId": member_id}),
        await c.charges.count_documents({"memberId": member_id}),
    ]


QUERY_AND_MUTATION_ROWS = sorted(name for name in ROWS if not name.startswith("Subscription."))


@pytest.mark.parametrize("name", QUERY_AND_MUTATION_ROWS)
async def test_access_row(api: Api, name: str) -> None:
    row = ROWS[name]
    world = await build_world(api)
    owner_id = getattr(world, row.owner).id
    seen = {}
    # The owner goes last, so that what the others try is tried on untouched records.
    for caller in ("anonymous", "another", "admin", "owner"):
        before = await owners_records(api, owner_id)
        token = token_of(api, world, caller, row.owner)
        body = await api.raw(row.document, row.variables(world), token)
        seen[caller] = outcome(body)
        if caller in ("anonymous", "another"):
            assert await owners_records(api, owner_id) == before, f"{caller} changed the owner"
    assert tuple(seen[c] for c in CALLERS) == row.expected, seen


# Every kind of object by id: one row per implementation of Node, read from the schema.

NODE_ROWS: dict[str, tuple[str, str, str, str]] = {
    "Member": PUBLIC,  # the public profile; its private fields stay the owner's (Member.* rows)
    "Conversation": (R, NOTHING, A, A),
    "Message": (R, NOTHING, A, A),
    "CreditLot": (R, NOTHING, A, A),
    "LedgerEntry": (R, NOTHING, A, A),
    "Purchase": (R, NOTHING, A, A),
    "Notification": (R, NOTHING, A, A),
}


async def adas_objects(api: Api, world: World) -> dict[str, str]:
    """The id of one of Ada's objects of every kind, as her own fields give them."""
    assert (await api.purchase(world.ada, 1))["errors"] == []
    data = await api.gql(
        "{ viewer { id creditLots { nodes { id } } ledger { nodes { id } } "
        "purchases { nodes { id } } notifications { nodes { id } } "
        "conversations { nodes { id messages { id } } } } }",
        token=world.ada.token,
    )
    ada = data["viewer"]
    sent = next(c for c in ada["conversations"]["nodes"] if c["id"] == world.awaiting)
    return {
        "Member": ada["id"],
        "Conversation": sent["id"],
        "Message": sent["messages"][0]["id"],
        "CreditLot": ada["creditLots"]["nodes"][0]["id"],
        "LedgerEntry": ada["ledger"]["nodes"][0]["id"],
        "Purchase": ada["purchases"]["nodes"][0]["id"],
        "Notification": ada["notifications"]["nodes"][0]["id"],
    }


async def test_node_reads_every_kind_of_object_as_its_own_fields_do(api: Api) -> None:
    node = await api.gql('{ __type(name: "Node") { possibleTypes { name } } }', token=api.admin)
    assert sorted(t["name"] for t in node["__type"]["possibleTypes"]) == sorted(NODE_ROWS)
    world = await build_world(api)
    ids = await adas_objects(api, world)
    query = "query($id: ID!) { node(id: $id) { __typename id } }"

    for kind, expected in NODE_ROWS.items():
        seen = {}
        for caller in CALLERS:
            body = await api.raw(query, {"id": ids[kind]}, token_of(api, world, caller, "ada"))
            seen[caller] = outcome(body)
            if seen[caller] == A:
                assert body["data"]["node"] == {"__typename": kind, "id": ids[kind]}
        assert tuple(seen[c] for c in CALLERS) == expected, (kind, seen)


# Beyond the table: the same rules seen from other angles.


async def test_a_party_cannot_read_the_other_partys_private_fields_through_their_inmail(
    api: Api,
) -> None:
    world = await build_world(api)
    body = await api.raw(
        "query($id: ID!) { conversation(id: $id) { sender { name } recipient { name "
        "inmailBalance subscription { status } ledger { totalCount } } } }",
        {"id": world.awaiting},
        world.ada.token,
    )
    assert body["data"]["conversation"]["sender"] == {"name": "Ada Lovelace"}
    assert body["data"]["conversation"]["recipient"] == {
        "name": "Bob Basic",
        "inmailBalance": None,
        "subscription": None,
        "ledger": None,
    }
    codes = sorted(error["extensions"]["code"] for error in body["errors"])
    assert codes == ["FORBIDDEN"] * 3


async def test_only_the_recipient_responds_not_the_sender(api: Api) -> None:
    world = await build_world(api)
    result = await api.respond(world.ada, world.awaiting)
    assert [e["code"] for e in result["errors"]] == ["NOT_RECIPIENT"]
    assert (await api.respond(world.bob, world.awaiting))["errors"] == []


async def test_an_admin_reads_any_members_lots_but_a_member_only_their_own(api: Api) -> None:
    world = await build_world(api)
    query = "query($id: ID) { creditLots(memberId: $id) { totalCount } }"
    own = await api.raw(query, {"id": None}, world.dan.token)
    assert own["data"]["creditLots"]["totalCount"] == 1
    theirs = await api.raw(query, {"id": world.ada.id}, world.dan.token)
    assert [e["extensions"]["code"] for e in theirs["errors"]] == ["FORBIDDEN"]
    admin = await api.raw(query, {"id": world.ada.id}, api.admin)
    assert admin["data"]["creditLots"]["totalCount"] == 1


async def test_a_members_ledger_entries_never_lead_to_anothers_records(api: Api) -> None:
    """Ada's debit points at her InMail to Bob: she sees it, and through it not Bob's ledger."""
    world = await build_world(api)
    body = await api.raw(
        "{ viewer { ledger { nodes { kind conversation { id recipient { name ledger "
        "{ totalCount } } } } } } }",
        token=world.ada.token,
    )
    debit = next(n for n in body["data"]["viewer"]["ledger"]["nodes"] if n["kind"] == "DEBIT")
    assert debit["conversation"]["recipient"] == {"name": "Bob Basic", "ledger": None}
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]


# Subscriptions: over a websocket to a real server process.

WS = Subprotocol("graphql-transport-ws")
WAIT = 20.0


@pytest.fixture(scope="module")
def live_server(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db_name = f"ac_{uuid.uuid4().hex[:16]}"
    try:
        with running(1, mongodb_uri, db_name, tmp_path_factory.mktemp("access")) as [server]:
            yield server
    finally:
        drop_database(mongodb_uri, db_name)


# How long a refusal may take to come before the subscription is taken as live and an event
# is caused for it (a refusal that comes later still counts as one).
REFUSAL_AWAITED = 1.0


async def subscription_outcome(
    server: Server,
    token: str | None,
    document: str,
    variables: dict[str, Any],
    provoke: Callable[[], Awaitable[None]] | None = None,
) -> str:
    """R when the subscription is refused; A when it delivers an update. A subscription that
    answers only on an event gets one from `provoke` once no refusal came at once; without
    `provoke` the update (or refusal) must come by itself."""
    async with connect(graphql_ws_url(server.url), subprotocols=[WS], open_timeout=WAIT) as ws:
        payload = {"Authorization": f"Bearer {token}"} if token else {}
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        try:
            ack = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        except ConnectionClosed:
            assert ws.close_code == 4403
            return R
        assert ack["type"] == "connection_ack", ack
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": document, "variables": variables},
                }
            )
        )
        while True:
            try:
                wait = REFUSAL_AWAITED if provoke is not None else WAIT
                message = json.loads(await asyncio.wait_for(ws.recv(), wait))
            except TimeoutError:
                if provoke is None:
                    raise
                await provoke()  # no refusal came at once: an event must now come through
                provoke = None
                continue

            if message["type"] in ("ping", "pong", "ka"):
                continue
            if message["type"] == "error":
                codes = {(e.get("extensions") or {}).get("code") for e in message["payload"]}
                assert codes <= ACCESS_CODES, message
                return R
            if message["type"] == "next":
                assert not message["payload"].get("errors"), message
                [(field, update)] = message["payload"]["data"].items()
                wanted = EXPECTED_UPDATES[field](variables)
                assert {key: update.get(key) for key in wanted} == wanted, message
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(json.dumps({"id": "1", "type": "complete"}))
                return A
            raise AssertionError(f"unexpected message {message}")


# What each subscription's first update shows: a balance at once; a notification or a
# conversation change once `inmail_to` sends the subscriber an InMail.
EXPECTED_UPDATES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "balanceChanged": lambda v: {"memberId": v["id"], "balance": 5},
    "notificationReceived": lambda _: {"kind": "INMAIL_RECEIVED"},
    "conversationUpdated": lambda _: {"kind": "INMAIL_RECEIVED"},
}


async def post(server: Server, token: str, query: str, variables: dict[str, Any]) -> Any:
    """One mutation's payload: the value of its one root field."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        response = await client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
    [payload] = response.json()["data"].values()
    return payload


async def create_remote(server: Server, name: str, plan: str) -> Person:
    created = await post(
        server,
        admin_token(),
        "mutation($i: CreateMemberInput!) "
        "{ createMember(input: $i) { member { id } errors { code } } }",
        {"i": {"name": name, "plan": plan, "paymentMethod": GOOD_CARD}},
    )
    member_id: str = created["member"]["id"]
    return Person(member_id, member_token(member_id))


async def inmail_to(server: Server, recipient: Person) -> None:
    """A new Premium member sends `recipient` an InMail."""
    sender = await create_remote(server, "Sam Sender", "PREMIUM_CAREER")
    key = uuid.uuid4().hex
    sent = await post(
        server,
        sender.token,
        "mutation($i: SendInMailInput!) { sendInMail(input: $i) { errors { code } } }",
        {
            "i": {
                "recipientId": recipient.id,
                "subject": "Hi",
                "body": "A word",
                "idempotencyKey": key,
            }
        },
    )
    assert sent["errors"] == [], sent


async def test_subscription_rows(live_server: Server) -> None:
    ada = await create_remote(live_server, "Ada Lovelace", "PREMIUM_CAREER")
    dan = await create_remote(live_server, "Dan Stranger", "PREMIUM_CAREER")
    members = {"another": dan, "owner": ada}
    tokens = {"anonymous": None, "another": dan.token, "owner": ada.token, "admin": admin_token()}
    rows = {name: row for name, row in ROWS.items() if name.startswith("Subscription.")}
    assert set(rows) == {f"Subscription.{field}" for field in EXPECTED_UPDATES}
    for name, row in rows.items():
        seen = {}
        for caller in CALLERS:
            member = members.get(caller)
            # balanceChanged answers at once; the others on an event, here an InMail to the
            # caller (an anonymous caller or an admin has no inbox: a refusal must come).
            provoke = (
                None
                if name == "Subscription.balanceChanged" or member is None
                else functools.partial(inmail_to, live_server, member)
            )
            seen[caller] = await subscription_outcome(
                live_server,
                tokens[caller],
                row.document,
                row.variables_for_subscription(ada.id),
                provoke,
            )
        assert tuple(seen[c] for c in CALLERS) == row.expected, (name, seen)
