"""The hot paths keep their measured wins: cached validation, loaders shared, no read-backs,
nothing left for the garbage collector.

Round trips are counted by mongod (`serverStatus` command counters, as `make bench` does),
less drivers' monitoring and the live feed's getMore.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from graphql import GraphQLError, print_ast
from strawberry.schema.schema import validate_document

from benchmarks.commands import round_trips, snapshot, workload_commands
from inmail.bootstrap import build_deps
from inmail.clock import ManualClock
from inmail.domain.plans import PlanType
from inmail.repositories.mongo import Mongo
from inmail.resolvers import limits
from inmail.resolvers.root import build_schema
from inmail.services import inmail as inmail_service
from inmail.services import members as member_service
from support import Api, Person
from support import test_settings as settings_for_tests

PAGE = """
query($n: Int!) { viewer { id inmailBalance
  creditLots(first: $n) { nodes { id remaining } }
  ledger(first: $n) { nodes { id kind delta } }
  conversations(first: $n) { totalCount nodes { id subject
    sender { id name } recipient { id name } messages { body author { id name } } } } } }
"""


async def _round_trips(api: Api, work: Callable[[], Awaitable[object]]) -> int:
    client = api.container.mongo.client
    before = await snapshot(client)
    await work()
    return round_trips(workload_commands(before, await snapshot(client)))


def _count_validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The documents validated from now on, as each was validated."""
    validated: list[str] = []

    def counting(schema: Any, document: Any, rules: Any) -> list[GraphQLError]:
        validated.append(print_ast(document))
        return validate_document(schema, document, rules)

    monkeypatch.setattr(limits, "validate_document", counting)
    return validated


async def test_a_repeated_query_is_validated_once_with_the_limits_still_applied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    validated = _count_validations(monkeypatch)
    schema = build_schema(settings_for_tests())
    document = "query RepeatedForTheCache { __typename }"
    for _ in range(2):
        assert (await schema.execute(document)).errors is None
    assert len(validated) == 1
    too_deep = (
        "{ viewer { " + "conversations { nodes { sender { " * 4 + "id" + " } } }" * 4 + " } }"
    )
    for _ in range(2):
        result = await schema.execute(too_deep)
        assert result.errors
        assert "exceeds maximum operation depth" in result.errors[0].message
    assert len(validated) == 2
    # The same document in other words (here, spacing) is another text: validated again.
    assert (await schema.execute("query RepeatedForTheCache {  __typename }")).errors is None
    assert len(validated) == 3


async def test_validated_texts_are_bounded_least_recently_used_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    validated = _count_validations(monkeypatch)
    schema = build_schema(settings_for_tests())
    texts = [f"query Q{n} {{ __typename }}" for n in range(limits.VALIDATED_TEXTS + 1)]
    await schema.execute(texts[0])
    for text in texts[2:]:
        await schema.execute(text)
        await schema.execute(texts[0])  # used again and again: never the oldest
    assert len(validated) == limits.VALIDATED_TEXTS
    await schema.execute(texts[1])  # new: the oldest other text goes
    await schema.execute(texts[0])
    await schema.execute(texts[2])
    assert len(validated) == limits.VALIDATED_TEXTS + 2  # texts[1], then texts[2] again


async def test_a_sent_inmail_is_answered_with_the_conversation_exactly_as_stored(
    mongo: Mongo,
) -> None:
    # A clock with microseconds: BSON keeps milliseconds, and the answer must match a read.
    clock = ManualClock(datetime(2026, 1, 15, 9, 0, 0, 123456, tzinfo=UTC))
    deps = build_deps(mongo, clock, settings_for_tests())
    ada = await member_service.create_member(
        deps, member_service.NewMember("Ada Lovelace", PlanType.SALES_NAVIGATOR)
    )
    grace = await member_service.create_member(
        deps, member_service.NewMember("Grace Hopper", PlanType.BASIC)
    )
    sent = await inmail_service.send_inmail(
        deps, ada.id, grace.id, "Compilers?", "May I ask about COBOL?", "key-1"
    )
    assert sent.conversation == await deps.reads.conversations.get(sent.conversation.id)
    assert sent.conversation.sent_at.microsecond == 123000
    again = await inmail_service.send_inmail(
        deps, ada.id, grace.id, "Compilers?", "May I ask about COBOL?", "key-1"
    )
    assert again.conversation == sent.conversation


async def _premium(api: Api, name: str) -> Person:
    return await api.create_member(name, "RECRUITER_LITE")


async def test_the_compose_window_reads_each_thing_once(api: Api) -> None:
    ada = await _premium(api, "Ada Lovelace")
    grace = await api.create_member("Grace Hopper", "BASIC", card=None)
    query = (
        "query($r: ID!) { compose(recipientId: $r) { canSend creditsLeft } "
        "viewer { inmailBalance } }"
    )
    data = await api.gql(query, {"r": grace.id}, ada.token)
    assert data["compose"] == {"canSend": True, "creditsLeft": 30}
    # The viewer (with the viewer's live lots, for the balance), the recipient and the
    # awaiting check, in one batch: one.
    assert await _round_trips(api, lambda: api.gql(query, {"r": grace.id}, ada.token)) == 1


async def test_the_member_page_costs_the_same_round_trips_for_two_items_and_for_twelve(
    api: Api,
) -> None:
    viewer = await _premium(api, "Ada Lovelace")
    for i in range(12):
        recipient = await api.create_member(f"Recipient {i}", "BASIC", card=None)
        assert (await api.send(viewer, recipient))["errors"] == []

    async def page(n: int) -> int:
        return await _round_trips(api, lambda: api.gql(PAGE, {"n": n}, viewer.token))

    costs = {n: await page(n) for n in (2, 12)}
    assert costs[2] == costs[12] <= 8, costs


async def test_connecting_two_members_writes_both_sides_in_one_round_trip(api: Api) -> None:
    ada = await _premium(api, "Ada Lovelace")
    grace = await _premium(api, "Grace Hopper")
    client = api.container.mongo.client
    before = await snapshot(client)
    await api.connect(ada, grace)
    commands = workload_commands(before, await snapshot(client))
    assert commands["update"] == 1, commands
    compose = "query($r: ID!) { compose(recipientId: $r) { recipientIsConnection } }"
    for a, b in ((ada, grace), (grace, ada)):
        data = await api.gql(compose, {"r": b.id}, a.token)
        assert data["compose"]["recipientIsConnection"] is True


async def test_a_request_leaves_nothing_of_its_own_for_the_garbage_collector(api: Api) -> None:
    """What a request made (its context, reader, loaders, execution and the records they
    read) is freed by reference counting as the request ends: none of it is in a cycle."""
    ada = await _premium(api, "Ada Lovelace")
    grace = await api.create_member("Grace Hopper", "BASIC", card=None)
    linus = await api.create_member("Linus Torvalds", "BASIC", card=None)
    assert (await api.send(ada, grace))["errors"] == []
    await api.gql(PAGE, {"n": 5}, ada.token)  # every cache of the process filled first
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert (await api.send(ada, linus))["errors"] == []
        data = await api.gql(PAGE, {"n": 5}, ada.token)
        gc.collect()
        left = {f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert data["viewer"]["conversations"]["totalCount"] == 2
    ours = sorted(name for name in left if name.startswith(("inmail.", "graphql.", "strawberry.")))
    assert ours == []
