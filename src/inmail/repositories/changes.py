"""Committed ledger entries as they happen, from a change stream on the ledger collection.

Every API process watches the ledger, so a change committed through any process reaches the live
subscribers of all of them. The feed hands out one transaction's entries at a time, in commit
order, and remembers the resume token of the last batch it handed out: when the stream drops
(a failover, a network cut, a killed cursor) it reopens right after that batch, so nothing is
lost and nothing is handed out twice. A change stream needs a replica set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Final

from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.errors import OperationFailure, PyMongoError

from inmail.domain.feeds import ChangesLost, CommittedEntries, InboxChange, ResumeToken
from inmail.domain.model import LedgerEntry
from inmail.repositories.ledger import entry_from_doc
from inmail.repositories.mongo import Doc, Mongo
from inmail.repositories.notifications import inbox_change

log = logging.getLogger(__name__)

# Inserts (the ledger is append-only) and the invalidation that ends a stream, trimmed to what a
# subscriber needs. `_id` is the resume token and must stay as it is; lsid and txnNumber say
# which transaction wrote the entry.
_PIPELINE: Final[Sequence[Mapping[str, object]]] = (
    {"$match": {"operationType": {"$in": ["insert", "invalidate"]}}},
    {"$project": {"operationType": 1, "fullDocument": 1, "lsid": 1, "txnNumber": 1}},
)

# The server no longer has the history after the token (the oplog rolled over), or the token
# cannot be used: resuming is impossible and the changes in between are gone.
_HISTORY_LOST_CODES: Final = frozenset({260, 280, 286})


class _StreamEnded(PyMongoError):
    """The stream closed without an error of its own: open it again at the token."""


class _NotReady:
    pass


_NOT_READY: Final = _NotReady()


def _transaction_of(change: Doc) -> tuple[object, int] | None:
    lsid, number = change.get("lsid"), change.get("txnNumber")
    if not isinstance(lsid, Mapping) or number is None:
        return None
    return (lsid.get("id"), int(number))


def _history_lost(exc: PyMongoError) -> bool:
    return isinstance(exc, OperationFailure) and exc.code in _HISTORY_LOST_CODES


class _ResumableFeed:
    """A change stream that reopens right after the last change handed out (`_token`) when it
    drops, waiting longer after each failure in a row; `_watch` opens the stream itself."""

    _name: str  # what the logs call the feed

    def __init__(
        self,
        mongo: Mongo,
        *,
        resume_after: ResumeToken | None = None,
        max_await_ms: int = 1000,
        retry_delay: float = 0.2,
        max_retry_delay: float = 5.0,
    ) -> None:
        self._mongo = mongo
        self._token: ResumeToken | None = resume_after
        self._max_await_ms = max_await_ms
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._delay = retry_delay
        self._stream: AsyncChangeStream[Doc] | None = None
        self._closed = False
        # Why the last resume failed with the history gone: said (ChangesLost) once a stream
        # from now is open, however many attempts that takes.
        self._lost: str | None = None

    async def open(self) -> None:
        """Start watching now (or at the resume token): later commits are all seen."""
        await self._ensure_stream()

    async def close(self) -> None:
        self._closed = True
        await self._drop_stream()

    async def _watch(self, token: ResumeToken | None) -> AsyncChangeStream[Doc]:
        """A new stream, resuming after `token` (None: from now)."""
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the {self._name} change feed is closed")

    async def _ensure_stream(self) -> AsyncChangeStream[Doc]:
        if self._stream is not None:
            return self._stream
        try:
            stream = await self._watch(self._token)
        except PyMongoError as exc:
            if self._token is None or not _history_lost(exc):
                raise
            log.error("cannot resume the %s change stream (%s); starting from now", self._name, exc)
            self._token, self._lost = None, str(exc)
            stream = await self._watch(None)  # if this fails too, the next attempt says it
        self._started(stream)
        if self._lost is not None:
            lost, self._lost = self._lost, None
            raise ChangesLost(lost)
        return stream

    def _started(self, stream: AsyncChangeStream[Doc]) -> AsyncChangeStream[Doc]:
        self._stream = stream
        if self._token is None:
            # Resuming from here before the first change still sees that change.
            self._token = stream.resume_token
        return stream

    def _waited_in_vain(self, stream: AsyncChangeStream[Doc]) -> None:
        """A wait that found no change: the stream must still be open, and a reopen may start
        after all the server has looked through."""
        if not stream.alive:
            raise _StreamEnded("the change stream was closed")
        self._token = stream.resume_token or self._token

    async def _recover(self, exc: PyMongoError) -> None:
        log.warning(
            "the %s change stream dropped (%s: %s); resuming in %.1fs",
            self._name,
            type(exc).__name__,
            exc,
            self._delay,
        )
        await self._drop_stream()
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, self._max_retry_delay)

    async def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(PyMongoError):
                await stream.close()


class LedgerChanges(_ResumableFeed):
    """An endless feed of committed ledger entries, grouped by transaction; resumes by itself."""

    _name = "ledger"
    # A change read ahead (`_poll`), a change of the next transaction held back, and whether
    # the last stream ended in an invalidation: none until the feed reads.
    _pending: asyncio.Task[Doc | None] | None = None
    _held: Doc | None = None
    _after_invalidation = False

    @property
    def resume_token(self) -> ResumeToken | None:
        """Where a new feed resumes to see exactly what follows the last batch handed out."""
        return self._token

    async def next(self) -> CommittedEntries:
        """The next committed transaction's entries; waits for one, riding out dropped streams.

        Raises ChangesLost when the stream could not resume and had to start afresh from now.
        """
        while True:
            self._check_open()
            try:
                stream = await self._ensure_stream()
                batch = await self._next_transaction(stream)
            except PyMongoError as exc:
                await self._recover(exc)
                continue
            if batch is not None:
                self._delay = self._retry_delay
                return batch

    async def _watch(self, token: ResumeToken | None) -> AsyncChangeStream[Doc]:
        # After an invalidation only startAfter can go on; resumeAfter would replay it.
        after_invalidation, self._after_invalidation = self._after_invalidation, False
        stream: AsyncChangeStream[Doc] = await self._mongo.c.ledger.watch(
            list(_PIPELINE),
            resume_after=None if after_invalidation else token,
            start_after=token if after_invalidation else None,
            max_await_time_ms=self._max_await_ms,
        )
        return stream

    async def _next_transaction(self, stream: AsyncChangeStream[Doc]) -> CommittedEntries | None:
        """Read changes until one transaction's are complete; None when a wait found nothing.

        A transaction's changes arrive together, so the group ends at the first change of
        another transaction or when no further change is already at hand.
        """
        group: list[Doc] = []
        key: tuple[object, int] | None = None
        while True:
            change: Doc | _NotReady | None
            if self._held is not None:
                change, self._held = self._held, None
            elif group:
                change = await self._poll(stream)
            else:
                change = await self._wait(stream)
            if isinstance(change, _NotReady) or change is None:
                if group:
                    break
                self._waited_in_vain(stream)
                return None
            if change.get("operationType") == "invalidate":
                if group:
                    self._held = change
                    break
                # The ledger was dropped or renamed: this stream is over, a new one goes on
                # after the invalidation, so inserts into a new ledger are still seen.
                log.warning("the ledger change stream was invalidated (dropped collection?)")
                self._token = change["_id"]
                self._after_invalidation = True
                await self._drop_stream()
                return None
            change_key = _transaction_of(change)
            if group and (change_key is None or change_key != key):
                self._held = change
                break
            group.append(change)
            key = change_key
            if key is None:
                break
        entries = [entry for entry in map(self._entry, group) if entry is not None]
        self._token = group[-1]["_id"]
        if not entries:
            return None
        return CommittedEntries(entries, self._token)

    @staticmethod
    def _entry(change: Doc) -> LedgerEntry | None:
        try:
            return entry_from_doc(change["fullDocument"])
        except (KeyError, TypeError, ValueError):
            log.error("skipping a ledger change that is not a ledger entry: %r", change.get("_id"))
            return None

    async def _wait(self, stream: AsyncChangeStream[Doc]) -> Doc | None:
        pending, self._pending = self._pending, None
        if pending is not None:
            return await pending
        return await stream.try_next()

    async def _poll(self, stream: AsyncChangeStream[Doc]) -> Doc | _NotReady | None:
        """The next change if it is already at hand, without waiting on the server."""
        if self._pending is None:
            self._pending = asyncio.create_task(stream.try_next())
            # One turn of the loop: a change from the batch at hand is returned in it, a change
            # that needs a getMore is not.
            await asyncio.sleep(0)
        if not self._pending.done():
            return _NOT_READY
        pending, self._pending = self._pending, None
        return pending.result()

    async def _drop_stream(self) -> None:
        """Forget the stream and whatever it read past the token: a reopen reads it again."""
        pending, self._pending = self._pending, None
        self._held = None
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, PyMongoError):
                await pending
        await super()._drop_stream()


# Inbox changes: new notifications and conversation events (both stored in `notifications`,
# repositories/notifications.py), from one change stream on the database. Each insert is handed
# out on its own, in commit order; the resume token is kept after each, so a dropped stream
# reopens right after the last change handed out.

INBOX_COLLECTIONS: Final = ("notifications",)

_INBOX_PIPELINE: Final[Sequence[Mapping[str, object]]] = (
    {
        "$match": {
            "operationType": "insert",
            "ns.coll": {"$in": list(INBOX_COLLECTIONS)},
        }
    },
    {"$project": {"operationType": 1, "fullDocument": 1, "ns": 1}},
)


class InboxChanges(_ResumableFeed):
    """An endless feed of inserts into the inbox collections; resumes by itself."""

    _name = "inbox"

    async def next(self) -> InboxChange:
        """The next insert; waits for one. Raises ChangesLost when it could not resume."""
        while True:
            self._check_open()
            try:
                stream = await self._ensure_stream()
                change = await stream.try_next()
                if change is None:
                    self._waited_in_vain(stream)
                    continue
            except PyMongoError as exc:
                await self._recover(exc)
                continue
            self._delay = self._retry_delay
            self._token = change["_id"]
            document = change.get("fullDocument")
            collection = (change.get("ns") or {}).get("coll")
            if isinstance(document, dict) and collection in INBOX_COLLECTIONS:
                return inbox_change(document)

    async def _watch(self, token: ResumeToken | None) -> AsyncChangeStream[Doc]:
        stream: AsyncChangeStream[Doc] = await self._mongo.db.watch(
            list(_INBOX_PIPELINE), resume_after=token, max_await_time_ms=self._max_await_ms
        )
        return stream
