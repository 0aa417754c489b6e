"""Websockets against the real server (uvicorn in this process), on both subprotocols.

A socket is authenticated for as long as its token lives: at `exp` the server closes it with
4403 and runs nothing more on it. A socket that never sends connection_init is closed (4408), a
message that is no protocol message is a protocol error (4400), never a dropped connection and a
traceback, and graphql-ws runs queries as well as subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from inmail.auth import Role
from inmail.domain.intents import IntentStatus
from inmail.endpoint.websockets import (
    WS_BYTES_BURST,
    WS_BYTES_PER_SECOND,
    WS_MESSAGE_BURST,
    WS_MESSAGES_PER_SECOND,
)
from inmail.repositories.mongo import Mongo
from inmail.repositories.records import ChargeRepository
from inmail.services.charges import reconcile_charges
from inmail.services.fulfilments import FULFILMENTS
from inmail.services.payments import BuiltinGateway, Charge, ChargeRequest, PaymentGateway
from inmail.settings import Settings
from support import LiveServer, Person, open_transactions, serve_api
from support import test_settings as settings_for_tests
from wsclient import (
    BALANCE_CHANGED,
    TRANSPORT_WS,
    WAIT,
    GraphQLSocket,
    OperationError,
    init_payload,
    refusal_close_code,
)


@pytest.fixture
async def live(mongodb_uri: str, db_name: str) -> AsyncIterator[LiveServer]:
    settings = settings_for_tests(ws_init_timeout=1.0)
    async with serve_api(settings, Mongo.connect(mongodb_uri, db_name), log_level="info") as server:
        yield server


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def messages_until_closed(ws: Any) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            received.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
    return received


async def test_a_socket_is_closed_with_4403_when_its_token_expires_and_runs_nothing_after(
    live: LiveServer, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    """At `exp` itself (SPEC 8), not `exp` and the clock skew an HTTP request is allowed."""
    ada = await live.api.create_member("Ada Lovelace")
    short_lived = live.api.container.tokens.mint(ada.id, Role.MEMBER, timedelta(seconds=3))
    expires_at = live.api.container.tokens.verify(short_lived).expires_at

    async with GraphQLSocket.open(live.url, short_lived, protocol) as ws:
        subscription = await ws.subscribe(BALANCE_CHANGED, {"m": ada.id})
        assert (await ws.update(subscription))["reason"] == "GRANT"
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        late_query = await ws.subscribe("{ viewer { id inmailBalance } }")
        bought = await live.api.purchase(ada, 1)
        after = await messages_until_closed(ws.ws)
        closed_at = time.time()

    assert ws.ws.close_code == 4403
    assert ws.ws.close_reason == "Forbidden: Invalid credentials: the token has expired."
    assert closed_at >= expires_at
    assert closed_at - expires_at < 5.0, "closed long after the token expired"
    # Not even the end of an operation ("complete") is sent once the token has expired.
    assert [m for m in after if m.get("id") in (late_query, subscription)] == []
    assert bought["errors"] == [], "the balance changed after the token expired"
    assert tracebacks(caplog) == []


class LateGateway:
    """The built-in gateway, whose answer comes only at `answer_at` (unix seconds), and which
    does not stop when cancelled: an operation that runs on past its socket's token's exp
    however slowly the close comes."""

    def __init__(self, inner: PaymentGateway) -> None:
        self.inner = inner
        self.answer_at = 0.0
        self.answered = asyncio.Event()

    async def charge(self, request: ChargeRequest) -> Charge:
        charge = await self.inner.charge(request)
        while (left := self.answer_at - time.time()) > 0:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(left)
        self.answered.set()
        return charge

    async def find(self, member_id: str, idempotency_key: str) -> Charge | None:
        return await self.inner.find(member_id, idempotency_key)

    async def refund(self, charge: Charge, at: datetime) -> None:
        await self.inner.refund(charge, at)


BUY = 'purchaseInMailCredits(input: {quantity: 2, idempotencyKey: "k"}) { creditsLeft }'


@pytest.mark.parametrize(
    "document",
    [f"mutation {{ {BUY} }}", f"mutation {{ {BUY} advanceClock(input: {{hours: 1}}) {{ now }} }}"],
    ids=["alone", "beside advanceClock"],
)
async def test_what_an_operation_would_write_after_its_sockets_token_expired_is_not_written(
    mongodb_uri: str,
    db_name: str,
    protocol: str,
    document: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A purchase sent before exp, whose charge answers after it: the socket is closed at exp
    without waiting for it, and the grant, which would commit after exp, does not (its
    transactions commit only before exp: later ones are rolled back, none left open on the
    server). The charge is the reconciler's, as any whose request ended before its grant."""
    made: list[LateGateway] = []

    def late(charges: ChargeRepository) -> PaymentGateway:
        made.append(LateGateway(BuiltinGateway(charges)))
        return made[-1]

    mongo = Mongo.connect(mongodb_uri, db_name)
    async with serve_api(settings_for_tests(), mongo, gateway=late) as live:
        ada = await live.api.create_member("Ada Lovelace", "PREMIUM_CAREER")
        token = live.api.container.tokens.mint(ada.id, Role.MEMBER, timedelta(seconds=3))
        expires_at = live.api.container.tokens.verify(token).expires_at
        made[0].answer_at = expires_at + 6.0  # past the close's generous bound below
        async with GraphQLSocket.open(live.url, token, protocol) as ws:
            await ws.subscribe(document)
            received = await messages_until_closed(ws.ws)
            closed_at = time.time()
        await asyncio.wait_for(made[0].answered.wait(), WAIT)
        await asyncio.sleep(1.0)  # what the operation still does after its charge answered
        intents = [i async for i in mongo.c.payment_intents.find({"memberId": ada.id})]
        balance = await live.api.balance(ada)
        left_open = await open_transactions(mongo)
        deps = live.api.container.deps
        later = deps.now() + timedelta(minutes=10)
        settled = await reconcile_charges(deps, later, batch_size=10, fulfilments=FULFILMENTS)

    assert ws.ws.close_code == 4403
    assert closed_at - expires_at < 5.0, "the close waited for the operation to end"
    assert [m for m in received if m.get("type") in ("next", "data")] == []
    # Charged at the gateway, but neither recorded as charged nor granted by the operation.
    assert [i["status"] for i in intents] == [IntentStatus.PENDING]
    assert balance == 5, "credits granted after the token expired"
    assert left_open == [], "a transaction cut at exp holds its documents until its lifetime ends"
    assert tracebacks(caplog) == []
    assert (settled.completed, settled.refunded) == (1, 0)


async def test_a_token_http_takes_within_the_clock_skew_is_refused_on_a_socket_past_its_exp(
    live: LiveServer, protocol: str
) -> None:
    ada = await live.api.create_member("Ada Lovelace")
    late = live.api.container.tokens.mint(ada.id, Role.MEMBER, timedelta(seconds=-5))
    over_http = await live.api.client.post(
        "/graphql", json={"query": "{ viewer { id } }"}, headers={"Authorization": f"Bearer {late}"}
    )
    assert over_http.json()["data"]["viewer"] == {"id": ada.id}

    async with connect(live.url, subprotocols=[Subprotocol(protocol)]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": init_payload(late)}))
        received = await messages_until_closed(ws)

    assert ws.close_code == 4403
    assert ws.close_reason == "Forbidden: Invalid credentials: the token has expired."
    assert [m for m in received if m["type"] == "connection_ack"] == []


@pytest.mark.parametrize(
    ("token", "words"),
    [("expired", "expired"), ("garbage", "Invalid"), ("none", "a token is required")],
)
async def test_a_refused_connection_says_which_check_failed(
    live: LiveServer, protocol: str, token: str, words: str
) -> None:
    ada = await live.api.create_member("Ada Lovelace")
    bad = {
        "expired": live.api.container.tokens.mint(ada.id, Role.MEMBER, timedelta(minutes=-5)),
        "garbage": "not-a-jwt",
        "none": None,
    }[token]
    async with connect(live.url, subprotocols=[Subprotocol(protocol)]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": init_payload(bad)}))
        received = await messages_until_closed(ws)

    assert ws.close_code == 4403
    assert ws.close_reason is not None
    assert ws.close_reason.startswith("Forbidden: ")
    assert words in ws.close_reason
    if protocol == "graphql-ws":  # its connection_error says it too
        [error] = [m for m in received if m["type"] == "connection_error"]
        assert words in error["payload"]["message"]


async def test_a_socket_that_never_sends_connection_init_is_closed_with_4408(
    live: LiveServer, protocol: str
) -> None:
    async with connect(live.url, subprotocols=[Subprotocol(protocol)]) as ws:
        received = await messages_until_closed(ws)

    assert ws.close_code == 4408
    assert [m for m in received if m["type"] not in ("ka", "ping")] == []


async def test_pings_queued_past_the_init_timeout_close_the_socket_without_a_traceback(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A stranger's socket with no connection_init and a backlog of pings (paced, so most are
    still waiting when the init timeout closes the socket): the pongs due after the close are
    dropped with the socket, not logged as an application error."""
    async with connect(live.url, subprotocols=[Subprotocol(TRANSPORT_WS)]) as ws:
        await asyncio.gather(*(ws.send('{"type": "ping"}') for _ in range(2000)))
        received = await messages_until_closed(ws)

    assert ws.close_code == 4408
    assert {m["type"] for m in received} <= {"pong"}
    await live.settled()  # the server has done with the rest of its backlog
    assert tracebacks(caplog) == []


async def test_a_client_that_leaves_with_operations_queued_leaves_no_traceback(
    live: LiveServer, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    ada = await live.api.create_member("Ada Lovelace")
    async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
        for _ in range(40):
            await ws.subscribe("{ now }")
            await ws.subscribe("{ not closed")
    await live.settled()  # the server has done with what it was sent

    assert tracebacks(caplog) == []


# A subscribe message whose variables nest past MAX_JSON_DEPTH, sent as it is.
TOO_DEEP = (
    '{"type": "subscribe", "id": "1", "payload": {"query": "{ now }", "variables": {"v": '
    + "[" * 100
    + "]" * 100
    + "}}}"
)
# A subscribe message holding a number past the 4,300 digits Python converts.
HUGE_NUMBER = (
    '{"type": "subscribe", "id": "1", "payload": {"query": "{ now }", "variables": {"v": '
    + "9" * 5000
    + "}}}"
)
# A subscribe message naming its type twice: a reader that keeps the first sees no subscribe.
TYPE_TWICE = '{"type": "ping", "type": "subscribe", "id": "1", "payload": {"query": "{ now }"}}'
RAW = ("{not json", TOO_DEEP, HUGE_NUMBER, TYPE_TWICE)


@pytest.mark.parametrize(
    "message",
    [
        [1, 2, 3],
        "connection_init",
        42,
        "{not json",
        TOO_DEEP,
        HUGE_NUMBER,
        TYPE_TWICE,
        {"type": "subscribe", "id": "1", "payload": [1]},
        {"type": "start", "id": "1", "payload": {"query": 7}},
        {"type": "subscribe", "id": "1", "payload": {"query": "{ now }", "extensions": []}},
        {"type": "no-such-type", "id": "1"},
        {"type": "subscribe", "id": "i" * 129, "payload": {"query": "{ now }"}},
        {"type": "start", "id": "i" * 129, "payload": {"query": "{ now }"}},
        {"type": "subscribe", "id": "op-\ud800", "payload": {"query": "{ now }"}},
        {"type": "start", "id": "\udfff", "payload": {"query": "{ now }"}},
    ],
    ids=[
        "array",
        "string",
        "number",
        "not-json",
        "too-deep",
        "huge-number",
        "type-twice",
        "payload-array",
        "query-number",
        "extensions",
        "unknown-type",
        "subscribe-id-too-long",
        "start-id-too-long",
        "subscribe-id-lone-surrogate",
        "start-id-lone-surrogate",
    ],
)
async def test_a_message_that_is_no_protocol_message_is_a_protocol_error_not_a_traceback(
    live: LiveServer,
    protocol: str,
    message: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ada = await live.api.create_member("Ada Lovelace")
    async with connect(live.url, subprotocols=[Subprotocol(protocol)]) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {ada.token}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(message if message in RAW else json.dumps(message))
        await messages_until_closed(ws)

    assert ws.close_code == 4400
    assert tracebacks(caplog) == []


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("{not json", "A message must be JSON: Expecting property name"),
        (TYPE_TWICE, 'A message must be JSON: an object in the JSON names the key "type" twice'),
        (TOO_DEEP, "A message must be JSON: the JSON is nested more than 64 deep"),
    ],
    ids=["not-json", "type-twice", "too-deep"],
)
async def test_a_graphql_ws_message_that_is_no_json_is_refused_saying_why(
    live: LiveServer, message: str, reason: str
) -> None:
    ada = await live.api.create_member("Ada Lovelace")
    async with connect(live.url, subprotocols=[Subprotocol("graphql-ws")]) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {ada.token}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(message)
        await messages_until_closed(ws)

    assert ws.close_code == 4400
    assert (ws.close_reason or "").startswith(reason), ws.close_reason


async def test_an_operation_id_of_128_characters_is_answered_under_it(
    live: LiveServer, protocol: str
) -> None:
    ada = await live.api.create_member("Ada Lovelace")
    ident = "i" * 128
    starts = "subscribe" if protocol == "graphql-transport-ws" else "start"
    async with connect(live.url, subprotocols=[Subprotocol(protocol)]) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {ada.token}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"type": starts, "id": ident, "payload": {"query": "{ now }"}}))
        answer = json.loads(await ws.recv())
        while answer["type"] == "ka":  # graphql-ws's keep-alive
            answer = json.loads(await ws.recv())

    assert answer["id"] == ident
    assert answer["payload"]["data"]["now"]


async def test_queries_and_mutations_run_over_both_protocols(
    live: LiveServer, protocol: str
) -> None:
    ada = await live.api.create_member("Ada Lovelace")

    async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
        query = await ws.subscribe("{ viewer { id name } }")
        answer = await ws.result(query)

    assert answer["data"] == {"viewer": {"id": ada.id, "name": "Ada Lovelace"}}
    assert "errors" not in answer


async def test_a_token_whose_member_does_not_exist_is_refused_at_connect(
    live: LiveServer, protocol: str
) -> None:
    ghost = live.api.token("000000000000000000000000")

    assert await refusal_close_code(live.url, ghost, protocol) == 4403


async def test_a_lone_surrogate_in_a_subscription_argument_is_a_client_error(
    live: LiveServer, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    ada = await live.api.create_member("Ada Lovelace")

    async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
        operation = await ws.subscribe(BALANCE_CHANGED, {"m": "\ud800"})
        received = await ws.message()

    assert received["id"] == operation
    payload = received["payload"]
    errors = payload if isinstance(payload, list) else payload.get("errors", [payload])
    assert [e["extensions"]["code"] for e in errors] == ["BAD_USER_INPUT"]
    assert tracebacks(caplog) == []


async def test_an_upload_the_client_abandons_logs_no_error(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = live.url.removeprefix("ws://").removesuffix("/graphql").split(":")
    for _ in range(3):
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n" + b'{"query": "{ now }", "variables": {"a": "'
        )
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await writer.wait_closed()
    await live.settled()  # each upload's request has ended
    answer = await live.api.client.get("/healthz")

    assert answer.status_code == 200
    assert tracebacks(caplog) == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    noted = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(noted) <= 3  # at most a note an upload, never more


def keep_alive_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and "handle_keep_alive" in getattr(task.get_coro(), "__qualname__", "")
    ]


async def test_a_second_connection_init_closes_the_socket_with_4429_and_leaves_nothing_running(
    live: LiveServer, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    ada = await live.api.create_member("Ada Lovelace")
    running_before = keep_alive_tasks()
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {ada.token}"}}

    async with connect(live.url, subprotocols=[Subprotocol(protocol)]) as ws:
        for _ in range(3):
            await ws.send(json.dumps(init))
        async with asyncio.timeout(WAIT):
            received = await messages_until_closed(ws)
    for _ in range(50):
        if keep_alive_tasks() == running_before:
            break
        await asyncio.sleep(0.02)

    assert ws.close_code == 4429
    assert ws.close_reason == "Too many initialisation requests"
    assert [m["type"] for m in received if m["type"] not in ("ka", "ping")] == ["connection_ack"]
    assert keep_alive_tasks() == running_before
    assert tracebacks(caplog) == []


async def refused_then_served(
    ws: GraphQLSocket, refused: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The errors the operation `refused` was answered with, and the answer to a query sent
    after it on the same socket (which must still serve)."""
    with pytest.raises(OperationError) as error:
        await ws.result(refused)
    answer = await ws.result(await ws.subscribe("{ viewer { id } }"))
    payload = error.value.payload
    return (payload if isinstance(payload, list) else [payload]), answer


@pytest.mark.parametrize(
    ("query", "operation_name", "message"),
    [
        ("query Now { now }", "nope", 'Unknown operation named "nope".'),
        ("query Now { now }", "N" * 100_000, f'Unknown operation named "{"N" * 100}…".'),
        ("", None, "The query is empty: send a GraphQL document with an operation."),
        (
            "fragment F on Query { now }",
            None,
            "The document has no operation to run, or several and no operationName to choose one.",
        ),
        (
            "query A { now } query B { viewer { id } }",
            None,
            "Must provide operation name if query contains multiple operations.",
        ),
    ],
    ids=[
        "unknown-operation-name",
        "a-long-one-quoted-briefly",
        "empty-query",
        "no-operation",
        "several-operations",
    ],
)
async def test_an_operation_the_document_does_not_hold_is_a_client_error(
    live: LiveServer,
    protocol: str,
    query: str,
    operation_name: str | None,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ada = await live.api.create_member("Ada Lovelace")

    async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
        refused = await ws.subscribe(query, operation_name=operation_name)
        errors, answer = await refused_then_served(ws, refused)

    assert [(e["message"], e["extensions"]["code"]) for e in errors] == [(message, "BAD_REQUEST")]
    assert answer["data"] == {"viewer": {"id": ada.id}}
    assert tracebacks(caplog) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("{", "Syntax Error: Expected Name, found <EOF>."),
        ("subscription {", "Syntax Error: Expected Name, found <EOF>."),
        ("}", "Syntax Error: Unexpected '}'."),
        ("query Q " + "x" * 300, "Syntax Error: Expected '{', found Name 'x"),
        ("{ " + "now " * 2100 + "}", "Syntax Error: Document contains more than 2000 tokens."),
    ],
    ids=["unclosed", "unclosed-subscription", "stray-brace", "long-name", "too-many-tokens"],
)
async def test_a_document_that_does_not_parse_is_refused_and_the_socket_serves_on(
    live: LiveServer,
    protocol: str,
    query: str,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Both protocols answer the operation with a GRAPHQL_PARSE_FAILED error and serve on: on
    graphql-transport-ws a close (4400) would end every other subscription on the socket, and
    graphql-ws clients take that close as fatal, so one bad document would stop a page's live
    updates for good."""
    ada = await live.api.create_member("Ada Lovelace")

    async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
        live_balance = await ws.subscribe(BALANCE_CHANGED, {"m": ada.id})
        first = await ws.update(live_balance)
        refused = await ws.subscribe(query)
        errors, answer = await refused_then_served(ws, refused)
        await live.api.purchase(ada, 1)
        after = await ws.update(live_balance)

    assert len(errors) == 1
    assert errors[0]["message"].startswith(message)
    assert errors[0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert answer["data"] == {"viewer": {"id": ada.id}}
    assert (first["balance"], after["balance"]) == (5, 6)  # the other subscription lives on
    assert tracebacks(caplog) == []


async def test_the_token_of_connection_init_decides_whatever_the_handshake_header_says(
    live: LiveServer, protocol: str
) -> None:
    """SPEC 8: a socket's token is the one connection_init carries. A handshake header may be
    a proxy's Basic credentials, sent by the browser itself, or another member's token."""
    ada = await live.api.create_member("Ada Lovelace")
    grace = await live.api.create_member("Grace Hopper")
    viewer = "{ viewer { id } }"

    for header in (f"Bearer {ada.token}", "Basic dXNlcjpwYXNz"):
        async with GraphQLSocket.open(
            live.url, grace.token, protocol, headers={"Authorization": header}
        ) as ws:
            answer = await ws.result(await ws.subscribe(viewer))
        assert answer["data"] == {"viewer": {"id": grace.id}}, header
    # Without a token in connection_init, a bearer token on the handshake still counts.
    async with GraphQLSocket.open(
        live.url, None, protocol, headers={"Authorization": f"Bearer {ada.token}"}
    ) as ws:
        answer = await ws.result(await ws.subscribe(viewer))
    assert answer["data"] == {"viewer": {"id": ada.id}}


async def test_the_payloads_authorization_key_counts_however_cased_and_only_once(
    live: LiveServer, protocol: str
) -> None:
    """Header names are read without regard to case, and so is the payload's key. Two such
    keys are refused, as two headers are: which one counts would depend on who reads them."""
    ada = await live.api.create_member("Ada Lovelace")
    grace = await live.api.create_member("Grace Hopper")
    shouted = {"AUTHORIZATION": f"Bearer {ada.token}"}
    async with GraphQLSocket.open(live.url, None, protocol, payload=shouted) as ws:
        answer = await ws.result(await ws.subscribe("{ viewer { id } }"))
    assert answer["data"] == {"viewer": {"id": ada.id}}

    both = {"Authorization": f"Bearer {ada.token}", "authorization": f"Bearer {grace.token}"}
    async with connect(live.url, subprotocols=[Subprotocol(protocol)]) as raw:
        await raw.send(json.dumps({"type": "connection_init", "payload": both}))
        received = await messages_until_closed(raw)
    assert "connection_ack" not in [m.get("type") for m in received]
    assert raw.close_code == 4403
    assert raw.close_reason is not None
    assert "several Authorization keys" in raw.close_reason

    # A key that is not text is a mistake, not a missing token, whatever the handshake says.
    bearer = {"Authorization": f"Bearer {ada.token}"}
    for wrong in (42, [f"Bearer {ada.token}"], {"Bearer": ada.token}):
        async with connect(
            live.url, subprotocols=[Subprotocol(protocol)], additional_headers=bearer
        ) as raw:
            init = {"type": "connection_init", "payload": {"Authorization": wrong}}
            await raw.send(json.dumps(init))
            received = await messages_until_closed(raw)
        assert "connection_ack" not in [m.get("type") for m in received]
        assert raw.close_code == 4403
        assert raw.close_reason is not None
        assert "must be the text 'Bearer <token>'" in raw.close_reason, wrong

    # An empty or null key is no token: the handshake's bearer header counts, and two
    # handshake headers are refused, as without the key.
    bearer = {"Authorization": f"Bearer {ada.token}"}
    async with GraphQLSocket.open(
        live.url, None, protocol, payload={"authorization": ""}, headers=bearer
    ) as ws:
        answer = await ws.result(await ws.subscribe("{ viewer { id } }"))
    assert answer["data"] == {"viewer": {"id": ada.id}}
    two = [("Authorization", f"Bearer {ada.token}"), ("Authorization", f"Bearer {grace.token}")]
    async with connect(
        live.url, subprotocols=[Subprotocol(protocol)], additional_headers=two
    ) as raw:
        await raw.send(json.dumps({"type": "connection_init", "payload": {"Authorization": None}}))
        received = await messages_until_closed(raw)
    assert "connection_ack" not in [m.get("type") for m in received]
    assert raw.close_code == 4403
    assert raw.close_reason is not None
    assert "several Authorization headers" in raw.close_reason


async def test_a_null_connection_init_payload_is_one_without_a_token(
    live: LiveServer, protocol: str
) -> None:
    """Both protocols let connection_init's payload be null (graphql-transport-ws: "payload?:
    Record<string, unknown> | null"): the handshake's bearer header then counts, as for a
    payload without a token."""
    ada = await live.api.create_member("Ada Lovelace")
    bearer = [("Authorization", f"Bearer {ada.token}")]
    async with connect(
        live.url, subprotocols=[Subprotocol(protocol)], additional_headers=bearer
    ) as raw:
        await raw.send(json.dumps({"type": "connection_init", "payload": None}))
        answer = json.loads(await asyncio.wait_for(raw.recv(), timeout=10))

    assert answer["type"] == "connection_ack"


@pytest.mark.parametrize("payload", [[1], "Bearer x", 7], ids=["list", "string", "number"])
async def test_a_connection_init_payload_that_is_no_object_is_a_protocol_error(
    live: LiveServer, protocol: str, payload: object, caplog: pytest.LogCaptureFixture
) -> None:
    async with connect(live.url, subprotocols=[Subprotocol(protocol)]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        received = await messages_until_closed(ws)

    assert ws.close_code == 4400
    assert "connection_ack" not in [m.get("type") for m in received]
    assert tracebacks(caplog) == []


async def test_several_authorization_headers_on_a_handshake_count_for_no_one(
    live: LiveServer, protocol: str
) -> None:
    """Which of two headers counts would depend on who reads them (a proxy may take the last):
    as over HTTP, none does. A token in connection_init still decides."""
    ada = await live.api.create_member("Ada Lovelace")
    grace = await live.api.create_member("Grace Hopper")
    both = [("Authorization", f"Bearer {ada.token}"), ("Authorization", f"Bearer {grace.token}")]

    assert await refusal_close_code(live.url, None, protocol, headers=both) == 4403
    async with GraphQLSocket.open(live.url, grace.token, protocol, headers=both) as ws:
        answer = await ws.result(await ws.subscribe("{ viewer { id } }"))
    assert answer["data"] == {"viewer": {"id": grace.id}}


async def test_a_subscription_over_the_cost_limit_is_refused_with_an_error_message(
    live: LiveServer, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused before it runs, as a document that fails to validate is: an `error` message,
    not a `next` with no data and a `complete`."""
    ada = await live.api.create_member("Ada Lovelace")
    costly = (
        "subscription { conversationUpdated { conversation { recipient { conversations(first: "
        "100) { nodes { recipient { conversations(first: 100) { nodes { id messageConnection("
        "first: 100) { nodes { id } } } } } } } } } } }"
    )

    async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
        errors, answer = await refused_then_served(ws, await ws.subscribe(costly))

    assert [e["extensions"]["code"] for e in errors] == ["QUERY_TOO_COSTLY"]
    assert answer["data"] == {"viewer": {"id": ada.id}}
    assert tracebacks(caplog) == []


async def test_a_result_over_the_response_limit_is_one_error_and_the_socket_serves_on(
    mongodb_uri: str, db_name: str, protocol: str
) -> None:
    settings = settings_for_tests(max_response_bytes=2000)
    plans = " ".join(
        f"p{i}: plans {{ type monthlyAllotment maxBalance canPurchaseCredits }}" for i in range(10)
    )
    send = (
        "mutation($i: SendInMailInput!) { sendInMail(input: $i) { conversation { "
        + " ".join(f"m{i}: messages {{ body }}" for i in range(3))
        + " } } }"
    )
    async with serve_api(settings, Mongo.connect(mongodb_uri, db_name)) as live:
        ada = await live.api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
        grace = await live.api.create_member("Grace Hopper")
        before = await live.api.balance(ada)
        async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
            big = await ws.result(await ws.subscribe("{ " + plans + " }"))
            small = await ws.result(await ws.subscribe("{ viewer { id } }"))
            inmail = {"recipientId": grace.id, "subject": "Hi", "body": "x" * 1000}
            sent = await ws.result(
                await ws.subscribe(send, {"i": {**inmail, "idempotencyKey": "k-1"}})
            )
            again = await ws.result(await ws.subscribe("{ " + plans + " }"))
        after = await live.api.balance(ada)

    assert [e["extensions"]["code"] for e in big["errors"]] == ["RESPONSE_TOO_LARGE"]
    assert "applied" not in big["errors"][0]["extensions"]
    assert small["data"] == {"viewer": {"id": ada.id}}
    # A mutation's answer replaced so says it was applied: a client does not send it again.
    assert sent["data"] is None
    assert sent["errors"][0]["extensions"] == {"code": "RESPONSE_TOO_LARGE", "applied": True}
    assert after == before - 1
    assert "applied" not in again["errors"][0]["extensions"]  # a later query is no mutation


async def test_a_socket_sending_as_fast_as_it_can_is_read_at_a_bounded_pace(
    live: LiveServer,
) -> None:
    """300 pings at once: the first 100 are read at once, the rest at 50 a second, so the last
    pong comes 4 s later at the soonest, however fast the server is (a lower bound: a slower
    machine only adds to it)."""
    ada = await live.api.create_member("Ada Lovelace")
    async with GraphQLSocket.open(live.url, ada.token, TRANSPORT_WS) as ws:
        started = time.monotonic()
        for _ in range(300):
            await ws.ws.send(json.dumps({"type": "ping"}))
        pongs = 0
        async with asyncio.timeout(60):
            while pongs < 300:
                if json.loads(await ws.ws.recv())["type"] == "pong":
                    pongs += 1
        took = time.monotonic() - started
    assert took >= (300 - WS_MESSAGE_BURST) / WS_MESSAGES_PER_SECOND * 0.95


def _ping(pad: str) -> str:
    return json.dumps({"type": "ping", "payload": {"pad": pad}}, ensure_ascii=False)


@pytest.mark.parametrize(
    "pings",
    [
        [_ping("x" * 600_000)] * 3,  # few messages, many bytes
        [_ping("\U0001f600" * 250_000)] * 2,  # 2 MB on the wire, though 500,000 characters
    ],
    ids=["ascii", "four-byte-characters"],
)
async def test_a_socket_sending_large_messages_is_read_at_a_bounded_pace_of_bytes(
    live: LiveServer, pings: list[str]
) -> None:
    """Past the first mebibyte, counted in UTF-8 bytes, a socket's messages are read at 256 KiB
    a second, so the last pong comes that much later at the soonest (a lower bound: a slower
    machine only adds to it)."""
    ada = await live.api.create_member("Ada Lovelace")
    async with GraphQLSocket.open(live.url, ada.token, TRANSPORT_WS) as ws:
        started = time.monotonic()
        for ping in pings:
            await ws.ws.send(ping)
        pongs = 0
        async with asyncio.timeout(60):
            while pongs < len(pings):
                if json.loads(await ws.ws.recv())["type"] == "pong":
                    pongs += 1
        took = time.monotonic() - started
    sent = sum(len(ping.encode()) for ping in pings)
    assert took >= (sent - WS_BYTES_BURST) / WS_BYTES_PER_SECOND * 0.95


async def test_each_operation_on_a_socket_reads_as_of_now_not_as_of_the_first(
    live: LiveServer, protocol: str
) -> None:
    api = live.api
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")  # 15 Jan: 5 credits
    query = "{ viewer { inmailBalance ledger { totalCount } } }"

    async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
        api.advance(days=31)  # 15 Feb's cycle started; nothing written yet
        first = await ws.result(await ws.subscribe(query))
        api.advance(days=28)  # and 15 Mar's
        second = await ws.result(await ws.subscribe(query))

    assert first["data"]["viewer"] == {"inmailBalance": 10, "ledger": {"totalCount": 2}}
    assert second["data"]["viewer"] == {"inmailBalance": 15, "ledger": {"totalCount": 3}}


async def test_a_reused_id_is_refused_before_the_shape_of_its_document(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    ada = await live.api.create_member("Ada Lovelace")
    several = {"query": "query A { now } query B { now }", "variables": {}}

    async with GraphQLSocket.open(live.url, ada.token, TRANSPORT_WS) as ws:
        running = await ws.subscribe(BALANCE_CHANGED, {"m": ada.id})
        assert (await ws.update(running))["reason"] == "GRANT"
        await ws.ws.send(json.dumps({"id": running, "type": "subscribe", "payload": several}))
        after = await messages_until_closed(ws.ws)

    assert ws.ws.close_code == 4409
    assert [m for m in after if m.get("type") == "error"] == []
    assert tracebacks(caplog) == []


async def test_one_member_holds_at_most_its_share_of_websockets_and_a_closed_one_frees_its_slot(
    mongodb_uri: str, db_name: str, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for_tests(ws_max_per_member=3)
    async with serve_api(settings, Mongo.connect(mongodb_uri, db_name)) as live:
        ada = await live.api.create_member("Ada Lovelace")
        grace = await live.api.create_member("Grace Hopper")
        async with contextlib.AsyncExitStack() as sockets:
            held = [
                await sockets.enter_async_context(GraphQLSocket.open(live.url, ada.token, protocol))
                for _ in range(3)
            ]
            assert await refusal_close_code(live.url, ada.token, protocol) == 1013
            # Another member is served, and so are Ada's open sockets, and an admin's any number.
            async with GraphQLSocket.open(live.url, grace.token, protocol):
                pass
            for _ in range(4):
                await sockets.enter_async_context(
                    GraphQLSocket.open(live.url, live.api.admin, protocol)
                )
            answered = await held[0].result(await held[0].subscribe("{ viewer { name } }"))
            assert answered["data"] == {"viewer": {"name": "Ada Lovelace"}}

            await held[1].ws.close()
            for _ in range(100):  # the server sees the close a moment later
                if await _accepted(live.url, ada.token, protocol):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("a closed socket's slot was never freed")
    assert tracebacks(caplog) == []


async def _accepted(url: str, token: str, protocol: str) -> bool:
    """Whether a socket with this token is acknowledged (it is then closed again)."""
    async with connect(url, subprotocols=[Subprotocol(protocol)], open_timeout=WAIT) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        await ws.send(json.dumps(init))
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                if message["type"] not in ("ka", "ping"):
                    return bool(message["type"] == "connection_ack")
        return False


async def first_update(ws: GraphQLSocket) -> str | dict[str, Any]:
    """A balance subscription's id once its first update came, or the error refusing it."""
    operation = await ws.subscribe(BALANCE_CHANGED)
    try:
        await ws.update(operation)
    except OperationError as refused:
        payload = refused.payload
        error: dict[str, Any] = payload[0] if isinstance(payload, list) else payload
        return error
    return operation


async def accepted_soon(ws: GraphQLSocket) -> bool:
    """Whether a subscription is taken on `ws` within a few seconds of asking again."""
    deadline = time.monotonic() + WAIT
    while isinstance(await first_update(ws), dict):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@contextlib.asynccontextmanager
async def ada_and_grace_live(
    settings: Settings, mongodb_uri: str, db_name: str
) -> AsyncIterator[tuple[LiveServer, Person, Person]]:
    async with serve_api(settings, Mongo.connect(mongodb_uri, db_name)) as live:
        yield (
            live,
            await live.api.create_member("Ada Lovelace"),
            await live.api.create_member("Grace Hopper"),
        )


@contextlib.asynccontextmanager
async def two_sockets_and_one(
    live: LiveServer, two_of: Person, one_of: Person, protocol: str
) -> AsyncIterator[tuple[GraphQLSocket, GraphQLSocket, GraphQLSocket]]:
    """Two sockets of `two_of`'s and one of `one_of`'s."""
    async with (
        GraphQLSocket.open(live.url, two_of.token, protocol) as one,
        GraphQLSocket.open(live.url, two_of.token, protocol) as two,
        GraphQLSocket.open(live.url, one_of.token, protocol) as third,
    ):
        yield one, two, third


async def test_a_members_subscriptions_together_are_held_to_a_cost_and_an_ended_one_frees_its_share(
    mongodb_uri: str, db_name: str, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every event runs each subscription's selection again: one member's subscriptions, on
    all their sockets together, may cost at most INMAIL_WS_MAX_COST_PER_MEMBER, so that no event
    runs more than that. One more is refused with an error; a subscription completed, or a
    socket closed, gives its share back."""
    budget = 10
    settings = settings_for_tests(ws_max_cost_per_member=budget)
    async with ada_and_grace_live(settings, mongodb_uri, db_name) as (live, ada, grace):
        async with two_sockets_and_one(live, ada, grace, protocol) as (one, two, graces):
            taken: list[str] = []
            while isinstance(answer := await first_update(one if len(taken) % 2 else two), str):
                taken.append(answer)
                assert len(taken) <= budget, "never refused"
            extensions = answer["extensions"]
            cost = extensions["requestedQueryCost"]
            assert extensions["code"] == "QUERY_TOO_COSTLY"
            assert len(taken) == budget // cost
            assert extensions["heldQueryCost"] == len(taken) * cost
            assert extensions["maximumHeld"] == budget
            # Another member's share is theirs.
            assert isinstance(await first_update(graces), str)

            await two.stop(taken[0])  # the first went on socket two
            # Given back once the server has ended it (another socket's messages may be read
            # before that): asked again until then.
            assert await accepted_soon(one)
            assert isinstance(await first_update(one), dict)
        async with GraphQLSocket.open(live.url, ada.token, protocol) as three:
            # The sockets closed: everything they held is given back.
            again = [await accepted_soon(three) for _ in range(budget // cost)]
            assert all(again), again
    assert tracebacks(caplog) == []


async def test_a_member_holds_so_many_live_subscriptions_at_most_however_little_each_costs(
    mongodb_uri: str, db_name: str, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Every event runs each of a member's subscriptions again, and each run costs more than
    its selection shows (its execution, its reads): 200 cheap ones (10 sockets of 20) made
    each event another member caused cost 65 ms of CPU. A member's live subscriptions on all
    their sockets together are at most INMAIL_WS_MAX_SUBSCRIPTIONS_PER_MEMBER; one more is
    refused with an error, and a completed one frees its place."""
    settings = settings_for_tests(ws_max_subscriptions_per_member=3)
    async with (
        ada_and_grace_live(settings, mongodb_uri, db_name) as (live, ada, grace),
        two_sockets_and_one(live, ada, grace, protocol) as (one, two, graces),
    ):
        taken = [await first_update(one), await first_update(two), await first_update(one)]
        refused = await first_update(two)
        theirs = await first_update(graces)

        await one.stop(str(taken[0]))
        freed = await accepted_soon(two)

    assert all(isinstance(operation, str) for operation in taken), taken
    assert isinstance(refused, dict)
    assert refused["extensions"] == {
        "code": "TOO_MANY_SUBSCRIPTIONS",
        "heldSubscriptions": 3,
        "maximumSubscriptions": 3,
    }
    assert isinstance(theirs, str)  # another member's places are theirs
    assert freed
    assert tracebacks(caplog) == []
