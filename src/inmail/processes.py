"""Small facts about local processes and ports, for the embedded mongod and the metrics."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bind_problem(host: str, port: int) -> OSError | None:
    """Why a server could not listen on `host`:`port` right now (in use, no such address), or
    None if it could: a bind as a server makes it (SO_REUSEADDR, so that connections of a
    process gone and still closing do not count), released at once."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return exc
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it is just not ours
    try:  # a zombie has exited; it is only not yet reaped by its parent
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone since the signal, or no /proc here
    except (OSError, IndexError):
        return True


ORPHAN_ENDS_WITHIN = 25.0
"""Seconds a worker whose supervisor died is given to shut down before it ends regardless: more
than its shutdown takes (10 s of drain, 8 s of background tasks, 5 s to close the client), and
nobody is left to kill it if something in that shutdown waits on for ever."""

PARENT_LOOKED_FOR = 1.0  # seconds between two looks at whether the parent is still there


def end_with_parent(parent: int | None = None, within: float = ORPHAN_ENDS_WITHIN) -> None:
    """Have this process end with its parent (a worker of a supervisor that was killed would
    otherwise go on holding the port): Linux's kernel sends it SIGTERM when the parent dies, and a
    watching thread sends it too (where the kernel cannot), then ends the process `within`
    seconds later if its shutdown has not. A parent that died before this was called (while
    the worker was still loading) counts as dead now, hence `parent`, the pid it was started
    by: by default the one multiprocessing names (uvicorn's workers are its processes), else
    the current parent. (A parent may be pid 1 itself: `inmail serve` as a container's
    command.)"""
    if parent is None:
        started_by = multiprocessing.parent_process()
        parent = (started_by.pid if started_by is not None else None) or os.getppid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    threading.Thread(
        target=_end_after, args=(parent, within), name="inmail-parent-watch", daemon=True
    ).start()


def _end_after(parent: int, within: float) -> None:
    """Once `parent` is no longer this process's parent: SIGTERM, then, `within` seconds later,
    the end of the process, said on stderr (written directly: logging's locks may be held by
    whatever the shutdown is stuck in)."""
    while os.getppid() == parent:
        time.sleep(PARENT_LOOKED_FOR)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(within)
    with contextlib.suppress(OSError):
        os.write(
            2,
            f"worker {os.getpid()}: its supervisor is gone and its shutdown did not end in "
            f"{within:.0f} s; ending it\n".encode(),
        )
    os._exit(1)


@dataclass
class StopAsked:
    """Whether SIGTERM or SIGINT has come (`note_stop_signals`); read it, never wait on it."""

    asked: bool = False


def note_stop_signals() -> StopAsked:
    """From now on, note SIGTERM and SIGINT as they come, the handlers in place (uvicorn's, which
    start its shutdown) still running after. One that uvicorn's handler already took (a signal
    while the worker was still loading) counts as come. Outside the main thread, where no
    handler can be set, nothing is ever noted."""
    noted = StopAsked()
    if threading.current_thread() is not threading.main_thread():
        return noted
    previous: dict[int, _Handler] = {}

    def note(sig: int, frame: FrameType | None) -> None:
        noted.asked = True
        handler = previous[sig]
        if callable(handler):
            handler(sig, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for wanted in (signal.SIGTERM, signal.SIGINT):
        previous[wanted] = signal.signal(wanted, note)
        # uvicorn's handler is its server's bound method, which records that it should exit.
        if getattr(getattr(previous[wanted], "__self__", None), "should_exit", False):
            noted.asked = True
    return noted


# What signal.signal takes and gives back: a function, SIG_DFL or SIG_IGN, or None.
_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None
