"""Where no mongod can run, the service still starts, in memory, and says so loudly.

This is the one place the suite uses mongomock: to show the fallback works at all. Nothing
that must hold under concurrency or crashes is tested on it.
"""

from __future__ import annotations

import logging

import httpx
import pytest

from inmail.app import app_from_env
from support import TEST_SECRET, Api


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_without_a_database_the_service_runs_in_memory_and_warns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("INMAIL_MONGODB_URI", "INMAIL_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INMAIL_JWT_SECRET", TEST_SECRET)
    monkeypatch.setenv("INMAIL_SCHEDULER_ENABLED", "false")
    app = app_from_env()
    assert "NOTHING WILL PERSIST" in capsys.readouterr().err

    container = app.state.container
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            api = Api(client, container)
            ada = await api.create_member("Ada Lovelace")
            grace = await api.create_member("Grace Hopper")
            alan = await api.create_member("Alan Turing")
            assert await api.balance(ada) == 5
            assert (await api.send(ada, grace))["errors"] == []
            assert (await api.send(ada, alan))["errors"] == []
            assert (await api.purchase(ada, 2))["errors"] == []
            assert await api.balance(ada) == 5
