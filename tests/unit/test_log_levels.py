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
    saved = {name: (lg.handlers[:], lg.level, lg.propagate) for name, lg in loggers.items()}
    try:
        yield
    finally:
        for name, (handlers, level, propagate) in saved.items():
            loggers[name].handlers[:] = handlers
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
