"""The service, with every transaction held open once its writes are done: a process to kill.

Started by the crash tests as `uvicorn --factory reliability.paused_app:app_from_env` with
INMAIL_TEST_PAUSE_DIR set (INMAIL_TEST_* belongs to the test harness). Each transaction runs its
work, writes a file named after its process and a counter into that folder, and then waits for
ever without committing, holding the locks of everything it wrote, until the test SIGKILLs the
process: the state a crash in the middle of a commit leaves on the database.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette

from inmail import app as service
from inmail.repositories.mongo import Mongo

PAUSE_DIR = "INMAIL_TEST_PAUSE_DIR"
T = TypeVar("T")


def app_from_env() -> Starlette:
    pause_dir = Path(os.environ[PAUSE_DIR])
    counter = itertools.count(1)
    run_transaction = Mongo.run_transaction

    async def held_open(self: Mongo, callback: Callable[[Any], Awaitable[T]]) -> T:
        async def work_then_wait(session: Any) -> T:
            result = await callback(session)
            (pause_dir / f"{os.getpid()}-{next(counter)}").write_text("open")
            await asyncio.Event().wait()  # never set: the process is killed here
            return result

        return await run_transaction(self, work_then_wait)

    Mongo.run_transaction = held_open  # type: ignore[method-assign]
    app: Starlette = service.app_from_env()
    return app
