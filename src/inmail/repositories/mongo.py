"""The MongoDB client, its collections and indexes, and how a transaction is run.

A transaction is run by `Mongo.run_transaction` (retrying transient errors and unknown commit
results, as the driver's `with_transaction` does) or, for a single attempt, inside
`Mongo.session_transaction`. The in-memory fallback (repositories/memory.py) overrides the few
methods here that a real server and mongomock answer differently; nothing else in the service
knows which one it runs on.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

from bson import ObjectId, Timestamp
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel, UpdateOne, timeout
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.cursor import AsyncCursor
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)
from pymongo.errors import ConnectionFailure as DatabaseUnavailable
from pymongo.monitoring import CommandListener
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from inmail.domain.conversations import ConversationState
from inmail.domain.credits import EXPIRY_NOTICE_DUE
from inmail.domain.model import REMINDER_DUE, ConversationKind
from inmail.domain.plans import PlanTable

if TYPE_CHECKING:
    from pymongo import MongoClient

    from inmail.domain.feeds import CommittedEntries, Feed, InboxChange
    from inmail.repositories.leases import LeaseRepository
    from inmail.repositories.outbox import OutboxStore

log = logging.getLogger(__name__)

T = TypeVar("T")
Doc = dict[str, Any]
Session = AsyncClientSession | None
NO_TRANSACTION: Final[Session] = None
"""The session of a read made outside any transaction on purpose (a listing page, a start-up
step): named where it is done, so that a read that forgot its transaction's session does not
type-check."""


@dataclass(frozen=True, slots=True)
class TransactionSession:
    """An open transaction, as only `Mongo.run_transaction` and `Mongo.session_transaction` hand
    it out: what every repository that writes is built with, so that one built outside a
    transaction does not type-check. `driver`: the session its reads and writes are sent with
    (None on the in-memory fallback, which has no sessions)."""

    driver: Session


Collection = AsyncCollection[Doc]
ReadPoint = Timestamp | None
"""The cluster time of a snapshot a list's page was read at, so that the list's count and its
`hasPreviousPage` are read at the same one; None where there is none (the in-memory fallback, or
a server that could not serve the snapshot)."""

_SNAPSHOT = ReadConcern("snapshot")
_INDEX_NOT_FOUND: Final = 27
CLOSE_WITHIN: Final = 5.0
"""Seconds a closing client waits to end its sessions on the server (a courtesy: the server
drops an idle session after 30 minutes). Unbounded, a process whose database is gone waits out
server selection (20 s) as it stops, and one whose database hangs waits for ever."""
# SnapshotTooOld, SnapshotUnavailable (a collection or index made after the snapshot's time).
_SNAPSHOT_REFUSED: Final = frozenset({239, 246})
# The server's answers after which the driver tries its own reads once more (the retryable
# reads specification): a host or socket lost, a primary stepping down or shutting down.
_RETRYABLE_READ_CODES: Final = frozenset(
    {6, 7, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
)
_DUPLICATE_KEY = 11000
_PART = "_part"  # where find_anchored's lookups put what they found
_MAJORITY = WriteConcern("majority")

__all__ = [
    "Collection",
    "DatabaseUnavailable",
    "Doc",
    "DuplicateKeyError",
    "Mongo",
    "ReadPoint",
    "Session",
    "TransactionSession",
    "WriteWindowClosed",
    "deadline",
    "new_id",
    "refuse_late_commit",
    "unanswered",
    "writes_until",
]


@contextlib.contextmanager
def _duplicates_as_one() -> Iterator[None]:
    """A bulk write refused only by unique indexes raises DuplicateKeyError, as a single write
    does: the unit of work reruns a transaction on that."""
    try:
        yield
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors") or []
        if errors and all(error.get("code") == _DUPLICATE_KEY for error in errors):
            first = errors[0]
            raise DuplicateKeyError(first.get("errmsg", ""), _DUPLICATE_KEY, first) from exc
        raise


class WriteWindowClosed(Exception):
    """A transaction that would have committed after the time its operation may write until
    (a websocket's token's `exp`): rolled back instead, so that nothing of it is written."""


_WRITES_UNTIL: ContextVar[float | None] = ContextVar("inmail_writes_until", default=None)


@contextlib.contextmanager
def writes_until(ends_by: float | None) -> Iterator[None]:
    """Every transaction begun under it commits before `ends_by` (unix seconds), or is rolled
    back with WriteWindowClosed; None: no such bound. The database is not hurried to it (a
    deadline would cut a transaction mid-way, and leave it open on the server until its
    lifetime ends, holding the documents it wrote): the check comes before the commit."""
    token = _WRITES_UNTIL.set(ends_by)
    try:
        yield
    finally:
        _WRITES_UNTIL.reset(token)


def refuse_late_commit() -> None:
    """Raise WriteWindowClosed if the running operation may no longer write (`writes_until`);
    inside a transaction, before its commit, so that the transaction is rolled back."""
    ends_by = _WRITES_UNTIL.get()
    if ends_by is not None and time.time() >= ends_by:
        raise WriteWindowClosed("the operation may no longer write: its token has expired")


def deadline(seconds: float | None) -> contextlib.AbstractContextManager[None]:
    """Every database operation under it, the driver's retries included, ends by `seconds`
    from now (PyMongo's client-side operation timeout); an outer deadline that ends sooner
    still holds. None: no deadline of its own."""
    return timeout(seconds)


def unanswered(exc: BaseException) -> bool:
    """Whether `exc` says that the database was out of reach or did not answer by the deadline
    (a timed-out command, commit or write concern alike), rather than that the request was
    wrong: the same request may succeed later."""
    return isinstance(exc, DatabaseUnavailable) or (isinstance(exc, PyMongoError) and exc.timeout)


def _retryable_read(exc: PyMongoError) -> bool:
    """Whether a read that failed so is worth one more attempt: not after its deadline."""
    if exc.timeout:
        return False
    if isinstance(exc, DatabaseUnavailable) or exc.has_error_label("RetryableError"):
        return True
    return isinstance(exc, OperationFailure) and exc.code in _RETRYABLE_READ_CODES


def new_id() -> str:
    """A new document id: an ObjectId's hex form, time-ordered and URL-safe."""
    return str(ObjectId())


def written_before(document_id: str, margin: timedelta) -> str:
    """The smallest id `new_id` could have made `margin` before `document_id` was made (its
    ObjectId's time, whole seconds): ids from then on sort at or after it."""
    made = ObjectId(document_id).generation_time
    return str(ObjectId.from_datetime(made - margin))


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
    payment_intents: Collection
    leases: Collection
    rate_limits: Collection
    messages: Collection
    migrations: Collection
    webhook_outbox: Collection


OUTBOX_PENDING: Final = "PENDING"
"""The status of a webhook event still to be delivered (repositories/outbox.py): the only one
the delivery worker's claim index holds."""
AWAITING: Final[Mapping[str, object]] = {"state": ConversationState.AWAITING_RESPONSE.value}
"""An InMail that awaits its response: the partial filter of the `one_awaiting_per_pair` index
(at most one per sender and recipient, SPEC 4); a query that repeats it can use the index."""
_DIRECT = {"kind": ConversationKind.DIRECT.value}
REMINDER_PENDING: Final[Mapping[str, object]] = {
    "state": REMINDER_DUE.state.value,
    "reminderSentAt": None,
}
"""`REMINDER_DUE` but its time: what the scheduler's reminder queries match
(repositories/conversations.py), and the partial filter of the index that serves them."""


def _newest_first(
    owner: str | tuple[str, ...],
    time: str,
    name: str,
    *,
    partial: Mapping[str, object] | None = None,
) -> IndexModel:
    """The index of a keyset page (repositories/pages.py) of one owner's documents, newest
    first, with the id breaking ties between documents of the same time. `owner` may be
    several fields, each matched by equality (the owner, then a status)."""
    owners = (owner,) if isinstance(owner, str) else owner
    keys = [*((field, ASCENDING) for field in owners), (time, DESCENDING), ("_id", DESCENDING)]
    if partial is None:
        return IndexModel(keys, name=name)
    return IndexModel(keys, partialFilterExpression=partial, name=name)


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
        _newest_first("memberId", "grantedAt", "member_newest"),
        # `creditLots(status:)`: the expired and forfeited lots a long history piles up never
        # stand between a member and the few in the status asked for.
        _newest_first(("memberId", "status"), "grantedAt", "member_status_newest"),
        # The expiry job walks the lapsed lots themselves in (expiresAt, _id) order: a lot
        # expired leaves the range, so a pass reads what it expires, however many members hold
        # lots. (By member, on `member_spendable`, it stepped through every member's keys.)
        IndexModel(
            [("status", ASCENDING), ("expiresAt", ASCENDING), ("_id", ASCENDING)],
            name="lapsed_keyset",
        ),
        # CREDITS_EXPIRING notices: the live lots not yet noticed (null, the field absent), by
        # expiry. A lot noticed leaves that range, so a pass reads just the lots it tells about;
        # by status and expiry alone it read again every lot noticed within the notice's lead.
        IndexModel(
            [("expiryNoticeAt", ASCENDING), ("expiresAt", ASCENDING), ("_id", ASCENDING)],
            partialFilterExpression={"status": EXPIRY_NOTICE_DUE.lots.status.value},
            name="expiry_notice_due",
        ),
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
            partialFilterExpression=AWAITING,
            name="one_awaiting_per_pair",
        ),
        # A send's key, kept by the conversation it created (repositories/records.py): a second
        # send under the key is refused by the index, not looked for first.
        IndexModel(
            [("senderId", ASCENDING), ("sentUnder.key", ASCENDING)],
            unique=True,
            partialFilterExpression={"sentUnder.key": {"$exists": True}},
            name="send_key_once",
        ),
        _newest_first("senderId", "sentAt", "sender_newest"),
        _newest_first("recipientId", "sentAt", "recipient_newest"),
        # The same lists in one state (`conversations(state:)`): a member's answered InMails
        # never stand between them and the few awaiting a response.
        _newest_first(("senderId", "state"), "sentAt", "sender_state_newest"),
        _newest_first(("recipientId", "state"), "sentAt", "recipient_state_newest"),
        # One direct thread per pair of members. It leads with the shard key (README,
        # Sharding): a direct thread is stored under the pair's smaller id as its senderId.
        IndexModel(
            [("senderId", ASCENDING), ("pairKey", ASCENDING)],
            unique=True,
            partialFilterExpression=_DIRECT,
            name="one_direct_per_sender_pair",
        ),
        # The SENT and RECEIVED lists' direct threads, by who started them.
        _newest_first("startedBy", "sentAt", "direct_started_by_newest", partial=_DIRECT),
        _newest_first("startedWith", "sentAt", "direct_started_with_newest", partial=_DIRECT),
        # An InMail's first message, kept in the conversation, found by its id (a node).
        IndexModel(
            [("first._id", ASCENDING)],
            partialFilterExpression={"first._id": {"$exists": True}},
            name="first_message",
        ),
        # The reminder job's keyset, (reminderDueAt, _id), so a pass never meets one twice.
        IndexModel(
            [("reminderDueAt", ASCENDING), ("_id", ASCENDING)],
            partialFilterExpression=REMINDER_PENDING,
            name="reminders_due_keyset",
        ),
    ],
    "purchases": [
        _newest_first("memberId", "at", "member_newest_keyset"),
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
        # One notification per event (repositories/notifications.py).
        IndexModel(
            [("kind", ASCENDING), ("eventKey", ASCENDING)], unique=True, name="one_per_event"
        ),
        _newest_first("memberId", "at", "member_newest_keyset"),
        # `notifications(unreadOnly: true)`, in the list's order (ties on `at` by id).
        _newest_first(("memberId", "readAt"), "at", "member_unread_keyset"),
    ],
    "leases": [],
    # Send counters per member and minute (repositories/rate_limits.py), gone once stale.
    "rate_limits": [IndexModel([("deleteAfter", ASCENDING)], expireAfterSeconds=0, name="expired")],
    # A thread's messages, one document each: the latest, a page and a count are index ranges.
    "messages": [
        IndexModel(
            [("conversationId", ASCENDING), ("sentAt", ASCENDING), ("_id", ASCENDING)],
            name="conversation_oldest",
        ),
    ],
    "migrations": [],  # which start-up data migrations are complete (repositories/migrations.py)
    "webhook_outbox": [
        # The delivery worker's claim: the earliest pending event that is due.
        IndexModel(
            [("status", ASCENDING), ("dueAt", ASCENDING)],
            partialFilterExpression={"status": OUTBOX_PENDING},
            name="pending_due",
        ),
        # Every event is removed some time after it was written (repositories/outbox.py).
        IndexModel([("purgeAt", ASCENDING)], expireAfterSeconds=0, name="purge"),
    ],
    "payment_intents": [
        # A key names one paid request: a second request under it is refused before any charge.
        IndexModel([("memberId", ASCENDING), ("key", ASCENDING)], unique=True, name="key_once"),
        # Reconciliation's keyset over intents that may hold money not yet settled.
        IndexModel(
            [("status", ASCENDING), ("createdAt", ASCENDING), ("_id", ASCENDING)],
            name="open_by_age",
        ),
        # Reconciliation's second look at intents it gave up (repositories/intents.py).
        IndexModel(
            [("recheckAt", ASCENDING), ("_id", ASCENDING)],
            partialFilterExpression={"recheckAt": {"$exists": True}},
            name="abandoned_recheck",
        ),
    ],
}

OBSOLETE_INDEXES: Mapping[str, Sequence[str]] = {
    # {status, expiresAt}: `lapsed_keyset` is it with the id that breaks ties.
    "credit_lots": ["expiry_due"],
    # {pair} alone: a unique index that does not lead with the shard key `senderId`;
    # {reminderDueAt} by `reminders_due_keyset`, with the id that breaks ties.
    "conversations": ["one_direct_per_pair", "reminders_due"],
    # Replaced by `one_per_event` and `member_newest_keyset` (webhooks: the outbox's own);
    # `events_by_time` by `_id` (the live feed's catch-up reads by when ids were made);
    # `event_conversation_order` served no read of the service's.
    "notifications": [
        "one_per_conversation",
        "member_newest",
        "member_unread",  # by `member_unread_keyset`, with the id that breaks ties
        "undelivered",
        "events_by_time",
        "event_conversation_order",
        "webhook_due",  # deliveries left notifications for the outbox
    ],
    # {memberId, at} without the id: a page of purchases was sorted in memory.
    "purchases": ["member_newest"],
}


def standalone_refusal(hello: Mapping[str, object]) -> str | None:
    """What to tell an operator whose server (as its `hello` reply describes it) cannot run the
    service; None for a replica set member or a mongos."""
    if "setName" in hello or hello.get("msg") == "isdbgrid":
        return None
    return (
        "MongoDB is running as a standalone server: transactions and change streams need a "
        "replica set. Start mongod with --replSet and run rs.initiate() once (one node is "
        "enough), or point INMAIL_MONGODB_URI at a replica set or mongos."
    )


_NOT_MONGODB: Final = re.compile(r"Got response id \d+ but expected|larger than server max")
"""How the driver says that the server it reached answers in another protocol."""


def mongodb_problem(uri: str, db_name: str) -> str | None:
    """Why the MongoDB at `uri` cannot serve database `db_name` (unreachable, no replica set, a
    write concern it refuses), in a line for an operator; None if it can. `inmail serve` asks
    once before any worker starts, so that a wrong INMAIL_MONGODB_URI is one clear message
    rather than a traceback from every worker."""
    from pymongo import MongoClient
    from pymongo.errors import ConfigurationError
    from pymongo.uri_parser import parse_uri

    try:
        # A port out of range, an unknown option value, a mongodb+srv:// name with no record.
        hosts = ", ".join(f"{host}:{port}" for host, port in parse_uri(uri)["nodelist"])
        client: MongoClient[Doc] = MongoClient(uri, serverSelectionTimeoutMS=20_000)
    except (ConfigurationError, ValueError, OSError) as exc:  # OSError: a TLS file unreadable
        return f"INMAIL_MONGODB_URI cannot be used: {str(exc)[:300]}"
    try:
        hello = client.admin.command("hello")
        return standalone_refusal(hello) or _write_concern_refusal(client, db_name)
    except PyMongoError as exc:
        detail = str(exc).split(", Timeout:")[0][:300]
        if _NOT_MONGODB.search(detail):  # an answer, but no MongoDB's (an HTTP server's, say)
            detail = f"what answers there is not a MongoDB server (the driver read: {detail})"
        return f"cannot reach MongoDB at {hosts} (INMAIL_MONGODB_URI): {detail}"
    finally:
        client.close()


# The server's codes for a write concern no write could meet: a `w` mode the replica set's
# configuration does not name, or more nodes than the set has.
_WRITE_CONCERN_REFUSED = {79, 100}  # UnknownReplWriteConcern, UnsatisfiableWriteConcern


def _write_concern_refusal(client: MongoClient[Doc], db_name: str) -> str | None:
    """Why the URI's write concern cannot serve (the service's transactions ask for majority
    themselves, but its other writes take the URI's): unacknowledged writes, which could be
    lost unseen, or a concern the server refuses. None if neither."""
    if not client.write_concern.acknowledged:
        return (
            "INMAIL_MONGODB_URI asks for unacknowledged writes (w=0), which could be lost "
            "unseen: remove w=0 (or give w=1 or w=majority)"
        )
    try:
        # A write that writes nothing (nor creates the collection) is held to the write
        # concern like any other; bounded, since a concern that waits for a node that is down
        # would wait for ever (and is no reason to refuse to start).
        with timeout(20):
            client[db_name]["migrations"].delete_one({"_id": "write concern check"})
    except WriteConcernError as exc:
        if exc.code not in _WRITE_CONCERN_REFUSED:
            return None
        detail = str(exc).split(", full error:")[0][:300]
        return f"INMAIL_MONGODB_URI's write concern is refused by MongoDB: {detail}"
    except PyMongoError:
        return None  # a timeout: whether writes can be made is the workers' to find
    return None


class Mongo:
    """One client and database for the process; opened by the app's lifespan."""

    def __init__(self, client: AsyncMongoClient[Doc], db_name: str) -> None:
        self.client = client
        self.db: AsyncDatabase[Doc] = client[db_name]
        self.c = Collections(**{name: self.db[name] for name in INDEXES})

    @classmethod
    def connect(
        cls,
        uri: str,
        db_name: str,
        *,
        app_name: str = "inmail",
        listeners: Sequence[CommandListener] = (),
    ) -> Mongo:
        """A client on `uri` (`listeners` hear every command it sends). Reads go to the primary
        whatever the URI asks (`readPreference` there is overridden): a secondary may lag, and
        every read must show the writes committed before it (SPEC 3). A `readConcernLevel`
        in the URI holds for every read outside a transaction."""
        # An election after a primary dies takes about 11 s (electionTimeoutMillis is 10 s): a
        # request waits it out and answers late rather than failing.
        client: AsyncMongoClient[Doc] = AsyncMongoClient(
            uri,
            tz_aware=True,
            appname=app_name,
            serverSelectionTimeoutMS=20_000,
            readPreference="primary",
            event_listeners=list(listeners),
        )
        return cls(client, db_name)

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    async def require_replica_set(self) -> None:
        """Refuse a standalone server at start-up: transactions and change streams need a
        replica set (one node is enough) or a sharded cluster's mongos."""
        hello = await self.client.admin.command("hello")
        refusal = standalone_refusal(hello)
        if refusal is not None:
            raise RuntimeError(refusal)

    async def server_version(self) -> str:
        info = await self.client.admin.command("buildInfo")
        return str(info.get("version", "unknown"))

    # What processes share through the database: each one's commits reach the others' live
    # subscribers through change streams, and a lease gives a job or an event to one of them.

    def ledger_changes(self) -> Callable[[], Feed[CommittedEntries]]:
        """Opens a feed of the ledger's committed entries, one transaction's at a time,
        whichever process wrote them: the ledger's change stream."""
        from inmail.repositories.changes import LedgerChanges

        return lambda: LedgerChanges(self)

    def inbox_changes(self) -> Callable[[], Feed[InboxChange]]:
        """Opens a feed of new notifications and conversation events, whichever process wrote
        them: the change stream of the `notifications` collection."""
        from inmail.repositories.changes import InboxChanges

        return lambda: InboxChanges(self)

    def lease_store(self) -> LeaseRepository:
        """Where the scheduler takes its lease."""
        from inmail.repositories.leases import LeaseRepository

        return LeaseRepository(self)

    def webhook_outbox(self) -> OutboxStore | None:
        """The outbox the webhook worker delivers from (on MongoDB, always one; the in-memory
        fallback, whose events cannot be leased to a worker, has none)."""
        from inmail.repositories.outbox import OutboxStore

        return OutboxStore(self)

    def index_models(self, collection: str) -> Sequence[IndexModel]:
        return INDEXES[collection]

    async def create_indexes(self, *, plans: PlanTable) -> None:
        """Bring the database up to this version: obsolete unique indexes dropped (an old rule
        must not refuse what a migration writes), data migrated (repositories/migrations.py,
        each step idempotent), every index created, then the other obsolete indexes dropped
        (once what replaces them is built, so that no read goes without an index meanwhile).

        `plans` is the plan table configured for this start-up: a migration that writes a
        figure from it (LEGACY_PREMIUM's default allotment) writes the one in force."""
        from inmail.repositories.migrations import migrate

        await self._drop_obsolete(unique=True)
        await migrate(self, plans)
        for name in INDEXES:
            models = self.index_models(name)
            if models:
                await self.db[name].create_indexes(list(models))
        await self._drop_obsolete(unique=False)

    async def _drop_obsolete(self, *, unique: bool) -> None:
        """Drop the obsolete indexes still there, the unique ones or the others. Processes that
        start together race to drop them: one that finds an index already gone goes on."""
        for name, obsolete in OBSOLETE_INDEXES.items():
            existing = await self.db[name].index_information()
            for index in obsolete:
                if index in existing and bool(existing[index].get("unique")) == unique:
                    try:
                        await self.db[name].drop_index(index)
                    except OperationFailure as exc:
                        if exc.code != _INDEX_NOT_FOUND:
                            raise

    async def latest_per_key(
        self,
        collection: Collection,
        key: str,
        values: Sequence[object],
        sort: Sequence[tuple[str, int]],
        limit: int,
        session: Session,
    ) -> list[Doc]:
        """The first `limit` documents in `sort` order for each value of `key`, one round trip.

        One aggregate: a $match-$sort-$limit per value, chained with $unionWith, so each is an
        index range of its own (never the whole of a large group).
        """
        if not values:
            return []

        def branch(value: object) -> list[Doc]:
            return [{"$match": {key: value}}, {"$sort": dict(sort)}, {"$limit": limit}]

        pipeline = branch(values[0]) + [
            {"$unionWith": {"coll": collection.name, "pipeline": branch(value)}}
            for value in values[1:]
        ]
        return await self.aggregate(collection, pipeline, session)

    async def close(self) -> None:
        """Close the client, giving the server `CLOSE_WITHIN` seconds to end its sessions."""
        with timeout(CLOSE_WITHIN):
            await self.client.close()

    async def run_transaction(self, callback: Callable[[TransactionSession], Awaitable[T]]) -> T:
        """Run callback in one transaction, again if the server says a rerun may succeed."""
        async with self.client.start_session() as session:

            async def run(s: AsyncClientSession) -> T:
                done = await callback(TransactionSession(s))
                refuse_late_commit()  # raised here, the driver aborts the transaction
                return done

            result: T = await session.with_transaction(
                run, read_concern=_SNAPSHOT, write_concern=_MAJORITY
            )
            return result

    @contextlib.asynccontextmanager
    async def session_transaction(self) -> AsyncIterator[TransactionSession]:
        """One attempt at a transaction: committed when the block ends, aborted if it raises."""
        async with self.client.start_session() as session:
            await session.start_transaction(read_concern=_SNAPSHOT, write_concern=_MAJORITY)
            try:
                yield TransactionSession(session)
                refuse_late_commit()
            except BaseException:
                await session.abort_transaction()
                raise
            await session.commit_transaction()

    async def find_all(
        self,
        collection: Collection,
        query: Mapping[str, object],
        *,
        projection: Mapping[str, object] | None = None,
        sort: Sequence[tuple[str, int]] | None = None,
        limit: int = 0,
        session: Session,
    ) -> list[Doc]:
        """Every matching document. `session` is always said: the transaction's, or
        `NO_TRANSACTION` where a read is outside any transaction on purpose."""
        cursor = collection.find(query, projection, session=session)
        if sort:
            cursor = cursor.sort(list(sort))
        if limit:
            cursor = cursor.limit(limit)
        return [doc async for doc in cursor]

    async def read_page(
        self,
        collection: Collection,
        query: Mapping[str, object],
        *,
        projection: Mapping[str, object] | None,
        sort: Sequence[tuple[str, int]],
        limit: int,
    ) -> tuple[list[Doc], ReadPoint]:
        """The first `limit` (at least 1) matching documents in `sort` order, read outside any
        transaction from one snapshot of majority-committed data, and that snapshot's time: the
        list's other reads (`count_at`, `any_at`) are made at it, so that a page, its count and
        whether anything precedes it agree while other requests write.

        One batch: a page is at most the API's page size (100) plus one, far under 16 MB."""
        command: Doc = {
            "find": collection.name,
            "filter": dict(query),
            "sort": dict(sort),
            "limit": limit,
            "batchSize": limit,
            "singleBatch": True,
        }
        if projection is not None:
            command["projection"] = dict(projection)
        cursor = await self._snapshot_cursor(command, None)
        if cursor is not None:
            return list(cursor["firstBatch"]), cursor.get("atClusterTime")
        # No snapshot to be had: the page as it stands, and its list's other reads likewise.
        docs = await self.find_all(
            collection, query, projection=projection, sort=sort, limit=limit, session=NO_TRANSACTION
        )
        return docs, None

    async def count_at(
        self, collection: Collection, query: Mapping[str, object], at: ReadPoint
    ) -> int:
        """How many documents match, in the snapshot at `at` (now, for None)."""
        if at is not None:
            pipeline = [{"$match": dict(query)}, {"$group": {"_id": 1, "n": {"$sum": 1}}}]
            cursor = await self._snapshot_cursor(
                {"aggregate": collection.name, "pipeline": pipeline, "cursor": {}}, at
            )
            if cursor is not None:
                found = cursor["firstBatch"]
                return int(found[0]["n"]) if found else 0
        return await collection.count_documents(query)

    async def any_at(
        self,
        collection: Collection,
        query: Mapping[str, object],
        sort: Sequence[tuple[str, int]],
        at: ReadPoint,
    ) -> bool:
        """Whether any document matches, in the snapshot at `at` (now, for None); `sort` names
        the index order to look in."""
        if at is not None:
            command: Doc = {
                "find": collection.name,
                "filter": dict(query),
                "sort": dict(sort),
                "projection": {"_id": 1},
                "limit": 1,
                "singleBatch": True,
            }
            cursor = await self._snapshot_cursor(command, at)
            if cursor is not None:
                return bool(cursor["firstBatch"])
        docs = await self.find_all(
            collection, query, projection={"_id": 1}, sort=sort, limit=1, session=NO_TRANSACTION
        )
        return bool(docs)

    async def _snapshot_cursor(self, command: Doc, at: ReadPoint) -> Doc | None:
        """The cursor (first batch, and the snapshot's `atClusterTime`) of a read command run at
        the snapshot `at`, the latest for None; None when the server cannot serve that snapshot
        (older than its history, `minSnapshotHistoryWindowInSeconds`, or older than a collection
        or index it reads)."""
        concern: Doc = {"level": "snapshot"}
        if at is not None:
            concern["atClusterTime"] = at
        try:
            reply = await self._read_command({**command, "readConcern": concern})
        except OperationFailure as exc:
            if exc.code not in _SNAPSHOT_REFUSED:
                raise
            return None
        cursor: Doc = reply["cursor"]
        return cursor

    async def _read_command(self, command: Doc) -> Doc:
        """A read command's reply, the command tried once more after an error the driver would
        retry one of its own reads after (a connection lost, a primary stepping down: the next
        attempt selects the new primary). `db.command` itself never retries, nor adds the
        client's read concern: a command without one of its own is given it here."""
        if "readConcern" not in command and self.db.read_concern.document:
            command = {**command, "readConcern": self.db.read_concern.document}
        try:
            reply: Doc = await self.db.command(command, codec_options=self.db.codec_options)
            return reply
        except PyMongoError as exc:
            if not _retryable_read(exc):
                raise
            log.info("a read met %r; trying it once more", exc)
        reply = await self.db.command(command, codec_options=self.db.codec_options)
        return reply

    async def find_by_ids(
        self,
        collection: Collection,
        ids: Iterable[str],
        session: Session,
        *,
        projection: Mapping[str, object] | None = None,
    ) -> list[Doc]:
        """The documents with these ids (repeats asked once), in one round trip; none asked for
        no ids."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        query = {"_id": {"$in": wanted}}
        return await self.find_all(collection, query, projection=projection, session=session)

    async def find_anchored(
        self,
        collection: Collection,
        anchor: str,
        others: Sequence[str],
        joins: Sequence[tuple[Collection, Mapping[str, object]]],
        session: Session,
    ) -> tuple[list[Doc], list[list[Doc]]]:
        """The documents of `collection` whose `_id` is `anchor` or one of `others`, and for each
        join (collection, query) the documents matching that query, in one round trip: an
        aggregate on the anchor's document with one uncorrelated `$lookup` per part.

        Each part's query runs once. A `$lookup` joined on a field runs its query once per
        document it joins; for two members and two joins, measured at 1.4x the database's CPU.
        `$unionWith` would be cheaper still, but transactions refuse it.

        When no document is the anchor, the aggregate brings nothing: `others` are then read by
        a second query, and the joins are reported empty (each caller's joins are the anchor's
        own documents: its lots, its records)."""
        pipeline: list[Doc] = [{"$match": {"_id": anchor}}]
        parts = [(collection, {"_id": {"$in": list(others)}})] if others else []
        for n, (other, query) in enumerate([*parts, *joins]):
            pipeline.append(
                {
                    "$lookup": {
                        "from": other.name,
                        "pipeline": [{"$match": dict(query)}],
                        "as": f"{_PART}{n}",
                    }
                }
            )
        found = await self._aggregate_one_batch(collection, pipeline, session)
        if not found:
            rest = await self.find_all(collection, parts[0][1], session=session) if parts else []
            return rest, [[] for _ in joins]
        (doc,) = found
        each = [doc.pop(f"{_PART}{n}") for n in range(len(parts) + len(joins))]
        return [doc, *(each[0] if parts else [])], each[len(parts) :]

    async def newest_recorded_time(self, sample: int = 100) -> datetime | None:
        """The latest service-clock time among the most recently written ledger entries,
        conversations, messages and notifications (a reminder, a response: each is notified at
        its time). Ids are time-ordered ObjectIds, so this reads `sample` documents of each
        through the `_id` index, whatever the size of the collections; None on an empty
        database."""
        times: list[datetime] = []
        for collection, field in (
            (self.c.ledger, "at"),
            (self.c.conversations, "sentAt"),
            (self.c.messages, "sentAt"),
            (self.c.notifications, "at"),
        ):
            docs = await self.find_all(
                collection,
                {},
                projection={field: 1},
                sort=[("_id", -1)],
                limit=sample,
                session=NO_TRANSACTION,
            )
            times += [doc[field] for doc in docs if isinstance(doc.get(field), datetime)]
        return max(times, default=None)

    async def _aggregate_one_batch(
        self, collection: Collection, pipeline: list[Doc], session: Session
    ) -> list[Doc]:
        """An aggregate whose answer fits its first batch (a few documents), as one command:
        no cursor to open, iterate and close, which the driver's `aggregate` costs a request
        in CPU. Outside a transaction, tried once more after an error the driver would retry."""
        command: Doc = {"aggregate": collection.name, "pipeline": pipeline, "cursor": {}}
        if session is NO_TRANSACTION:
            reply = await self._read_command(command)
        else:
            reply = await self.db.command(
                command, session=session, codec_options=self.db.codec_options
            )
        cursor: Doc = reply["cursor"]
        if cursor["id"] != 0:  # never for a match on _id; said loudly rather than cut short
            raise RuntimeError(f"an aggregate on {collection.name} did not fit its first batch")
        batch: list[Doc] = cursor["firstBatch"]
        return batch

    async def aggregate(
        self, collection: Collection, pipeline: Sequence[Mapping[str, object]], session: Session
    ) -> list[Doc]:
        cursor = await collection.aggregate(list(pipeline), session=session)
        return [doc async for doc in cursor]

    async def update_each(
        self, collection: Collection, updates: Sequence[tuple[Doc, Doc]], session: Session
    ) -> int:
        """Apply (filter, update) pairs in order, in one round trip; how many matched. One pair
        is one `update_one`: PyMongo's bulk path costs more client CPU for a single write."""
        if not updates:
            return 0
        if len(updates) == 1:
            query, update = updates[0]
            return (await collection.update_one(query, update, session=session)).matched_count
        ops = [UpdateOne(query, update) for query, update in updates]
        with _duplicates_as_one():
            result = await collection.bulk_write(ops, ordered=True, session=session)
        return result.matched_count

    async def upsert_each(
        self, collection: Collection, upserts: Sequence[tuple[Doc, Doc]], session: Session
    ) -> list[int]:
        """Apply (filter, update) upserts in order, in one round trip; the positions of those
        that inserted a document."""
        if not upserts:
            return []
        ops = [UpdateOne(query, update, upsert=True) for query, update in upserts]
        with _duplicates_as_one():
            result = await collection.bulk_write(ops, ordered=True, session=session)
        return sorted(result.upserted_ids or {})

    async def insert_all(
        self, collection: Collection, docs: Sequence[Doc], session: Session
    ) -> None:
        """Insert `docs` in order, in one round trip (none for no documents); one document is
        one `insert_one` (see `update_each`)."""
        if len(docs) == 1:
            await collection.insert_one(docs[0], session=session)
        elif docs:
            with _duplicates_as_one():
                await collection.insert_many(list(docs), session=session)

    def hinted(self, cursor: AsyncCursor[Doc], index: str) -> AsyncCursor[Doc]:
        """The cursor told to walk `index` (where the planner might pick a worse one)."""
        return cursor.hint(index)
