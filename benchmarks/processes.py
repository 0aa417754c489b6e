"""What /proc says of the processes a benchmark run owns (its mongod, its API server)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

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
