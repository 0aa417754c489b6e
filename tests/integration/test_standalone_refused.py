"""A standalone mongod is refused at start-up with what to do, before anything is served: the
service needs a replica set (or mongos) for its transactions and change streams."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pymongo import MongoClient

from inmail.app import create_app
from inmail.embedded_mongod import mongod_command, spawn_mongod
from inmail.processes import free_port
from inmail.repositories.mongo import Mongo, standalone_refusal
from reliability.replicaset import mongod_binary
from support import test_settings as settings_for_tests

pytestmark = pytest.mark.slow


def test_the_hello_of_a_replica_set_member_or_a_mongos_is_accepted() -> None:
    assert standalone_refusal({"setName": "rs0", "isWritablePrimary": True}) is None
    assert standalone_refusal({"msg": "isdbgrid"}) is None
    refusal = standalone_refusal({"isWritablePrimary": True})
    assert refusal is not None
    assert "replica set" in refusal
    assert "--replSet" in refusal


async def test_the_app_does_not_start_on_a_standalone_mongod(tmp_path: Path) -> None:
    port = free_port()
    command = mongod_command(mongod_binary(), port, tmp_path, "unused", oplog_mb=64)
    at = command.index("--replSet")
    del command[at : at + 2]  # no replica set: a standalone server
    process = spawn_mongod(command, stderr=subprocess.DEVNULL)
    try:
        uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        probe: MongoClient[dict[str, object]]
        with MongoClient(uri, serverSelectionTimeoutMS=30_000) as probe:
            assert "setName" not in probe.admin.command("hello")
        app = create_app(settings_for_tests(), mongo=Mongo.connect(uri, "inmail_standalone"))
        with pytest.raises(RuntimeError, match="standalone server"):
            async with app.router.lifespan_context(app):
                pass
        with MongoClient(uri, serverSelectionTimeoutMS=5_000) as probe:
            assert "inmail_standalone" not in probe.list_database_names()  # nothing written
    finally:
        process.terminate()
        process.wait(timeout=30)
