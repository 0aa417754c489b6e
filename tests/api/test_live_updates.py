"""Live balance updates in one process: the broker, and balanceChanged over real websockets.

The app runs in this process under uvicorn on a loopback port (so the broker can be inspected)
and a bare `websockets` client speaks both subprotocols to it. The change stream behind it is
the session's real mongod. Waits are generous and never asserted on: the tests check what
arrives, not how fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from inmail.domain.credits import LedgerKind
from inmail.domain.model import LedgerEntry
from inmail.repositories.memory import InMemoryMongo
from inmail.repositories.mongo import Mongo
from inmail.services.events import BalanceUpdate
from inmail.services.live import Subscriber, coalesce
from inmail.settings import Settings
from support import Api, LiveServer, Person, serve_api
from support import test_settings as settings_for_tests
from wsclient import (
    BALANCE_CHANGED,
    LEGACY_WS,
    PROTOCOLS,
    TRANSPORT_WS,
    WAIT,
    GraphQLSocket,
    OperationError,
    refusal_close_code,
)

AT = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def serve(settings: Settings, mongo: Mongo) -> AbstractAsyncContextManager[LiveServer]:
    """The app under uvicorn in this process, on a free loopback port."""
    return serve_api(settings, mongo, log_level="warning")


@pytest.fixture
async def live(mongodb_uri: str, db_name: str) -> AsyncIterator[LiveServer]:
    async with serve(settings_for_tests(), Mongo.connect(mongodb_uri, db_name)) as server:
        yield server


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait (generously) until a condition holds; the test asserts on it afterwards."""
    for _ in range(int(WAIT / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)


def subscribers_gauge() -> float:
    value = REGISTRY.get_sample_value("inmail_subscribers")
    return value or 0.0


def granted(member: Person, balance: int, delta: int, at: str) -> dict[str, Any]:
    """A GRANT update in full, as the client reads it."""
    return {"memberId": member.id, "balance": balance, "delta": delta, "reason": "GRANT", "at": at}


def short(update: dict[str, Any]) -> tuple[str, int, int]:
    return (update["reason"], update["delta"], update["balance"])


async def watch(
    socket_: GraphQLSocket, member: Person | None = None, member_id: str | None = None
) -> str:
    variables = {"m": member_id if member_id is not None else (member.id if member else None)}
    return await socket_.subscribe(BALANCE_CHANGED, variables)


async def premium_pair(api: Api) -> tuple[Person, Person]:
    """Ada and Grace, both on Premium Career with January's five credits."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    return ada, await api.create_member("Grace Hopper", "PREMIUM_CAREER")


# --- balanceChanged over websockets ------------------------------------------------------


async def test_a_member_sees_every_change_to_their_balance_in_order(
    live: LiveServer, protocol: str
) -> None:
    api = live.api
    ada, grace = await premium_pair(api)
    async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
        op = await watch(ws)
        first = await ws.update(op)
        assert first == granted(ada, balance=5, delta=5, at="2026-01-15T09:00:00Z")
        sent = await api.send(ada, grace)
        assert sent["errors"] == []
        assert short(await ws.update(op)) == ("DEBIT", -1, 4)
        answered = await api.respond(grace, sent["conversation"]["id"], "INTERESTED")
        assert answered["creditedBack"] is True
        assert short(await ws.update(op)) == ("CREDIT_BACK", 1, 5)
        bought = await api.purchase(ada, 2)
        assert bought["errors"] == []
        assert short(await ws.update(op)) == ("GRANT", 2, 7)
        assert await api.balance(ada) == 7


async def test_a_member_with_no_ledger_history_gets_a_first_update_at_once(
    live: LiveServer, protocol: str
) -> None:
    api = live.api
    basil = await api.create_member("Basil Hallward", "BASIC", card=None)
    ledger = await api.gql("{ viewer { ledger { totalCount } } }", token=basil.token)
    assert ledger["viewer"]["ledger"]["totalCount"] == 0
    async with GraphQLSocket.open(live.url, basil.token, protocol) as ws:
        op = await watch(ws)
        assert await ws.update(op) == granted(basil, balance=0, delta=0, at="2026-01-15T09:00:00Z")
        # Then the member's first real change, as for anyone (an admin's, so no card is needed).
        changed = await api.gql(
            "mutation($m: ID!) { changePlan(input: {plan: PREMIUM_CAREER, memberId: $m}) "
            "{ errors { code } } }",
            {"m": basil.id},
            token=api.admin,
        )
        assert changed["changePlan"]["errors"] == []
        assert short(await ws.update(op)) == ("GRANT", 5, 5)


async def test_the_first_update_is_the_balance_as_of_now_though_nothing_has_written_it_yet(
    live: LiveServer, protocol: str
) -> None:
    api = live.api
    ada, grace = await premium_pair(api)
    # February's cycle started at midnight; the scheduler is off, so nothing wrote it.
    api.clock.set(datetime(2026, 2, 15, 9, 5, tzinfo=UTC))
    assert await api.balance(ada) == 10
    async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
        op = await watch(ws)
        assert await ws.update(op) == granted(ada, balance=10, delta=5, at="2026-02-15T00:00:00Z")
        # The send writes February's grant first, then the debit: the grant is not repeated.
        sent = await api.send(ada, grace)
        assert sent["errors"] == []
        assert sent["creditsLeft"] == 9
        assert short(await ws.update(op)) == ("DEBIT", -1, 9)


async def test_the_first_update_says_the_same_whether_or_not_the_catch_up_was_written(
    live: LiveServer,
) -> None:
    """Three months in: February's and March's grants, January's lot lapsed, April's grant,
    none written for Ada; Grace's written by a read. Both first updates name the latest change
    alone (it used to be Ada's whole catch-up under the last one's reason: +5 as an EXPIRE)."""
    api = live.api
    ada, grace = await premium_pair(api)
    api.clock.set(datetime(2026, 4, 15, 9, 5, tzinfo=UTC))
    written = await api.gql("{ viewer { ledger { totalCount } } }", token=grace.token)
    assert written["viewer"]["ledger"]["totalCount"] > 1  # Grace's catch-up is recorded
    async with GraphQLSocket.open(live.url, api.admin) as ws:
        unwritten_first = await ws.update(await watch(ws, ada))
        written_first = await ws.update(await watch(ws, grace))
    assert {**unwritten_first, "memberId": None} == {**written_first, "memberId": None}
    assert unwritten_first["balance"] == await api.balance(ada)


async def test_an_admin_watching_two_members_on_one_socket_gets_both_balances_as_of_now(
    live: LiveServer,
) -> None:
    api = live.api
    ada, grace = await premium_pair(api)
    api.clock.set(datetime(2026, 4, 15, 9, 5, tzinfo=UTC))  # three cycles in; January's lots lapsed
    expected = await api.balance(ada)
    assert expected == await api.balance(grace) == 10
    async with GraphQLSocket.open(live.url, api.admin) as ws:
        ada_op = await watch(ws, ada)
        grace_op = await watch(ws, grace)
        assert (await ws.update(ada_op))["balance"] == expected
        assert (await ws.update(grace_op))["balance"] == expected


async def test_a_cancellation_is_one_forfeit_to_zero_and_a_plan_change_a_forfeit_then_a_grant(
    live: LiveServer,
) -> None:
    api = live.api
    ada, grace = await premium_pair(api)
    async with GraphQLSocket.open(live.url, api.admin) as ws:
        ada_op = await watch(ws, ada)
        grace_op = await watch(ws, grace)
        assert short(await ws.update(ada_op)) == ("GRANT", 5, 5)
        assert short(await ws.update(grace_op)) == ("GRANT", 5, 5)
        await api.purchase(ada, 2)  # two lots now: the allotment and the purchase
        assert short(await ws.update(ada_op)) == ("GRANT", 2, 7)
        cancelled = await api.gql(
            "mutation { cancelSubscription { errors { code } } }", token=ada.token
        )
        assert cancelled["cancelSubscription"]["errors"] == []
        assert short(await ws.update(ada_op)) == ("FORFEIT", -7, 0)

        await api.purchase(grace, 3)
        assert short(await ws.update(grace_op)) == ("GRANT", 3, 8)
        changed = await api.gql(
            'mutation { changePlan(input: {plan: PREMIUM_BUSINESS, idempotencyKey: "grace-up"}) '
            "{ errors { code } } }",
            token=grace.token,
        )
        assert changed["changePlan"]["errors"] == []
        assert short(await ws.update(grace_op)) == ("FORFEIT", -8, 0)
        assert short(await ws.update(grace_op)) == ("GRANT", 15, 15)


async def test_lapsed_credits_expire_in_order_before_the_change_that_notices_them(
    live: LiveServer,
) -> None:
    api = live.api
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    grace = await api.create_member("Grace Hopper", "BASIC", card=None)
    async with GraphQLSocket.open(live.url, ada.token) as ws:
        op = await watch(ws)
        previous = await ws.update(op)
        api.advance(days=95)  # cycles came due and the first allotment lapsed, unrecorded
        assert (await api.send(ada, grace))["errors"] == []
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["reason"] != "DEBIT":
            seen.append(await ws.update(op))
    reasons = [update["reason"] for update in seen]
    assert "EXPIRE" in reasons
    assert reasons.index("EXPIRE") < reasons.index("DEBIT")
    for update in seen:
        assert update["balance"] == previous["balance"] + update["delta"]
        previous = update
    assert seen[-1]["balance"] == await api.balance(ada)


async def test_a_member_cannot_watch_another_members_balance(live: LiveServer) -> None:
    api = live.api
    ada = await api.create_member("Ada Lovelace")
    mallory = await api.create_member("Mallory Jones")
    for protocol in PROTOCOLS:
        async with GraphQLSocket.open(live.url, mallory.token, protocol) as ws:
            op = await watch(ws, ada)
            with pytest.raises(OperationError) as refused:
                await ws.result(op)
            errors = refused.value.payload
            errors = errors if isinstance(errors, list) else [errors]
            assert errors[0]["extensions"]["code"] == "FORBIDDEN"
    assert live.broker.subscriber_count == 0


async def test_an_admin_watches_any_member_but_must_name_one(live: LiveServer) -> None:
    api = live.api
    ada = await api.create_member("Ada Lovelace")
    async with GraphQLSocket.open(live.url, api.admin) as ws:
        for member_id in (None, "0123456789abcdef01234567"):
            op = await watch(ws, member_id=member_id)
            with pytest.raises(OperationError) as refused:
                await ws.result(op)
            assert refused.value.payload[0]["extensions"]["code"] == "BAD_USER_INPUT"
        op = await watch(ws, ada)
        assert short(await ws.update(op)) == ("GRANT", 5, 5)
        await api.purchase(ada, 1)
        assert short(await ws.update(op)) == ("GRANT", 1, 6)


@pytest.mark.parametrize(
    "token", ["none", "garbage", "wrongly-signed", "lone-surrogate", "signed-with-a-surrogate"]
)
async def test_a_connection_without_a_good_token_is_closed_with_4403(
    live: LiveServer, protocol: str, token: str
) -> None:
    bad = {
        "none": None,
        "garbage": "not-a-jwt",
        "wrongly-signed": live.api.token("someone") + "x",
        "lone-surrogate": "\ud800",
        "signed-with-a-surrogate": live.api.token("someone") + "\ud800",
    }[token]
    assert await refusal_close_code(live.url, bad, protocol) == 4403


async def test_a_socket_that_closes_releases_its_subscriptions(live: LiveServer) -> None:
    api = live.api
    ada = await api.create_member("Ada Lovelace")
    before = subscribers_gauge()
    async with GraphQLSocket.open(live.url, ada.token, LEGACY_WS) as ws:
        op = await watch(ws)
        await ws.update(op)
        assert live.broker.subscriber_count == 1
        assert subscribers_gauge() == before + 1
    await eventually(lambda: live.broker.subscriber_count == 0)
    assert live.broker.subscriber_count == 0
    assert subscribers_gauge() == before


async def test_stopping_a_subscription_releases_it_and_the_socket_stays_usable(
    live: LiveServer,
) -> None:
    api = live.api
    ada = await api.create_member("Ada Lovelace")
    async with GraphQLSocket.open(live.url, ada.token, TRANSPORT_WS) as ws:
        op = await watch(ws)
        await ws.update(op)
        await ws.stop(op)
        await eventually(lambda: live.broker.subscriber_count == 0)
        assert live.broker.subscriber_count == 0
        again = await watch(ws)
        assert short(await ws.update(again)) == ("GRANT", 5, 5)


async def test_the_subscriptions_per_connection_limit_comes_from_the_settings(
    mongodb_uri: str, db_name: str
) -> None:
    settings = settings_for_tests(ws_max_subscriptions=2)
    async with serve(settings, Mongo.connect(mongodb_uri, db_name)) as server:
        ada = await server.api.create_member("Ada Lovelace")
        async with GraphQLSocket.open(server.url, ada.token) as ws:
            first, second = await watch(ws), await watch(ws)
            await ws.update(first)
            await ws.update(second)
            third = await watch(ws)
            with pytest.raises(OperationError) as refused:
                await ws.result(third)
            payload = refused.value.payload
            [error] = payload if isinstance(payload, list) else [payload]
            assert error["message"] == "Subscription limit reached"
            assert error["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"


async def test_websockets_from_an_origin_not_allowed_are_refused(
    mongodb_uri: str, db_name: str
) -> None:
    settings = settings_for_tests(allowed_origins=("https://app.example",))
    async with serve(settings, Mongo.connect(mongodb_uri, db_name)) as server:
        member = await server.api.create_member("Ada Lovelace")
        with pytest.raises(InvalidStatus):
            async with connect(
                server.url,
                subprotocols=[Subprotocol(TRANSPORT_WS)],
                origin=Origin("https://evil.example"),
            ):
                pass
        async with GraphQLSocket.open(server.url, member.token) as ws:
            assert short(await ws.update(await watch(ws))) == ("GRANT", 5, 5)


async def test_the_in_memory_fallback_delivers_updates_from_the_process_itself() -> None:
    mongo = InMemoryMongo("inmail_live")
    async with serve(settings_for_tests(), mongo) as server:
        api = server.api
        ada = await api.create_member("Ada Lovelace")
        async with GraphQLSocket.open(server.url, ada.token) as ws:
            op = await watch(ws)
            assert short(await ws.update(op)) == ("GRANT", 5, 5)
            await api.purchase(ada, 2)
            assert short(await ws.update(op)) == ("GRANT", 2, 7)


# --- the broker and its subscribers --------------------------------------------------------


def update(seq: int, balance: int, delta: int = 1, member_id: str = "ada") -> BalanceUpdate:
    return BalanceUpdate(member_id, balance, delta, LedgerKind.GRANT, AT, seq)


def entry(seq: int, kind: LedgerKind, delta: int, balance: int) -> LedgerEntry:
    return LedgerEntry(f"e{seq}", "ada", seq, AT, kind, delta, balance)


async def test_a_subscriber_that_never_reads_keeps_the_latest_balance_in_bounded_memory() -> None:
    slow = Subscriber("ada", capacity=8)
    for seq in range(1, 10_001):
        slow.offer(update(seq, balance=seq))
    assert slow.pending == 8
    assert slow.merged == 10_000 - 8
    slow.close()
    queued = [u async for u in slow]
    assert queued[-1].balance == 10_000
    assert [u.seq for u in queued] == sorted(u.seq for u in queued)
    assert sum(u.delta for u in queued) == 10_000  # the deltas still add up to the balance


async def test_a_slow_subscriber_never_holds_up_another_subscriber_of_the_same_member() -> None:
    slow, fast = Subscriber("ada", capacity=4), Subscriber("ada", capacity=4)
    received: list[int] = []
    for seq in range(1, 101):
        for subscriber in (slow, fast):
            subscriber.offer(update(seq, balance=seq))  # returns at once, whatever happens
        received.append((await anext(fast)).balance)
    assert received == list(range(1, 101))
    assert slow.pending == 4


async def test_a_subscriber_gets_each_update_once_in_ledger_order() -> None:
    subscriber = Subscriber("ada")
    subscriber.offer(update(2, 6))
    subscriber.start_from(update(1, 5))  # the latest recorded change, read after registering
    subscriber.offer(update(2, 6))  # the same change again (say, from a resumed stream)
    subscriber.offer(update(1, 5))
    subscriber.offer(update(3, 7))
    subscriber.close()
    assert [u.seq async for u in subscriber] == [1, 2, 3]


async def test_a_merged_update_straddling_the_first_one_given_says_only_what_follows() -> None:
    """The first update is a renewal not yet written (seq 8, +10 to 20). The next write records
    it as entry 8 and a purchase as entry 9 (+1 to 21), both grants: one merged update, 8-9,
    +11. The subscriber has said the renewal already: it gets +1 (it used to get +11)."""
    subscriber = Subscriber("ada")
    subscriber.start_from(update(8, 20, delta=10))
    renewal, purchase = entry(8, LedgerKind.GRANT, 10, 20), entry(9, LedgerKind.GRANT, 1, 21)
    [merged] = coalesce([renewal, purchase])
    assert (merged.delta, merged.starts, merged.seq) == (11, 8, 9)
    subscriber.offer(merged)
    subscriber.close()
    given = [(u.delta, u.balance) async for u in subscriber]
    assert given == [(10, 20), (1, 21)]


async def test_after_changes_went_unsaid_the_next_update_moves_by_all_of_them() -> None:
    """A catch-up after a gap in the change stream gives the member's latest entry alone: its
    delta covers the entries missed, so the deltas still add up to the balance."""
    subscriber = Subscriber("ada")
    subscriber.start_from(update(5, 10, delta=2))
    subscriber.offer(BalanceUpdate("ada", 7, -1, LedgerKind.DEBIT, AT, 9))  # 6, 7, 8 unseen
    subscriber.close()
    given = [(u.delta, u.balance) async for u in subscriber]
    assert given == [(2, 10), (-3, 7)]


async def test_a_change_that_arrived_before_the_first_update_follows_it_exactly() -> None:
    subscriber = Subscriber("ada")
    subscriber.offer(BalanceUpdate("ada", 21, 11, LedgerKind.GRANT, AT, 9, first_seq=8))
    subscriber.start_from(update(8, 20, delta=10))  # read after registering: the renewal
    subscriber.close()
    given = [(u.delta, u.balance) async for u in subscriber]
    assert given == [(10, 20), (1, 21)]


def test_one_transactions_entries_of_one_kind_make_one_update() -> None:
    forfeits = [
        entry(5, LedgerKind.FORFEIT, -3, 3),
        entry(6, LedgerKind.FORFEIT, -1, 2),
        entry(7, LedgerKind.FORFEIT, -2, 0),
    ]
    assert [(u.reason, u.delta, u.balance, u.seq) for u in coalesce(forfeits)] == [
        (LedgerKind.FORFEIT, -6, 0, 7)
    ]
    plan_change = [*forfeits, entry(8, LedgerKind.GRANT, 15, 15)]
    assert [(u.reason, u.delta, u.balance) for u in coalesce(plan_change)] == [
        (LedgerKind.FORFEIT, -6, 0),
        (LedgerKind.GRANT, 15, 15),
    ]
