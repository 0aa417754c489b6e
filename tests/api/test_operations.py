"""What an operator relies on: /metrics, JSON logs with request ids, and calm bad requests."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

import support
from inmail import logs, observability
from inmail.repositories.mongo import Mongo
from support import Api, LiveServer, metric_sample, open_api, serve_api

# --- helpers -------------------------------------------------------------------------------------


METRICS_TOKEN = "metrics-token-for-the-operations-tests-0123"
SCRAPER = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
async def api(mongodb_uri: str, db_name: str) -> AsyncIterator[Api]:
    """The service with /metrics on its port, for a scraper holding the metrics token."""
    settings = support.test_settings(metrics_token=METRICS_TOKEN)
    async with open_api(mongodb_uri, db_name, settings) as service:
        yield service


async def metrics_text(api: Api) -> str:
    response = await api.client.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200
    return response.text


class Counts:
    """Differences in metric samples between two scrapes of /metrics."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.before = ""

    async def start(self) -> Counts:
        self.before = await metrics_text(self.api)
        return self

    async def delta(self, name: str, **labels: str) -> float:
        after = await metrics_text(self.api)
        return metric_sample(after, name, **labels) - metric_sample(self.before, name, **labels)


# --- /metrics ------------------------------------------------------------------------------------


async def test_metrics_on_the_api_port_need_the_metrics_token(api: Api) -> None:
    anonymous = await api.client.get("/metrics")
    wrong = await api.client.get("/metrics", headers={"Authorization": "Bearer guess-0123456789"})
    member = await api.client.get("/metrics", headers={"Authorization": f"Bearer {api.admin}"})

    assert [anonymous.status_code, wrong.status_code, member.status_code] == [401, 401, 401]
    assert "inmail_" not in anonymous.text + wrong.text + member.text


async def test_without_a_metrics_token_the_api_port_serves_no_metrics(
    mongodb_uri: str, db_name: str
) -> None:
    async with open_api(mongodb_uri, db_name) as service:
        response = await service.client.get("/metrics")
    assert response.status_code == 404
    assert "inmail_" not in response.text


async def test_metrics_answer_in_the_prometheus_text_format(api: Api) -> None:
    response = await api.client.get("/metrics", headers=SCRAPER)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name for f in text_string_to_metric_families(response.text)}
    assert {
        "inmail_graphql_requests",
        "inmail_graphql_request_seconds",
        "inmail_inmails_sent",
        "inmail_credits",
        "inmail_scheduler_pass_seconds",
        "inmail_scheduler_lag_seconds",
        "inmail_subscribers",
    } <= families


async def test_operations_are_counted_by_name_and_outcome_and_timed(api: Api) -> None:
    counts = await Counts(api).start()

    await api.gql("query PlansForTheDashboard { plans { type } }", token=api.admin)
    await api.gql("query PlansForTheDashboard { plans { type } }")  # a name taken: anyone's
    await api.gql("{ now }")
    rejected = await api.raw("query PlansForTheDashboard { noSuchField }")
    assert rejected["errors"]

    requests = "inmail_graphql_requests_total"
    assert await counts.delta(requests, operation="PlansForTheDashboard", outcome="ok") == 2
    assert await counts.delta(requests, operation="PlansForTheDashboard", outcome="error") == 1
    assert await counts.delta(requests, operation="anonymous", outcome="ok") == 1
    latency = "inmail_graphql_request_seconds_count"
    assert await counts.delta(latency, operation="PlansForTheDashboard") == 3


async def test_a_query_with_a_token_whose_member_does_not_exist_counts_once(api: Api) -> None:
    """Its answer is withheld and the query runs again under the refused credentials: one
    request, one operation counted, as with any other bad token."""
    counts = await Counts(api).start()

    body = await api.raw("query Ghost { now viewer { id } }", token=api.token("0" * 24))
    assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]

    # A refused token names no new operation: counted under `other`, once.
    requests = "inmail_graphql_requests_total"
    assert await counts.delta(requests, operation="Ghost", outcome="ok") == 0
    assert await counts.delta(requests, operation="Ghost", outcome="error") == 0
    assert await counts.delta(requests, operation="other", outcome="error") == 1
    assert await counts.delta(requests, operation="other", outcome="ok") == 0
    assert await counts.delta("inmail_graphql_request_seconds_count", operation="other") == 1


async def test_operation_names_a_client_makes_up_do_not_become_labels_without_bound(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observability, "MAX_OPERATION_NAMES", 2)
    counts = await Counts(api).start()

    # A stranger's names, and a document that does not validate, take no slot.
    await api.gql("query Stranger { now }")
    await api.raw("query Invalid { noSuchField }", token=api.admin)
    for name in ("First", "Second", "Third", "Fourth"):
        await api.gql(f"query {name} {{ now }}", token=api.admin)
    hostile = await api.client.post(
        "/graphql", json={"query": "{ now }", "operationName": "drop table; --"}
    )
    assert hostile.status_code < 500

    requests = "inmail_graphql_requests_total"
    assert await counts.delta(requests, operation="First", outcome="ok") == 1
    assert await counts.delta(requests, operation="Second", outcome="ok") == 1
    for unlabelled in ("Stranger", "Invalid", "Third", "Fourth"):
        assert await counts.delta(requests, operation=unlabelled, outcome="ok") == 0
        assert await counts.delta(requests, operation=unlabelled, outcome="error") == 0
    assert await counts.delta(requests, operation="other", outcome="ok") == 3
    assert await counts.delta(requests, operation="other", outcome="error") == 2


async def test_inmails_sent_and_credits_moved_are_counted_from_the_ledger(api: Api) -> None:
    counts = await Counts(api).start()

    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")  # granted 5
    grace = await api.create_member("Grace Hopper", "BASIC")
    sent = await api.send(ada, grace)  # spent 1
    assert sent["errors"] == []
    responded = await api.respond(grace, sent["conversation"]["id"])  # credited back 1
    assert responded["errors"] == []
    cancelled = await api.gql(
        "mutation { cancelSubscription { errors { code } } }", token=ada.token
    )  # forfeited 5
    assert cancelled["cancelSubscription"]["errors"] == []

    assert await counts.delta("inmail_inmails_sent_total") == 1
    credits = "inmail_credits_total"
    assert await counts.delta(credits, kind="GRANT") == 5
    assert await counts.delta(credits, kind="DEBIT") == 1
    assert await counts.delta(credits, kind="CREDIT_BACK") == 1
    assert await counts.delta(credits, kind="FORFEIT") == 5
    assert await counts.delta(credits, kind="EXPIRE") == 0


# --- request ids and JSON logs --------------------------------------------------------------------


async def test_every_response_carries_a_request_id_and_keeps_the_clients(api: Api) -> None:
    mine = await api.client.get("/healthz", headers={"X-Request-ID": "trace-7f3a"})
    theirs = await api.client.get("/healthz")
    long = await api.client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    # Bytes past ASCII would come back changed (read as Latin-1, sent as UTF-8): not echoed.
    odd = await api.client.get("/healthz", headers=[(b"X-Request-ID", b"abc\xff\xfe")])
    spaced = await api.client.get("/healthz", headers={"X-Request-ID": "a b"})

    assert mine.headers["x-request-id"] == "trace-7f3a"
    assert len(theirs.headers["x-request-id"]) == 32
    assert long.headers["x-request-id"] == "x" * 64
    for made in (odd, spaced):
        assert len(made.headers["x-request-id"]) == 32, made.headers


_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The service's JSON logging, as `inmail serve` configures it, written to a buffer."""
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {name: logging.getLogger(name) for name in _UVICORN_LOGGERS}
    saved_state = {
        name: (lg.handlers[:], lg.propagate, lg.level, lg.disabled) for name, lg in saved.items()
    }
    for logger in saved.values():  # as `inmail serve` leaves them, whatever ran before here
        logger.setLevel(logging.NOTSET)
        logger.disabled = False
    logs.configure_logging("INFO", "json")
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:], level = saved_root
        root.setLevel(level)
        for name, (handlers, propagate, lg_level, disabled) in saved_state.items():
            saved[name].handlers[:] = handlers
            saved[name].propagate = propagate
            saved[name].setLevel(lg_level)
            saved[name].disabled = disabled


@pytest.fixture
async def served(mongodb_uri: str, db_name: str) -> AsyncIterator[LiveServer]:
    """The app behind a real uvicorn on a loopback port, so uvicorn's own logs are written."""
    settings = support.test_settings(metrics_token=METRICS_TOKEN)
    async with serve_api(settings, Mongo.connect(mongodb_uri, db_name), log_config=None) as server:
        yield server


def json_lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


async def test_uvicorns_access_log_is_json_and_carries_the_request_id(
    json_log: io.StringIO, served: LiveServer
) -> None:
    client = served.api.client
    chosen = await client.post(
        "/graphql", json={"query": "{ now }"}, headers={"X-Request-ID": "checkout-42"}
    )
    generated = await client.get("/readyz")
    assert chosen.status_code == generated.status_code == 200

    records = json_lines(json_log)
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    by_id = {r["request_id"]: r for r in access}
    assert '"POST /graphql HTTP/1.1" 200' in by_id["checkout-42"]["message"]
    assert '"GET /readyz HTTP/1.1" 200' in by_id[generated.headers["x-request-id"]]["message"]
    assert {"ts", "level", "logger", "message", "request_id"} <= set(by_id["checkout-42"])
    started = [r for r in records if r["logger"] == "uvicorn.error"]
    assert started, "uvicorn's own messages go through the same JSON handler"
    assert all(r["request_id"] == "-" for r in started)


async def test_a_subscription_its_client_ends_counts_as_ok_and_is_not_timed(
    served: LiveServer,
) -> None:
    ada = await served.api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    counts = await Counts(served.api).start()

    async with connect(served.url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        init = {"Authorization": f"Bearer {ada.token}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        query = "subscription BalanceWatch { balanceChanged { balance } }"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        first = json.loads(await ws.recv())
        assert first["payload"]["data"]["balanceChanged"] == {"balance": 5}
        await ws.send(json.dumps({"id": "1", "type": "complete"}))

    requests = "inmail_graphql_requests_total"
    for _ in range(500):  # the server winds the subscription down after the socket closes
        if await counts.delta(requests, operation="BalanceWatch", outcome="ok"):
            break
        await asyncio.sleep(0.02)
    assert await counts.delta(requests, operation="BalanceWatch", outcome="ok") == 1
    assert await counts.delta(requests, operation="BalanceWatch", outcome="error") == 0
    assert await counts.delta("inmail_graphql_request_seconds_count", operation="BalanceWatch") == 0


# --- bad requests --------------------------------------------------------------------------------


async def test_a_body_that_is_not_json_gets_400(api: Api) -> None:
    response = await api.client.post(
        "/graphql", content=b"{query: now", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"[1, 2, 3]", "application/json"),
        (b'{"query": 42}', "application/json"),
        (b'{"query": "{ now }", "variables": "nope"}', "application/json"),
        (b"{}", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"query=now", "application/x-www-form-urlencoded"),
        (b"{ now }", "text/plain"),
    ],
)
async def test_malformed_requests_get_a_client_error_never_a_500(
    api: Api, content: bytes, content_type: str
) -> None:
    response = await api.client.post(
        "/graphql", content=content, headers={"content-type": content_type}
    )
    assert 400 <= response.status_code < 500 or response.json()["errors"]
    assert "Traceback" not in response.text


async def test_an_unknown_field_gets_a_graphql_validation_error(api: Api) -> None:
    response = await api.post("{ now favouriteColour }")

    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert "favouriteColour" in error["message"]


async def test_a_body_over_the_limit_gets_413_whether_or_not_it_declares_its_length(
    mongodb_uri: str, db_name: str
) -> None:
    padding = " " * 2000
    async with open_api(mongodb_uri, db_name, support.test_settings(max_body_bytes=1024)) as api:
        declared = await api.post("{ now }" + padding)

        async def chunks() -> AsyncIterator[bytes]:
            yield json.dumps({"query": "{ now }" + padding}).encode()

        streamed = await api.client.post(
            "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        small = await api.post("{ now }")

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert small.status_code == 200
