"""Logging set-up: plain text or one JSON object a line, each record with the request id."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        return True


class Occasional:
    """A log line for something a flood repeats (a refused connection): the first at once, then
    at most one every `every` seconds, saying how many happened since the last one logged."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        message: str,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._level = level
        self._message = message
        self._every = every
        self._clock = clock
        self._next = float("-inf")
        self._unsaid = 0

    def happened(self, *args: object) -> None:
        """One more; logged with `args` (and how many since the last line) when it is time."""
        self._unsaid += 1
        now = self._clock()
        if now < self._next:
            return
        self._logger.log(
            self._level, self._message + " (%d since the last such line)", *args, self._unsaid
        )
        self._unsaid = 0
        self._next = now + self._every


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


_WORKER_DIED = re.compile(r"Child process \[\d+\] died")


class _WorkerDeathsAsWarnings(logging.Filter):
    """uvicorn's supervisor logs a worker that died (before it starts another) at INFO, beside
    its routine lines; an operator's alerts look for WARNING. The record is raised to WARNING,
    and so also logged when INMAIL_LOG_LEVEL is WARNING (the logger lets INFO through to this
    filter, which then drops what is below the level asked for)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and _WORKER_DIED.fullmatch(record.getMessage()):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return record.levelno >= self.level


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The driver's DEBUG logs (pymongo.command and its siblings) hold whole commands and
    # replies: members' names, cards, subjects and message bodies. They stay at INFO or above
    # whatever INMAIL_LOG_LEVEL is, so a service's logs never carry a member's private data.
    logging.getLogger("pymongo").setLevel(max(logging.INFO, root.level))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _WithoutQueryString) for f in access.filters):
        access.addFilter(_WithoutQueryString())
    supervisor = logging.getLogger("uvicorn.error")
    supervisor.filters[:] = [
        f for f in supervisor.filters if not isinstance(f, _WorkerDeathsAsWarnings)
    ]
    supervisor.addFilter(_WorkerDeathsAsWarnings(root.level))
    supervisor.setLevel(min(logging.INFO, root.level))


class _WithoutQueryString(logging.Filter):
    """uvicorn's access line without the request's query string: a GET to /graphql carries its
    document and variables there (ids, names searched for), which logs keep no more than they
    keep a POST's body."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn's access record: (client, method, path with its query, HTTP version, status)
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path, mark, _ = args[2].partition("?")
            if mark:
                record.args = (args[0], args[1], f"{path}?…", *args[3:])
        return True
