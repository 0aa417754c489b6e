"""Notifications and conversation events through GraphQL and websockets, on two processes.

Process A takes every mutation (and moves its manual clock); the subscribers sit on process B,
so what they receive crossed processes through the database's change stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from inmail.bootstrap import build_container
from inmail.repositories.mongo import Mongo
from reliability.servers import Server, running
from support import Api, Person, api_time
from support import test_settings as settings_for_tests
from wsclient import GraphQLSocket

pytestmark = pytest.mark.slow

CONVERSATION_UPDATED = (
    "subscription { conversationUpdated { kind at conversation { id } message { body } } }"
)
NOTIFICATION_RECEIVED = (
    "subscription { notificationReceived { id kind conversation { id } lot { id } } }"
)
NOTIFICATIONS = """
query($unread: Boolean, $first: Int, $after: String) { viewer { notifications(
  unreadOnly: $unread, first: $first, after: $after) {
  totalCount pageInfo { hasNextPage endCursor }
  nodes { id kind at readAt conversation { id } lot { id expiresAt quantity } } } } }
"""
MARK_READ = """
mutation($i: MarkNotificationsReadInput!) { markNotificationsRead(input: $i) {
  unreadCount errors { code field } } }
"""


@pytest.fixture
def servers(mongodb_uri: str, db_name: str, tmp_path: Path) -> Iterator[list[Server]]:
    with running(2, mongodb_uri, db_name, tmp_path) as started:
        yield started


@pytest.fixture
async def api_a(servers: list[Server], mongodb_uri: str, db_name: str) -> AsyncIterator[Api]:
    """A client of process A (the container here only mints tokens with the servers' secret)."""
    container = build_container(settings_for_tests(), Mongo.connect(mongodb_uri, db_name))
    async with httpx.AsyncClient(base_url=servers[0].url, timeout=60.0) as client:
        yield Api(client, container)
    await container.mongo.close()


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}/graphql"


async def advance(api: Api, **delta: int) -> None:
    data = await api.gql(
        "mutation($i: AdvanceClockInput!) { advanceClock(input: $i) { now errors { code } } }",
        {"i": delta},
        api.admin,
    )
    assert data["advanceClock"]["errors"] == []


async def notifications(
    api: Api, member: Person, *, unread: bool = False, first: int = 50, after: str | None = None
) -> dict[str, Any]:
    data = await api.gql(
        NOTIFICATIONS, {"unread": unread, "first": first, "after": after}, member.token
    )
    result: dict[str, Any] = data["viewer"]["notifications"]
    return result


PROBES: set[str] = set()  # conversations sent only to learn that a subscription is live


async def next_of(socket: GraphQLSocket, operation: str, field: str) -> dict[str, Any]:
    """The next item of a subscription, probes skipped."""
    while True:
        payload = await socket.result(operation)
        assert not payload.get("errors"), payload
        item: dict[str, Any] = payload["data"][field]
        if (item.get("conversation") or {}).get("id") not in PROBES:
            return item


async def until_live(api: Api, member: Person, socket: GraphQLSocket, operation: str) -> None:
    """Wait until a subscription is registered: an InMail from a stranger is delivered on it.

    A probe sent before the server registered the subscription is never delivered; one is
    sent again until one arrives (every probe is skipped by `next_of` later).
    """
    while True:
        stranger = await api.create_member("Charles Babbage", "PREMIUM_BUSINESS")
        sent = await api.send(stranger, member, body="Is this thing on?")
        PROBES.add(sent["conversation"]["id"])
        with contextlib.suppress(TimeoutError):
            payload = await socket.result(operation, within=10.0)
            item = next(iter(payload["data"].values()))
            if item["conversation"]["id"] in PROBES:
                return


async def test_both_parties_see_each_conversation_event_on_another_process_in_order_and_once(
    servers: list[Server], api_a: Api
) -> None:
    ada = await api_a.create_member("Ada Lovelace", "PREMIUM_CAREER")
    alan = await api_a.create_member("Alan Turing", "PREMIUM_BUSINESS")
    url_b = ws_url(servers[1])
    async with contextlib.AsyncExitStack() as stack:
        sockets = {
            (who.id, what): await stack.enter_async_context(GraphQLSocket.open(url_b, who.token))
            for who in (ada, alan)
            for what in ("events", "notes")
        }
        ops = {
            key: await socket.subscribe(
                CONVERSATION_UPDATED if key[1] == "events" else NOTIFICATION_RECEIVED
            )
            for key, socket in sockets.items()
        }

        async def events(who: Person, count: int) -> list[tuple[str, str | None]]:
            socket, op = sockets[(who.id, "events")], ops[(who.id, "events")]
            got = [await next_of(socket, op, "conversationUpdated") for _ in range(count)]
            return [(e["kind"], e["message"]["body"] if e["message"] else None) for e in got]

        async def notes(who: Person, count: int) -> list[str]:
            socket, op = sockets[(who.id, "notes")], ops[(who.id, "notes")]
            return [
                (await next_of(socket, op, "notificationReceived"))["kind"] for _ in range(count)
            ]

        for key, socket in sockets.items():
            await until_live(api_a, ada if key[0] == ada.id else alan, socket, ops[key])
        sent = await api_a.send(ada, alan, body="Would you review my notes on the engine?")
        conversation_id = sent["conversation"]["id"]
        await advance(api_a, days=2)  # the reminder falls due at 48 h
        responded = await api_a.respond(alan, conversation_id, "INTERESTED", "Gladly, send them.")
        assert responded["creditedBack"] is True
        for body in ("Here they are.", "Thank you, Alan!"):
            data = await api_a.gql(
                "mutation($i: SendMessageInput!) { sendMessage(input: $i) { errors { code } } }",
                {"i": {"conversationId": conversation_id, "body": body}},
                ada.token,
            )
            assert data["sendMessage"]["errors"] == []

        thread = [
            ("REMINDED", None),
            ("RESPONDED", "Gladly, send them."),
            ("MESSAGE", "Here they are."),
            ("MESSAGE", "Thank you, Alan!"),
        ]
        first = "Would you review my notes on the engine?"
        assert await events(ada, 5) == [("INMAIL_SENT", first), *thread]
        assert await events(alan, 5) == [("INMAIL_RECEIVED", first), *thread]
        assert await notes(alan, 2) == ["INMAIL_RECEIVED", "REMINDER"]
        assert await notes(ada, 2) == ["RESPONSE_RECEIVED", "CREDITED_BACK"]

        # Nothing was delivered twice: the next item on every stream is the next event.
        await api_a.send(alan, ada, body="A question of my own.")
        assert await events(ada, 1) == [("INMAIL_RECEIVED", "A question of my own.")]
        assert await events(alan, 1) == [("INMAIL_SENT", "A question of my own.")]
        assert await notes(ada, 1) == ["INMAIL_RECEIVED"]

    listed = await notifications(api_a, alan)
    about = [n for n in listed["nodes"] if (n["conversation"] or {}).get("id") not in PROBES]
    assert [n["kind"] for n in about] == ["REMINDER", "INMAIL_RECEIVED", "RENEWED"]  # and joining
    about = about[:2]
    assert {n["conversation"]["id"] for n in about} == {conversation_id}


async def test_a_member_lists_counts_and_marks_read_only_their_own_notifications(
    api_a: Api,
) -> None:
    ada = await api_a.create_member("Ada Lovelace", "PREMIUM_CAREER")
    alan = await api_a.create_member("Alan Turing", "PREMIUM_BUSINESS")
    grace = await api_a.create_member("Grace Hopper", "PREMIUM_BUSINESS")
    for recipient in (alan, grace):
        await api_a.send(ada, recipient)
        await api_a.send(recipient, ada, body="Hello from the other side.")

    page_one = await notifications(api_a, ada, first=1)
    assert page_one["totalCount"] == 3  # the two InMails, and the allotment of joining
    assert page_one["pageInfo"]["hasNextPage"] is True
    page_two = await notifications(api_a, ada, first=1, after=page_one["pageInfo"]["endCursor"])
    assert page_two["pageInfo"]["hasNextPage"] is True
    last = await notifications(api_a, ada, first=1, after=page_two["pageInfo"]["endCursor"])
    assert last["pageInfo"]["hasNextPage"] is False
    (joined,) = last["nodes"]
    assert joined["kind"] == "RENEWED"
    newest, oldest = page_one["nodes"][0], page_two["nodes"][0]
    assert api_time(newest["at"]) >= api_time(oldest["at"])
    assert newest["id"] != oldest["id"]

    alans = (await notifications(api_a, alan))["nodes"]
    # Another member's id is refused as an id that names nothing is, and nothing is marked.
    for foreign in (alans[0]["id"], "000000000000000000000000"):
        refused = await api_a.gql(MARK_READ, {"i": {"ids": [foreign, oldest["id"]]}}, ada.token)
        assert refused["markNotificationsRead"] == {
            "unreadCount": 3,
            "errors": [{"code": "NOT_FOUND", "field": "ids"}],
        }
    assert (await notifications(api_a, alan, unread=True))["totalCount"] == 2
    assert (await notifications(api_a, ada, unread=True))["totalCount"] == 3
    marked = await api_a.gql(MARK_READ, {"i": {"ids": [oldest["id"], oldest["id"]]}}, ada.token)
    assert marked["markNotificationsRead"] == {"unreadCount": 2, "errors": []}
    unread = await notifications(api_a, ada, unread=True)
    assert [n["id"] for n in unread["nodes"]] == [newest["id"], joined["id"]]

    refused = await api_a.gql(MARK_READ, {"i": {"ids": ["x"], "all": True}}, ada.token)
    assert refused["markNotificationsRead"]["errors"] == [{"code": "INVALID_INPUT", "field": "ids"}]
    assert refused["markNotificationsRead"]["unreadCount"] == 2

    everything = await api_a.gql(MARK_READ, {"i": {"all": True}}, ada.token)
    assert everything["markNotificationsRead"] == {"unreadCount": 0, "errors": []}
    assert all(n["readAt"] for n in (await notifications(api_a, ada))["nodes"])

    # Only the member (or an admin) reads them.
    body = await api_a.raw(
        "query($id: ID!) { member(id: $id) { notifications { totalCount } } }",
        {"id": ada.id},
        alan.token,
    )
    assert body["errors"]
    assert body["data"]["member"]["notifications"] is None
    admin = await api_a.gql(
        "query($id: ID!) { member(id: $id) { notifications { totalCount } } }",
        {"id": ada.id},
        api_a.admin,
    )
    assert admin["member"]["notifications"]["totalCount"] == 3


async def test_renewals_and_expiring_lots_are_told_once_each_on_the_service_clock(
    servers: list[Server], api_a: Api
) -> None:
    ada = await api_a.create_member("Ada Lovelace", "PREMIUM_CAREER")  # 5 a month, cap 15
    joined = (await notifications(api_a, ada))["nodes"]  # told before anyone listened
    assert [(n["kind"], n["lot"]["quantity"]) for n in joined] == [("RENEWED", 5)]
    async with GraphQLSocket.open(ws_url(servers[1]), ada.token) as socket:
        op = await socket.subscribe(NOTIFICATION_RECEIVED)
        await until_live(api_a, ada, socket, op)
        # Mid-January to mid-April: grants of 5 on Feb 15 and Mar 15, then one clamped to 0.
        await advance(api_a, days=91)
        live = [await next_of(socket, op, "notificationReceived") for _ in range(4)]
        await advance(api_a, days=40)  # and once more, twice over: nothing is told twice
        await advance(api_a, days=3)
        later = [await next_of(socket, op, "notificationReceived") for _ in range(2)]

    listed = [  # oldest first, probes left out
        n
        for n in (await notifications(api_a, ada))["nodes"][::-1]
        if (n["conversation"] or {}).get("id") not in PROBES
        and n["id"] not in {j["id"] for j in joined}
    ]
    assert [n["id"] for n in listed] == [n["id"] for n in live + later]
    renewed = [n for n in listed if n["kind"] == "RENEWED"]
    expiring = [n for n in listed if n["kind"] == "CREDITS_EXPIRING"]
    assert len(renewed) + len(expiring) == len(listed)
    # February, March, April (clamped: no lot), May; June's cycle has not started.
    assert [n["lot"]["quantity"] if n["lot"] else 0 for n in renewed] == [5, 5, 0, 5]
    assert [api_time(n["at"]).date().isoformat() for n in renewed] == [
        "2026-02-15",
        "2026-03-15",
        "2026-04-15",
        "2026-05-15",
    ]
    # Each lot that still had credits, once, exactly seven days before it expired.
    assert len({n["lot"]["id"] for n in expiring}) == len(expiring) == 2
    for note in expiring:
        assert api_time(note["at"]) == api_time(note["lot"]["expiresAt"]) - timedelta(days=7)
