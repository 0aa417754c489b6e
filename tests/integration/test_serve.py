"""`inmail serve` as an operator runs it: embedded mongod, restarts, clear failures."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, ServerSelectionTimeoutError

from harness.servers import INMAIL, ServiceProcess, service_env
from inmail.embedded_mongod import EmbeddedMongod, EmbeddedMongodError, find_mongod_binary
from inmail.processes import ORPHAN_ENDS_WITHIN, free_port, pid_alive
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
        return _token(self.data_dir, *args)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        return self.process.stop(sig, timeout=60)

    def create_member(self, name: str, plan: str) -> str:
        created = _post(
            self.port,
            f'mutation {{ createMember(input: {{name: "{name}", plan: {plan}}}) '
            "{ member { id } errors { code } } }",
            self.token("--admin"),
        )["data"]["createMember"]
        assert created["errors"] == [], created
        member_id: str = created["member"]["id"]
        return member_id

    def member(self, member_id: str) -> dict[str, Any]:
        query = f'{{ member(id: "{member_id}") {{ name inmailBalance }} }}'
        member: dict[str, Any] = _post(self.port, query, self.token("--admin"))["data"]["member"]
        return member

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
        member_id = server.create_member("Grace Hopper", "PREMIUM_BUSINESS")
        mongod = server.mongod_pid()
        assert mongod is not None
    finally:
        assert server.stop() == 0
    assert not pid_alive(mongod), "stopping serve stops its mongod"

    again = Server(data_dir).start()
    try:
        assert again.member(member_id) == {"name": "Grace Hopper", "inmailBalance": 15}
    finally:
        again.stop(signal.SIGINT)


def test_an_embedded_mongod_that_dies_is_started_again_with_its_data(data_dir: Path) -> None:
    """Killed (the kernel's OOM killer, an operator's mistake), the mongod `serve` started comes
    back on its port over its folder; the service finds it again, and nothing it had committed
    is lost. Stopping serve then stops the new one."""
    server = Server(data_dir).start()
    try:
        member_id = server.create_member("Ada Lovelace", "PREMIUM_CAREER")
        first = server.mongod_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while not (not pid_alive(first) and server.mongod_pid() not in (None, first)):
            assert time.monotonic() < deadline, "no mongod started again"
            time.sleep(0.2)
        second = server.mongod_pid()
        server.process.wait_ready(timeout=60)
        assert server.member(member_id) == {"name": "Ada Lovelace", "inmailBalance": 5}
        assert "exited with status -9; starting it again" in server.process.log()
    finally:
        assert server.stop(signal.SIGHUP) == 0  # a hang-up stops it as SIGTERM does
    assert second is not None
    assert not pid_alive(second), "stopping serve stops the mongod it started again"


def test_a_mongod_that_keeps_failing_to_start_again_is_tried_with_waits_until_serve_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The restart loop on its own: a binary that exits at once (a full disk, a broken
    install) is tried again after each wait, never gives the data folder up, and stops
    trying once serve stops."""
    mongod = EmbeddedMongod(tmp_path / "mongod", binary=Path("/bin/false"), port=free_port())
    mongod.data_dir.mkdir()
    mongod.process = subprocess.Popen(["true"], stderr=subprocess.PIPE)  # one that exited
    mongod.process.wait()
    stopping = threading.Event()
    keeper = threading.Thread(
        target=mongod.keep_running,
        args=(stopping,),
        kwargs={"every": 0.01, "timeout": 5, "backoff": (0.0, 0.05)},
    )
    with caplog.at_level(logging.WARNING, logger="inmail.embedded_mongod"):
        keeper.start()
        try:
            deadline = time.monotonic() + 30
            while caplog.text.count("trying again") < 3:
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.05)
        finally:
            stopping.set()
            keeper.join(timeout=10)
            last = mongod.process
            mongod.stop()  # what serve does once the keeper has stopped
    assert not keeper.is_alive()
    assert caplog.text.count("exited with status 0; starting it again") == 1
    assert "exited during start-up" in caplog.text
    assert last is None or last.poll() is not None


def test_a_driver_error_while_mongod_starts_again_does_not_end_the_restart_loop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mongod killed again while it elects itself makes the driver raise its own errors
    (no OSError): the loop takes them as any failed start, and goes on."""
    mongod = EmbeddedMongod(tmp_path / "mongod", binary=Path("/bin/true"), port=free_port())
    mongod.process = subprocess.Popen(["true"], stderr=subprocess.PIPE)  # one that exited
    mongod.process.wait()
    starts: list[int] = []

    def elected_never(binary: Path, timeout: float) -> None:
        starts.append(1)
        raise ServerSelectionTimeoutError("127.0.0.1: connection refused")

    monkeypatch.setattr(mongod, "_start_claimed", elected_never)
    stopping = threading.Event()
    keeper = threading.Thread(
        target=mongod.keep_running,
        args=(stopping,),
        kwargs={"every": 0.01, "backoff": (0.0, 0.02)},
    )
    with caplog.at_level(logging.WARNING, logger="inmail.embedded_mongod"):
        keeper.start()
        try:
            deadline = time.monotonic() + 30
            while len(starts) < 3:
                assert keeper.is_alive(), "the loop ended on the driver's error"
                assert time.monotonic() < deadline, caplog.text
                time.sleep(0.02)
        finally:
            stopping.set()
            keeper.join(timeout=10)
            mongod.stop()
    assert not keeper.is_alive()
    assert "connection refused; trying again" in caplog.text


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


def test_an_owner_file_naming_a_live_process_that_holds_nothing_does_not_stop_a_start(
    tmp_path: Path,
) -> None:
    """After a crash the owner file stays, and its pid may be another program's by now: the
    folder is held by a lock the kernel lets go of when its holder ends, not by a pid. A start
    that fails before mongod runs lets the folder go too."""
    data = tmp_path / "mongod"
    data.mkdir()
    unrelated = subprocess.Popen(["sleep", "60"])
    try:
        (data / "inmail-owner.pid").write_text(str(unrelated.pid))
        broken = EmbeddedMongod(data, binary=Path("/no/such/mongod"))
        with pytest.raises(EmbeddedMongodError, match="cannot run"):
            broken.start(timeout=30)
        mongod = EmbeddedMongod(data, oplog_mb=64)
        mongod.start(timeout=60)
        try:
            assert mongod.running_uri() == mongod.uri
            with pytest.raises(EmbeddedMongodError, match="in use by another inmail process"):
                EmbeddedMongod(data, oplog_mb=64).start(timeout=30)
        finally:
            mongod.stop()
        assert mongod.running_uri() is None
        assert unrelated.poll() is None  # left alone
    finally:
        unrelated.kill()
        unrelated.wait()


def test_a_folder_an_older_version_serves_is_refused_though_it_holds_no_lock(
    tmp_path: Path,
) -> None:
    """Versions before the lock held the folder by the pid in the owner file alone: where that
    process lives and its mongod runs over the folder, a new serve leaves both be."""
    data = tmp_path / "mongod"
    older_serve = subprocess.Popen(["sleep", "60"])
    older = EmbeddedMongod(data, oplog_mb=64)
    older.start(timeout=60)
    try:
        older._release()  # as an older version: no lock, only its pid in the file
        (data / "inmail-owner.pid").write_text(str(older_serve.pid))
        older_mongod = older.pid
        newer = EmbeddedMongod(data, oplog_mb=64)
        try:
            with pytest.raises(
                EmbeddedMongodError,
                match=f"in use by another inmail process .pid {older_serve.pid}",
            ):
                newer.start(timeout=30)
        finally:
            newer.stop()  # one that started by mistake, not left behind
        assert older_mongod is not None
        assert pid_alive(older_mongod)
    finally:
        older.stop()
        older_serve.kill()
        older_serve.wait()


def test_a_data_folder_of_another_replica_set_or_a_driver_error_while_electing_is_a_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ways the mongod that answered fails to become the service's replica set of one,
    each an EmbeddedMongodError (`inmail serve` says it in one line), not a traceback: the
    folder holds another replica set's data; the driver fails while it is set up (the stored
    configuration names a port that another process holds, and mongod probes it)."""
    mongod = EmbeddedMongod(tmp_path / "mongod", binary=Path("/bin/true"), port=free_port())

    class OtherSet:
        class admin:  # as MongoClient's attribute is named
            @staticmethod
            def command(name: str, *args: object, **kw: object) -> dict[str, object]:
                assert name == "replSetGetConfig"
                return {"config": {"_id": "rs1", "members": [{"_id": 0, "host": "h:1"}]}}

    with pytest.raises(EmbeddedMongodError, match="replica set 'rs1', not the embedded"):
        mongod._initiate_or_repair(cast("MongoClient[dict[str, object]]", OtherSet()))

    def closed(client: object) -> None:
        raise AutoReconnect("127.0.0.1: connection closed")

    monkeypatch.setattr(mongod, "_wait_listening", lambda client, deadline: None)
    monkeypatch.setattr(mongod, "_initiate_or_repair", closed)
    with pytest.raises(EmbeddedMongodError, match="could not be made a replica set of one"):
        mongod._become_primary(timeout=5)


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
        ({"INMAIL_MONGOD_BIN": "/no/such/mongod"}, 1, "/no/such/mongod: not an executable"),
        ({"INMAIL_SCHEDULER_INTERVAL": "soon"}, 2, "INMAIL_SCHEDULER_INTERVAL='soon'"),
    ],
    ids=["a-mongod-that-cannot-start", "no-mongod-there", "a-bad-setting-naming-the-variable"],
)
def test_a_serve_that_cannot_start_stops_with_a_message_not_a_traceback(
    data_dir: Path, setting: dict[str, str], returncode: int, message: str
) -> None:
    result = _serve_until_it_exits(data_dir, **setting)
    assert result.returncode == returncode
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("beside_older_data", [False, True])
def test_a_port_in_use_is_one_line_naming_it_before_anything_starts(
    tmp_path: Path, beside_older_data: bool
) -> None:
    """Another process listens on the port: one line naming the port and the settings that
    move it, exit 1, before a database is started or a GraphiQL address announced. Started
    beside an older version's data folder (./.inmail), with its own data elsewhere, the serve
    first says where that data is and how to keep using it."""
    here, data_home = tmp_path / "checkout", tmp_path / "data-home"
    here.mkdir()
    if beside_older_data:
        (here / ".inmail" / "mongod").mkdir(parents=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*INMAIL, "serve"],
            cwd=here,
            env=service_env(XDG_DATA_HOME=str(data_home), INMAIL_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: another process listens there" in result.stderr
    assert "INMAIL_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert "GraphiQL at" not in result.stderr
    assert not (data_home / "inmail" / "mongod").exists(), "a mongod was started"
    older = "found data of an older version in ./.inmail; this serve keeps its data in "
    assert (older in result.stderr) is beside_older_data, result.stderr
    if beside_older_data:
        assert "set INMAIL_DATA_DIR=.inmail" in result.stderr


def test_a_stale_lock_naming_a_live_process_that_is_no_mongod_leaves_that_process_alone(
    data_dir: Path,
) -> None:
    """After a crash the pid in mongod.lock may belong to anything by now (this very server,
    after a container restart): it is stopped only if it is a mongod over this folder."""
    (data_dir / "mongod").mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "120"])
    try:
        (data_dir / "mongod" / "mongod.lock").write_text(str(bystander.pid))
        server = Server(data_dir).start()
        try:
            assert _post(server.port, "{ now }")["data"]["now"]
            assert bystander.poll() is None, "serve signalled a process that was no mongod"
        finally:
            server.stop()
    finally:
        bystander.kill()
        bystander.wait()


def test_two_serves_started_at_once_on_a_fresh_folder_leave_one_serving_and_owning_it(
    data_dir: Path,
) -> None:
    ports = [free_port(), free_port()]
    racing = [
        subprocess.Popen(
            [*INMAIL, "serve"],
            env=_env(data_dir, INMAIL_PORT=str(port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for port in ports
    ]
    try:
        loser_at = None
        for _ in range(600):
            loser_at = next((i for i, p in enumerate(racing) if p.poll() is not None), None)
            if loser_at is not None:
                break
            time.sleep(0.1)
        assert loser_at is not None, "both serves kept running on one data folder"
        loser, winner = racing[loser_at], racing[1 - loser_at]
        assert loser.returncode == 1
        assert loser.stderr is not None
        assert "in use by another inmail process" in loser.stderr.read()
        owner = (data_dir / "mongod" / "inmail-owner.pid").read_text().strip()
        assert owner == str(winner.pid)
        third = _serve_until_it_exits(data_dir)
        assert third.returncode == 1
        assert "in use by another inmail process" in third.stderr
        assert winner.poll() is None
    finally:
        for process in racing:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
            if process.stderr:
                process.stderr.close()


def test_a_data_folder_that_cannot_be_made_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    result = _serve_until_it_exits(a_file / "data")
    assert result.returncode == 1
    assert "cannot use the data folder" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["token", "--admin", "--hours", "nan"],
        ["token", "--admin", "--hours", "inf"],
        ["token", "--admin", "--hours", "1e308"],
        ["serve", "--port", "0"],
        ["serve", "--workers", "0"],
    ],
)
def test_an_option_out_of_range_is_a_message_and_exit_2(data_dir: Path, command: list[str]) -> None:
    result = subprocess.run(
        [*INMAIL, *command], env=_env(data_dir), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def standalone_mongod(tmp_path: Path) -> Iterator[str]:
    """A mongod that is no replica set, which the service refuses at start-up."""
    binary = find_mongod_binary()
    if binary is None:
        pytest.fail("no mongod binary here: install the project's test dependencies")
    port = free_port()
    (tmp_path / "solo").mkdir()
    process = subprocess.Popen(
        [
            str(binary),
            *("--dbpath", str(tmp_path / "solo")),
            *("--port", str(port)),
            *("--bind_ip", "127.0.0.1"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"mongodb://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(60)


def test_a_mongodb_that_is_no_replica_set_is_one_message_before_any_worker_starts(
    data_dir: Path, standalone_mongod: str
) -> None:
    result = _serve_until_it_exits(
        data_dir,
        INMAIL_WORKERS="2",
        INMAIL_MONGODB_URI=standalone_mongod,
        INMAIL_METRICS_PORT="off",
    )
    assert result.returncode == 1, result.stderr
    assert "standalone" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("mongodb://admin:Hunter2Secret@127.0.0.1:99999/?replicaSet=rs0", "Port must be"),
        ("mongodb://127.0.0.1:27017/?replicaSet=rs0&tls=maybe", "tls must be"),
        ("mongodb://", "at least one hostname"),
        ("mongodb://127.0.0.1:27017/?tls=true&tlsCAFile=/nonexistent/ca.pem", "not readable"),
    ],
    ids=["a port out of range", "an option's value", "no host", "a TLS file missing"],
)
def test_a_mongodb_uri_the_driver_cannot_read_is_one_message_naming_the_variable(
    data_dir: Path, uri: str, said: str
) -> None:
    result = _serve_until_it_exits(data_dir, INMAIL_MONGODB_URI=uri, INMAIL_METRICS_PORT="off")
    assert result.returncode == 1, result.stderr
    assert "INMAIL_MONGODB_URI cannot be used" in result.stderr
    assert said in result.stderr
    assert "Traceback" not in result.stderr
    assert "Hunter2Secret" not in result.stderr


@pytest.mark.parametrize(
    ("option", "said"),
    [
        ("w=banana", "write concern is refused by MongoDB: No write concern mode named 'banana'"),
        ("w=7", "write concern is refused by MongoDB: Not enough data-bearing nodes"),
        ("w=0", "asks for unacknowledged writes (w=0)"),
    ],
    ids=["an unknown write concern mode", "more nodes than the set has", "unacknowledged"],
)
def test_a_write_concern_no_write_could_meet_is_one_message_before_any_worker_starts(
    data_dir: Path, mongodb_uri: str, db_name: str, option: str, said: str
) -> None:
    """The service's transactions ask for majority themselves, but its other writes take the
    URI's write concern: one they could never meet, or one that would not tell a lost write,
    is refused before a worker starts, not met at the first write (in every worker)."""
    uri = f"{mongodb_uri}{'&' if '?' in mongodb_uri else '?'}{option}"
    result = _serve_until_it_exits(
        data_dir, INMAIL_MONGODB_URI=uri, INMAIL_DB_NAME=db_name, INMAIL_METRICS_PORT="off"
    )
    assert result.returncode == 1, result.stderr
    assert said in result.stderr
    assert "Traceback" not in result.stderr
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
    try:
        assert db_name not in client.list_database_names(), "the check writes nothing"
    finally:
        client.close()


def test_workers_that_fail_to_start_make_serve_exit_with_a_failure(
    data_dir: Path, mongodb_uri: str, db_name: str
) -> None:
    """Start-up fails in each worker (a start-up migration meets a payment intent it cannot
    read), after the server was found fine: serve exits 3, not 0."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
    try:
        client[db_name].payment_intents.insert_one({"_id": "torn", "memberId": "m", "key": "k"})
        result = _serve_until_it_exits(
            data_dir,
            INMAIL_WORKERS="2",
            INMAIL_MONGODB_URI=mongodb_uri,
            INMAIL_DB_NAME=db_name,
            INMAIL_METRICS_PORT="off",
        )
    finally:
        client.close()
    assert result.returncode == 3, result.stderr
    assert "failed to start" in result.stderr


@pytest.mark.parametrize("when", ["serving", "loading"])
def test_workers_end_with_a_serve_that_is_killed(data_dir: Path, tmp_path: Path, when: str) -> None:
    """Killed once both workers serve, or while they still load (before either could ask the
    kernel to be told of its parent's end): each ends by itself, ended regardless after
    ORPHAN_ENDS_WITHIN if its shutdown is stuck."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        parent = subprocess.Popen(
            [*INMAIL, "serve"],
            env=_env(
                data_dir, INMAIL_PORT=str(port), INMAIL_WORKERS="2", INMAIL_METRICS_PORT="off"
            ),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    workers: list[int] = []
    mongod: int | None = None
    try:
        workers = _two_workers(parent.pid, port if when == "serving" else None)
        assert len(workers) == 2, f"two workers never {when}"
        mongod = _embedded_mongod(data_dir)
        assert mongod is not None, "serve started no mongod of its own"
        parent.kill()
        parent.wait()
        left = [*workers, mongod]
        deadline = time.monotonic() + ORPHAN_ENDS_WITHIN + 30  # a bound, not a speed
        while any(pid_alive(pid) for pid in left) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(pid_alive(pid) for pid in workers), (
            f"workers outlived their serve; its log ends:\n{log_path.read_text()[-4000:]}"
        )
        assert not pid_alive(mongod), "the embedded mongod outlived its serve"
    finally:
        for pid in [*workers, *([mongod] if mongod else [])]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@contextlib.contextmanager
def _two_workers_on_a_mongod_of_their_own(
    tmp_path: Path, data_dir: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, list[int], EmbeddedMongod, Path]]:
    """`inmail serve` with two workers serving, on a mongod of the test's own: the serve, its
    port, its workers, the mongod and the serve's log. All stopped by their pids after."""
    mongod = EmbeddedMongod(tmp_path / "db", oplog_mb=64)
    mongod.start()
    assert mongod.pid is not None
    port = free_port()
    env = _env(
        data_dir,
        INMAIL_PORT=str(port),
        INMAIL_WORKERS="2",
        INMAIL_METRICS_PORT="off",
        INMAIL_MONGODB_URI=mongod.uri,
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log_file:
        parent = subprocess.Popen([*INMAIL, "serve"], env=env, stdout=log_file, stderr=log_file)
    workers: list[int] = []
    try:
        workers = _two_workers(parent.pid, port)
        assert len(workers) == 2, log_path.read_text()[-3000:]
        yield parent, port, workers, mongod, log_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(mongod.pid, signal.SIGCONT)
        if parent.poll() is None:
            parent.send_signal(signal.SIGTERM)
            try:
                parent.wait(60)
            except subprocess.TimeoutExpired:
                parent.kill()
                parent.wait()
        for pid in [*workers, *_workers_of(parent.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        mongod.stop()


def _until_logged(log_path: Path, words: str, within: float = 60) -> None:
    deadline = time.monotonic() + within  # a bound, not a measure
    while words not in log_path.read_text():
        assert time.monotonic() < deadline, log_path.read_text()[-3000:]
        time.sleep(0.1)


@pytest.mark.slow
def test_a_worker_that_dies_while_the_database_is_out_of_reach_is_replaced_once_it_is_back(
    tmp_path: Path, data_dir: Path
) -> None:
    """uvicorn stops every worker when a replacement fails to start: a worker that died while
    MongoDB hung would take the healthy one with it, and the service would stay down after the
    database came back. The replacement waits for the database instead."""
    with _two_workers_on_a_mongod_of_their_own(tmp_path, data_dir) as served:
        parent, port, workers, mongod, log_path = served
        assert mongod.pid is not None
        os.kill(mongod.pid, signal.SIGSTOP)
        try:
            os.kill(workers[0], signal.SIGKILL)
            # The replacement's first contact waited out its 20 s for the server, and failed:
            # one that gave up then would stop the service within seconds.
            _until_logged(log_path, "start-up waits for MongoDB")
            died = f"Child process [{workers[0]}] died"
            told = [line for line in log_path.read_text().splitlines() if died in line]
            assert len(told) == 1, told
            assert "WARNING" in told[0], told
            time.sleep(10)
            assert parent.poll() is None, log_path.read_text()[-3000:]
        finally:
            os.kill(mongod.pid, signal.SIGCONT)

        replaced = False
        for _ in range(600):
            now_serving = _workers_of(parent.pid)
            replaced = len(now_serving) == 2 and workers[0] not in now_serving
            if replaced and all(_post_ok(port) for _ in range(10)):
                break
            time.sleep(0.1)
        assert replaced, log_path.read_text()[-3000:]
        assert all(_post_ok(port) for _ in range(10))
        assert "start-up waits for MongoDB" in log_path.read_text()
        assert parent.poll() is None


@pytest.mark.slow
def test_a_serve_stopped_while_a_replacement_waits_for_the_database_stops(
    tmp_path: Path, data_dir: Path
) -> None:
    """A worker waiting for MongoDB at start-up gives up when asked to stop: the serve stops
    while the database is still out of reach, instead of waiting for it to come back."""
    with _two_workers_on_a_mongod_of_their_own(tmp_path, data_dir) as served:
        parent, _port, workers, mongod, log_path = served
        assert mongod.pid is not None
        os.kill(mongod.pid, signal.SIGSTOP)
        os.kill(workers[0], signal.SIGKILL)
        _until_logged(log_path, "start-up waits for MongoDB")
        running = _workers_of(parent.pid)  # the healthy worker and the replacement
        assert len(running) == 2, running

        parent.send_signal(signal.SIGTERM)
        # A bound, not a speed: the healthy worker's drain, its background tasks' stop and its
        # client's close; a replacement that kept waiting would hold the serve until MongoDB came
        # back.
        parent.wait(90)

        assert "asked to stop while waiting for MongoDB" in log_path.read_text()
        assert not any(pid_alive(pid) for pid in running)


@pytest.mark.slow
def test_a_stopping_serve_of_two_workers_refuses_new_connections_while_one_still_drains(
    tmp_path: Path, data_dir: Path
) -> None:
    """Once asked to stop, the serve no longer takes connections, as one worker does: a client
    is refused at once (and goes to another instance), instead of waiting unanswered in the
    listening socket's queue until the last worker has drained its requests."""
    with _two_workers_on_a_mongod_of_their_own(tmp_path, data_dir) as served:
        parent, port, _workers, _mongod, log_path = served
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            # A request whose body is still coming: its worker drains it for seconds.
            held.sendall(
                b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            time.sleep(0.5)
            parent.send_signal(signal.SIGTERM)
            refused = False
            deadline = time.monotonic() + 8  # a bound, not a measure: the drain lasts 10 s
            while not refused and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    time.sleep(0.1)
                except ConnectionRefusedError:
                    refused = True
            assert refused, log_path.read_text()[-3000:]
            assert parent.poll() is None, "the serve had ended: this proves nothing"
            held.settimeout(30)
            answer = held.recv(4096)
        assert answer.startswith(b"HTTP/1.1 "), answer
        assert parent.wait(60) == 0, log_path.read_text()[-3000:]


@pytest.mark.slow
def test_sends_a_stopping_worker_cuts_off_on_a_database_that_stopped_answering_get_a_503(
    tmp_path: Path, data_dir: Path
) -> None:
    """A worker of several ends on its signal, without the last cancel a single process makes:
    sends whose rollback took the drain's cancel, on a mongod that no longer answers, are cut
    off again by the app's shutdown, and every client gets its answer: 503 in JSON, may or may
    not have taken effect. None is left without an answer when its worker ends."""
    with _two_workers_on_a_mongod_of_their_own(tmp_path, data_dir) as served:
        parent, port, _workers, mongod, log_path = served
        assert mongod.pid is not None
        admin = _token(data_dir, "--admin")
        sender = _created(port, admin, "RECRUITER_LITE")
        recipients = [_created(port, admin, "BASIC") for _ in range(8)]
        token = _token(data_dir, "--member", sender)
        for _ in range(20):  # both workers know the sender: a send goes straight to its transaction
            assert _post(port, "{ viewer { id } }", token)["data"]["viewer"]["id"]

        os.kill(mongod.pid, signal.SIGSTOP)
        answers: list[tuple[int, dict[str, Any]] | BaseException] = []

        def send(recipient: str) -> None:
            query = (
                f'mutation {{ sendInMail(input: {{recipientId: "{recipient}", subject: "Hello", '
                f'body: "A role", idempotencyKey: "{recipient}"}}) {{ errors {{ code }} }} }}'
            )
            try:
                answers.append(_answer_of(port, query, token))
            except Exception as exc:
                answers.append(exc)

        sends = [threading.Thread(target=send, args=(r,)) for r in recipients]
        for thread in sends:
            thread.start()
        time.sleep(1)
        parent.send_signal(signal.SIGTERM)
        for thread in sends:
            thread.join(90)

        assert len(answers) == len(recipients), log_path.read_text()[-3000:]
        for answer in answers:
            assert not isinstance(answer, BaseException), (answer, log_path.read_text()[-3000:])
            status, body = answer
            assert status == 503, body
            (error,) = body["errors"]
            assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
            assert "may or may not have taken effect" in error["message"]
        assert "still running at the shutdown: cut off" in log_path.read_text()


def _token(data_dir: Path, *args: str) -> str:
    return subprocess.run(
        [*INMAIL, "token", *args], env=_env(data_dir), capture_output=True, text=True, check=True
    ).stdout.strip()


def _created(port: int, admin: str, plan: str) -> str:
    paid = ', paymentMethod: {brand: "Visa", last4: "4242", expMonth: 12, expYear: 2030}'
    created = _post(
        port,
        f'mutation {{ createMember(input: {{name: "A member", plan: {plan}'
        f"{paid if plan != 'BASIC' else ''}}}) {{ member {{ id }} errors {{ code }} }} }}",
        admin,
    )["data"]["createMember"]
    assert created["errors"] == [], created
    member_id: str = created["member"]["id"]
    return member_id


def _answer_of(port: int, query: str, token: str) -> tuple[int, dict[str, Any]]:
    """A POST's status and JSON body, whatever the status (within 90 s)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def _two_workers(pid: int, answering: int | None = None) -> list[int]:
    """The workers of serve `pid` as soon as two of them run (loading or not), and, given a port
    `answering`, it answers a POST (within a minute); none if that never came."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = _workers_of(pid)
        if len(workers) == 2 and (answering is None or _post_ok(answering)):
            return workers
        time.sleep(0.02)
    return []


def _workers_of(pid: int) -> list[int]:
    """Its children that run Python (uvicorn's workers; mongod and the resource tracker aside)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"mongod" not in cmdline and b"resource_tracker" not in cmdline:
                    found.append(int(child))
    return found


def _post_ok(port: int) -> bool:
    try:
        return bool(_post(port, "{ now }")["data"]["now"])
    except Exception:
        return False


def test_a_development_secret_that_cannot_be_kept_is_a_message_not_a_traceback(
    data_dir: Path,
) -> None:
    (data_dir / "jwt-secret").mkdir(parents=True)  # a folder where the secret file would be

    served = _serve_until_it_exits(data_dir)
    token = subprocess.run(
        [*INMAIL, "token", "--admin"], env=_env(data_dir), capture_output=True, text=True
    )

    assert served.returncode == 1
    assert "the development secret" in served.stderr
    assert "jwt-secret: Is a directory" in served.stderr
    assert token.returncode == 2
    assert "Traceback" not in served.stderr + token.stderr
    _assert_no_mongod_left(data_dir)


def _embedded_mongod(data_dir: Path) -> int | None:
    """The pid of the embedded mongod of `data_dir` while it runs (its lock file names it)."""
    lock = data_dir / "mongod" / "mongod.lock"
    pid = lock.read_text().strip() if lock.exists() else ""
    return int(pid) if pid.isdigit() and pid_alive(int(pid)) else None


def _assert_no_mongod_left(data_dir: Path) -> None:
    assert _embedded_mongod(data_dir) is None, "serve left its mongod running"


def test_a_development_secret_too_short_is_refused_and_kept_as_it_is(data_dir: Path) -> None:
    """Someone put it there: it is neither taken for absent by `token` nor replaced by `serve`
    (tokens signed with it would all stop working)."""
    data_dir.mkdir(parents=True)
    (data_dir / "jwt-secret").write_text("short-secret\n")

    served = _serve_until_it_exits(data_dir)
    token = subprocess.run(
        [*INMAIL, "token", "--admin"], env=_env(data_dir), capture_output=True, text=True
    )

    assert served.returncode == 1
    assert "holds 12 characters; a secret needs 32 or more" in served.stderr
    assert "mend or remove that file" in served.stderr
    assert token.returncode == 2
    assert "holds 12 characters" in token.stderr
    assert "Traceback" not in served.stderr + token.stderr
    assert (data_dir / "jwt-secret").read_text() == "short-secret\n"
    _assert_no_mongod_left(data_dir)
