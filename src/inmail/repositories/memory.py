"""The in-memory fallback: mongomock behind the same `Mongo` interface, for one process only.

It is picked by `repositories/database.py` when no mongod can run, and it is the only module that
knows mongomock's gaps: no sessions (every transaction runs under one process-wide lock, which
is only sound because this mode is single-process and keeps nothing), no rollback (each
transaction keeps what its writes change, as it stood, and puts it back if the transaction
raises), no working bulk updates, no index hints, no `$$NOW` (so no leases: the one process
holds the scheduler's, and webhooks are not delivered), no `$unionWith`, no snapshot reads, no
change streams (the ledger's feed hands out what each transaction of this process wrote as it
ends, and the inbox's polls the collection), and partial filters dropped by `create_indexes`
(each partial unique index is made on its own, with its filter, which mongomock then enforces as
the server does; a partial index that is not unique only serves reads, and is not made). Times
come back with their zone, as from the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, Final, TypeVar, cast

from bson import ObjectId
from pymongo import IndexModel
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.results import UpdateResult

from inmail.domain.feeds import CommittedEntries, Feed, InboxChange
from inmail.domain.plans import PlanTable
from inmail.repositories.leases import LeaseRepository
from inmail.repositories.ledger import entry_from_doc
from inmail.repositories.mongo import (
    INDEXES,
    NO_TRANSACTION,
    Collection,
    Collections,
    Doc,
    Mongo,
    ReadPoint,
    Session,
    TransactionSession,
    new_id,
    refuse_late_commit,
)
from inmail.repositories.notifications import NotificationReader

log = logging.getLogger(__name__)

T = TypeVar("T")


class InMemoryMongo(Mongo):
    """mongomock-motor in place of a server: the same collections, nothing kept."""

    poll_interval = 0.25
    """Seconds between the inbox feed's reads of the collection."""

    def __init__(self, db_name: str) -> None:
        from mongomock_motor import AsyncMongoMockClient

        mock: AsyncMongoMockClient[Doc] = AsyncMongoMockClient(tz_aware=True)
        # Where mongomock enters: its client stands in for PyMongo's, as its collections do
        # below, though its stub names it Motor's client, which PyMongo's type does not accept.
        stand_in: Any = mock
        super().__init__(stand_in, db_name)
        self._mock = mock  # closed as Motor's client is, at once
        self.c = Collections(
            **{name: cast(Collection, _Journaled(self.db[name])) for name in INDEXES}
        )
        self._lock = asyncio.Lock()
        self._ledger_feeds: set[_CommittedHere] = set()
        self._ledger_written: list[Doc] = []  # by the transaction under way

    async def ping(self) -> None:
        return None

    async def require_replica_set(self) -> None:
        return None  # one process, no transactions: nothing to require

    async def server_version(self) -> str:
        return "in-memory (mongomock)"

    def ledger_changes(self) -> Callable[[], Feed[CommittedEntries]]:
        return lambda: _CommittedHere(self._ledger_feeds)

    def inbox_changes(self) -> Callable[[], Feed[InboxChange]]:
        reads = NotificationReader(self, NO_TRANSACTION)
        return lambda: _PolledInbox(reads, self.poll_interval)

    def lease_store(self) -> LeaseRepository:
        return SoleProcessLease(self)

    def webhook_outbox(self) -> None:
        log.warning("webhooks: not delivered on the in-memory database (no leases there)")
        return None

    def index_models(self, collection: str) -> Sequence[IndexModel]:
        # mongomock's create_indexes drops a partial filter: see create_indexes
        return [
            m
            for m in super().index_models(collection)
            if "partialFilterExpression" not in m.document
        ]

    async def create_indexes(self, *, plans: PlanTable) -> None:
        """`Mongo.create_indexes`, and each partial unique index made on its own, which keeps
        its filter. One already made is left: mongomock checks the documents already there
        against a new unique index as if it had no filter."""
        await super().create_indexes(plans=plans)
        for name in INDEXES:
            made = await self.db[name].index_information()
            for model in super().index_models(name):
                index = model.document
                partial = index.get("partialFilterExpression")
                if index.get("unique") and partial is not None and index["name"] not in made:
                    await self.db[name].create_index(
                        list(index["key"].items()),
                        unique=True,
                        partialFilterExpression=partial,
                        name=index["name"],
                    )

    async def close(self) -> None:
        self._mock.close()  # mongomock's client closes at once

    async def aggregate(
        self, collection: Collection, pipeline: Sequence[Mapping[str, object]], session: Session
    ) -> list[Doc]:
        # mongomock's aggregate hands back its cursor at once, where PyMongo's is awaited.
        cursor: Any = collection.aggregate(list(pipeline), session=session)
        return [doc async for doc in cursor]

    async def run_transaction(self, callback: Callable[[TransactionSession], Awaitable[T]]) -> T:
        async with self.session_transaction() as session:
            return await callback(session)

    @contextlib.asynccontextmanager
    async def session_transaction(self) -> AsyncIterator[TransactionSession]:
        async with self._lock:
            self._ledger_written = []
            journal = _Journal()
            underway = _UNDERWAY.set(journal)
            try:
                yield TransactionSession(NO_TRANSACTION)
                refuse_late_commit()
            except BaseException:
                await journal.undo()
                raise
            finally:
                _UNDERWAY.reset(underway)
            self._announce_ledger()

    def _announce_ledger(self) -> None:
        """Hand the ledger entries the transaction wrote to every open ledger feed, as one
        transaction's (what the change stream would)."""
        written, self._ledger_written = self._ledger_written, []
        if written:
            entries = [entry_from_doc(doc) for doc in written]
            for feed in self._ledger_feeds:
                feed.offer(CommittedEntries(entries, {}))

    async def insert_all(
        self, collection: Collection, docs: Sequence[Doc], session: Session
    ) -> None:
        await super().insert_all(collection, docs, session)
        if collection.name == self.c.ledger.name:
            self._ledger_written += docs

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
        joins: Sequence[tuple[Collection, Mapping[str, object]]],
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
        values: Sequence[object],
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


_WRITES = frozenset(
    {
        "insert_one",
        "insert_many",
        "update_one",
        "update_many",
        "replace_one",
        "find_one_and_update",
        "find_one_and_replace",
        "find_one_and_delete",
        "delete_one",
        "delete_many",
        "bulk_write",
    }
)


class _Journal:
    """What one transaction's writes changed, each document as it stood before (None: it was
    not there), so that a transaction that raises leaves the data as it found them."""

    def __init__(self) -> None:
        self._before: dict[tuple[str, object], tuple[Collection, Doc | None]] = {}

    def _keep(self, collection: Collection, doc_id: object, before: Doc | None) -> None:
        self._before.setdefault((collection.name, doc_id), (collection, before))

    async def write(
        self, collection: Collection, method: str, target: Any, *args: object, **kwargs: object
    ) -> object:
        """`collection.<method>(target, *args, **kwargs)`, what it may change kept first."""
        new: list[object] = []
        if method in ("insert_one", "insert_many"):
            docs = [target] if method == "insert_one" else list(target)  # read once
            for doc in docs:
                doc.setdefault("_id", ObjectId())  # as the driver does, but before the insert
            new = [doc["_id"] for doc in docs]
            target = docs[0] if method == "insert_one" else docs
            query = {"_id": {"$in": new}}
        else:
            query = {} if method == "bulk_write" else target
        found = await collection.find(query).to_list()
        for doc in found:
            self._keep(collection, doc["_id"], doc)
        for doc_id in new:
            self._keep(collection, doc_id, None)  # those not there before
        # An upsert's new document: update_one's result names it; for the others the ids before
        # and after tell it (a find_one_and_* inserts only where its filter found nothing).
        upserts = bool(kwargs.get("upsert")) and "find_one" in method and not found
        compared = method == "bulk_write" or upserts
        before = await _ids(collection) if compared else set()
        try:
            result = await getattr(collection, method)(target, *args, **kwargs)
        finally:
            if compared:
                for doc_id in await _ids(collection) - before:
                    self._keep(collection, doc_id, None)
        if isinstance(result, UpdateResult) and result.upserted_id is not None:
            self._keep(collection, result.upserted_id, None)
        return result

    async def undo(self) -> None:
        """Put every document kept back as it stood: all taken out first, so that none put back
        meets another's unique key still changed."""
        for (_, doc_id), (collection, _) in self._before.items():
            await collection.delete_one({"_id": doc_id})
        for collection, before in self._before.values():
            if before is not None:
                await collection.insert_one(before)


async def _ids(collection: Collection) -> set[object]:
    return {doc["_id"] async for doc in collection.find({}, {"_id": 1})}


_UNDERWAY: ContextVar[_Journal | None] = ContextVar("inmail_memory_transaction", default=None)
"""The journal of the transaction the running code is in, if any (a task started in it inherits
it). The undo puts back whole documents as the transaction found them, which is sound because
nothing writes, outside a transaction, a collection that transactions write (the book of charges,
written outside them, is never written inside one) and every transaction holds the lock."""


class _Journaled:
    """One of the fallback's collections: inside a transaction its writes go by the journal."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> object:
        journal = _UNDERWAY.get()
        if journal is None or name not in _WRITES:
            found = getattr(self._collection, name)
            return _copying_projection(found) if name in _PROJECTING else found
        return functools.partial(journal.write, self._collection, name)


_PROJECTING: Final = frozenset({"find", "find_one"})


def _copying_projection(read: Any) -> Callable[..., object]:
    """A read given a copy of its projection: mongomock writes into the one it is given (it
    sets `_id` there), and the repositories share theirs between reads and pipelines."""

    def call(*args: object, **kwargs: object) -> object:
        if len(args) > 1 and isinstance(args[1], Mapping):
            args = (args[0], dict(args[1]), *args[2:])
        projection = kwargs.get("projection")
        if isinstance(projection, Mapping):
            kwargs["projection"] = dict(projection)
        return read(*args, **kwargs)

    return call


class _CommittedHere:
    """The ledger's feed without a change stream: each transaction's entries as it ends. All
    the data is this one process's, so what its transactions write is all there is."""

    def __init__(self, feeds: set[_CommittedHere]) -> None:
        self._feeds = feeds
        self._committed: asyncio.Queue[CommittedEntries] = asyncio.Queue()

    def offer(self, committed: CommittedEntries) -> None:
        self._committed.put_nowait(committed)

    async def open(self) -> None:
        self._feeds.add(self)

    async def next(self) -> CommittedEntries:
        return await self._committed.get()

    async def close(self) -> None:
        self._feeds.discard(self)


class _PolledInbox:
    """The inbox's feed without a change stream: the collection read every `interval` seconds
    for documents with ids after the last one handed out. Transactions run one at a time here,
    so ids are made in the order they are written, and none written after the feed opened is
    passed over."""

    def __init__(self, reads: NotificationReader, interval: float) -> None:
        self._reads = reads
        self._interval = interval
        self._last = ""
        self._found: deque[InboxChange] = deque()

    async def open(self) -> None:
        self._last = new_id()

    async def next(self) -> InboxChange:
        while not self._found:
            await asyncio.sleep(self._interval)
            self._found.extend(await self._reads.newer(self._last))
            if self._found:
                self._last = self._found[-1].id
        return self._found.popleft()

    async def close(self) -> None:
        self._found.clear()


class SoleProcessLease(LeaseRepository):
    """The scheduler's lease where there is one process only: always held by it."""

    async def acquire(self, name: str, owner: str, ttl: timedelta) -> bool:
        return True

    async def release(self, name: str, owner: str) -> None:
        return None
