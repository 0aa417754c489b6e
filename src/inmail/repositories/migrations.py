"""Start-up data migrations: each idempotent, so any process may run them, any number of times.

They run before the indexes are created (Mongo.create_indexes). A migration that finds nothing
left to do records that in `migrations`, so later start-ups skip its scan. Stop the processes of
an older version before starting this one: an older process would keep writing the old shape.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pymongo import UpdateOne

if TYPE_CHECKING:
    from inmail.repositories.mongo import Doc, Mongo

log = logging.getLogger(__name__)

BATCH = 200

THREADS = "threads-in-own-collection-v1"
"""Messages out of conversation documents; direct threads keyed by {senderId, pairKey}."""


async def migrate(mongo: Mongo) -> None:
    if await mongo.c.migrations.find_one({"_id": THREADS}) is not None:
        return
    direct = await _key_direct_threads(mongo)
    moved = await _move_embedded_messages(mongo)
    if direct or moved:
        log.info(
            "migrated %d direct threads to pair keys and %d messages to their own collection",
            direct,
            moved,
        )
    await mongo.c.migrations.update_one(
        {"_id": THREADS}, {"$setOnInsert": {"at": datetime.now(UTC)}}, upsert=True
    )


async def _key_direct_threads(mongo: Mongo) -> int:
    """Direct threads stored under who started them: stored under the pair's smaller id."""
    conversations = mongo.c.conversations
    done = 0
    while True:
        docs = await mongo.find_all(
            conversations,
            {"kind": "DIRECT", "pairKey": {"$exists": False}},
            projection={"senderId": 1, "recipientId": 1},
            limit=BATCH,
        )
        if not docs:
            return done
        for doc in docs:
            starter, other = doc["senderId"], doc["recipientId"]
            low, high = sorted((starter, other))
            await conversations.update_one(
                {"_id": doc["_id"], "pairKey": {"$exists": False}},
                {
                    "$set": {
                        "senderId": low,
                        "recipientId": high,
                        "pairKey": f"{low}:{high}",
                        "startedBy": starter,
                        "startedWith": other,
                    },
                    "$unset": {"pair": ""},
                },
            )
            done += 1


async def _move_embedded_messages(mongo: Mongo) -> int:
    """Each conversation's embedded `messages` into the messages collection, then unset.

    One conversation at a time (a legacy document can be near 16 MB). A message is inserted
    only if absent ($setOnInsert by its id), so a run cut short and run again moves each once.
    """
    conversations = mongo.c.conversations
    moved = 0
    while True:
        ids = await mongo.find_all(
            conversations, {"messages": {"$exists": True}}, projection={"_id": 1}, limit=BATCH
        )
        if not ids:
            return moved
        for ref in ids:
            doc = await conversations.find_one({"_id": ref["_id"]}, {"messages": 1})
            if doc is None or "messages" not in doc:
                continue  # another process moved it meanwhile
            docs: list[Doc] = [
                {
                    "_id": m["id"],
                    "conversationId": doc["_id"],
                    "authorId": m["authorId"],
                    "body": m["body"],
                    "sentAt": m["sentAt"],
                }
                for m in doc["messages"]
            ]
            if docs:
                await mongo.c.messages.bulk_write(
                    [UpdateOne({"_id": d["_id"]}, {"$setOnInsert": d}, upsert=True) for d in docs],
                    ordered=False,
                )
            await conversations.update_one({"_id": doc["_id"]}, {"$unset": {"messages": ""}})
            moved += len(docs)
