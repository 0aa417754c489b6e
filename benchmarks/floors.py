"""Floors: the same guarantees written directly on PyMongo (or graphql-core), in the same run.

Each floor works on collections of its own (`floor_*`) in the benchmark's mongod, copied from the
service's documents once seeding is done, with the indexes its guarantees need. None of them calls
the service's code: what they cost is what MongoDB (or GraphQL execution) itself allows.

- `SendFloor.send`: one transaction (snapshot read concern, majority write) that reads sender and
  recipient in one `find`, takes one credit from the soonest-expiring live lot with
  `find_one_and_update`, bumps the sender's ledger position with `find_one_and_update`, inserts
  the idempotency record (a unique index refuses a reused key), the conversation (a unique partial
  index refuses a second awaiting InMail to the same recipient) and the ledger entry, and
  commits: 7 round trips.
- `ComposeFloor.compose`: the compose window (`compose(recipientId)` + `viewer { inmailBalance }`)
  in one aggregate: both members, the viewer's spendable balance and the awaiting check.
- `PageFloor`: graphql-core executing the member-page document over the page's data already in
  memory (plain dicts, the default resolver), with the reply encoded as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLSchema,
    build_schema,
    execute,
    parse,
    validate,
)
from pymongo import ASCENDING, AsyncMongoClient, IndexModel, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from inmail.domain.plans import DEFAULT_PLAN_TABLE, PlanType

Doc = dict[str, Any]

MEMBERS = "floor_members"
LOTS = "floor_lots"
LEDGER = "floor_ledger"
CONVERSATIONS = "floor_conversations"
IDEMPOTENCY = "floor_idempotency"
COPIED = {"members": MEMBERS, "credit_lots": LOTS, "ledger": LEDGER, "conversations": CONVERSATIONS}

SNAPSHOT = ReadConcern("snapshot")
MAJORITY = WriteConcern("majority")
AWAITING = "AWAITING_RESPONSE"
# Plans whose members may send InMail: the plan table's rule, read once.
INMAIL_PLANS = frozenset(
    p.value for p in PlanType if DEFAULT_PLAN_TABLE.policy(p, None).can_send_inmail
)
LIVE_SUBSCRIPTION = frozenset({"ACTIVE"})


class FloorRefused(Exception):
    """The floor refused a send, with the code the service would give."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


async def prepare(db: AsyncDatabase[Doc]) -> None:
    """Copy the service's seeded documents into the floors' own collections, with indexes."""
    for source, target in COPIED.items():
        cursor = await db[source].aggregate([{"$out": target}])
        await cursor.to_list()
    await db[IDEMPOTENCY].drop()
    await db[LOTS].create_indexes(
        [IndexModel([("memberId", ASCENDING), ("status", ASCENDING), ("expiresAt", ASCENDING)])]
    )
    await db[LEDGER].create_indexes(
        [IndexModel([("memberId", ASCENDING), ("seq", ASCENDING)], unique=True)]
    )
    await db[CONVERSATIONS].create_indexes(
        [
            IndexModel(
                [("senderId", ASCENDING), ("recipientId", ASCENDING)],
                unique=True,
                partialFilterExpression={"state": AWAITING},
            )
        ]
    )
    await db[IDEMPOTENCY].create_indexes(
        [IndexModel([("memberId", ASCENDING), ("key", ASCENDING)], unique=True)]
    )


@dataclass(frozen=True, slots=True)
class FloorSent:
    conversation_id: str
    replayed: bool  # True: the key was used before; this is the first send's conversation


def may_inmail(
    sender: Doc | None, recipient: Doc | None, sender_id: str, now: datetime
) -> str | None:
    """SPEC 4's refusals that need no credits, on the documents as stored; None: may send."""
    if sender is None or recipient is None:
        return "NOT_FOUND"
    if recipient["_id"] == sender_id:
        return "CANNOT_MESSAGE_SELF"
    if recipient["_id"] in sender.get("connections", ()):
        return "RECIPIENT_IS_CONNECTION"
    if sender.get("plan") not in INMAIL_PLANS:
        return "UPGRADE_REQUIRED"
    if (sender.get("subscription") or {}).get("status") not in LIVE_SUBSCRIPTION:
        return "SUBSCRIPTION_INACTIVE"
    card = sender.get("paymentMethod")
    if card is not None and (now.year, now.month) > (card["expYear"], card["expMonth"]):
        return "PAYMENT_METHOD_EXPIRED"
    return None


_MEMBER_FIELDS = {"plan": 1, "subscription.status": 1, "paymentMethod": 1, "connections": 1}


class SendFloor:
    def __init__(self, client: AsyncMongoClient[Doc], db: AsyncDatabase[Doc]) -> None:
        self.client = client
        self.db = db

    async def send(
        self, sender_id: str, recipient_id: str, subject: str, body: str, key: str, now: datetime
    ) -> FloorSent:
        conversation_id = str(ObjectId())

        async def transaction(s: AsyncClientSession) -> None:
            db = self.db
            found = (
                await db[MEMBERS]
                .find({"_id": {"$in": [sender_id, recipient_id]}}, _MEMBER_FIELDS, session=s)
                .to_list()
            )
            by_id = {d["_id"]: d for d in found}
            refusal = may_inmail(by_id.get(sender_id), by_id.get(recipient_id), sender_id, now)
            if refusal:
                raise FloorRefused(refusal)
            lot = await db[LOTS].find_one_and_update(
                {
                    "memberId": sender_id,
                    "status": "ACTIVE",
                    "remaining": {"$gt": 0},
                    "expiresAt": {"$gt": now},
                },
                [
                    {"$set": {"remaining": {"$subtract": ["$remaining", 1]}}},
                    {
                        "$set": {
                            "status": {"$cond": [{"$eq": ["$remaining", 0]}, "DEPLETED", "$status"]}
                        }
                    },
                ],
                projection={"_id": 1},
                sort=[("expiresAt", 1)],
                session=s,
            )
            if lot is None:
                raise FloorRefused("INSUFFICIENT_CREDITS")
            member = await db[MEMBERS].find_one_and_update(
                {"_id": sender_id},
                {"$inc": {"ledgerSeq": 1}},
                projection={"ledgerSeq": 1},
                return_document=ReturnDocument.AFTER,
                session=s,
            )
            assert member is not None
            await db[IDEMPOTENCY].insert_one(
                {
                    "memberId": sender_id,
                    "key": key,
                    "op": "sendInMail",
                    "conversationId": conversation_id,
                    "at": now,
                },
                session=s,
            )
            await db[CONVERSATIONS].insert_one(
                {
                    "_id": conversation_id,
                    "kind": "INMAIL",
                    "senderId": sender_id,
                    "recipientId": recipient_id,
                    "subject": subject,
                    "state": AWAITING,
                    "sentAt": now,
                    "messages": [
                        {"_id": str(ObjectId()), "authorId": sender_id, "body": body, "at": now}
                    ],
                },
                session=s,
            )
            await db[LEDGER].insert_one(
                {
                    "memberId": sender_id,
                    "seq": member["ledgerSeq"],
                    "at": now,
                    "kind": "SPEND",
                    "delta": -1,
                    "lotId": lot["_id"],
                    "conversationId": conversation_id,
                },
                session=s,
            )

        try:
            async with self.client.start_session() as session:
                await session.with_transaction(
                    transaction, read_concern=SNAPSHOT, write_concern=MAJORITY
                )
        except DuplicateKeyError as exc:
            pattern = (exc.details or {}).get("keyPattern", {})
            if "key" in pattern:
                first = await self.db[IDEMPOTENCY].find_one({"memberId": sender_id, "key": key})
                assert first is not None
                return FloorSent(first["conversationId"], replayed=True)
            if "recipientId" in pattern:
                raise FloorRefused("AWAITING_RESPONSE") from exc
            raise
        return FloorSent(conversation_id, replayed=False)


@dataclass(frozen=True, slots=True)
class FloorCompose:
    can_send: bool
    reason: str | None
    credits_left: int
    recipient_is_connection: bool


class ComposeFloor:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db

    async def compose(self, viewer_id: str, recipient_id: str, now: datetime) -> FloorCompose:
        """One aggregate on the viewer's record: the recipient's, the viewer's balance, and
        whether an InMail awaits, each an uncorrelated `$lookup` that runs its query once."""
        pipeline: list[Doc] = [
            {"$match": {"_id": viewer_id}},
            {"$project": _MEMBER_FIELDS},
            {
                "$lookup": {
                    "from": MEMBERS,
                    "pipeline": [{"$match": {"_id": recipient_id}}, {"$project": _MEMBER_FIELDS}],
                    "as": "recipient",
                }
            },
            {
                "$lookup": {
                    "from": LOTS,
                    "pipeline": [
                        {
                            "$match": {
                                "memberId": viewer_id,
                                "status": "ACTIVE",
                                "remaining": {"$gt": 0},
                                "expiresAt": {"$gt": now},
                            }
                        },
                        {"$group": {"_id": None, "n": {"$sum": "$remaining"}}},
                    ],
                    "as": "balance",
                }
            },
            {
                "$lookup": {
                    "from": CONVERSATIONS,
                    "pipeline": [
                        {
                            "$match": {
                                "senderId": viewer_id,
                                "recipientId": recipient_id,
                                "state": AWAITING,
                            }
                        },
                        {"$limit": 1},
                        {"$project": {"_id": 1}},
                    ],
                    "as": "awaiting",
                }
            },
        ]
        cursor = await self.db[MEMBERS].aggregate(pipeline)
        found = await cursor.to_list()
        if not found:
            raise FloorRefused("NOT_FOUND")
        viewer = found[0]
        recipient = viewer["recipient"][0] if viewer["recipient"] else None
        balance = viewer["balance"][0]["n"] if viewer["balance"] else 0
        reason = may_inmail(viewer, recipient, viewer_id, now)
        if reason is None and viewer["awaiting"]:
            reason = "AWAITING_RESPONSE"
        if reason is None and balance <= 0:
            reason = "INSUFFICIENT_CREDITS"
        return FloorCompose(
            can_send=reason is None,
            reason=reason,
            credits_left=balance,
            recipient_is_connection=recipient_id in viewer.get("connections", ()),
        )


class PageFloor:
    """graphql-core alone: the member-page document over its data in memory, the reply encoded.

    The schema is the service's own SDL built by graphql-core (no Strawberry types); every field
    is resolved by graphql-core's default resolver from plain dicts (the page as the API answered
    it once). Parsing and validation happen once, as the service caches them.
    """

    def __init__(self, sdl: str, document: str, data: Doc, variables: Doc) -> None:
        self.schema: GraphQLSchema = build_schema(sdl)
        self.document: DocumentNode = parse(document)
        errors = validate(self.schema, self.document)
        if errors:
            raise ValueError(f"the page document does not validate: {errors}")
        self.data = data
        self.variables = variables

    def execute(self) -> bytes:
        result = execute(
            self.schema, self.document, root_value=self.data, variable_values=self.variables
        )
        if not isinstance(result, ExecutionResult):
            raise TypeError("graphql-core: the page's document ran asynchronously")
        if result.errors:
            raise ValueError(f"graphql-core: {result.errors}")
        return json.dumps({"data": result.data}).encode()


def service_sdl() -> str:
    from inmail.resolvers.root import build_schema as build_service_schema
    from inmail.settings import Settings

    return build_service_schema(Settings()).as_str()
