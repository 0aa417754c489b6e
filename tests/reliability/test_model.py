"""Model-based testing: random sequences of operations against the service and a reference model.

Hypothesis drives the service through GraphQL (the app in this process; every example starts
on an emptied database with a new manual clock, moved only by the `advanceClock` mutation, so
renewals, expirations and reminders run as the scheduler runs them) and the small model
of `reliability.model`, written from SPEC alone, side by side. After every step the balances,
lots, ledger, subscriptions and conversations of every member must agree, and the invariants of
`reliability.invariants` must hold on what is stored.

INMAIL_TEST_MODEL_EXAMPLES raises the number of examples (200 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Coroutine
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from inmail.app import create_app
from inmail.bootstrap import build_container
from inmail.clock import ManualClock
from inmail.repositories.mongo import Mongo
from reliability import model as spec
from reliability.invariants import Snapshot, cap_of, load, problems, spendable
from support import START, Api, Person, new_key
from support import test_settings as service_settings

pytestmark = pytest.mark.slow

T = TypeVar("T")
Doc = dict[str, Any]

EXAMPLES = int(os.environ.get("INMAIL_TEST_MODEL_EXAMPLES", "200"))
MAX_MEMBERS = 7
HORIZON = START + timedelta(days=730)
API_VIEW_EVERY = 3  # steps between two full GraphQL views of a member (they are the slow part)

# Cards as (expiry month, year): one already expired at START, two that expire on the way.
CARDS: list[tuple[int, int] | None] = [None, (12, 2030), (1, 2026), (3, 2026), (8, 2026)]
SUBJECT, BODY = "A role you may like", "We are hiring engineers who love analytical engines."

CREATE = (
    "mutation($i: CreateMemberInput!) { createMember(input: $i) { member { id } errors { code } } }"
)
SEND = (
    "mutation($i: SendInMailInput!) { sendInMail(input: $i) { creditsLeft "
    "conversation { id } errors { code } } }"
)
RESPOND = (
    "mutation($i: RespondToInMailInput!) { respondToInMail(input: $i) { creditedBack "
    "errors { code } } }"
)
MESSAGE = "mutation($i: SendMessageInput!) { sendMessage(input: $i) { errors { code } } }"
PURCHASE = (
    "mutation($i: PurchaseInMailCreditsInput!) { purchaseInMailCredits(input: $i) "
    "{ creditsLeft errors { code } } }"
)
CARD = "mutation($i: PaymentMethodInput!) { updatePaymentMethod(input: $i) { errors { code } } }"
CHANGE = "mutation($i: ChangePlanInput!) { changePlan(input: $i) { errors { code } } }"
CANCEL = "mutation { cancelSubscription { errors { code } } }"
CONNECT = "mutation($i: ConnectMembersInput!) { connectMembers(input: $i) { errors { code } } }"
ADVANCE = "mutation($i: AdvanceClockInput!) { advanceClock(input: $i) { now errors { code } } }"
MEMBER_VIEW = """
  plan { type maxBalance } inmailBalance
  subscription { status billingDay currentPeriodStart nextRenewalAt }
  creditLots(first: 100) { pageInfo { hasNextPage }
    nodes { source quantity remaining grantedAt expiresAt status } }
  ledger(first: 100) { pageInfo { hasNextPage } nodes { at kind delta balanceAfter } }
  conversations(first: 100) { pageInfo { hasNextPage }
    nodes { id kind state creditedBack respondedAt reminderSentAt sender { id } } }
"""


class RestartingClock(ManualClock):
    """A manual clock that each example starts again at START (the service's only moves on)."""

    def restart(self) -> None:
        self._now = START


class Service:
    """The app in this process, driven from Hypothesis's synchronous rules.

    One app serves every example (building a schema costs more than a whole example); each
    example starts it afresh: an emptied database (its indexes kept) and a new manual clock.
    """

    def __init__(self, mongodb_uri: str, db_name: str) -> None:
        self.runner = asyncio.Runner()
        self.stack = contextlib.AsyncExitStack()
        self.clock = RestartingClock(START)
        self.api = self.run(self._open(mongodb_uri, db_name))

    async def _open(self, mongodb_uri: str, db_name: str) -> Api:
        settings = service_settings()
        mongo = Mongo.connect(mongodb_uri, db_name)
        # No background task (live updates, scheduler): nothing here subscribes, and the
        # clock moves only by advanceClock.
        container = replace(build_container(settings, mongo, self.clock), background=())
        app = create_app(settings, container=container)
        await self.stack.enter_async_context(app.router.lifespan_context(app))
        client = await self.stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://model")
        )
        return Api(client, container)

    def fresh(self) -> None:
        self.clock.restart()
        db = self.api.container.mongo.db

        async def empty() -> None:
            for name in await db.list_collection_names():
                await db[name].delete_many({})

        self.run(empty())

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(work)

    def gql(self, query: str, variables: dict[str, Any] | None = None, token: str = "") -> Any:
        return self.run(self.api.gql(query, variables, token or None))

    def close(self) -> None:
        try:
            self.run(self.stack.aclose())
        finally:
            self.runner.close()


def codes_of(payload: dict[str, Any]) -> list[str]:
    return [error["code"] for error in payload["errors"]]


def expect(payload: dict[str, Any], refused: spec.Refused | None) -> None:
    assert codes_of(payload) == ([refused.code] if refused else []), payload


def attempt(action: Any) -> tuple[Any, spec.Refused | None]:
    try:
        return action(), None
    except spec.Refused as refused:
        return None, refused


class InMailMachine(RuleBasedStateMachine):
    members = Bundle("members")
    conversations = Bundle("conversations")

    def __init__(self, service: Service) -> None:
        super().__init__()
        service.fresh()
        self.service = service
        self.model = spec.Model(START)
        self.people: list[Person] = []
        self.conversation_ids: list[str] = []
        self.keys = itertools.count(1)
        self.checks = 0

    @property
    def admin(self) -> str:
        return self.service.api.admin

    def _new_member(
        self, plan: str, anchor: int | None, card: tuple[int, int] | None, legacy: int | None
    ) -> int:
        n = len(self.people)
        payload: dict[str, Any] = {"name": f"Member {n}", "plan": plan, "billingDay": anchor}
        if card is not None:
            payload["paymentMethod"] = {
                "brand": "Visa",
                "last4": "4242",
                "expMonth": card[0],
                "expYear": card[1],
            }
        if legacy is not None:
            payload["monthlyAllotment"] = legacy
        result = self.service.gql(CREATE, {"i": payload}, self.admin)["createMember"]
        assert result["errors"] == []
        member_id = result["member"]["id"]
        self.people.append(Person(member_id, self.service.api.token(member_id)))
        return self.model.create_member(f"Member {n}", plan, anchor, card, legacy)

    def _key(self, member: int, reuse: bool, pick: int) -> str:
        used = [key for (m, key) in [*self.model.sends, *self.model.purchases] if m == member]
        if reuse and used:
            return sorted(used)[pick % len(used)]
        return f"k{next(self.keys)}"

    @initialize(target=members)
    def two_members(self) -> Any:
        return multiple(
            self._new_member("PREMIUM_CAREER", None, (12, 2030), None),
            self._new_member("BASIC", None, None, None),
        )

    @precondition(lambda self: len(self.people) < MAX_MEMBERS)
    @rule(
        target=members,
        plan=st.sampled_from(list(spec.PLANS)),
        anchor=st.none() | st.integers(1, 31),
        card=st.sampled_from(CARDS),
        legacy=st.none() | st.integers(1, 30),
    )
    def create_member(
        self, plan: str, anchor: int | None, card: tuple[int, int] | None, legacy: int | None
    ) -> int:
        return self._new_member(plan, anchor, card, legacy if plan == "LEGACY_PREMIUM" else None)

    @rule(a=members, b=members)
    def connect(self, a: int, b: int) -> None:
        variables = {"i": {"memberId": self.people[a].id, "otherMemberId": self.people[b].id}}
        result = self.service.gql(CONNECT, variables, self.admin)["connectMembers"]
        expect(result, attempt(lambda: self.model.connect(a, b))[1])

    @rule(
        target=conversations,
        sender=members,
        recipient=members,
        reuse=st.booleans(),
        pick=st.integers(0, 50),
    )
    def send(self, sender: int, recipient: int, reuse: bool, pick: int) -> Any:
        key = self._key(sender, reuse, pick)
        variables = {
            "i": {
                "recipientId": self.people[recipient].id,
                "subject": SUBJECT,
                "body": BODY,
                "idempotencyKey": key,
            }
        }
        result = self.service.gql(SEND, variables, self.people[sender].token)["sendInMail"]
        outcome, refused = attempt(lambda: self.model.send(sender, recipient, key))
        expect(result, refused)
        if refused:
            return multiple()
        conversation, credits_left, replayed = outcome
        assert result["creditsLeft"] == credits_left
        if replayed:
            assert result["conversation"]["id"] == self.conversation_ids[conversation]
            return multiple()
        self.conversation_ids.append(result["conversation"]["id"])
        assert len(self.conversation_ids) == conversation + 1
        return conversation

    @rule(
        conversation=conversations,
        who=st.sampled_from(["recipient", "recipient", "sender", "other"]),
        response=st.sampled_from(["INTERESTED", "MAYBE_LATER", "NOT_INTERESTED", "REPLY", ""]),
    )
    def respond(self, conversation: int, who: str, response: str) -> None:
        held = self.model.conversations[conversation]
        responder = {"recipient": held.recipient, "sender": held.sender}.get(who)
        if responder is None:
            others = [i for i in range(len(self.people)) if i not in (held.sender, held.recipient)]
            responder = others[0] if others else held.recipient
        body = "Happy to talk." if response == "REPLY" else None
        variables = {
            "i": {
                "conversationId": self.conversation_ids[conversation],
                "response": response or "REPLY",  # "" is a REPLY without its body
                "body": body,
            }
        }
        result = self.service.gql(RESPOND, variables, self.people[responder].token)
        result = result["respondToInMail"]
        if not response:
            expect(result, spec.Refused("INVALID_INPUT"))
            return
        credited, refused = attempt(lambda: self.model.respond(conversation, responder, response))
        expect(result, refused)
        if not refused:
            assert result["creditedBack"] is credited

    @rule(data=st.data(), author=members)
    def send_message(self, data: st.DataObject, author: int) -> None:
        recipient: int | None = None
        conversation: int | None = None
        in_conversation = data.draw(st.booleans(), label="in a conversation")
        if self.conversation_ids and in_conversation:
            conversation = data.draw(st.integers(0, len(self.conversation_ids) - 1))
            target: dict[str, Any] = {"conversationId": self.conversation_ids[conversation]}
        else:
            recipient = data.draw(st.integers(0, len(self.people) - 1), label="recipient")
            target = {"recipientId": self.people[recipient].id}
        variables = {"i": {**target, "body": "Thanks, talk soon."}}
        result = self.service.gql(MESSAGE, variables, self.people[author].token)["sendMessage"]
        refused = attempt(lambda: self.model.send_message(author, recipient, conversation))[1]
        expect(result, refused)

    @rule(member=members, quantity=st.integers(0, 12), reuse=st.booleans(), pick=st.integers())
    def purchase(self, member: int, quantity: int, reuse: bool, pick: int) -> None:
        key = self._key(member, reuse, pick)
        variables = {"i": {"quantity": quantity, "idempotencyKey": key}}
        result = self.service.gql(PURCHASE, variables, self.people[member].token)
        result = result["purchaseInMailCredits"]
        outcome, refused = attempt(lambda: self.model.purchase(member, quantity, key))
        expect(result, refused)
        if not refused:
            assert result["creditsLeft"] == outcome[0]

    @rule(member=members, card=st.sampled_from([c for c in CARDS if c is not None]))
    def update_card(self, member: int, card: tuple[int, int]) -> None:
        month, year = card
        new_card: dict[str, Any] = {"brand": "Mastercard", "last4": "5555"}
        variables = {"i": {**new_card, "expMonth": month, "expYear": year}}
        result = self.service.gql(CARD, variables, self.people[member].token)
        expect(
            result["updatePaymentMethod"],
            attempt(lambda: self.model.update_card(member, card))[1],
        )

    @rule(
        member=members,
        plan=st.sampled_from(list(spec.PLANS)),
        legacy=st.none() | st.integers(1, 30),
    )
    def change_plan(self, member: int, plan: str, legacy: int | None) -> None:
        variables = {"i": {"plan": plan, "monthlyAllotment": legacy, "idempotencyKey": new_key()}}
        result = self.service.gql(CHANGE, variables, self.people[member].token)["changePlan"]
        expect(result, attempt(lambda: self.model.change_plan(member, plan, legacy))[1])

    @rule(member=members)
    def cancel(self, member: int) -> None:
        result = self.service.gql(CANCEL, token=self.people[member].token)["cancelSubscription"]
        expect(result, attempt(lambda: self.model.cancel(member))[1])

    @precondition(lambda self: self.model.now < HORIZON)
    @rule(hours=st.integers(1, 72) | st.integers(1, 24 * 60) | st.sampled_from([24 * 90]))
    def advance_clock(self, hours: int) -> None:
        result = self.service.gql(ADVANCE, {"i": {"hours": hours}}, self.admin)["advanceClock"]
        assert result["errors"] == []
        self.model.advance(timedelta(hours=hours))
        assert result["now"] == spec.iso(self.model.now)

    @invariant()
    def service_and_model_agree(self) -> None:
        """Every member as stored, their balance as the API shows it, and one member in full.

        The whole GraphQL view of every member after every step would triple the run time, so
        the stored records are compared in full after every step, the balances as the API shows
        them too, and the API's full view of one member every API_VIEW_EVERY steps, in turn.
        """
        if not self.people:
            return
        model, now = self.model, self.model.now
        count = len(self.people)
        query = (
            "query("
            + ", ".join(f"$m{i}: ID!" for i in range(count))
            + ") { now "
            + " ".join(f"m{i}: member(id: $m{i}) {{ inmailBalance }}" for i in range(count))
            + " }"
        )
        ids = {f"m{i}": person.id for i, person in enumerate(self.people)}
        data = self.service.gql(query, ids, token=self.admin)
        assert data["now"] == spec.iso(now)
        for i, member in enumerate(model.members):
            assert data[f"m{i}"]["inmailBalance"] == member.balance(now), f"member {i}"

        snapshot = self.service.run(load(self.service.api.container.mongo.db))
        assert problems(snapshot, now) == []
        stored = stored_views(snapshot, self.people, now)
        for i in range(len(self.people)):
            assert stored[i] == self.expected_view(i), f"member {i} as stored"
        charged = {p.id: 0 for p in self.people}
        for charge in snapshot.charges:
            charged[charge["memberId"]] += charge["status"] == "SUCCEEDED"
        # Every charge that stands paid for exactly one purchase or plan change of the model's
        # (and `problems` holds each purchase's credits to what its charge paid for).
        assert charged == {
            p.id: model.charges.get(i, 0) + model.plan_charges.get(i, 0)
            for i, p in enumerate(self.people)
        }

        self.checks += 1
        if self.checks % API_VIEW_EVERY == 0:
            shown = (self.checks // API_VIEW_EVERY) % len(self.people)
            assert self.api_view(shown) == self.expected_view(shown), f"member {shown} in the API"

    def expected_view(self, i: int) -> dict[str, Any]:
        member, now = self.model.members[i], self.model.now
        sub = member.subscription
        return {
            "plan": member.plan,
            "cap": member.cap,
            "balance": member.balance(now),
            "subscription": None
            if sub is None
            else (
                "ACTIVE" if sub.active else "CANCELED",
                sub.anchor,
                spec.iso(sub.period_start),
                spec.iso(member.next_renewal()),
            ),
            "lots": sorted(lot.view() for lot in member.lots),
            "ledger": [entry.view() for entry in member.ledger],
            "sent": {
                self.conversation_ids[c]: (
                    held.state,
                    held.credited_back,
                    spec.iso(held.responded_at),
                    spec.iso(held.reminder_sent_at),
                )
                for c, held in enumerate(self.model.conversations)
                if held.sender == i
            },
        }

    def api_view(self, i: int) -> dict[str, Any]:
        person = self.people[i]
        got = self.service.gql(
            f"query($id: ID!) {{ member(id: $id) {{ {MEMBER_VIEW} }} }}",
            {"id": person.id},
            token=self.admin,
        )["member"]
        for connection in ("creditLots", "ledger", "conversations"):
            assert got[connection]["pageInfo"]["hasNextPage"] is False
        sub = got["subscription"]
        return {
            "plan": got["plan"]["type"],
            "cap": got["plan"]["maxBalance"],
            "balance": got["inmailBalance"],
            "subscription": None
            if sub is None
            else (
                sub["status"],
                sub["billingDay"],
                sub["currentPeriodStart"],
                sub["nextRenewalAt"],
            ),
            "lots": sorted(
                (
                    n["source"],
                    n["quantity"],
                    n["remaining"],
                    n["grantedAt"],
                    n["expiresAt"],
                    n["status"],
                )
                for n in got["creditLots"]["nodes"]
            ),
            "ledger": [
                (n["at"], n["kind"], n["delta"], n["balanceAfter"])
                for n in reversed(got["ledger"]["nodes"])
            ],
            "sent": {
                n["id"]: (n["state"], n["creditedBack"], n["respondedAt"], n["reminderSentAt"])
                for n in got["conversations"]["nodes"]
                if n["kind"] == "INMAIL" and n["sender"]["id"] == person.id
            },
        }


def stored_views(snapshot: Snapshot, people: list[Person], now: datetime) -> list[dict[str, Any]]:
    """What the database holds of each member, in the shape of `InMailMachine.expected_view`."""
    lots_of: dict[str, list[Doc]] = {p.id: [] for p in people}
    for lot in snapshot.credit_lots:
        lots_of[lot["memberId"]].append(lot)
    entries: dict[str, list[Doc]] = {p.id: [] for p in people}
    for entry in snapshot.ledger:
        entries[entry["memberId"]].append(entry)
    members = {m["_id"]: m for m in snapshot.members}
    views = []
    for person in people:
        doc = members[person.id]
        sub = doc.get("subscription")
        views.append(
            {
                "plan": doc["plan"],
                "cap": cap_of(doc),
                "balance": spendable(lots_of[person.id], now),
                "subscription": None
                if sub is None
                else (
                    sub["status"],
                    sub["billingDay"],
                    spec.iso(sub["periodStart"]),
                    spec.iso(sub.get("nextRenewalAt")),
                ),
                "lots": sorted(
                    (
                        lot["source"],
                        lot["quantity"],
                        lot["remaining"],
                        spec.iso(lot["grantedAt"]),
                        spec.iso(lot["expiresAt"]),
                        lot["status"],
                    )
                    for lot in lots_of[person.id]
                ),
                "ledger": [
                    (spec.iso(e["at"]), e["kind"], e["delta"], e["balanceAfter"])
                    for e in sorted(entries[person.id], key=lambda e: e["seq"])
                ],
                "sent": {
                    c["_id"]: (
                        c["state"],
                        c.get("creditedBack", False),
                        spec.iso(c.get("respondedAt")),
                        spec.iso(c.get("reminderSentAt")),
                    )
                    for c in snapshot.conversations
                    if c.get("kind") == "INMAIL" and c["senderId"] == person.id
                },
            }
        )
    return views


def test_the_service_agrees_with_the_reference_model_over_random_histories(
    mongodb_uri: str, db_name: str
) -> None:
    service = Service(mongodb_uri, db_name)

    class OnThisService(InMailMachine):
        def __init__(self) -> None:
            super().__init__(service)

    try:
        run_state_machine_as_test(
            OnThisService,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=15,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        service.close()
