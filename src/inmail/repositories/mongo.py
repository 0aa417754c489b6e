"""The MongoDB client, its collections and indexes, and transactions.

Every multi-document write runs through `Mongo.transaction`, which retries transient errors and
unknown commit results. The in-memory fallback (mongomock) has no sessions: there the callback
runs under one process-wide lock with no session, which is only sound because that mode is
single-process and keeps nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure as DatabaseUnavailable
from pymongo.errors import DuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

log = logging.getLogger(__name__)

T = TypeVar("T")
Doc = dict[str, Any]
Session = AsyncClientSession | None
Collection = AsyncCollection[Doc]

__all__ = [
    "Collection",
    "DatabaseUnavailable",
    "Doc",
    "DuplicateKeyError",
    "Mongo",
    "Session",
    "new_id",
]


def new_id() -> str:
    """A new document id: an ObjectId's hex form, time-ordered and URL-safe."""
    return str(ObjectId())


@dataclass(frozen=True, slots=True)
class Collections:
    members: Collection
    credit_lots: Collection
    ledger: Collection
    conversations: Collection
    purchases: Collection
    charges: Collection
    idempotency: Collection
    notifications: Collection
    leases: Collection
    rate_limits: Collection


_AWAITING = {"state": "AWAITING_RESPONSE"}

INDEXES: Mapping[str, Sequence[IndexModel]] = {
    "members": [
        IndexModel(
            [("subscription.status", ASCENDING), ("subscription.nextRenewalAt", ASCENDING)],
            name="renewals_due",
        ),
    ],
    "credit_lots": [
        IndexModel(
            [("memberId", ASCENDING), ("status", ASCENDING), ("expiresAt", ASCENDING)],
            name="member_spendable",
        ),
        IndexModel(
            [("memberId", ASCENDING), ("grantedAt", DESCENDING), ("_id", DESCENDING)],
            name="member_newest",
        ),
        IndexModel([("status", ASCENDING), ("expiresAt", ASCENDING)], name="expiry_due"),
    ],
    "ledger": [
        IndexModel([("memberId", ASCENDING), ("seq", DESCENDING)], unique=True, name="member_seq"),
        # A grant (a cycle's allotment, a purchase, a credit-back) is written at most once.
        IndexModel(
            [("memberId", ASCENDING), ("grantKey", ASCENDING)],
            unique=True,
            partialFilterExpression={"grantKey": {"$type": "string"}},
            name="grant_once",
        ),
    ],
    "conversations": [
        IndexModel(
            [("senderId", ASCENDING), ("recipientId", ASCENDING)],
            unique=True,
            partialFilterExpression=_AWAITING,
            name="one_awaiting_per_pair",
        ),
        IndexModel(
            [("senderId", ASCENDING), ("sentAt", DESCENDING), ("_id", DESCENDING)],
            name="sender_newest",
        ),
        IndexModel(
            [("recipientId", ASCENDING), ("sentAt", DESCENDING), ("_id", DESCENDING)],
            name="recipient_newest",
        ),
        IndexModel(
            [("pair", ASCENDING)],
            unique=True,
            partialFilterExpression={"kind": "DIRECT"},
            name="one_direct_per_pair",
        ),
        # The reminder job's keyset, (reminderDueAt, _id), so a pass never meets one twice.
        IndexModel(
            [("reminderDueAt", ASCENDING), ("_id", ASCENDING)],
            partialFilterExpression={"state": "AWAITING_RESPONSE", "reminderSentAt": None},
            name="reminders_due_keyset",
        ),
    ],
    "purchases": [
        IndexModel([("memberId", ASCENDING), ("at", DESCENDING)], name="member_newest"),
        # A charge buys at most one purchase.
        IndexModel([("chargeId", ASCENDING)], unique=True, name="one_per_charge"),
    ],
    "charges": [
        IndexModel(
            [("memberId", ASCENDING), ("idempotencyKey", ASCENDING)],
            unique=True,
            name="charge_once",
        ),
    ],
    "idempotency": [
        IndexModel([("memberId", ASCENDING), ("key", ASCENDING)], unique=True, name="key_once"),
    ],
    "notifications": [
        IndexModel(
            [("kind", ASCENDING), ("conversationId", ASCENDING)],
            unique=True,
            partialFilterExpression={"conversationId": {"$type": "string"}},
            name="one_per_conversation",
        ),
        IndexModel([("memberId", ASCENDING), ("at", DESCENDING)], name="member_newest"),
        IndexModel([("deliveredAt", ASCENDING), ("at", ASCENDING)], name="undelivered"),
    ],
    "leases": [],
    # Send counters per member and minute (repositories/rate_limits.py), gone once stale.
    "rate_limits": [IndexModel([("deleteAfter", ASCENDING)], expireAfterSeconds=0, name="expired")],
}


class Mongo:
    """One client and database for the process; opened by the app's lifespan."""

    def __init__(self, client: Any, db_name: str, *, in_memory: bool = False) -> None:
        self.client = client
        self.db: AsyncDatabase[Doc] = client[db_name]
        self.in_memory = in_memory
        self._memory_lock = asyncio.Lock()
        self.c = Collections(**{name: self.db[name] for name in INDEXES})

    @classmethod
    def connect(cls, uri: str, db_name: str, *, app_name: str = "inmail") -> Mongo:
        client: AsyncMongoClient[Doc] = AsyncMongoClient(
            uri, tz_aware=True, appname=app_name, serverSelectionTimeoutMS=10_000
        )
        return cls(client, db_name)

    @classmethod
    def in_memory_fallback(cls, db_name: str) -> Mongo:
        from mongomock_motor import AsyncMongoMockClient

        return cls(AsyncMongoMockClient(tz_aware=True), db_name, in_memory=True)

    async def ping(self) -> None:
        if self.in_memory:
            return
        await self.client.admin.command("ping")

    async def server_version(self) -> str:
        if self.in_memory:
            return "in-memory (mongomock)"
        info = await self.client.admin.command("buildInfo")
        return str(info.get("version", "unknown"))

    async def create_indexes(self) -> None:
        for name, models in INDEXES.items():
            if self.in_memory:
                # mongomock ignores partial filters, so a partial unique index would refuse what
                # it should not index at all; in memory every transaction runs under one lock, so
                # the service's own checks keep those rules there.
                models = [m for m in models if "partialFilterExpression" not in m.document]
            if models:
                await self.db[name].create_indexes(list(models))

    async def close(self) -> None:
        result = self.client.close()
        if asyncio.iscoroutine(result):
            await result

    async def transaction(self, callback: Callable[[Session], Awaitable[T]]) -> T:
        """Run callback in one transaction: all of its writes happen, or none."""
        if self.in_memory:
            async with self._memory_lock:
                return await callback(None)
        async with self.client.start_session() as session:

            async def run(s: AsyncClientSession) -> T:
                return await callback(s)

            result: T = await session.with_transaction(
                run,
                read_concern=ReadConcern("snapshot"),
                write_concern=WriteConcern("majority"),
            )
            return result

    async def find_all(
        self,
        collection: Collection,
        query: Mapping[str, Any],
        *,
        projection: Mapping[str, Any] | None = None,
        sort: Sequence[tuple[str, int]] | None = None,
        limit: int = 0,
        session: Session = None,
    ) -> list[Doc]:
        cursor = collection.find(query, projection, session=session)
        if sort:
            cursor = cursor.sort(list(sort))
        if limit:
            cursor = cursor.limit(limit)
        return [doc async for doc in cursor]

    async def aggregate(
        self, collection: Collection, pipeline: Sequence[Mapping[str, Any]], session: Session = None
    ) -> list[Doc]:
        cursor: Any = collection.aggregate(list(pipeline), session=session)
        if asyncio.iscoroutine(cursor):  # PyMongo's async API awaits; mongomock does not
            cursor = await cursor
        return [doc async for doc in cursor]
