"""Helpers for tests that use the service the way a client does: through GraphQL."""

from __future__ import annotations

import abc
import ast
import asyncio
import contextlib
import importlib
import itertools
import json
import pkgutil
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from typing import Any, Protocol, TypeVar

import graphql
import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families
from pymongo.errors import AutoReconnect
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)
from starlette.applications import Starlette

from harness.servers import ServiceProcess, service_env
from inmail.auth import AuthError, Role, TokenFault
from inmail.bootstrap import Container, GatewayFactory, build_container
from inmail.clock import ManualClock
from inmail.domain.errors import DomainError, ErrorCode
from inmail.domain.intents import IntentKind, IntentStatus, PaymentIntent
from inmail.domain.money import Money
from inmail.domain.plans import DEFAULT_PLAN_TABLE, PlanTable
from inmail.repositories.migrations import migrate
from inmail.repositories.mongo import Collection, Doc, Mongo
from inmail.repositories.records import ChargeRepository
from inmail.services.idempotency import KeyedRequest
from inmail.services.live import Broker
from inmail.services.payments import BuiltinGateway, Charge, ChargeRequest, PaymentGateway
from inmail.settings import Settings

START = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
TEST_SECRET = "test-secret-0123456789-0123456789-0123456789"
GOOD_CARD = {"brand": "Visa", "last4": "4242", "expMonth": 12, "expYear": 2030}

MEMBER_FIELDS = "id name plan { type } subscription { status billingDay } inmailBalance"
_keys = itertools.count(1)


class Feed(Protocol):
    """A change feed: opened before it is read, closed after."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


FeedT = TypeVar("FeedT", bound=Feed)
T = TypeVar("T")


@contextlib.asynccontextmanager
async def opened(feed: FeedT) -> AsyncIterator[FeedT]:
    """The feed, open for the block and closed after it."""
    await feed.open()
    try:
        yield feed
    finally:
        await feed.close()


def drop_stream_once(feed: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The feed's change stream, made to fail its next read once as a dropped connection."""
    stream: Any = feed._stream
    real_try_next = stream.try_next

    async def cut() -> None:
        monkeypatch.setattr(stream, "try_next", real_try_next)
        raise AutoReconnect("connection reset by peer")

    monkeypatch.setattr(stream, "try_next", cut)
    return stream


AGAINST_THE_DATABASE = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
"""Hypothesis for a property checked against the real mongod: every example writes and reads
the test's database (the fixture's, shared by the examples), slower than Hypothesis expects."""


def answered_by_the_database(
    uri: str,
    db_name: str,
    read: Callable[[Mongo], Awaitable[T]],
    *,
    holding: tuple[str, Sequence[Doc]] | None = None,
) -> T:
    """What `read` answers on its own client of the test's database, the service's indexes
    made, in an event loop of its own (Hypothesis runs each example synchronously). `holding`:
    a collection's name and the documents it holds, alone, before `read` (one example's data).
    """

    async def run() -> T:
        mongo = Mongo.connect(uri, db_name)
        try:
            await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
            if holding is not None:
                await _holding_only(mongo.db[holding[0]], holding[1])
            return await read(mongo)
        finally:
            await mongo.close()

    return asyncio.run(run())


async def _holding_only(collection: Collection, docs: Sequence[Doc]) -> None:
    await collection.delete_many({})
    if docs:
        await collection.insert_many(list(docs))


def new_key() -> str:
    return f"key-{next(_keys)}"


@dataclass(frozen=True)
class Person:
    id: str
    token: str


class GraphQLFailure(AssertionError):
    pass


class GraphQLClient(abc.ABC):
    """A client of the service through GraphQL; subclasses say where a request is posted and
    how tokens are made."""

    @abc.abstractmethod
    async def post(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> httpx.Response: ...

    @abc.abstractmethod
    def token(self, member_id: str) -> str:
        """A member's token."""

    @property
    @abc.abstractmethod
    def admin(self) -> str:
        """An admin's token."""

    async def raw(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        response = await self.post(query, variables, token)
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        body: dict[str, Any] = response.json()
        return body

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        """The `data` of a response that must have no GraphQL errors."""
        body = await self.raw(query, variables, token)
        if body.get("errors"):
            raise GraphQLFailure(body["errors"])
        data: dict[str, Any] = body["data"]
        return data

    async def payload(
        self,
        field: str,
        query: str,
        variables: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> dict[str, Any]:
        """The value of one top-level `field` of a response that must have no GraphQL errors."""
        result: dict[str, Any] = (await self.gql(query, variables, token))[field]
        return result

    async def create_member(
        self,
        name: str = "Ada Lovelace",
        plan: str = "PREMIUM_CAREER",
        *,
        card: dict[str, Any] | None = GOOD_CARD,
        billing_day: int | None = None,
        monthly_allotment: int | None = None,
        headline: str | None = None,
    ) -> Person:
        payload: dict[str, Any] = {"name": name, "plan": plan}
        if card is not None:
            payload["paymentMethod"] = card
        if billing_day is not None:
            payload["billingDay"] = billing_day
        if monthly_allotment is not None:
            payload["monthlyAllotment"] = monthly_allotment
        if headline is not None:
            payload["headline"] = headline
        result = await self.payload(
            "createMember",
            "mutation($i: CreateMemberInput!) { createMember(input: $i) "
            "{ member { id } errors { code message field } } }",
            {"i": payload},
            self.admin,
        )
        assert result["errors"] == [], result["errors"]
        member_id: str = result["member"]["id"]
        return Person(member_id, self.token(member_id))

    async def connect(self, a: Person, b: Person) -> None:
        data = await self.gql(
            "mutation($i: ConnectMembersInput!) "
            "{ connectMembers(input: $i) { ok errors { code } } }",
            {"i": {"memberId": a.id, "otherMemberId": b.id}},
            self.admin,
        )
        assert data["connectMembers"] == {"ok": True, "errors": []}

    async def balance(self, member: Person) -> int:
        data = await self.gql("{ viewer { inmailBalance } }", token=member.token)
        value: int = data["viewer"]["inmailBalance"]
        return value


class Api(GraphQLClient):
    """A client of one running app, with its manual clock."""

    def __init__(
        self, client: httpx.AsyncClient, container: Container, app: Starlette | None = None
    ) -> None:
        self.client = client
        self.container = container
        self.app = app  # the app the client speaks to, where the test made it

    @property
    def clock(self) -> ManualClock:
        clock = self.container.clock
        assert isinstance(clock, ManualClock)
        return clock

    def advance(self, **delta: float) -> datetime:
        return self.clock.advance(timedelta(**delta))

    def token(self, member_id: str | None = None, *, admin: bool = False) -> str:
        tokens = self.container.tokens
        if admin:
            return tokens.mint(member_id or "admin", Role.ADMIN)
        assert member_id is not None
        return tokens.mint(member_id, Role.MEMBER)

    @property
    def admin(self) -> str:
        return self.token(admin=True)

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )

    async def browse(
        self, path: str = "/graphql", params: dict[str, str] | None = None
    ) -> httpx.Response:
        """A GET of `path` as a browser asks for a page (Accept: text/html)."""
        return await self.client.get(path, params=params, headers={"Accept": "text/html"})

    async def send(
        self,
        sender: Person,
        recipient: Person | str,
        *,
        subject: str = "Coffee next week?",
        body: str = "I loved your talk on analytical engines.",
        key: str | None = None,
    ) -> dict[str, Any]:
        recipient_id = recipient if isinstance(recipient, str) else recipient.id
        return await self.payload(
            "sendInMail",
            "mutation($i: SendInMailInput!) { sendInMail(input: $i) { creditsLeft "
            "conversation { id state sentAt subject } errors { code message field } } }",
            {
                "i": {
                    "recipientId": recipient_id,
                    "subject": subject,
                    "body": body,
                    "idempotencyKey": key or new_key(),
                }
            },
            sender.token,
        )

    async def respond(
        self,
        recipient: Person,
        conversation_id: str,
        response: str = "INTERESTED",
        body: str | None = None,
    ) -> dict[str, Any]:
        return await self.payload(
            "respondToInMail",
            "mutation($i: RespondToInMailInput!) { respondToInMail(input: $i) { creditedBack "
            "conversation { id state response respondedAt creditedBack } "
            "errors { code message field } } }",
            {"i": {"conversationId": conversation_id, "response": response, "body": body}},
            recipient.token,
        )

    async def purchase(
        self, member: Person, quantity: int, key: str | None = None
    ) -> dict[str, Any]:
        return await self.payload(
            "purchaseInMailCredits",
            "mutation($i: PurchaseInMailCreditsInput!) { purchaseInMailCredits(input: $i) "
            "{ creditsLeft lot { id source quantity remaining } errors { code message field } } }",
            {"i": {"quantity": quantity, "idempotencyKey": key or new_key()}},
            member.token,
        )


def run_to_end(
    command: Sequence[str],
    env: dict[str, str] | None = None,
    *,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """A command run to its end, its output captured as text; its exit code is for the caller."""
    return subprocess.run(
        list(command),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class ReadLog(CommandListener):
    """The reads (find, aggregate, count) the service sends to MongoDB while it listens: for
    each, the command and the collection it reads."""

    def __init__(self) -> None:
        self.listening = False
        self.reads: list[tuple[str, str]] = []

    def started(self, event: CommandStartedEvent) -> None:
        if self.listening and event.command_name in ("find", "aggregate", "count"):
            self.reads.append((event.command_name, str(event.command[event.command_name])))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    def collections_read(self) -> list[str]:
        """The collections read since the last time this was asked, one entry a read."""
        taken, self.reads = self.reads, []
        return [collection for _, collection in taken]


async def migrate_from_two_processes(
    mongo: Mongo, mongodb_uri: str, db_name: str, plans: PlanTable
) -> None:
    """Start-up's migrations run by two processes at once, each with its own client."""
    other = Mongo.connect(mongodb_uri, db_name)
    try:
        await asyncio.gather(migrate(mongo, plans), migrate(other, plans))
    finally:
        await other.close()


def test_settings(**changes: Any) -> Settings:
    base = Settings(
        jwt_secret=TEST_SECRET,
        clock="manual",
        clock_start=START,
        scheduler_enabled=False,
    )
    return base.with_changes(**changes) if changes else base


@contextlib.asynccontextmanager
async def open_api(
    mongodb_uri: str,
    db_name: str,
    settings: Settings | None = None,
    *,
    gateway: GatewayFactory = BuiltinGateway,
    listeners: Sequence[CommandListener] = (),
) -> AsyncIterator[Api]:
    """The app in this process on `db_name`; `gateway` builds the payment gateway it uses, and
    `listeners` hear every command its MongoDB client sends."""
    from inmail.app import create_app

    settings = settings or test_settings()
    mongo = Mongo.connect(mongodb_uri, db_name, listeners=listeners)
    container = build_container(settings, mongo, gateway=gateway)
    app = create_app(settings, container=container)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, container, app)


SERVER_START_WAIT = 20.0  # generous: a wait for uvicorn to start, never a measure of speed


@dataclass(frozen=True)
class LiveServer:
    """The app under a real uvicorn in this process: `api` talks to it over real HTTP."""

    api: Api
    url: str  # the GraphQL endpoint for websockets
    server: uvicorn.Server

    @property
    def broker(self) -> Broker:
        return self.api.container.live

    async def settled(self, within: float = 30.0) -> None:
        """Wait until the app has done with everything it was given: no request or socket of
        it still running (uvicorn keeps their tasks until they end)."""
        deadline = asyncio.get_running_loop().time() + within  # a bound, not a measure
        while self.server.server_state.tasks:
            assert asyncio.get_running_loop().time() < deadline, "the app is still at work"
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serve_api(
    settings: Settings,
    mongo: Mongo,
    *,
    gateway: GatewayFactory = BuiltinGateway,
    **uvicorn_config: Any,
) -> AsyncIterator[LiveServer]:
    """The app under uvicorn in this process, on a free loopback port, stopped on exit;
    `gateway` builds its payment gateway; `uvicorn_config` is passed to uvicorn (say, its log
    level)."""
    from inmail.app import create_app

    container = build_container(settings, mongo, gateway=gateway)
    app = create_app(settings, container=container)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", **uvicorn_config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(int(SERVER_START_WAIT / 0.02)):
            if server.started or task.done():
                break
            await asyncio.sleep(0.02)
        if task.done():
            task.result()  # uvicorn's own error, if it failed to start
        assert server.started, "uvicorn did not start"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield LiveServer(Api(client, container), f"ws://127.0.0.1:{port}/graphql", server)
    finally:
        server.should_exit = True
        await task
        sock.close()


def session_service_env(
    mongodb_uri: str, data_dir: Path, db_name: str | None = None, **extra: str
) -> dict[str, str]:
    """The environment of an `inmail serve` on the session's mongod: its own database (a fresh
    one unless named), the tests' JWT secret, no scheduler, its files in `data_dir`; `extra`
    settings on top."""
    return service_env(
        INMAIL_MONGODB_URI=mongodb_uri,
        INMAIL_DB_NAME=db_name or f"t_{uuid.uuid4().hex[:16]}",
        INMAIL_JWT_SECRET=TEST_SECRET,
        INMAIL_SCHEDULER_ENABLED="false",
        INMAIL_DATA_DIR=str(data_dir),
        **extra,
    )


@contextlib.contextmanager
def serving(server: ServiceProcess) -> Iterator[ServiceProcess]:
    """`server` started and ready for the block, stopped by its pid after it; then its log
    must hold no traceback."""
    with server.running():
        yield server
    assert "Traceback" not in server.log(), server.log()


def post_graphql(
    url: str,
    query: str,
    token: str | None = None,
    *,
    request_id: str | None = None,
    timeout: float = 30.0,
) -> tuple[dict[str, Any], Message]:
    """A query POSTed to a served app's `url`/graphql without an event loop (urllib, a new
    connection each time): the response's JSON body and its headers."""
    headers = {"Content-Type": "application/json"}
    if request_id:
        headers["X-Request-ID"] = request_id
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query}).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body, response.headers


def metric_sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample (by name and exact labels) in a /metrics page; 0 if absent."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


@contextlib.contextmanager
def refused_as_invalid_input(field: str) -> Iterator[None]:
    """The block must raise a DomainError: INVALID_INPUT, on `field`."""
    with pytest.raises(DomainError) as refused:
        yield
    assert refused.value.code is ErrorCode.INVALID_INPUT
    assert refused.value.field == field


@contextlib.contextmanager
def token_refused(fault: TokenFault, **data: object) -> Iterator[None]:
    """The block must raise an AuthError for `fault`, with `data` among what it carries."""
    with pytest.raises(AuthError) as refused:
        yield
    assert refused.value.fault is fault
    assert {name: refused.value.data.get(name) for name in data} == data


def check_bounded(validate: Callable[[int], int], value: int, *, within: bool, field: str) -> None:
    """A bounded number's validator: a value within bounds comes back as it is, one outside is
    refused as INVALID_INPUT on `field`."""
    if within:
        assert validate(value) == value
    else:
        with refused_as_invalid_input(field):
            validate(value)


# Helpers for the rule tests of SPEC sections 1-6 and 8 (tests/api/test_*.py).

LOT_FIELDS = "id source quantity remaining grantedAt expiresAt status"
LEDGER_FIELDS = "id at kind delta balanceAfter lot { id source status } conversation { id }"


def codes(payload: dict[str, Any]) -> list[str]:
    """The stable codes of a mutation payload's `errors`."""
    return [error["code"] for error in payload["errors"]]


def outcome(payload: dict[str, Any]) -> str:
    """ "OK", or the code of a mutation payload's first error."""
    return codes(payload)[0] if payload["errors"] else "OK"


def outcomes(payloads: Iterable[dict[str, Any]]) -> Counter[str]:
    """How many of a burst's mutations succeeded, and how many were refused with each code."""
    return Counter(outcome(payload) for payload in payloads)


def graphql_error_codes(body: dict[str, Any]) -> list[str | None]:
    """The `extensions.code` of each top-level GraphQL error of a raw response."""
    return [(error.get("extensions") or {}).get("code") for error in body.get("errors") or []]


async def walk(
    api: Api,
    token: str,
    path: str,
    fields: str,
    *,
    args: str = "",
    page_size: int = 100,
) -> list[dict[str, Any]]:
    """Every node of a connection under `viewer` (path like "ledger"), walked page by page."""
    nodes: list[dict[str, Any]] = []
    after: str | None = None
    extra = f"{args}, " if args else ""
    while True:
        data = await api.gql(
            f"query($after: String) {{ viewer {{ {path}({extra}first: {page_size}, after: $after)"
            f" {{ nodes {{ {fields} }} pageInfo {{ hasNextPage endCursor }} }} }} }}",
            {"after": after},
            token,
        )
        connection = data["viewer"][path]
        nodes.extend(connection["nodes"])
        if not connection["pageInfo"]["hasNextPage"]:
            return nodes
        after = connection["pageInfo"]["endCursor"]


async def ada_and_grace(api: Api) -> tuple[Person, Person]:
    """Ada Lovelace on Premium Career with her five InMail credits, and Grace Hopper on Basic."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    return ada, await api.create_member("Grace Hopper", "BASIC")


async def send_and_retry(
    api: Api, sender: Person, recipient: Person, key: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One InMail sent twice under one idempotency key: the first answer and the retry's, each
    checked to carry no errors."""
    first = await api.send(sender, recipient, key=key)
    retry = await api.send(sender, recipient, key=key)
    assert first["errors"] == []
    assert retry["errors"] == []
    return first, retry


async def ledger_of(api: Api, member: Person) -> list[dict[str, Any]]:
    """The member's whole ledger, oldest entry first."""
    return list(reversed(await walk(api, member.token, "ledger", LEDGER_FIELDS)))


async def lots_of(api: Api, member: Person, *statuses: str) -> list[dict[str, Any]]:
    """The member's credit lots (newest grant first), optionally of some statuses only."""
    args = f"status: [{', '.join(statuses)}]" if statuses else ""
    return await walk(api, member.token, "creditLots", LOT_FIELDS, args=args)


async def purchased_lots_of(api: Api, member: Person) -> list[dict[str, Any]]:
    """The member's credit lots that purchases granted (newest first)."""
    return [lot for lot in await lots_of(api, member) if lot["source"] == "PURCHASE"]


async def assert_bought_once(api: Api, member: Person, *, balance: int) -> None:
    """The member holds `balance` credits, the gateway charged them exactly once and purchases
    granted exactly one lot."""
    assert await api.balance(member) == balance
    charged = len(await charges_of(api, member))
    assert (charged, len(await purchased_lots_of(api, member))) == (1, 1)


async def subscription_of(api: Api, member: Person) -> dict[str, Any]:
    data = await api.gql(
        "{ viewer { plan { type monthlyAllotment maxBalance } subscription { status billingDay "
        "currentPeriodStart nextRenewalAt plan { type monthlyAllotment maxBalance } "
        "paymentMethod { brand last4 expMonth expYear isExpired } } } }",
        token=member.token,
    )
    viewer: dict[str, Any] = data["viewer"]
    return viewer


FRESH_KEY = "<a fresh key>"


async def change_plan(
    api: Api,
    member: Person,
    plan: str,
    monthly_allotment: int | None = None,
    *,
    key: str | None = FRESH_KEY,
    by_admin: bool = False,
) -> dict[str, Any]:
    """Change a member's plan as the member (under `key`; a fresh one unless given) or an admin."""
    payload: dict[str, Any] = {"plan": plan, "monthlyAllotment": monthly_allotment}
    if key is not None:
        payload["idempotencyKey"] = new_key() if key == FRESH_KEY else key
    if by_admin:
        payload["memberId"] = member.id
    return await api.payload(
        "changePlan",
        "mutation($i: ChangePlanInput!) { changePlan(input: $i) { member { id plan { type "
        "monthlyAllotment maxBalance } subscription { status billingDay currentPeriodStart "
        "nextRenewalAt } inmailBalance } errors { code message field } } }",
        {"i": payload},
        api.admin if by_admin else member.token,
    )


async def legacy_premium_by_an_admin(api: Api, member: Person) -> dict[str, Any]:
    """An admin puts the member on LEGACY_PREMIUM at 12 credits a month (so a cap of 36): the
    member as the answer gives it."""
    result = await change_plan(api, member, "LEGACY_PREMIUM", monthly_allotment=12, by_admin=True)
    assert result["errors"] == [], result["errors"]
    plan = {"type": "LEGACY_PREMIUM", "monthlyAllotment": 12, "maxBalance": 36}
    assert result["member"]["plan"] == plan, result["member"]["plan"]
    member_now: dict[str, Any] = result["member"]
    return member_now


async def cancel_subscription(api: Api, member: Person) -> dict[str, Any]:
    return await api.payload(
        "cancelSubscription",
        "mutation { cancelSubscription { member { id subscription { status nextRenewalAt } "
        "inmailBalance } errors { code message field } } }",
        token=member.token,
    )


async def update_card(api: Api, member: Person, card: dict[str, Any]) -> dict[str, Any]:
    return await api.payload(
        "updatePaymentMethod",
        "mutation($i: PaymentMethodInput!) { updatePaymentMethod(input: $i) { subscription "
        "{ paymentMethod { brand last4 expMonth expYear isExpired } } "
        "errors { code message field } } }",
        {"i": card},
        member.token,
    )


async def send_message(
    api: Api,
    author: Person,
    body: str = "Thanks, talk soon.",
    *,
    recipient: Person | None = None,
    conversation_id: str | None = None,
) -> dict[str, Any]:
    return await api.payload(
        "sendMessage",
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) { conversation { id state "
        "messages { body author { id } } } message { id body } errors { code message field } } }",
        {
            "i": {
                "recipientId": recipient.id if recipient else None,
                "conversationId": conversation_id,
                "body": body,
            }
        },
        author.token,
    )


async def charges_of(api: Api, member: Person) -> list[dict[str, Any]]:
    """What the built-in payment gateway charged the member (its own book, not the API)."""
    cursor = api.container.mongo.c.charges.find({"memberId": member.id})
    return [doc async for doc in cursor]


class PassThroughGateway:
    """Another gateway's every answer, for a test's gateway to change one of them."""

    def __init__(self, inner: PaymentGateway) -> None:
        self.inner = inner

    async def charge(self, request: ChargeRequest) -> Charge:
        return await self.inner.charge(request)

    async def find(self, member_id: str, idempotency_key: str) -> Charge | None:
        return await self.inner.find(member_id, idempotency_key)

    async def refund(self, charge: Charge, at: datetime) -> None:
        await self.inner.refund(charge, at)


class HeldGateway(PassThroughGateway):
    """The built-in gateway, whose charges wait until `release` is set."""

    def __init__(self, inner: BuiltinGateway) -> None:
        super().__init__(inner)
        self.charging = asyncio.Event()
        self.release = asyncio.Event()

    async def charge(self, request: ChargeRequest) -> Charge:
        self.charging.set()
        await self.release.wait()
        return await super().charge(request)


G = TypeVar("G", bound=HeldGateway)


def held_gateways(kind: type[G]) -> tuple[list[G], Callable[[ChargeRepository], PaymentGateway]]:
    """A gateway factory for `open_api` whose gateways hold their charges (`HeldGateway`), and
    the list of those it made."""
    made: list[G] = []

    def factory(charges: ChargeRepository) -> PaymentGateway:
        made.append(kind(BuiltinGateway(charges)))
        return made[-1]

    return made, factory


async def orphan_charge(
    api: Api,
    member: Person,
    quantity: int,
    *,
    status: IntentStatus = IntentStatus.CHARGED,
    key: str | None = None,
) -> PaymentIntent:
    """An intent for `quantity` credits, charged by the gateway, whose grant never ran: what a
    process that died between the charge and the grant leaves in the database."""
    key = key or new_key()
    request = KeyedRequest.of(member.id, key, IntentKind.PURCHASE, quantity=quantity)
    now = api.clock.now()
    charge = await api.container.charges.charge_once(
        member.id,
        "",  # replaced below by the intent's id, which the gateway keys its charge by
        amount=Money(1000 * quantity, "USD"),
        description=IntentKind.PURCHASE,
        card_last4="4242",
        at=now,
    )
    intent = PaymentIntent(
        id=charge.id + "-intent",
        member_id=member.id,
        key=key,
        kind=IntentKind.PURCHASE,
        request_hash=request.fingerprint,
        amount=Money(1000 * quantity, "USD"),
        created_at=now,
        status=status,
        quantity=quantity,
        charge_id=charge.id,
    )
    await api.container.mongo.c.charges.update_one(
        {"_id": charge.id}, {"$set": {"idempotencyKey": intent.id}}
    )
    async with api.container.deps.uow.transaction() as tx:
        await tx.intents.insert(intent)
    return intent


async def open_transactions(mongo: Mongo) -> list[dict[str, Any]]:
    """The transactions open on the server, idle ones included."""
    cursor = await mongo.client.admin.aggregate(
        [
            {"$currentOp": {"allUsers": True, "idleSessions": True}},
            {"$match": {"transaction": {"$exists": True}}},
        ]
    )
    return [op async for op in cursor]


def graphql_core_modules_naming(name: str, defined_in: str) -> set[str]:
    """Every module of graphql-core (each imported here) holding `name` among its own globals:
    those that look it up, besides `defined_in`, and packages, whose names are re-exports."""
    for module in pkgutil.walk_packages(graphql.__path__, "graphql."):
        importlib.import_module(module.name)
    return {
        module_name
        for module_name, module in list(sys.modules.items())
        if module_name.startswith("graphql.")
        and module_name != defined_in
        and not hasattr(module, "__path__")
        and name in vars(module)
    }


def imported_modules(path: Path) -> set[str]:
    """The modules a source file imports, at any depth of it (under TYPE_CHECKING, in a
    function), and each name a `from` import takes (it may be a submodule): `from a import b`
    gives `a` and `a.b`. Relative imports are left out."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def api_time(value: str) -> datetime:
    """A DateTime the API answered (ISO 8601, `Z` for UTC)."""
    return datetime.fromisoformat(value)
