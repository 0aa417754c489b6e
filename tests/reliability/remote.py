"""A GraphQL client of several service processes at once, as a fleet behind a balancer is used."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import httpx

from inmail.auth import Role, TokenService
from support import GOOD_CARD, TEST_SECRET, GraphQLFailure, Person

SEND = (
    "mutation($i: SendInMailInput!) { sendInMail(input: $i) { creditsLeft "
    "conversation { id state } errors { code message field } } }"
)
RESPOND = (
    "mutation($i: RespondToInMailInput!) { respondToInMail(input: $i) { creditedBack "
    "conversation { id state creditedBack } errors { code message field } } }"
)
PURCHASE = (
    "mutation($i: PurchaseInMailCreditsInput!) { purchaseInMailCredits(input: $i) "
    "{ creditsLeft lot { id source quantity remaining } errors { code message field } } }"
)
CREATE = (
    "mutation($i: CreateMemberInput!) { createMember(input: $i) "
    "{ member { id } errors { code message field } } }"
)
CONNECT = "mutation($i: ConnectMembersInput!) { connectMembers(input: $i) { ok errors { code } } }"
CANCEL = "mutation { cancelSubscription { member { id } errors { code message } } }"
CHANGE_PLAN = (
    "mutation($i: ChangePlanInput!) { changePlan(input: $i) { member { id plan { type } } "
    "errors { code message } } }"
)

_tokens = TokenService(TEST_SECRET)


def member_token(member_id: str) -> str:
    return _tokens.mint(member_id, Role.MEMBER)


def admin_token() -> str:
    return _tokens.mint("admin", Role.ADMIN)


def variables_send(recipient_id: str, key: str, subject: str = "Hello") -> dict[str, Any]:
    return {
        "i": {
            "recipientId": recipient_id,
            "subject": subject,
            "body": "Would you have ten minutes for a call next week?",
            "idempotencyKey": key,
        }
    }


class Fleet:
    """Spreads requests round-robin over the given base URLs."""

    def __init__(self, client: httpx.AsyncClient, urls: Sequence[str]) -> None:
        self.client = client
        self.urls = list(urls)
        self._next = itertools.cycle(range(len(self.urls)))
        self.admin = admin_token()

    async def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        token: str | None = None,
        *,
        server: int | None = None,
    ) -> httpx.Response:
        index = next(self._next) if server is None else server
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.post(
            f"{self.urls[index]}/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
        )

    async def raw(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        token: str | None = None,
        *,
        server: int | None = None,
    ) -> dict[str, Any]:
        response = await self.post(query, variables, token, server=server)
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        body: dict[str, Any] = response.json()
        return body

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        token: str | None = None,
        *,
        server: int | None = None,
    ) -> dict[str, Any]:
        body = await self.raw(query, variables, token, server=server)
        if body.get("errors"):
            raise GraphQLFailure(body["errors"])
        data: dict[str, Any] = body["data"]
        return data

    async def create_member(
        self,
        name: str,
        plan: str = "PREMIUM_CAREER",
        *,
        card: dict[str, Any] | None = GOOD_CARD,
        billing_day: int | None = None,
    ) -> Person:
        payload: dict[str, Any] = {"name": name, "plan": plan}
        if card is not None:
            payload["paymentMethod"] = card
        if billing_day is not None:
            payload["billingDay"] = billing_day
        data = await self.gql(CREATE, {"i": payload}, self.admin)
        result = data["createMember"]
        assert result["errors"] == [], result["errors"]
        member_id: str = result["member"]["id"]
        return Person(member_id, member_token(member_id))

    async def connect(self, a: Person, b: Person) -> None:
        data = await self.gql(CONNECT, {"i": {"memberId": a.id, "otherMemberId": b.id}}, self.admin)
        assert data["connectMembers"] == {"ok": True, "errors": []}

    async def send(self, sender: Person, recipient: Person, key: str) -> dict[str, Any]:
        data = await self.gql(SEND, variables_send(recipient.id, key), sender.token)
        result: dict[str, Any] = data["sendInMail"]
        return result

    async def respond(
        self, recipient: Person, conversation_id: str, response: str = "INTERESTED"
    ) -> dict[str, Any]:
        data = await self.gql(
            RESPOND,
            {"i": {"conversationId": conversation_id, "response": response}},
            recipient.token,
        )
        result: dict[str, Any] = data["respondToInMail"]
        return result

    async def purchase(self, member: Person, quantity: int, key: str) -> dict[str, Any]:
        data = await self.gql(
            PURCHASE, {"i": {"quantity": quantity, "idempotencyKey": key}}, member.token
        )
        result: dict[str, Any] = data["purchaseInMailCredits"]
        return result

    async def balance(self, member: Person) -> int:
        data = await self.gql("{ viewer { inmailBalance } }", token=member.token)
        value: int = data["viewer"]["inmailBalance"]
        return value


def error_codes(payload: dict[str, Any]) -> list[str]:
    return [error["code"] for error in payload["errors"]]
