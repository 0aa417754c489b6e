"""Where the service keeps its data: INMAIL_MONGODB_URI's database, else the mongod `inmail serve`
starts over the data folder, else the in-memory fallback, for one process outside production."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pymongo
import pytest
from pymongo.errors import ServerSelectionTimeoutError

from inmail import embedded_mongod
from inmail.repositories.database import IN_MEMORY_PACKAGE, NoDatabase, choose_database
from inmail.repositories.memory import InMemoryMongo
from inmail.repositories.mongo import mongodb_problem
from support import test_settings as settings_with

ATLAS = "mongodb://db.example:27017/?replicaSet=rs0"


@pytest.fixture
def no_mongod_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_mongod, "find_mongod_binary", lambda explicit: None)


def test_a_database_given_is_used_as_given_and_no_mongod_is_looked_for() -> None:
    database = choose_database(settings_with(mongodb_uri=ATLAS), may_start_mongod=True)
    assert (database.uri, database.mongod) == (ATLAS, None)


def test_serve_starts_a_mongod_over_the_data_folder_when_one_is_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    binary = tmp_path / "mongod"
    monkeypatch.setattr(embedded_mongod, "find_mongod_binary", lambda explicit: binary)
    database = choose_database(settings_with(data_dir=tmp_path), may_start_mongod=True)
    assert database.uri is None
    assert database.mongod is not None
    assert (database.mongod.data_dir, database.mongod.binary) == (tmp_path / "mongod", binary)


@pytest.mark.usefixtures("no_mongod_here")
def test_without_a_mongod_one_development_process_falls_back_to_memory(
    caplog: pytest.LogCaptureFixture,
) -> None:
    database = choose_database(settings_with(), may_start_mongod=True)
    assert (database.uri, database.mongod) == (None, None)
    with caplog.at_level(logging.WARNING, logger="inmail.repositories.database"):
        assert isinstance(database.open(), InMemoryMongo)
    assert "NOTHING WILL PERSIST" in caplog.text


@pytest.mark.usefixtures("no_mongod_here")
@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"workers": 2}, "several workers need a real MongoDB: set INMAIL_MONGODB_URI"),
        ({"env": "production", "clock": "system"}, "production needs a real MongoDB"),
    ],
)
def test_serve_refuses_the_fallback_to_several_workers_and_to_production(
    changes: dict[str, object], refusal: str
) -> None:
    with pytest.raises(NoDatabase, match=refusal):
        choose_database(settings_with(**changes), may_start_mongod=True)


def test_production_starts_no_embedded_mongod_even_where_one_is_installed(tmp_path: Path) -> None:
    """The embedded mongod asks no credentials: in production any user of the machine could
    change balances through it."""
    production = settings_with(env="production", clock="system", data_dir=tmp_path)
    for may_start_mongod in (True, False):  # `inmail serve`; an app started by uvicorn itself
        with pytest.raises(NoDatabase, match="production needs a real MongoDB: set INMAIL_MONG"):
            choose_database(production, may_start_mongod=may_start_mongod)
    assert not (tmp_path / "mongod").exists()


def test_a_worker_starts_no_mongod_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(explicit: Path | None) -> Path:
        raise AssertionError("a worker looked for a mongod")

    monkeypatch.setattr(embedded_mongod, "find_mongod_binary", never)
    assert choose_database(settings_with()).mongod is None


@pytest.mark.usefixtures("no_mongod_here")
def test_without_a_mongod_or_the_memory_extra_serve_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *rest: None if name == IN_MEMORY_PACKAGE else found(name, *rest),
    )
    with pytest.raises(NoDatabase, match="no in-memory fallback installed: set INMAIL_MONGODB_URI"):
        choose_database(settings_with(), may_start_mongod=True)


def test_a_server_answering_in_another_protocol_is_said_to_be_no_mongodb(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """INMAIL_MONGODB_URI naming an HTTP server's port: the driver reads its answer as a reply
    of the wrong id; the operator is told that what answers there is no MongoDB."""

    class AnswersHttp:
        def __init__(self, uri: str, **options: object) -> None:
            self.admin = self

        def command(self, name: str) -> None:
            raise ServerSelectionTimeoutError(
                "127.0.0.1:8000: Got response id 1414012997 but expected 1656478042, "
                "Timeout: 20.0s, Topology Description: <TopologyDescription ...>"
            )

        def close(self) -> None:
            pass

    monkeypatch.setattr(pymongo, "MongoClient", AnswersHttp)
    problem = mongodb_problem("mongodb://127.0.0.1:8000/", "inmail")
    assert problem == (
        "cannot reach MongoDB at 127.0.0.1:8000 (INMAIL_MONGODB_URI): what answers there is not "
        "a MongoDB server (the driver read: 127.0.0.1:8000: Got response id 1414012997 but "
        "expected 1656478042)"
    )
