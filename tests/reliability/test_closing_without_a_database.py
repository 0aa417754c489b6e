"""Shutting down while the database is gone: closing the client waits CLOSE_WAIT for a server,
not the driver's whole server selection (20 s), which stretched every such shutdown past what
a process manager allows before it kills."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from inmail.repositories.mongo import CLOSE_WAIT, Mongo
from reliability.replicaset import ReplicaSet

SERVER_SELECTION = 20.0  # seconds: Mongo.connect's serverSelectionTimeoutMS


async def test_closing_the_client_of_a_database_gone_waits_close_wait_not_server_selection(
    tmp_path: Path,
) -> None:
    with ReplicaSet(tmp_path, name="rsc", size=1) as members:
        mongo = Mongo.connect(members.uri, "closing")
        for name in ("ada", "grace"):  # the client holds server sessions
            await mongo.c.members.insert_one({"_id": name})
        members.members[0].kill()
        await asyncio.sleep(1)  # the client's monitor sees it go
        started = time.monotonic()
        await mongo.close()
        took = time.monotonic() - started

    assert took < CLOSE_WAIT + (SERVER_SELECTION - CLOSE_WAIT) / 2, took
