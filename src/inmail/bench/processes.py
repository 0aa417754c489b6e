"""The processes a benchmark run owns (its mongod, its API server) and what /proc says of them."""

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from inmail.processes import free_port

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces: count fields after its closing paren.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM) since it started or since `reset_peak_rss`."""
    return _status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return _status_kb(pid, "VmRSS") / 1024


def reset_peak_rss(pid: int) -> bool:
    """Start VmHWM afresh from the current RSS (Linux 4.0+); False where that is not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


@dataclass
class CpuMeter:
    """CPU seconds used by a few processes between `start` and `stop`."""

    pids: Mapping[str, int]

    def __post_init__(self) -> None:
        self._at_start: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._at_start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        self.used = {
            name: cpu_seconds(pid) - self._at_start[name] for name, pid in self.pids.items()
        }
        return self.used


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the kernel ends the server if the benchmark that started it dies.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class ServerError(RuntimeError):
    pass


class ApiServer:
    """`inmail serve` in a child process, on a free loopback port, configured by `env`."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("INMAIL_")}
        self._env.update(env)
        self._env.update(INMAIL_HOST="127.0.0.1", INMAIL_PORT=str(self.port))
        self._log_path = log_path
        self._log: BinaryIO | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        log = self._log_path.open("wb")
        self._log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inmail", "serve"],
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"the server exited during start-up:\n{self.log_tail()}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"the server was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log = self._log
        self._log = None
        if log is not None:
            log.close()
