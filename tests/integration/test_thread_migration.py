"""The start-up migration of a database written before messages had their own collection.

Conversations there embed their `messages`, and direct threads are keyed by `pair` alone under
the index `one_direct_per_pair`. Start-up (Mongo.create_indexes) moves the messages, keys the
direct threads by {senderId, pairKey}, and does so once however often it runs.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING, IndexModel

from inmail.domain.plans import DEFAULT_PLAN_TABLE
from inmail.repositories.migrations import BATCH, THREADS
from inmail.repositories.mongo import Doc, Mongo, new_id
from support import migrate_from_two_processes, open_api

AT = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)


def _legacy(
    kind: str, sender: str, recipient: str, bodies: list[tuple[str, str]], subject: str = ""
) -> Doc:
    doc: Doc = {
        "_id": new_id(),
        "kind": kind,
        "senderId": sender,
        "recipientId": recipient,
        "subject": subject,
        "state": "ACCEPTED",
        "sentAt": AT,
        "messages": [
            {"id": new_id(), "authorId": author, "body": body, "sentAt": AT + timedelta(minutes=i)}
            for i, (author, body) in enumerate(bodies)
        ],
        "respondedAt": AT + timedelta(hours=1) if kind == "INMAIL" else None,
        "response": "INTERESTED" if kind == "INMAIL" else None,
        "creditedBack": False,
        "reminderSentAt": None,
        "reminderDueAt": AT + timedelta(hours=48),
    }
    if kind == "DIRECT":
        doc["pair"] = ":".join(sorted((sender, recipient)))
    return doc


async def test_an_old_database_is_migrated_at_start_up_once_however_often_it_runs(
    mongodb_uri: str, db_name: str
) -> None:
    mongo = Mongo.connect(mongodb_uri, db_name)
    try:
        # Two members as an old version wrote them; ids in creation order.
        ada_id, grace_id = new_id(), new_id()
        inmail = _legacy(
            "INMAIL",
            ada_id,
            grace_id,
            [(ada_id, "About COBOL"), (grace_id, "Gladly"), (ada_id, "Thanks!")],
            "Compilers?",
        )
        # Grace (the larger id) started the direct thread.
        direct = _legacy("DIRECT", grace_id, ada_id, [(grace_id, "Coffee?"), (ada_id, "Yes")])
        await mongo.c.conversations.insert_many([inmail, direct])
        await mongo.c.conversations.create_indexes(
            [
                IndexModel(
                    [("pair", ASCENDING)],
                    unique=True,
                    partialFilterExpression={"kind": "DIRECT"},
                    name="one_direct_per_pair",
                )
            ]
        )
        # A run cut short had already copied one message, without unsetting the array.
        first = inmail["messages"][0]
        await mongo.c.messages.insert_one(
            {
                "_id": first["id"],
                "conversationId": inmail["_id"],
                "authorId": first["authorId"],
                "body": first["body"],
                "sentAt": first["sentAt"],
            }
        )

        for _ in range(2):
            await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
            # The marker is what skips the scan; without it the migration runs again and
            # still changes nothing.
            await mongo.c.migrations.delete_one({"_id": THREADS})
        await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)

        assert await mongo.c.conversations.count_documents({"messages": {"$exists": True}}) == 0
        assert await mongo.c.messages.count_documents({}) == 5
        stored = await mongo.c.conversations.find_one({"_id": direct["_id"]})
        assert stored is not None
        assert (stored["senderId"], stored["recipientId"]) == (ada_id, grace_id)
        assert (stored["startedBy"], stored["startedWith"]) == (grace_id, ada_id)
        assert stored["pairKey"] == f"{ada_id}:{grace_id}"
        assert "pair" not in stored
        indexes = await mongo.c.conversations.index_information()
        assert "one_direct_per_pair" not in indexes
        assert indexes["one_direct_per_sender_pair"]["key"] == [("senderId", 1), ("pairKey", 1)]
        assert await mongo.c.migrations.find_one({"_id": THREADS}) is not None
    finally:
        await mongo.close()

    # The service reads the migrated threads as before.
    async with open_api(mongodb_uri, db_name) as api:
        await api.container.mongo.c.members.insert_many(
            [
                {"_id": ada_id, "name": "Ada Lovelace", "plan": "BASIC", "createdAt": AT},
                {"_id": grace_id, "name": "Grace Hopper", "plan": "BASIC", "createdAt": AT},
            ]
        )
        query = (
            "query($id: ID!) { conversation(id: $id) { sender { id } recipient { id } "
            "messages { body author { id } } messageConnection { totalCount } } }"
        )
        found = (await api.gql(query, {"id": inmail["_id"]}, api.token(ada_id)))["conversation"]
        assert [m["body"] for m in found["messages"]] == ["About COBOL", "Gladly", "Thanks!"]
        assert found["messageConnection"]["totalCount"] == 3
        thread = (await api.gql(query, {"id": direct["_id"]}, api.token(ada_id)))["conversation"]
        assert (thread["sender"]["id"], thread["recipient"]["id"]) == (grace_id, ada_id)
        assert [(m["body"], m["author"]["id"]) for m in thread["messages"]] == [
            ("Coffee?", grace_id),
            ("Yes", ada_id),
        ]


async def test_threads_of_many_batches_are_migrated_in_one_pass(
    mongodb_uri: str, db_name: str
) -> None:
    """Each step reads in `_id` order from where its last batch ended (a read from the start
    again each batch would scan what it migrated already, its cost growing with the square of
    the threads), and still misses none; two processes at once move each message once."""
    mongo = Mongo.connect(mongodb_uri, db_name)
    try:
        count = 2 * BATCH + 3
        threads = [
            _legacy("DIRECT", b, a, [(b, f"Note {i}")])
            for i in range(count)
            for a, b in [sorted((new_id(), new_id()))]
        ]
        await mongo.c.conversations.insert_many(threads)

        await migrate_from_two_processes(mongo, mongodb_uri, db_name, DEFAULT_PLAN_TABLE)
        await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)

        unkeyed = {"kind": "DIRECT", "pairKey": {"$exists": False}}
        assert await mongo.c.conversations.count_documents(unkeyed) == 0
        assert await mongo.c.conversations.count_documents({"messages": {"$exists": True}}) == 0
        assert await mongo.c.messages.count_documents({}) == count
        keyed = await mongo.c.conversations.find_one({"_id": threads[-1]["_id"]})
        assert keyed is not None
        assert keyed["startedBy"] == threads[-1]["senderId"]
        assert keyed["senderId"] == threads[-1]["recipientId"]  # the smaller id
    finally:
        await mongo.close()


async def test_processes_starting_together_on_an_old_database_all_start(
    mongodb_uri: str, db_name: str
) -> None:
    """On the first start of a new version every process (every worker) finds the obsolete
    indexes and drops them: the ones that find an index already dropped by another start too.
    The replaced index `expiry_due` goes once `lapsed_keyset`, which serves its reads, is there."""
    mongo = Mongo.connect(mongodb_uri, db_name)
    try:
        await mongo.c.credit_lots.create_index(
            [("status", ASCENDING), ("expiresAt", ASCENDING)], name="expiry_due"
        )
        await mongo.c.conversations.create_index(
            [("pair", ASCENDING)],
            unique=True,
            partialFilterExpression={"kind": "DIRECT"},
            name="one_direct_per_pair",
        )
        # Indexes of early versions that no read uses now.
        await mongo.c.conversations.create_index(
            [("reminderDueAt", ASCENDING)],
            partialFilterExpression={"state": "AWAITING_RESPONSE", "reminderSentAt": None},
            name="reminders_due",
        )
        await mongo.c.notifications.create_index(
            [("delivery.state", ASCENDING), ("delivery.dueAt", ASCENDING)], name="webhook_due"
        )
        starts = [Mongo.connect(mongodb_uri, db_name) for _ in range(4)]
        try:
            await asyncio.gather(*(s.create_indexes(plans=DEFAULT_PLAN_TABLE) for s in starts))
        finally:
            await asyncio.gather(*(s.close() for s in starts))
        lots = await mongo.c.credit_lots.index_information()
        assert "expiry_due" not in lots
        assert lots["lapsed_keyset"]["key"] == [("status", 1), ("expiresAt", 1), ("_id", 1)]
        conversations = await mongo.c.conversations.index_information()
        assert "one_direct_per_pair" not in conversations
        assert "reminders_due" not in conversations
        assert "reminders_due_keyset" in conversations
        assert "webhook_due" not in await mongo.c.notifications.index_information()
    finally:
        await mongo.close()
