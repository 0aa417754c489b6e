"""A GraphQL client of several service processes at once, as a fleet behind a balancer is used."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import httpx

from inmail.auth import Role, TokenService
from support import TEST_SECRET, GraphQLClient, Person, test_settings

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
CANCEL = "mutation { cancelSubscription { member { id } errors { code message } } }"
CHANGE_PLAN = (
    "mutation($i: ChangePlanInput!) { changePlan(input: $i) { member { id plan { type } } "
    "errors { code message } } }"
)

_tokens = TokenService(TEST_SECRET, test_settings().token_max_lifetime)


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


def repeatable(query: str, variables: dict[str, Any] | None) -> bool:
    """Whether a request may be sent again when its connection failed before its answer came: a
    read, or a mutation under an idempotency key (what SPEC asks of every client)."""
    if not query.lstrip().startswith("mutation"):
        return True
    given = (variables or {}).get("i")
    if not isinstance(given, dict) or "memberId" in given:  # an admin's change takes no key
        return False
    key = given.get("idempotencyKey")
    return isinstance(key, str) and key != ""


class Fleet(GraphQLClient):
    """Spreads requests round-robin over the given base URLs.

    With `retries`, a request safe to repeat (`repeatable`) whose connection fails before its
    answer is sent again, to the next server, as a client of a fleet does: hundreds of requests
    at once over loopback can lose a connection in the client's own pool (httpx #3348). The
    servers' logs are checked for failures of their own apart (`conftest.fleet_servers`).
    """

    def __init__(self, client: httpx.AsyncClient, urls: Sequence[str], retries: int = 0) -> None:
        self.client = client
        self.urls = list(urls)
        self.retries = retries
        self._next = itertools.cycle(range(len(self.urls)))

    def on(self, server: int) -> Fleet:
        """A client of the same fleet that sends every request to one of its servers."""
        return Fleet(self.client, [self.urls[server]], self.retries)

    def token(self, member_id: str) -> str:
        return member_token(member_id)

    @property
    def admin(self) -> str:
        return admin_token()

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        retries = self.retries if repeatable(query, variables) else 0
        while True:
            try:
                return await self.client.post(
                    f"{self.urls[next(self._next)]}/graphql",
                    json={"query": query, "variables": variables or {}},
                    headers=headers,
                )
            except (httpx.ReadError, httpx.RemoteProtocolError):
                if retries == 0:
                    raise
                retries -= 1

    async def send(self, sender: Person, recipient: Person, key: str) -> dict[str, Any]:
        return await self.payload(
            "sendInMail", SEND, variables_send(recipient.id, key), sender.token
        )

    async def respond(
        self, recipient: Person, conversation_id: str, response: str = "INTERESTED"
    ) -> dict[str, Any]:
        return await self.payload(
            "respondToInMail",
            RESPOND,
            {"i": {"conversationId": conversation_id, "response": response}},
            recipient.token,
        )

    async def purchase(self, member: Person, quantity: int, key: str) -> dict[str, Any]:
        return await self.payload(
            "purchaseInMailCredits",
            PURCHASE,
            {"i": {"quantity": quantity, "idempotencyKey": key}},
            member.token,
        )
