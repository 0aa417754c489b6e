"""A manual clock started before data already written is named in a WARNING at start-up."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inmail.repositories.memory import InMemoryMongo
from inmail.services import scheduling
from support import START, open_api
from support import test_settings as settings_with

WARNING_TEXT = "the manual clock starts at"


async def _clock_warnings_at_start(
    mongodb_uri: str, db_name: str, caplog: pytest.LogCaptureFixture, **settings: Any
) -> list[logging.LogRecord]:
    """The clock's warnings as the app starts on the database with these settings."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        async with open_api(mongodb_uri, db_name, settings_with(**settings)):
            pass
    return [
        r for r in caplog.records if r.levelno == logging.WARNING and WARNING_TEXT in r.getMessage()
    ]


async def _write_a_month_of_demo_data(mongodb_uri: str, db_name: str) -> datetime:
    """Ada and Grace on a clock moved a month on; the time of the newest thing written."""
    async with open_api(mongodb_uri, db_name) as api:
        ada = await api.create_member("Ada Lovelace")
        api.advance(days=30, hours=7, minutes=30)
        grace = await api.create_member("Grace Hopper")
        await api.send(ada, grace, subject="Compilers")
        return api.clock.now()


async def test_a_clock_started_before_the_newest_ledger_entry_is_warned_about(
    mongodb_uri: str, db_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    newest = await _write_a_month_of_demo_data(mongodb_uri, db_name)
    assert newest == START + timedelta(days=30, hours=7, minutes=30)
    (warning,) = await _clock_warnings_at_start(mongodb_uri, db_name, caplog, clock_start=START)
    message = warning.getMessage()
    assert START.isoformat() in message
    assert f"before data already written up to {newest.isoformat()}" in message
    assert f"database {db_name!r}" in message
    assert "INMAIL_CLOCK_START=2026-02-14T16:30:00Z or later" in message
    assert "INMAIL_DATA_DIR" in message


async def test_a_reminder_written_after_everything_else_counts_as_data_written(
    mongodb_uri: str, db_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_api(mongodb_uri, db_name) as api:
        ada = await api.create_member("Ada Lovelace")
        grace = await api.create_member("Grace Hopper")
        await api.send(ada, grace, subject="Compilers")
        api.advance(hours=50)
        await scheduling.remind_due(api.container.deps, api.clock.now(), batch_size=10)
        reminded_at = api.clock.now()

    (warning,) = await _clock_warnings_at_start(
        mongodb_uri, db_name, caplog, clock_start=START + timedelta(hours=1)
    )
    assert f"before data already written up to {reminded_at.isoformat()}" in warning.getMessage()


async def test_a_clock_started_at_or_after_the_newest_data_says_nothing(
    mongodb_uri: str, db_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    newest = await _write_a_month_of_demo_data(mongodb_uri, db_name)
    for start in (newest, newest + timedelta(days=1)):
        assert await _clock_warnings_at_start(mongodb_uri, db_name, caplog, clock_start=start) == []


async def test_a_fresh_database_gives_no_clock_warning(
    mongodb_uri: str, db_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert await _clock_warnings_at_start(mongodb_uri, db_name, caplog, clock_start=START) == []


async def test_the_system_clock_is_never_warned_about(
    mongodb_uri: str, db_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Demo data far in the future, then the real clock: that is not the manual-clock mistake.
    async with open_api(
        mongodb_uri, db_name, settings_with(clock_start=datetime(2099, 1, 1, tzinfo=UTC))
    ) as api:
        await api.create_member("Ada Lovelace")
    assert await _clock_warnings_at_start(mongodb_uri, db_name, caplog, clock="system") == []


async def test_the_newest_time_is_read_on_the_in_memory_fallback_too() -> None:
    mongo = InMemoryMongo("inmail_demo")
    assert await mongo.newest_recorded_time() is None
    await mongo.c.ledger.insert_one({"_id": "6650a1c2e4b0f1a2b3c4d5e6", "at": START})
    await mongo.c.conversations.insert_one(
        {"_id": "6650a1c2e4b0f1a2b3c4d5e7", "sentAt": START + timedelta(hours=2)}
    )
    assert await mongo.newest_recorded_time() == START + timedelta(hours=2)
