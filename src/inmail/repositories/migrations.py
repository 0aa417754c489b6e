"""Start-up data migrations: each idempotent, so any process may run them, any number of times.

They run before the indexes are created (Mongo.create_indexes). A migration that finds nothing
left to do records that in `migrations`, so later start-ups skip its scan. Stop the processes of
an older version before starting this one: an older process would keep writing the old shape.
A step that writes a figure of the configuration takes it as an argument: the plan table is
passed to Mongo.create_indexes by the app's start-up, as configured for this start-up.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, OperationFailure

from inmail.domain.intents import GIVEN_UP
from inmail.domain.plans import PlanTable, PlanType
from inmail.repositories.conversations import pair_key
from inmail.repositories.mongo import NO_TRANSACTION
from inmail.repositories.records import SENT_UNDER, intent_key_to_doc

if TYPE_CHECKING:
    from inmail.repositories.mongo import Collection, Doc, Mongo

log = logging.getLogger(__name__)

BATCH = 200

THREADS = "threads-in-own-collection-v1"
"""Messages out of conversation documents; direct threads keyed by {senderId, pairKey}."""

EVENTS = "conversation-events-in-notifications-v1"
"""Conversation events moved from `conversation_events` into `notifications`."""

LEGACY_TERMS = "legacy-premium-allotment-in-subscription-v1"
"""LEGACY_PREMIUM subscriptions stored without an allotment given the plan table's default."""

INTENT_KEYS = "payment-intent-keys-in-idempotency-v1"
"""Each payment intent's key taken in `idempotency` too, where a send looks for it."""

LOT_ORIGINS = "lot-origins-on-lots-v1"
"""Each purchased or credited-back lot names its purchase or conversation, as its grant did."""

EVENT_KEYS = "notification-event-keys-v1"
"""Notifications stored without an event key (early reminders) given the one read for them."""

GIVEN_UP_RECHECK = "given-up-intents-looked-at-again-v2"
"""Payment intents declined or abandoned by earlier versions looked up at the gateway once more:
a retry could decline an intent whose earlier attempt had been charged, reconciliation could
abandon one whose charge landed after it, and nothing looked again. (v1 looked at declined
intents only.)"""

OLD_EVENTS = "conversation_events"
EVENT_KIND = "CONVERSATION_EVENT"  # repositories/notifications.py EVENT_KIND
_DUPLICATE_KEY = 11000
_COLLECTION_GONE = frozenset({26, 43, 175})
"""NamespaceNotFound, CursorNotFound, QueryPlanKilled: what a read of a collection another
process drops meanwhile gets."""


async def migrate(mongo: Mongo, plans: PlanTable) -> None:
    allotment = plans.policy(PlanType.LEGACY_PREMIUM).monthly_allotment
    # Each step: its name in `migrations`, what it does (how many of each thing it wrote), and
    # the log line that says so when it wrote anything.
    steps: tuple[tuple[str, Callable[[], Awaitable[tuple[int, ...]]], str], ...] = (
        (
            EVENT_KEYS,
            functools.partial(_key_notifications, mongo),
            "gave %d notifications stored without one their event key",
        ),
        (
            THREADS,
            functools.partial(_threads, mongo),
            "migrated %d direct threads to pair keys and %d messages to their own collection",
        ),
        (
            EVENTS,
            functools.partial(_move_conversation_events, mongo),
            "moved %d conversation events into the notifications collection",
        ),
        (
            LEGACY_TERMS,
            functools.partial(_write_legacy_allotments, mongo, allotment),
            f"wrote the LEGACY_PREMIUM default allotment ({allotment}) into %d subscriptions",
        ),
        (
            INTENT_KEYS,
            functools.partial(_take_intent_keys, mongo),
            "recorded the idempotency keys of %d payment intents",
        ),
        (
            LOT_ORIGINS,
            functools.partial(_name_lot_origins, mongo),
            "named the purchase or conversation of %d credit lots",
        ),
        (
            GIVEN_UP_RECHECK,
            functools.partial(_recheck_given_up_intents, mongo),
            "gave %d declined or abandoned payment intents a look at the gateway, for a charge "
            "to refund",
        ),
    )
    for name, step, said in steps:
        if await _done(mongo, name):
            continue
        if any(written := await step()):
            log.info(said, *written)
        await _record(mongo, name)


async def _threads(mongo: Mongo) -> tuple[int, int]:
    return await _key_direct_threads(mongo), await _move_embedded_messages(mongo)


async def _done(mongo: Mongo, name: str) -> bool:
    return await mongo.c.migrations.find_one({"_id": name}) is not None


async def _record(mongo: Mongo, name: str) -> None:
    await mongo.c.migrations.update_one(
        {"_id": name}, {"$setOnInsert": {"at": datetime.now(UTC)}}, upsert=True
    )


async def _key_notifications(mongo: Mongo) -> tuple[int]:
    """Every notification stored without an `eventKey` given the key it is read with (its
    conversation's id, else its own id; `notification_from_doc`). Early versions wrote their
    reminders so (kind INMAIL_REMINDER, one per conversation), and the unique index
    {kind, eventKey} would take all of them for one event with a null key and refuse to be
    built. A notification with a key is never touched, nor a conversation event (they have
    always had theirs), so a second run, or two at once, write each key once. One pass in `_id`
    order, a batch at a time. How many were written by this run."""
    unkeyed: Doc = {"eventKey": None, "kind": {"$ne": EVENT_KIND}}  # missing, or null
    written = await _set_each(
        mongo,
        mongo.c.notifications,
        unkeyed,
        "eventKey",
        lambda doc: doc.get("conversationId") or str(doc["_id"]),
        projection={"conversationId": 1},
    )
    return (written,)


async def _set_each(
    mongo: Mongo,
    collection: Collection,
    query: Doc,
    field: str,
    value: Callable[[Doc], object],
    *,
    projection: Doc,
) -> int:
    """`field` set on every document matching `query` to `value` of it (its `projection`), a
    batch at a time in `_id` order; each update matches `query` again, so a document another
    run set meanwhile is left as it is. How many this run set."""
    written = 0
    after: object = None
    while docs := await mongo.find_all(
        collection,
        query if after is None else {**query, "_id": {"$gt": after}},
        projection=projection,
        sort=[("_id", 1)],
        limit=BATCH,
        session=NO_TRANSACTION,
    ):
        updates = [({"_id": doc["_id"], **query}, {"$set": {field: value(doc)}}) for doc in docs]
        written += await mongo.update_each(collection, updates, NO_TRANSACTION)
        after = docs[-1]["_id"]
    return written


async def _write_legacy_allotments(mongo: Mongo, allotment: int) -> tuple[int]:
    """Every LEGACY_PREMIUM subscription stored without an allotment (an earlier version left
    it to follow the plan table's current default) keeps `allotment` from now on, as one that
    starts today does. A subscription with an allotment is never touched, so a second run, or
    one started with another default, changes nothing. How many were written."""
    result = await mongo.c.members.update_many(
        {"subscription.plan": PlanType.LEGACY_PREMIUM.value, "subscription.monthlyAllotment": None},
        {"$set": {"subscription.monthlyAllotment": allotment}},
    )
    return (result.modified_count,)


async def _take_intent_keys(mongo: Mongo) -> tuple[int]:
    """Every payment intent's key recorded in `idempotency`, as an intent opened now records
    it. A key with a record already (a completed purchase's, or one written by another process
    starting at the same time) is left as it is, so a run cut short and run again, or two at
    once, write each record once. So is a key an InMail holds too (earlier versions let a send
    and a paid request racing under one key both take it): the send's retry keeps its answer,
    and the intent still answers the paid request's. How many were written by this run."""
    taken = 0
    after: str | None = None
    while True:
        query: Doc = {} if after is None else {"_id": {"$gt": after}}
        intents = await mongo.find_all(
            mongo.c.payment_intents, query, sort=[("_id", 1)], limit=BATCH, session=NO_TRANSACTION
        )
        if not intents:
            return (taken,)
        after = intents[-1]["_id"]
        sent = await _sent_under(mongo, [(i["memberId"], i["key"]) for i in intents])
        records = [
            intent_key_to_doc(
                i["memberId"], i["key"], i["kind"], i["requestHash"], i["createdAt"], i["_id"]
            )
            for i in intents
            if (i["memberId"], i["key"]) not in sent
        ]
        if not records:
            continue
        writes = [
            UpdateOne(
                {"memberId": r["memberId"], "key": r["key"]}, {"$setOnInsert": r}, upsert=True
            )
            for r in records
        ]
        try:
            result = await mongo.c.idempotency.bulk_write(writes, ordered=False)
        except BulkWriteError as exc:  # another process upserted the same key meanwhile
            errors = exc.details.get("writeErrors") or []
            if any(error.get("code") != _DUPLICATE_KEY for error in errors):
                raise
            taken += int(exc.details.get("nUpserted", 0))
        else:
            taken += result.upserted_count


async def _name_lot_origins(mongo: Mongo) -> tuple[int]:
    """Every lot granted by a purchase or a credit-back, stored before lots named what they
    came from: given its grant entry's `purchaseId` or `conversationId`, so that the EXPIRE or
    FORFEIT entry that later takes it away names it too. A lot that names it already is left
    as it is, so a second run, or two at once, write nothing twice. How many were written."""
    named = 0
    after: str | None = None
    while True:
        query: Doc = {
            "lotId": {"$ne": None},
            "$or": [{"purchaseId": {"$ne": None}}, {"conversationId": {"$ne": None}}],
            "kind": {"$in": ["GRANT", "CREDIT_BACK"]},
        }
        if after is not None:
            query["_id"] = {"$gt": after}
        grants = await mongo.find_all(
            mongo.c.ledger,
            query,
            sort=[("_id", 1)],
            limit=BATCH,
            projection={"lotId": 1, "purchaseId": 1, "conversationId": 1},
            session=NO_TRANSACTION,
        )
        if not grants:
            return (named,)
        after = grants[-1]["_id"]
        writes = [
            UpdateOne({"_id": grant["lotId"], field: {"$exists": False}}, {"$set": {field: value}})
            for grant in grants
            for field in ("purchaseId", "conversationId")
            if (value := grant.get(field)) is not None
        ]
        result = await mongo.c.credit_lots.bulk_write(writes, ordered=False)
        named += result.modified_count


async def _sent_under(mongo: Mongo, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (member, key) pairs an InMail's conversation holds (index send_key_once)."""
    either = [{"senderId": member, f"{SENT_UNDER}.key": key} for member, key in keys]
    docs = await mongo.find_all(
        mongo.c.conversations,
        {"$or": either},
        projection={"senderId": 1, f"{SENT_UNDER}.key": 1},
        session=NO_TRANSACTION,
    )
    return {(doc["senderId"], doc[SENT_UNDER]["key"]) for doc in docs}


async def _move_conversation_events(mongo: Mongo) -> tuple[int]:
    """Every document of the old `conversation_events` collection into `notifications` under
    the same id, marked with the event kind; then the old collection is dropped.

    An insert refused by a unique index (the same id, or the same event under `one_per_event`)
    finds the event there already: copied by a run cut short, or by another process starting
    at the same time. Only once every event is in `notifications` is the old collection
    dropped, so a run stopped at any point loses nothing and the next one finishes the move.
    How many were copied by this run: where another process finished the move and dropped
    the collection while this one read it, what this one copied until then.
    """
    old = mongo.db[OLD_EVENTS]
    copied = 0
    after: str | None = None
    while True:
        query: Doc = {} if after is None else {"_id": {"$gt": after}}
        try:
            docs = await mongo.find_all(
                old, query, sort=[("_id", 1)], limit=BATCH, session=NO_TRANSACTION
            )
        except OperationFailure as exc:
            gone = OLD_EVENTS not in await mongo.db.list_collection_names()
            if exc.code in _COLLECTION_GONE and gone:
                return (copied,)
            raise
        if not docs:
            break
        after = docs[-1]["_id"]
        copied += await _insert_new(mongo, [doc | {"kind": EVENT_KIND} for doc in docs])
    await old.drop()
    return (copied,)


async def _insert_new(mongo: Mongo, docs: list[Doc]) -> int:
    """Insert the documents a unique index does not refuse; how many were inserted."""
    try:
        result = await mongo.c.notifications.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors") or []
        if any(error.get("code") != _DUPLICATE_KEY for error in errors):
            raise
        return int(exc.details.get("nInserted", 0))
    return len(result.inserted_ids)


async def _key_direct_threads(mongo: Mongo) -> int:
    """Direct threads stored under who started them: stored under the pair's smaller id. One
    pass in `_id` order, a batch written in one round trip; each update matches an unkeyed
    thread only, so one another process keyed meanwhile is left as it is. How many this run
    keyed."""
    conversations = mongo.c.conversations
    unkeyed: Doc = {"kind": "DIRECT", "pairKey": {"$exists": False}}
    done = 0
    after: object = None
    while docs := await mongo.find_all(
        conversations,
        unkeyed if after is None else {**unkeyed, "_id": {"$gt": after}},
        projection={"senderId": 1, "recipientId": 1},
        sort=[("_id", 1)],
        limit=BATCH,
        session=NO_TRANSACTION,
    ):
        done += await mongo.update_each(
            conversations, [_keyed(doc, unkeyed) for doc in docs], NO_TRANSACTION
        )
        after = docs[-1]["_id"]
    return done


def _keyed(doc: Doc, unkeyed: Doc) -> tuple[Doc, Doc]:
    starter, other = doc["senderId"], doc["recipientId"]
    low, high = sorted((starter, other))
    keys = {
        "senderId": low,
        "recipientId": high,
        "pairKey": pair_key(low, high),
        "startedBy": starter,
        "startedWith": other,
    }
    return {"_id": doc["_id"], **unkeyed}, {"$set": keys, "$unset": {"pair": ""}}


async def _move_embedded_messages(mongo: Mongo) -> int:
    """Each conversation's embedded `messages` into the messages collection, then unset.

    A batch of conversations at a time, in `_id` order: the server copies their messages
    (`$unwind` into `$merge`, so no legacy document, which can be near 16 MB, comes to this
    process), keeping one already there by its id, then the arrays are unset. A run cut short
    and run again, or two at once, moves each message once. How many messages this run found
    to move."""
    conversations = mongo.c.conversations
    embedding: Doc = {"messages": {"$exists": True}}
    moved = 0
    after: object = None
    while ids := [
        doc["_id"]
        for doc in await mongo.find_all(
            conversations,
            embedding if after is None else {**embedding, "_id": {"$gt": after}},
            projection={"_id": 1},
            sort=[("_id", 1)],
            limit=BATCH,
            session=NO_TRANSACTION,
        )
    ]:
        after = ids[-1]
        batch: Doc = {"_id": {"$in": ids}, **embedding}
        counted = await conversations.aggregate(
            [{"$match": batch}, {"$group": {"_id": None, "n": {"$sum": {"$size": "$messages"}}}}]
        )
        moved += sum([doc["n"] async for doc in counted])
        await _merge_messages(mongo, batch)
        await conversations.update_many(batch, {"$unset": {"messages": ""}})
    return moved


async def _merge_messages(mongo: Mongo, conversations: Doc, attempts: int = 3) -> None:
    """The embedded messages of the matching conversations into the messages collection, by
    the server. Two runs at once may both insert one message: the loser's `$merge` refuses it
    as a duplicate key, and is run again (keeping what the winner wrote)."""
    pipeline: list[Doc] = [
        {"$match": conversations},
        {"$unwind": "$messages"},
        {
            "$project": {
                "_id": "$messages.id",
                "conversationId": "$_id",
                "authorId": "$messages.authorId",
                "body": "$messages.body",
                "sentAt": "$messages.sentAt",
            }
        },
        {
            "$merge": {
                "into": mongo.c.messages.name,
                "on": "_id",
                "whenMatched": "keepExisting",
                "whenNotMatched": "insert",
            }
        },
    ]
    for attempt in range(1, attempts + 1):
        try:
            await (await mongo.c.conversations.aggregate(pipeline)).to_list()
            return
        except OperationFailure as exc:
            if exc.code != _DUPLICATE_KEY or attempt == attempts:
                raise


async def _recheck_given_up_intents(mongo: Mongo) -> tuple[int]:
    """Every DECLINED or ABANDONED payment intent without a `recheckAt` given one, due at once
    (when it was given up): reconciliation then asks the gateway once for a charge made under
    it, refunds one it finds, and drops the recheck (its hour is long past). Earlier versions
    declined an intent without asking, though an earlier attempt under its key may have been
    charged, and abandoned one without looking again for a charge landing after. An intent
    with a `recheckAt` is left alone, so two runs at once give each one look; an intent whose
    look is over gets one more, which changes nothing. How many were given one by this run."""
    unlooked: Doc = {
        "status": {"$in": [status.value for status in GIVEN_UP]},
        "recheckAt": {"$exists": False},
    }
    written = await _set_each(
        mongo,
        mongo.c.payment_intents,
        unlooked,
        "recheckAt",
        lambda doc: doc.get("atDeclined") or doc.get("atAbandoned") or doc["createdAt"],
        projection={"atDeclined": 1, "atAbandoned": 1, "createdAt": 1},
    )
    return (written,)
