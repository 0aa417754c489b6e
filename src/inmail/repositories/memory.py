"""The in-memory fallback: mongomock behind the same `Mongo` interface, for one process only.

It is picked by `repositories/database.py` when no mongod can run, and it is the only module that
knows mongomock's gaps: no sessions (every transaction runs under one process-wide lock, which
is only sound because this mode is single-process and keeps nothing), no working bulk updates,
no index hints, no `$$NOW` (so no leases: the one process holds the scheduler's, and webhooks
are not delivered), no `$unionWith`, no snapshot reads, no change streams (live updates come
from the process itself, and the inbox polls), and partial filters ignored (so a partial
unique index would refuse documents it should not index at all; the lock and the service's own
checks keep those rules here). Times come back with their zone, as from the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from pymongo import IndexModel
from pymongo.asynchronous.cursor import AsyncCursor

from inmail.repositories.leases import LeaseRepository
from inmail.repositories.mongo import (
    NO_TRANSACTION,
    Collection,
    Doc,
    Mongo,
    ReadPoint,
    Session,
    TransactionSession,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class InMemoryMongo(Mongo):
    """mongomock-motor in place of a server: the same collections, nothing kept."""

    enforces_partial_indexes = False  # dropped below: the service looks for conflicts first

    def __init__(self, db_name: str) -> None:
        from mongomock_motor import AsyncMongoMockClient

        super().__init__(AsyncMongoMockClient(tz_aware=True), db_name)
        self._lock = asyncio.Lock()

    async def ping(self) -> None:
        return None

    async def require_replica_set(self) -> None:
        return None  # one process, no transactions: nothing to require

    async def server_version(self) -> str:
        return "in-memory (mongomock)"

    def ledger_changes(self) -> None:
        return None

    def inbox_changes(self) -> None:
        return None

    def lease_store(self) -> LeaseRepository:
        return SoleProcessLease(self)

    def webhook_outbox(self) -> None:
        log.warning("webhooks: not delivered on the in-memory database (no leases there)")
        return None

    def index_models(self, collection: str) -> Sequence[IndexModel]:
        return [
            m
            for m in super().index_models(collection)
            if "partialFilterExpression" not in m.document
        ]

    async def run_transaction(self, callback: Callable[[TransactionSession], Awaitable[T]]) -> T:
        async with self._lock:
            return await callback(TransactionSession(NO_TRANSACTION))

    @contextlib.asynccontextmanager
    async def session_transaction(self) -> AsyncIterator[TransactionSession]:
        async with self._lock:
            yield TransactionSession(NO_TRANSACTION)

    async def update_each(
        self, collection: Collection, updates: Sequence[tuple[Doc, Doc]], session: Session
    ) -> int:
        matched = 0
        for query, update in updates:
            matched += (await collection.update_one(query, update)).matched_count
        return matched

    async def upsert_each(
        self, collection: Collection, upserts: Sequence[tuple[Doc, Doc]], session: Session
    ) -> list[int]:
        inserted = []
        for position, (query, update) in enumerate(upserts):
            result = await collection.update_one(query, update, upsert=True)
            if result.upserted_id is not None:
                inserted.append(position)
        return inserted

    async def _snapshot_cursor(self, command: Doc, at: ReadPoint) -> Doc | None:
        return None  # no snapshots: a list's page and count are each read as they then stand

    def hinted(self, cursor: AsyncCursor[Doc], index: str) -> AsyncCursor[Doc]:
        return cursor

    async def find_anchored(
        self,
        collection: Collection,
        anchor: str,
        others: Sequence[str],
        joins: Sequence[tuple[Collection, Mapping[str, Any]]],
        session: Session,
    ) -> tuple[list[Doc], list[list[Doc]]]:
        found = await self.find_all(
            collection, {"_id": {"$in": [anchor, *others]}}, session=session
        )
        if not any(doc["_id"] == anchor for doc in found):
            return found, [[] for _ in joins]
        return found, [
            await self.find_all(other, dict(query), session=session) for other, query in joins
        ]

    async def latest_per_key(
        self,
        collection: Collection,
        key: str,
        values: Sequence[Any],
        sort: Sequence[tuple[str, int]],
        limit: int,
        session: Session,
    ) -> list[Doc]:
        found: list[Doc] = []
        for value in values:  # no $unionWith in mongomock
            found += await self.find_all(
                collection, {key: value}, sort=sort, limit=limit, session=session
            )
        return found


class SoleProcessLease(LeaseRepository):
    """The scheduler's lease where there is one process only: always held by it."""

    async def acquire(self, name: str, owner: str, ttl: timedelta) -> bool:
        return True

    async def release(self, name: str, owner: str) -> None:
        return None
