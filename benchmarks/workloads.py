"""The data a run seeds (through the service's own code) and the operations its workloads send."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks import floors
from benchmarks.load import Call, RawConnection, graphql_call
from inmail.auth import Role, TokenService
from inmail.domain.billing import PaymentMethod
from inmail.domain.conversations import InMailResponse
from inmail.domain.plans import PlanType
from inmail.services import inmail as inmail_service
from inmail.services import members as member_service
from inmail.services.base import Deps
from inmail.settings import Settings

START = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
SECRET = "inmail-bench-secret-0123456789-0123456789"
CARD = PaymentMethod(brand="Visa", last4="4242", exp_month=12, exp_year=2099)
SUBJECT = "Coffee next week?"
BODY = "I loved your talk on analytical engines; may I ask you two questions about it?"
PAGE_CONVERSATIONS = 100

SEND = (
    "mutation Send($i: SendInMailInput!) { sendInMail(input: $i) "
    "{ creditsLeft conversation { id state sentAt subject } errors { code message field } } }"
)
COMPOSE = (
    "query Compose($r: ID!) { compose(recipientId: $r) "
    "{ canSend reason creditsLeft recipientIsConnection } viewer { inmailBalance } }"
)
NOW = "query Now { now }"
BALANCE = "query Balance { viewer { inmailBalance } }"
MEMBER_PAGE = """
query MemberPage($n: Int!) {
  viewer {
    id name headline inmailBalance
    plan { type monthlyAllotment maxBalance }
    subscription { status billingDay nextRenewalAt paymentMethod { brand last4 isExpired } }
    creditLots(first: $n) {
      nodes { id source quantity remaining grantedAt expiresAt status }
      pageInfo { hasNextPage endCursor }
    }
    ledger(first: $n) {
      nodes { id at kind delta balanceAfter requested }
      pageInfo { hasNextPage endCursor }
    }
    conversations(first: $n) {
      totalCount
      pageInfo { hasNextPage endCursor }
      nodes {
        id kind subject state sentAt respondedAt response creditedBack
        sender { id name headline }
        recipient { id name headline isConnection }
        messages { id body sentAt author { id name } }
      }
    }
  }
}
"""


class WorkloadError(AssertionError):
    pass


@dataclass
class World:
    """Who exists after seeding, and the bearer tokens they use."""

    recipients: list[str]
    senders: list[str]
    page_viewer: str
    tokens: dict[str, str] = field(default_factory=dict)
    sends_taken: int = 0

    def token(self, member_id: str) -> str:
        return self.tokens[member_id]

    def take_sends(self, count: int) -> list[tuple[str, str, str]]:
        """(sender, recipient, idempotency key) for the next `count` sends.

        Senders take turns, so the sends in flight at once come from different senders (as from
        many members at once), and each sender's k-th send goes to its k-th recipient: never to
        one it is still awaiting a response from.
        """
        planned = []
        for op in range(self.sends_taken, self.sends_taken + count):
            turn, k = op % len(self.senders), op // len(self.senders)
            if k >= len(self.recipients):
                raise WorkloadError("more sends than recipients per sender: seed more recipients")
            recipient = self.recipients[(turn * 7 + k) % len(self.recipients)]
            planned.append((self.senders[turn], recipient, f"bench-send-{op}"))
        self.sends_taken += count
        return planned


async def _gather_limited(jobs: list[Awaitable[Any]], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Awaitable[Any]) -> Any:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(job) for job in jobs)))


async def seed(deps: Deps, *, recipients: int, senders: int, credits_per_sender: int) -> World:
    """Members created with `createMember`'s service code, and the page viewer's history."""
    tokens = TokenService(SECRET, Settings().token_max_lifetime)

    async def create(name: str, plan: PlanType, allotment: int | None = None) -> str:
        new = member_service.NewMember(
            name=name,
            plan=plan,
            headline="Analytical engines, at scale" if plan is not PlanType.BASIC else None,
            billing_day=15,
            payment_method=CARD if plan is not PlanType.BASIC else None,
            monthly_allotment=allotment,
        )
        return (await member_service.create_member(deps, new)).id

    recipient_ids = await _gather_limited(
        [create(f"Recipient {i}", PlanType.BASIC) for i in range(recipients)], 8
    )
    # Legacy Premium's grandfathered allotment is set per subscription: enough credits for every
    # send of the run in one monthly lot, as a Recruiter seat would hold in a few.
    sender_ids = await _gather_limited(
        [
            create(f"Sender {i}", PlanType.LEGACY_PREMIUM, credits_per_sender)
            for i in range(senders)
        ],
        8,
    )
    viewer = await create("Page Viewer", PlanType.LEGACY_PREMIUM, 2 * PAGE_CONVERSATIONS)
    await seed_page_history(deps, viewer, recipient_ids[:PAGE_CONVERSATIONS])
    world = World(recipients=recipient_ids, senders=sender_ids, page_viewer=viewer)
    for member_id in (*recipient_ids, *sender_ids, viewer):
        world.tokens[member_id] = tokens.mint(member_id, Role.MEMBER, timedelta(hours=12))
    return world


async def seed_page_history(deps: Deps, viewer: str, recipients: list[str]) -> None:
    """The member page's owner: an InMail to each recipient; every other one replied (a credit
    back, a second message), so the page holds conversations, lots and ledger entries."""
    if len(recipients) < PAGE_CONVERSATIONS:
        raise WorkloadError(f"the member page needs {PAGE_CONVERSATIONS} recipients")
    for i, recipient in enumerate(recipients):
        sent = await inmail_service.send_inmail(
            deps, viewer, recipient, f"{SUBJECT} ({i})", BODY, f"page-{i}"
        )
        if i % 2 == 0:
            await inmail_service.respond(
                deps, recipient, sent.conversation.id, InMailResponse.REPLY, "Gladly: Tuesday?"
            )


# The operations, prepared before the clock starts.


def send_calls(world: World, plan: list[tuple[str, str, str]]) -> list[Call]:
    return [
        graphql_call(
            SEND,
            {"i": {"recipientId": r, "subject": SUBJECT, "body": BODY, "idempotencyKey": key}},
            world.token(s),
        )
        for s, r, key in plan
    ]


def service_send_calls(
    deps: Deps, plan: list[tuple[str, str, str]]
) -> list[Callable[[], Awaitable[object]]]:
    return [
        functools.partial(inmail_service.send_inmail, deps, s, r, SUBJECT, BODY, key)
        for s, r, key in plan
    ]


def floor_send_calls(
    floor: floors.SendFloor, plan: list[tuple[str, str, str]]
) -> list[Callable[[], Awaitable[object]]]:
    async def send(sender: str, recipient: str, key: str) -> None:
        sent = await floor.send(sender, recipient, SUBJECT, BODY, key, START)
        if sent.replayed:
            raise WorkloadError(f"send floor: key {key} was taken before")

    return [functools.partial(send, s, r, key) for s, r, key in plan]


def check_send(data: dict[str, Any]) -> None:
    result = data["sendInMail"]
    if result["errors"] or result["conversation"] is None:
        raise WorkloadError(f"sendInMail failed: {result['errors']}")


def compose_calls(world: World, count: int, offset: int = 0) -> list[Call]:
    calls = []
    for i in range(offset, offset + count):
        viewer = world.senders[i % len(world.senders)]
        recipient = world.recipients[(i * 13) % len(world.recipients)]
        calls.append(graphql_call(COMPOSE, {"r": recipient}, world.token(viewer)))
    return calls


def check_compose(data: dict[str, Any]) -> None:
    if data["viewer"]["inmailBalance"] is None or data["compose"]["creditsLeft"] is None:
        raise WorkloadError(f"compose failed: {data}")


def floor_compose_calls(
    floor: floors.ComposeFloor, world: World, count: int, offset: int = 0
) -> list[Callable[[], Awaitable[object]]]:
    """The compose floor's reads for the same viewers and recipients as `compose_calls`."""
    return [
        functools.partial(
            floor.compose,
            world.senders[i % len(world.senders)],
            world.recipients[(i * 13) % len(world.recipients)],
            START,
        )
        for i in range(offset, offset + count)
    ]


def balance_calls(world: World, count: int, offset: int = 0) -> list[Call]:
    return [
        graphql_call(BALANCE, None, world.token(world.senders[i % len(world.senders)]))
        for i in range(offset, offset + count)
    ]


def check_balance(data: dict[str, Any]) -> None:
    if not isinstance(data["viewer"]["inmailBalance"], int):
        raise WorkloadError(f"balance failed: {data}")


def now_calls(world: World, count: int, offset: int = 0) -> list[Call]:
    # The same bearer header as the compose window sends, so both carry the same bytes' worth.
    return [
        graphql_call(NOW, None, world.token(world.senders[i % len(world.senders)]))
        for i in range(offset, offset + count)
    ]


def check_now(data: dict[str, Any]) -> None:
    if not data.get("now"):
        raise WorkloadError(f"now failed: {data}")


def page_calls(world: World, size: int, count: int) -> list[Call]:
    token = world.token(world.page_viewer)
    return [graphql_call(MEMBER_PAGE, {"n": size}, token) for _ in range(count)]


async def fetch_page(url: str, world: World, size: int) -> dict[str, Any]:
    """The member page's `data` as the API answers it, once."""
    connection = RawConnection(url)
    try:
        status, body = await connection.post(page_calls(world, size, 1)[0])
    finally:
        await connection.close()
    reply = json.loads(body)
    if status != 200 or reply.get("errors"):
        raise WorkloadError(f"member page: HTTP {status}: {body[:300]!r}")
    data: dict[str, Any] = reply["data"]
    page_check(size)(data)
    return data


def page_check(size: int) -> Callable[[dict[str, Any]], None]:
    def check(data: dict[str, Any]) -> None:
        viewer = data["viewer"]
        got = len(viewer["conversations"]["nodes"])
        if got != size or not viewer["ledger"]["nodes"] or not viewer["creditLots"]["nodes"]:
            raise WorkloadError(f"member page of {size}: {got} conversations")

    return check
