"""Processes of the service on a free loopback port, ready once /readyz answers, stopped by pid."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from inmail.processes import free_port

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

_SCRIPT = Path(sys.executable).with_name("inmail")
INMAIL = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "inmail"]


class ServiceNotReady(RuntimeError):
    """The process exited, or /readyz did not answer 200 in time; the message holds its log."""


def service_env(**variables: str) -> dict[str, str]:
    """This process's environment without its INMAIL_* settings, with `variables` instead."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("INMAIL_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(variables)
    return env


def uvicorn_command(port: int, *options: str) -> list[str]:
    """uvicorn on the app factory, one process, configured by its INMAIL_* environment."""
    return [
        *(sys.executable, "-m", "uvicorn", "--factory", "inmail.app:app_from_env"),
        *("--host", "127.0.0.1", "--port", str(port), *options),
    ]


def serve_command(port: int, *options: str) -> list[str]:
    """`inmail serve` as an operator runs it."""
    return [*INMAIL, "serve", "--host", "127.0.0.1", "--port", str(port), *options]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the kernel ends the server if the process that started it dies.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class ServiceProcess:
    """One process of the service; its output goes to `log_path`; `start` may be called again
    after it stopped (same port, command and environment)."""

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        port: int,
        *,
        die_with_parent: bool = False,
    ) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._die_with_parent = die_with_parent and sys.platform == "linux"

    @classmethod
    def uvicorn(cls, env: Mapping[str, str], log_path: Path, *options: str) -> ServiceProcess:
        port = free_port()
        return cls(uvicorn_command(port, *options), env, log_path, port)

    @classmethod
    def serve(
        cls, env: Mapping[str, str], log_path: Path, *options: str, die_with_parent: bool = False
    ) -> ServiceProcess:
        port = free_port()
        command = serve_command(port, *options)
        return cls(command, env, log_path, port, die_with_parent=die_with_parent)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if self._die_with_parent else None,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        assert self.process is not None, "not started"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceNotReady(f"the service exited during start-up:\n{self.log()}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise ServiceNotReady(f"the service was not ready within {timeout:.0f} s:\n{self.log()}")

    def start_ready(self) -> ServiceProcess:
        """Started and ready; stopped again, by its pid, when it does not get ready."""
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    @contextlib.contextmanager
    def running(self) -> Iterator[ServiceProcess]:
        """Started and ready for the block, and stopped by its pid after it, however it ends."""
        self.start_ready()
        try:
            yield self
        finally:
            self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send `sig` (SIGKILL after `timeout`), reap it: its exit code (None: never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def kill(self) -> None:
        """SIGKILL: no lifespan shutdown, no draining, open transactions left behind."""
        self.stop(signal.SIGKILL)


def start_all(servers: Sequence[ServiceProcess]) -> None:
    """Start every server, then wait for each: their start-ups overlap."""
    for server in servers:
        server.start()
    for server in servers:
        server.wait_ready()
