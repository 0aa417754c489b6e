"""What INMAIL_LOG_LEVEL turns on, and what it never does."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from inmail import logs

NAMES = ("", "pymongo", "uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def restored() -> Iterator[None]:
    """The logging configuration as it was before the test configured it."""
    loggers = {name: logging.getLogger(name) for name in NAMES}
    saved = {
        name: (lg.handlers[:], lg.filters[:], lg.level, lg.propagate)
        for name, lg in loggers.items()
    }
    try:
        yield
    finally:
        for name, (handlers, filters, level, propagate) in saved.items():
            loggers[name].handlers[:] = handlers
            loggers[name].filters[:] = filters
            loggers[name].setLevel(level)
            loggers[name].propagate = propagate


@pytest.mark.usefixtures("restored")
def test_debug_turns_on_the_services_debug_lines_but_never_the_drivers_commands() -> None:
    logs.configure_logging("DEBUG", "json")

    assert logging.getLogger("inmail.services").isEnabledFor(logging.DEBUG)
    for name in ("pymongo.command", "pymongo.connection", "pymongo.serverSelection"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        assert logging.getLogger(name).isEnabledFor(logging.INFO), name


@pytest.mark.usefixtures("restored")
def test_a_quieter_level_quiets_the_driver_too() -> None:
    logs.configure_logging("WARNING", "text")

    assert not logging.getLogger("pymongo.topology").isEnabledFor(logging.INFO)
    assert logging.getLogger("pymongo.topology").isEnabledFor(logging.WARNING)


class Kept(logging.Handler):
    """Keeps each record's message."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.usefixtures("restored")
def test_an_access_line_keeps_the_path_but_not_the_query_string() -> None:
    logs.configure_logging("INFO", "text")
    handler = Kept()
    logging.getLogger().addHandler(handler)
    access = logging.getLogger("uvicorn.access")
    line = '%s - "%s %s HTTP/%s" %d'  # as uvicorn logs each request

    access.info(
        line, "127.0.0.1:5000", "GET", "/graphql?query=%7Bviewer%7D&variables=x", "1.1", 200
    )
    access.info(line, "127.0.0.1:5000", "POST", "/graphql", "1.1", 200)

    assert handler.lines == [
        '127.0.0.1:5000 - "GET /graphql?… HTTP/1.1" 200',
        '127.0.0.1:5000 - "POST /graphql HTTP/1.1" 200',
    ]


class KeptLevels(Kept):
    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
@pytest.mark.usefixtures("restored")
def test_a_worker_that_died_is_a_warning_and_the_supervisors_routine_stays_info(
    level: str,
) -> None:
    logs.configure_logging(level, "text")
    handler = KeptLevels()
    logging.getLogger().addHandler(handler)
    supervisor = logging.getLogger("uvicorn.error")  # as uvicorn's Multiprocess logs

    supervisor.info("Child process [4242] died")
    supervisor.info("Waiting for child process [4243]")
    supervisor.warning("Child process [4244] died")

    routine = ["INFO Waiting for child process [4243]"] if level == "INFO" else []
    assert handler.lines == [
        "WARNING Child process [4242] died",
        *routine,
        "WARNING Child process [4244] died",
    ]
