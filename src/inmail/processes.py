"""Small facts about local processes and ports, for the embedded mongod and the metrics."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import threading
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


def end_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM when its parent dies (a worker of a
    supervisor that was killed would otherwise go on holding the port); SIGTERM at once if the
    parent died meanwhile. (A parent may be pid 1 itself: `inmail serve` as a container's
    command.)"""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the kernel was told
        os.kill(os.getpid(), signal.SIGTERM)


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
