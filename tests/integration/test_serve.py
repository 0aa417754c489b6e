"""`inmail serve` as an operator runs it: embedded mongod, restarts, clear failures."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.servers import INMAIL, ServiceProcess, service_env
from inmail.processes import free_port, pid_alive
from support import post_graphql


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    return service_env(INMAIL_DATA_DIR=str(data_dir), **extra)


def _post(port: int, query: str, token: str | None = None) -> dict[str, Any]:
    return post_graphql(f"http://127.0.0.1:{port}", query, token, timeout=10)[0]


def _serve_until_it_exits(data_dir: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """`inmail serve` on a free port, expected to stop by itself (within a minute)."""
    return subprocess.run(
        [*INMAIL, "serve"],
        env=_env(data_dir, INMAIL_PORT=str(free_port()), **extra),
        capture_output=True,
        text=True,
        timeout=60,
    )


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        # Restarts on the same folder append to the same log.
        self.process = ServiceProcess.serve(_env(data_dir), data_dir.parent / "serve.log")
        self.port = self.process.port

    def start(self) -> Server:
        self.process.start()
        self.process.wait_ready()
        return self

    def token(self, *args: str) -> str:
        out = subprocess.run(
            [*INMAIL, "token", *args],
            env=_env(self.data_dir),
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        return self.process.stop(sig, timeout=60)

    def mongod_pid(self) -> int | None:
        lock = self.data_dir / "mongod" / "mongod.lock"
        text = lock.read_text().strip() if lock.exists() else ""
        return int(text) if text.isdigit() else None


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_serve_answers_graphql_on_the_embedded_mongod_and_keeps_data_across_restarts(
    data_dir: Path,
) -> None:
    server = Server(data_dir).start()
    try:
        data = _post(server.port, "{ plans { type monthlyAllotment maxBalance } now }")["data"]
        assert {"type": "PREMIUM_CAREER", "monthlyAllotment": 5, "maxBalance": 15} in data["plans"]
        created = _post(
            server.port,
            'mutation { createMember(input: {name: "Grace Hopper", plan: PREMIUM_BUSINESS}) '
            "{ member { id } errors { code } } }",
            server.token("--admin"),
        )["data"]["createMember"]
        member_id = created["member"]["id"]
        mongod = server.mongod_pid()
        assert mongod is not None
    finally:
        assert server.stop() == 0
    assert not pid_alive(mongod), "stopping serve stops its mongod"

    again = Server(data_dir).start()
    try:
        member = _post(
            again.port,
            f'{{ member(id: "{member_id}") {{ name inmailBalance }} }}',
            again.token("--admin"),
        )["data"]["member"]
        assert member == {"name": "Grace Hopper", "inmailBalance": 15}
    finally:
        again.stop(signal.SIGINT)


def test_a_second_serve_on_the_same_data_folder_is_refused_with_a_clear_message(
    data_dir: Path,
) -> None:
    first = Server(data_dir).start()
    try:
        second = _serve_until_it_exits(data_dir)
        assert second.returncode == 1
        assert "in use by another inmail process" in second.stderr
        assert "Traceback" not in second.stderr
        assert _post(first.port, "{ now }")["data"]["now"]
    finally:
        first.stop()


def test_a_stale_lock_file_from_a_dead_process_does_not_stop_serve(data_dir: Path) -> None:
    (data_dir / "mongod").mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (data_dir / "mongod" / "mongod.lock").write_text(str(dead.pid))
    server = Server(data_dir).start()
    try:
        assert _post(server.port, "{ now }")["data"]["now"]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("setting", "returncode", "message"),
    [
        ({"INMAIL_MONGOD_BIN": "/bin/false"}, 1, "embedded mongod exited during start-up"),
        ({"INMAIL_SCHEDULER_INTERVAL": "soon"}, 2, "INMAIL_SCHEDULER_INTERVAL='soon'"),
    ],
    ids=["a-mongod-that-cannot-start", "a-bad-setting-naming-the-variable"],
)
def test_a_serve_that_cannot_start_stops_with_a_message_not_a_traceback(
    data_dir: Path, setting: dict[str, str], returncode: int, message: str
) -> None:
    result = _serve_until_it_exits(data_dir, **setting)
    assert result.returncode == returncode
    assert message in result.stderr
    assert "Traceback" not in result.stderr
