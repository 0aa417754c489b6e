"""Live updates across processes: two uvicorn servers on one mongod, bare websocket clients.

Process A takes the mutations; subscribers sit on process B (and on A), speaking
graphql-transport-ws and the older graphql-ws through the `websockets` library, so the client
is not our code. Every wait is generous; the assertions are on what arrives, never on speed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.servers import ServiceProcess, start_all
from inmail.bootstrap import build_container
from inmail.repositories.mongo import Mongo
from support import Api, Person, session_service_env
from support import test_settings as settings_for_tests
from wsclient import (
    BALANCE_CHANGED,
    LEGACY_WS,
    PROTOCOLS,
    TRANSPORT_WS,
    GraphQLSocket,
    OperationError,
    graphql_ws_url,
    refusal_close_code,
)

pytestmark = pytest.mark.slow


def _environment(mongodb_uri: str, db_name: str, data_dir: Path) -> dict[str, str]:
    return session_service_env(mongodb_uri, data_dir, db_name, INMAIL_LOG_LEVEL="WARNING")


@pytest.fixture
def servers(
    mongodb_uri: str, db_name: str, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """Processes A and B: two uvicorn servers on the same database."""
    env = _environment(mongodb_uri, db_name, tmp_path / "data")
    started = [
        ServiceProcess.uvicorn(env, tmp_path / f"{name}.log", "--log-level", "warning")
        for name in ("a", "b")
    ]
    try:
        start_all(started)
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


@pytest.fixture
async def api_a(
    servers: tuple[ServiceProcess, ServiceProcess], mongodb_uri: str, db_name: str
) -> AsyncIterator[Api]:
    """A client of process A (the container here only mints tokens with the servers' secret)."""
    container = build_container(
        settings_for_tests(clock="system"), Mongo.connect(mongodb_uri, db_name)
    )
    async with httpx.AsyncClient(base_url=servers[0].url, timeout=30.0) as client:
        yield Api(client, container)
    await container.mongo.close()


async def cancel(api: Api, member: Person) -> None:
    data = await api.gql("mutation { cancelSubscription { errors { code } } }", token=member.token)
    assert data["cancelSubscription"]["errors"] == []


async def restart_on(api: Api, member: Person, plan: str) -> None:
    data = await api.gql(
        "mutation($p: PlanType!, $k: String) { changePlan(input: {plan: $p, idempotencyKey: $k}) "
        "{ errors { code } } }",
        {"p": plan, "k": f"restart-{member.id}-{plan}"},
        member.token,
    )
    assert data["changePlan"]["errors"] == []


def short(update: dict[str, Any]) -> tuple[str, int]:
    return (update["reason"], update["balance"])


async def test_a_subscriber_on_b_sees_exactly_the_balances_of_changes_made_through_a(
    servers: tuple[ServiceProcess, ServiceProcess], api_a: Api
) -> None:
    a, b = servers
    api = api_a
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")  # 5
    grace = await api.create_member("Grace Hopper", "PREMIUM_CAREER")
    linus = await api.create_member("Linus Torvalds", "BASIC", card=None)
    async with (
        GraphQLSocket.open(graphql_ws_url(b.url), ada.token, TRANSPORT_WS) as on_b,
        GraphQLSocket.open(graphql_ws_url(b.url), api.admin, LEGACY_WS) as admin_on_b,
        GraphQLSocket.open(graphql_ws_url(a.url), ada.token, LEGACY_WS) as on_a,
    ):
        watchers = [
            (on_b, await on_b.subscribe(BALANCE_CHANGED)),
            (admin_on_b, await admin_on_b.subscribe(BALANCE_CHANGED, {"m": ada.id})),
            (on_a, await on_a.subscribe(BALANCE_CHANGED)),
        ]
        for ws, op in watchers:  # each starts from the balance as it stands
            assert short(await ws.update(op)) == ("GRANT", 5)

        first = await api.send(ada, grace)  # 4
        assert first["errors"] == []
        assert (await api.send(ada, linus))["errors"] == []  # 3
        answered = await api.respond(grace, first["conversation"]["id"], "REPLY", "Gladly.")
        assert answered["creditedBack"] is True  # 4
        assert (await api.purchase(ada, 2))["errors"] == []  # 6
        await cancel(api, ada)  # FORFEIT to 0
        await restart_on(api, ada, "PREMIUM_CAREER")  # a last change: nothing came twice before

        expected = [
            ("DEBIT", 4),
            ("DEBIT", 3),
            ("CREDIT_BACK", 4),
            ("GRANT", 6),
            ("FORFEIT", 0),
            ("GRANT", 5),
        ]
        for ws, op in watchers:
            seen = [await ws.update(op) for _ in expected]
            assert [short(update) for update in seen] == expected
            assert {update["memberId"] for update in seen} == {ada.id}
            assert [update["delta"] for update in seen] == [-1, -1, 1, 2, -6, 5]


async def test_process_b_refuses_connections_without_a_good_token_with_4403(
    servers: tuple[ServiceProcess, ServiceProcess],
) -> None:
    b = servers[1]
    for protocol in PROTOCOLS:
        assert await refusal_close_code(graphql_ws_url(b.url), None, protocol) == 4403
        assert await refusal_close_code(graphql_ws_url(b.url), "not-a-jwt", protocol) == 4403


async def test_process_b_refuses_a_member_watching_someone_elses_balance(
    servers: tuple[ServiceProcess, ServiceProcess], api_a: Api
) -> None:
    ada = await api_a.create_member("Ada Lovelace")
    mallory = await api_a.create_member("Mallory Jones")
    for protocol in PROTOCOLS:
        async with GraphQLSocket.open(
            graphql_ws_url(servers[1].url), mallory.token, protocol
        ) as ws:
            op = await ws.subscribe(BALANCE_CHANGED, {"m": ada.id})
            with pytest.raises(OperationError) as refused:
                await ws.result(op)
        errors = refused.value.payload
        first = errors[0] if isinstance(errors, list) else errors
        assert first["extensions"]["code"] == "FORBIDDEN"
