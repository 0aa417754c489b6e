"""`inmail serve --workers 2` on the embedded mongod: serves, counts across workers, stops clean."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from harness.servers import INMAIL, ServiceProcess, service_env
from inmail.processes import free_port, pid_alive
from support import metric_sample, post_graphql

pytestmark = pytest.mark.slow

GIVE_UP = 120.0  # a guard against hanging forever, not a performance expectation


def _get(url: str) -> tuple[int, str, bytes]:
    """Status, content type and body of a GET."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers.get("content-type", ""), response.read()


def _post(
    port: int, query: str, request_id: str | None = None, token: str | None = None
) -> tuple[dict[str, Any], str]:
    # urllib opens a new connection per request: the kernel hands each to either worker.
    body, headers = post_graphql(f"http://127.0.0.1:{port}", query, token, request_id=request_id)
    return body, headers["x-request-id"]


def _worker_pids(parent: int) -> set[int]:
    """uvicorn's worker processes: the parent's children started by multiprocessing's spawn."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            found.add(int(stat.parent.name))
    return found


class Served:
    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "data"
        self.tmp_dir = tmp_path / "tmp"
        self.tmp_dir.mkdir()
        self.metrics_port = free_port()
        self.env = service_env(
            INMAIL_DATA_DIR=str(self.data_dir),
            INMAIL_LOG_FORMAT="json",
            INMAIL_METRICS_PORT=str(self.metrics_port),
            TMPDIR=str(self.tmp_dir),
        )
        self.server = ServiceProcess.serve(self.env, tmp_path / "serve.log", "--workers", "2")
        self.port = self.server.port
        self.url = self.server.url
        self.server.start()

    @property
    def pid(self) -> int:
        return self.server.pid

    def log(self) -> str:
        return self.server.log()

    def wait_ready(self) -> None:
        self.server.wait_ready(GIVE_UP)

    def token(self, *args: str) -> str:
        out = subprocess.run(
            [*INMAIL, "token", *args], env=self.env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def mongod_pid(self) -> int | None:
        lock = self.data_dir / "mongod" / "mongod.lock"
        text = lock.read_text().strip() if lock.exists() else ""
        return int(text) if text.isdigit() else None

    def stop(self) -> int | None:
        return self.server.stop(timeout=GIVE_UP)

    def kill(self) -> None:
        self.server.kill()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()  # only if a test failed before stopping it


def test_two_workers_serve_the_api_on_the_embedded_mongod_and_stop_with_it(
    served: Served,
) -> None:
    mongod = served.mongod_pid()
    assert mongod is not None
    assert pid_alive(mongod)
    workers = _worker_pids(served.pid)
    assert len(workers) == 2
    assert len(list(served.tmp_dir.glob("inmail-metrics-*"))) == 1, "the workers' metrics folder"

    body, _ = _post(served.port, "{ now plans { type } }")
    assert body.get("errors") is None
    assert {"type": "PREMIUM_CAREER"} in body["data"]["plans"]
    assert body["data"]["now"]

    assert served.stop() == 0
    assert not pid_alive(mongod), "the embedded mongod stops with serve"
    assert served.mongod_pid() is None, "mongod.lock is emptied by a clean mongod shutdown"
    assert not any(pid_alive(pid) for pid in workers), "no worker outlives serve"
    assert list(served.tmp_dir.glob("inmail-metrics-*")) == [], "the metrics folder is removed"
    assert "Traceback" not in served.log()


def test_metrics_add_up_across_workers_whichever_one_answers(served: Served) -> None:
    admin = served.token("--admin")  # a signed-in caller's operation names become labels
    for _ in range(10):
        body, _ = _post(served.port, "query WorkersProbe { now }", token=admin)
        assert body.get("errors") is None

    # One metrics listener for the server, in the process that runs the workers, adds them up.
    for _ in range(4):
        status, content_type, text = _get(f"http://127.0.0.1:{served.metrics_port}/metrics")
        assert status == 200
        assert content_type.startswith("text/plain; version=0.0.4")
        scraped = text.decode()
        requests = "inmail_graphql_requests_total"
        assert metric_sample(scraped, requests, operation="WorkersProbe", outcome="ok") == 10
        latency = "inmail_graphql_request_seconds_count"
        assert metric_sample(scraped, latency, operation="WorkersProbe") == 10
    with pytest.raises(urllib.error.HTTPError) as public:
        _get(f"{served.url}/metrics")
    public.value.close()  # the error holds the response open
    assert public.value.code == 404, "no metrics on the API port without a metrics token"

    assert served.stop() == 0


def test_every_line_is_json_and_the_workers_access_lines_carry_the_request_id(
    served: Served,
) -> None:
    """Under INMAIL_LOG_FORMAT=json every line serve writes is one JSON object: the workers'
    (their access lines with the request's id) and serve's own (the embedded mongod's start
    and stop, where GraphiQL is)."""
    chosen = [f"probe-{n}" for n in range(6)]
    for request_id in chosen:
        _, echoed = _post(served.port, "{ now }", request_id)
        assert echoed == request_id
    _, generated = _post(served.port, "{ now }")

    assert served.stop() == 0
    records = [json.loads(line) for line in served.log().splitlines() if line.strip()]
    access = {r["request_id"]: r for r in records if r["logger"] == "uvicorn.access"}
    for request_id in [*chosen, generated]:
        assert '"POST /graphql HTTP/1.1" 200' in access[request_id]["message"]
    started = [r for r in records if r["message"].startswith("Started server process")]
    assert len(started) == 2, "each worker logs through the JSON handler"
    own = [r["message"] for r in records if r["logger"] == "inmail.serve"]
    assert any(m.startswith("starting the embedded mongod") for m in own), own
    assert any(m.startswith("GraphiQL at http://") for m in own), own
    assert own[-1] == "stopping the embedded mongod"


BUY_ONE = (
    'mutation { purchaseInMailCredits(input: {quantity: 1, idempotencyKey: "%s"}) '
    "{ creditsLeft errors { code } } }"
)


def test_a_subscriber_on_one_worker_gets_every_change_whichever_worker_makes_it(
    served: Served,
) -> None:
    created, _ = _post(
        served.port,
        'mutation { createMember(input: {name: "Ada Lovelace", plan: PREMIUM_CAREER, '
        'paymentMethod: {brand: "Visa", last4: "4242", expMonth: 12, expYear: 2030}}) '
        "{ member { id } errors { code } } }",
        token=served.token("--admin"),
    )
    member_id = created["data"]["createMember"]["member"]["id"]
    ada = served.token("--member", member_id)
    ws_url = f"ws://127.0.0.1:{served.port}/graphql"

    with connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        init = {"Authorization": f"Bearer {ada}"}
        ws.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(ws.recv(timeout=GIVE_UP))["type"] == "connection_ack"
        query = "subscription { balanceChanged { balance delta reason } }"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))

        def next_update() -> dict[str, Any]:
            message = json.loads(ws.recv(timeout=GIVE_UP))
            assert message["type"] == "next", message
            update: dict[str, Any] = message["payload"]["data"]["balanceChanged"]
            return update

        assert next_update() == {"balance": 5, "delta": 5, "reason": "GRANT"}
        for n in range(1, 5):  # each purchase on a new connection, made by either worker
            bought, _ = _post(
                served.port,
                BUY_ONE % f"buy-{n}",
                token=ada,
            )
            assert bought["data"]["purchaseInMailCredits"]["errors"] == []
            assert next_update() == {"balance": 5 + n, "delta": 1, "reason": "GRANT"}

    assert served.stop() == 0
