"""Variables holding more values than any operation takes are refused before they are coerced,
over HTTP and websockets alike: the audit's 520,000 ids to `nodes`, 250,000 sent anonymously,
and 110,000 lot statuses that `creditLots` would have run with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import support
from inmail.repositories.mongo import Mongo
from inmail.resolvers.variables_guard import (
    MAX_LIST_VARIABLE,
    MAX_VARIABLE_VALUES,
)
from support import LiveServer, serve_api
from wsclient import GraphQLSocket, OperationError

NODES = "query($i: [ID!]!) { nodes(ids: $i) { id } }"
LOTS = "query($s: [CreditLotStatus!]) { creditLots(status: $s) { totalCount } }"
UNKNOWN = "65f0c0ffee0000000000beef"  # shaped like the service's ids, naming nothing
TOO_LONG = f"A list in the variables holds more than {MAX_LIST_VARIABLE} values."
TOO_MANY = f"Variables hold more than {MAX_VARIABLE_VALUES} values."


@pytest.fixture
async def live(mongodb_uri: str, db_name: str) -> AsyncIterator[LiveServer]:
    async with serve_api(support.test_settings(), Mongo.connect(mongodb_uri, db_name)) as server:
        yield server


def refused_with(body: dict[str, Any]) -> list[tuple[str, str | None]]:
    assert "data" not in body or body["data"] is None, body
    return [(e["message"], (e.get("extensions") or {}).get("code")) for e in body["errors"]]


async def test_too_many_ids_are_refused_before_the_read_service_counts_them(
    live: LiveServer,
) -> None:
    api = live.api
    ada = await api.create_member()

    past_the_list = await api.raw(NODES, {"i": [UNKNOWN] * (MAX_LIST_VARIABLE + 1)}, ada.token)
    audited = await api.raw(NODES, {"i": [1] * 520_000}, ada.token)
    anonymous = await api.raw(NODES, {"i": [1] * 250_000})
    # Ten lists of a thousand ids, each within its bound: 10,011 values in all.
    many_lists = await api.raw(
        "query($i: [ID!]!, $j: [ID!]!) { a: nodes(ids: $i) { id } b: nodes(ids: $j) { id } }",
        {"i": [UNKNOWN] * 100, "j": [UNKNOWN] * 100}
        | {f"v{n}": [UNKNOWN] * MAX_LIST_VARIABLE for n in range(10)},
        ada.token,
    )
    hundred = await api.raw(NODES, {"i": [ada.id] + [UNKNOWN] * 99}, ada.token)

    assert refused_with(past_the_list) == [(TOO_LONG, "BAD_USER_INPUT")]
    assert refused_with(audited) == [(TOO_LONG, "BAD_USER_INPUT")]
    # Refused before any resolver asked who the caller is.
    assert refused_with(anonymous) == [(TOO_LONG, "BAD_USER_INPUT")]
    assert refused_with(many_lists) == [(TOO_MANY, "BAD_USER_INPUT")]
    assert hundred.get("errors") is None, hundred
    assert hundred["data"]["nodes"] == [{"id": ada.id}] + [None] * 99


async def test_lot_statuses_past_the_bound_are_refused_and_a_few_run(live: LiveServer) -> None:
    api = live.api
    ada = await api.create_member()

    flood = await api.raw(LOTS, {"s": ["ACTIVE"] * 110_000}, ada.token)
    few = await api.raw(LOTS, {"s": ["ACTIVE", "EXPIRED"]}, ada.token)

    assert refused_with(flood) == [(TOO_LONG, "BAD_USER_INPUT")]
    assert few.get("errors") is None, few
    assert few["data"]["creditLots"]["totalCount"] == 1  # the first allotment's lot


async def test_over_a_websocket_the_refusal_is_that_operations_error(
    live: LiveServer, protocol: str
) -> None:
    ada = await live.api.create_member()
    async with GraphQLSocket.open(live.url, ada.token, protocol) as ws:
        refused = await ws.subscribe(NODES, {"i": [1] * 250_000})
        with pytest.raises(OperationError) as error:
            await ws.result(refused)
        answered = await ws.subscribe(NODES, {"i": [ada.id] * 100})
        result = await ws.result(answered)

    errors = error.value.payload
    errors = errors if isinstance(errors, list) else [errors]
    assert [(e["message"], e["extensions"]["code"]) for e in errors] == [
        (TOO_LONG, "BAD_USER_INPUT")
    ]
    assert result.get("errors") is None, result
    assert result["data"]["nodes"] == [{"id": ada.id}] * 100
