"""A worker of `inmail serve` ends with its supervisor: asked to stop when it dies, and ended if
its shutdown does not end in time (nobody is left to kill it).

Each test runs a parent process that starts a child calling `end_with_parent`, kills the parent
and watches the child by its pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inmail.processes import pid_alive

BOUND = 60.0  # seconds: a bound on a process's end, not a speed

CHILD = """
import os, signal, sys, time
from pathlib import Path
from inmail.processes import end_with_parent
within, shutdown, ready, parent = float(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(
    sys.argv[4]
)
if shutdown == "after its parent died":  # still loading when its parent was killed
    ready.write_text("ready")
    while os.getppid() == parent:
        time.sleep(0.01)
    end_with_parent(parent, within)
else:
    end_with_parent(within=within)
    if shutdown == "stuck":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a shutdown that never ends
    ready.write_text("ready")
time.sleep(600)
"""

PARENT = """
import os, subprocess, sys, time
stderr = open(sys.argv[5], "wb")
child = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], *sys.argv[2:5], str(os.getpid())], stderr=stderr
)
print(child.pid, flush=True)
time.sleep(600)
"""


def orphaned_child(tmp_path: Path, within: float, shutdown: str) -> tuple[int, Path]:
    """A child that called end_with_parent(within), once ready, whose parent was then killed:
    its pid and its stderr's file."""
    ready, stderr = tmp_path / "ready", tmp_path / "stderr"
    with subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD, str(within), shutdown, str(ready), str(stderr)],
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            deadline = time.monotonic() + BOUND
            while not ready.exists():
                assert time.monotonic() < deadline, "the child never got ready"
                time.sleep(0.05)
        finally:
            parent.kill()
    return child, stderr


def ended_within_bound(pid: int) -> bool:
    deadline = time.monotonic() + BOUND
    while pid_alive(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # the test fails; nothing is left behind
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize(
    "shutdown",
    [
        "on SIGTERM",
        # The kernel tells only of a parent that dies after it was asked to: a worker whose
        # supervisor was killed while it was still loading would have gone on serving.
        "after its parent died",
    ],
    ids=["serving", "still loading"],
)
def test_a_worker_is_asked_to_stop_when_its_supervisor_dies(tmp_path: Path, shutdown: str) -> None:
    """It stops on SIGTERM, long before the end it would otherwise be given."""
    child, stderr = orphaned_child(tmp_path, within=600, shutdown=shutdown)
    assert ended_within_bound(child)
    assert stderr.read_text() == ""


def test_a_worker_whose_shutdown_never_ends_is_ended_after_its_supervisor_died(
    tmp_path: Path,
) -> None:
    child, stderr = orphaned_child(tmp_path, within=1, shutdown="stuck")
    assert ended_within_bound(child), "a worker outlived its supervisor"
    assert f"worker {child}: its supervisor is gone and its shutdown did not end in 1 s" in (
        stderr.read_text()
    )
