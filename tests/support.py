"""Helpers for tests that use the service the way a client does: through GraphQL."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from inmail.auth import Role
from inmail.bootstrap import Container, build_container
from inmail.clock import ManualClock
from inmail.repositories.mongo import Mongo
from inmail.settings import Settings

START = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
TEST_SECRET = "test-secret-0123456789-0123456789-0123456789"
GOOD_CARD = {"brand": "Visa", "last4": "4242", "expMonth": 12, "expYear": 2030}

MEMBER_FIELDS = "id name plan { type } subscription { status billingDay } inmailBalance"
_keys = itertools.count(1)


def new_key() -> str:
    return f"key-{next(_keys)}"


@dataclass(frozen=True)
class Person:
    id: str
    token: str


class GraphQLFailure(AssertionError):
    pass


class Api:
    """A client of one running app, with its manual clock."""

    def __init__(self, client: httpx.AsyncClient, container: Container) -> None:
        self.client = client
        self.container = container

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

    async def raw(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> dict[str, Any]:
        response = await self.post(query, variables, token)
        assert response.status_code == 200, response.text
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
        data = await self.gql(
            "mutation($i: CreateMemberInput!) { createMember(input: $i) "
            "{ member { id } errors { code message field } } }",
            {"i": payload},
            self.admin,
        )
        result = data["createMember"]
        assert result["errors"] == [], result["errors"]
        member_id = result["member"]["id"]
        return Person(member_id, self.token(member_id))

    async def connect(self, a: Person, b: Person) -> None:
        data = await self.gql(
            "mutation($i: ConnectMembersInput!) "
            "{ connectMembers(input: $i) { ok errors { code } } }",
            {"i": {"memberId": a.id, "otherMemberId": b.id}},
            self.admin,
        )
        assert data["connectMembers"] == {"ok": True, "errors": []}

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
        data = await self.gql(
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
        result: dict[str, Any] = data["sendInMail"]
        return result

    async def respond(
        self,
        recipient: Person,
        conversation_id: str,
        response: str = "INTERESTED",
        body: str | None = None,
    ) -> dict[str, Any]:
        data = await self.gql(
            "mutation($i: RespondToInMailInput!) { respondToInMail(input: $i) { creditedBack "
            "conversation { id state response respondedAt creditedBack } "
            "errors { code message field } } }",
            {"i": {"conversationId": conversation_id, "response": response, "body": body}},
            recipient.token,
        )
        result: dict[str, Any] = data["respondToInMail"]
        return result

    async def purchase(
        self, member: Person, quantity: int, key: str | None = None
    ) -> dict[str, Any]:
        data = await self.gql(
            "mutation($i: PurchaseInMailCreditsInput!) { purchaseInMailCredits(input: $i) "
            "{ creditsLeft lot { id source quantity remaining } errors { code message field } } }",
            {"i": {"quantity": quantity, "idempotencyKey": key or new_key()}},
            member.token,
        )
        result: dict[str, Any] = data["purchaseInMailCredits"]
        return result

    async def balance(self, member: Person) -> int:
        data = await self.gql("{ viewer { inmailBalance } }", token=member.token)
        value: int = data["viewer"]["inmailBalance"]
        return value


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
    mongodb_uri: str, db_name: str, settings: Settings | None = None
) -> AsyncIterator[Api]:
    from inmail.app import create_app

    settings = settings or test_settings()
    mongo = Mongo.connect(mongodb_uri, db_name)
    container = build_container(settings, mongo)
    app = create_app(settings, container=container)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, container)
