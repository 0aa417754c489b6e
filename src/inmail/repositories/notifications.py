"""Notifications and conversation events, both in the `notifications` collection.

A notification is written with an upsert on its event key, (kind, eventKey), unique: a
transaction retried, or two schedulers reporting the same event, leave one record. A new
notification is enqueued for webhook delivery in the same transaction (repositories/outbox.py;
services/webhooks.py drains it).

A conversation event is stored beside the notifications it goes with, so an operation writes
both in one command (`record`). Its document has the kind `CONVERSATION_EVENT` (unique per event
key under the same index) and no `memberId`, so no notification query, which always names the
member, can match one; the readers of each kind also check the kind. Both feed the live
subscriptions through the collection's change stream (repositories/changes.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.cursor import AsyncCursor

from inmail.domain.credits import DEFAULT_EXPIRY_NOTICE, EXPIRY_NOTICE_DUE, CreditLot, ExpiringLot
from inmail.domain.feeds import InboxChange
from inmail.domain.notifications import (
    ConversationChange,
    ConversationEvent,
    Notification,
    NotificationKind,
)
from inmail.domain.outbox import OutboxEvent
from inmail.domain.pages import Page
from inmail.repositories.collection import RecordReader
from inmail.repositories.credit_lots import matching_at
from inmail.repositories.message_docs import message_fields, message_from_doc
from inmail.repositories.mongo import (
    Doc,
    Mongo,
    Session,
    TransactionSession,
    new_id,
    written_before,
)
from inmail.repositories.outbox import OutboxRepository
from inmail.repositories.pages import after_key

# Before notifications were listed, the reminder was recorded under this kind.
_LEGACY_KINDS: Final = {"INMAIL_REMINDER": NotificationKind.REMINDER}

_NEWEST_FIRST: Final = (("at", DESCENDING), ("_id", DESCENDING))

EVENT_KIND: Final = "CONVERSATION_EVENT"
"""The kind of a conversation event's document in `notifications` (no notification's kind)."""

log = logging.getLogger(__name__)
_EVENTS: Final[Doc] = {"kind": EVENT_KIND}
CATCH_UP_BATCH: Final = 1000
CATCH_UP_MOST: Final = 20 * CATCH_UP_BATCH


def inbox_change(doc: Doc) -> InboxChange:
    """What a new document of `notifications` holds."""
    item: Notification | ConversationEvent | None = event_from_doc(doc)
    if item is None:
        item = notification_from_doc(doc)
    return InboxChange(str(doc["_id"]), item)


def is_event_doc(doc: Doc) -> bool:
    return doc.get("kind") == EVENT_KIND


def notification_from_doc(doc: Doc) -> Notification | None:
    """The notification a document holds; None for a document of no known kind (an event)."""
    if "memberId" not in doc or is_event_doc(doc):
        return None
    raw = str(doc.get("kind"))
    kind = _LEGACY_KINDS.get(raw)
    if kind is None:
        try:
            kind = NotificationKind(raw)
        except ValueError:
            return None
    return Notification(
        kind=kind,
        member_id=doc["memberId"],
        at=doc["at"],
        event_key=doc.get("eventKey") or doc.get("conversationId") or str(doc["_id"]),
        conversation_id=doc.get("conversationId"),
        lot_id=doc.get("lotId"),
        purchase_id=doc.get("purchaseId"),
        read_at=doc.get("readAt"),
        id=str(doc["_id"]),
    )


def event_from_doc(doc: Doc) -> ConversationEvent | None:
    """The conversation event a document holds; None for any other document."""
    if not is_event_doc(doc):
        return None
    try:
        raw = doc.get("message")
        message = message_from_doc(raw) if isinstance(raw, dict) else None
        return ConversationEvent(
            change=ConversationChange(doc["change"]),
            conversation_id=doc["conversationId"],
            sender_id=doc["senderId"],
            recipient_id=doc["recipientId"],
            at=doc["at"],
            message=message,
            id=str(doc["_id"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


class NotificationReader(RecordReader[Notification]):
    def __init__(self, mongo: Mongo, session: Session) -> None:
        super().__init__(mongo, session, mongo.c.notifications, notification_from_doc)
        self.expiring = ExpiringLotReader(mongo, session)

    @staticmethod
    def _query(member_id: str, unread_only: bool) -> Doc:
        query: Doc = {"memberId": member_id}
        if unread_only:
            query["readAt"] = None
        return query

    async def page(
        self, member_id: str, unread_only: bool, first: int, after: str | None
    ) -> Page[Notification]:
        """The member's notifications, newest first."""
        return await self._page(
            self._query(member_id, unread_only), _NEWEST_FIRST, first, after, owner=member_id
        )

    async def count(self, member_id: str, unread_only: bool) -> int:
        return await self._count(self._query(member_id, unread_only))

    async def since(
        self, member_ids: Sequence[str], seen_id: str, margin: timedelta
    ) -> list[Notification]:
        """The notifications of these members written since `margin` before the document
        `seen_id` was (a catch-up), in the order they were written."""
        docs = await self._written_since({"memberId": {"$in": list(member_ids)}}, seen_id, margin)
        return [n for doc in docs if (n := notification_from_doc(doc)) is not None]

    async def events_since(
        self, member_ids: Sequence[str], seen_id: str, margin: timedelta
    ) -> list[ConversationEvent]:
        """The conversation events of these members' conversations written since `margin`
        before the document `seen_id` was (a catch-up)."""
        members = list(member_ids)
        parties = {"$or": [{"senderId": {"$in": members}}, {"recipientId": {"$in": members}}]}
        docs = await self._written_since({**_EVENTS, **parties}, seen_id, margin)
        return [e for doc in docs if (e := event_from_doc(doc)) is not None]

    async def _written_since(self, query: Doc, seen_id: str, margin: timedelta) -> list[Doc]:
        """Every document matching `query` whose id was made at most `margin` before
        `seen_id`'s, a batch at a time.

        By the time their ids were made, not by `at`: `at` is when the thing happened on the
        service's clock (a renewal caught up late carries its cycle's start), not when it was
        written. An id is made in the transaction that writes it, so one written after
        `seen_id` has an id made at most a transaction's length before it; `margin` covers that,
        and whoever hands the documents out drops the ones already handed out. At most
        CATCH_UP_MOST documents: past them (a gap of hours on a busy service), a subscriber's
        bounded queue could not hold what it missed anyway."""
        after = written_before(seen_id, margin)
        found: list[Doc] = []
        while len(found) < CATCH_UP_MOST:
            cursor = self._c.find(
                {**query, "_id": {"$gte": after} if not found else {"$gt": after}},
                session=self._session,
            ).sort("_id", 1)
            batch = [doc async for doc in cursor.limit(CATCH_UP_BATCH)]
            found += batch
            if len(batch) < CATCH_UP_BATCH:
                return found
            after = str(batch[-1]["_id"])
        log.warning(
            "inbox catch-up: more than %d documents since the gap; the rest are left", CATCH_UP_MOST
        )
        return found

    async def newer(self, after_id: str) -> list[InboxChange]:
        """The notifications and events written with an id after `after_id`, in id order (the
        feed where there is no change stream)."""
        cursor = self._c.find({"_id": {"$gt": after_id}}, session=self._session)
        return [inbox_change(doc) async for doc in cursor.sort("_id", 1).limit(1000)]


_REFERENCES = ("conversationId", "lotId", "purchaseId")


def _notification_doc(notification: Notification) -> Doc:
    doc: Doc = {
        "_id": new_id(),
        "memberId": notification.member_id,
        "at": notification.at,
        "readAt": None,
    }
    for name, value in zip(
        _REFERENCES,
        (notification.conversation_id, notification.lot_id, notification.purchase_id),
        strict=True,
    ):
        if value is not None:
            doc[name] = value
    return doc


def _event_doc(event: ConversationEvent) -> Doc:
    """An event's document; `kind` and `eventKey` come from the upsert's filter."""
    return {
        "_id": new_id(),
        "change": event.change.value,
        "conversationId": event.conversation_id,
        "senderId": event.sender_id,
        "recipientId": event.recipient_id,
        "at": event.at,
        "message": message_fields(event.message) if event.message is not None else None,
    }


def notification_to_doc(notification: Notification) -> Doc:
    """A notification's whole document, as an insert writes it."""
    return _notification_doc(notification) | {
        "kind": notification.kind.value,
        "eventKey": notification.event_key,
    }


def event_to_doc(event: ConversationEvent) -> Doc:
    """An event's whole document, as an insert writes it."""
    return _event_doc(event) | {**_EVENTS, "eventKey": event.event_key}


@dataclass(frozen=True, slots=True)
class NoticeOptions:
    """How notifications are written: whether new ones are enqueued for webhook delivery (only
    where a webhook URL is configured: nothing would deliver them otherwise), and how long before
    its expiry a lot's CREDITS_EXPIRING notice is due."""

    webhooks: bool = True
    expiry_notice: timedelta = DEFAULT_EXPIRY_NOTICE


DEFAULT_NOTICES: Final = NoticeOptions()


class NotificationRepository(NotificationReader):
    expiring: ExpiringLotMarker

    def __init__(
        self, mongo: Mongo, session: TransactionSession, options: NoticeOptions = DEFAULT_NOTICES
    ) -> None:
        super().__init__(mongo, session.driver)
        self._expiry_notice = options.expiry_notice
        self.expiring = ExpiringLotMarker(mongo, session)
        self._outbox = OutboxRepository(mongo, session) if options.webhooks else None

    async def add(self, notification: Notification) -> bool:
        """Record the notification unless its event was recorded already; True if it is new."""
        return await self.record([notification]) == 1

    async def record(
        self, notifications: Sequence[Notification], event: ConversationEvent | None = None
    ) -> int:
        """Record the notifications and the conversation event of one operation, each unless
        it was recorded already, in one command; then enqueue the new notifications for
        webhooks (where they are delivered: one more round trip). How many notifications were
        new."""
        docs = [_notification_doc(notification) for notification in notifications]
        upserts: list[tuple[Doc, Doc]] = [
            ({"kind": n.kind.value, "eventKey": n.event_key}, {"$setOnInsert": doc})
            for n, doc in zip(notifications, docs, strict=True)
        ]
        if event is not None:
            upserts.append(
                ({**_EVENTS, "eventKey": event.event_key}, {"$setOnInsert": _event_doc(event)})
            )
        inserted = await self._mongo.upsert_each(self._c, upserts, self._session)
        new = [(notifications[i], docs[i]) for i in inserted if i < len(notifications)]
        await self._enqueue(new)
        return len(new)

    async def give_missed_expiry_notices(self, lapsed: Sequence[CreditLot]) -> int:
        """CREDITS_EXPIRING for lots that expired with credits left, unless their notice was
        given (SPEC 5a: once per lot that still has credits): no process ran while a notice was
        due, the service was down or its scheduler off. Each is dated when it fell due (the
        scheduler dates a notice it gives when it gives it: on time, when it fell due). How many
        were given here."""
        if not lapsed:
            return 0
        lead = self._expiry_notice
        return await self.record(
            [
                Notification.credits_expiring(
                    lot.member_id,
                    lot.id,
                    EXPIRY_NOTICE_DUE.due_at(lot.expires_at, lead),
                )
                for lot in lapsed
            ]
        )

    async def add_new(
        self, notifications: Sequence[Notification], event: ConversationEvent | None = None
    ) -> None:
        """Record notifications (and a conversation event) that are new by construction, such
        as a renewal's, whose grant this transaction writes under the unique `grant_once` index,
        or a send's, whose conversation this transaction inserts: plain inserts in one command
        (cheaper than `record`'s upserts), which the unique `one_per_event` index refuses should
        one repeat (DuplicateKeyError: the unit of work reruns the transaction)."""
        docs = [notification_to_doc(n) for n in notifications]
        events = [] if event is None else [event_to_doc(event)]
        await self._mongo.insert_all(self._c, [*docs, *events], self._session)
        await self._enqueue(list(zip(notifications, docs, strict=True)))

    async def _enqueue(self, written: Sequence[tuple[Notification, Doc]]) -> None:
        """Enqueue new notifications for webhook delivery, where webhooks are delivered."""
        if self._outbox is None:
            return
        await self._outbox.add_all(
            [
                OutboxEvent(
                    id=doc["_id"],
                    kind=notification.kind.value,
                    member_id=notification.member_id,
                    at=notification.at,
                    data={k: doc[k] for k in _REFERENCES if k in doc},
                )
                for notification, doc in written
            ]
        )

    async def add_event(self, event: ConversationEvent) -> None:
        """Record a conversation event that comes with no notification, unless it was recorded
        already."""
        await self.record([], event)

    async def count_own(self, member_id: str, ids: Sequence[str]) -> int:
        """How many of these ids name notifications of the member, read or not."""
        return await self._count({"memberId": member_id, "_id": {"$in": list(ids)}})

    async def mark_read(self, member_id: str, ids: Sequence[str] | None, at: datetime) -> int:
        """Mark the member's unread notifications read: these ids (others' are left alone) or,
        with None, all of them. How many changed."""
        query: Doc = {"memberId": member_id, "readAt": None}
        if ids is not None:
            query["_id"] = {"$in": list(ids)}
        result = await self._c.update_many(query, {"$set": {"readAt": at}}, session=self._session)
        return result.modified_count


_NOTICED: Final = "expiryNoticeAt"
"""When a lot's member was told it expires; absent until then."""


def _awaiting_notice(now: datetime, *, lead: timedelta | None = None) -> Doc:
    """The database's form of `EXPIRY_NOTICE_DUE` at `now`: the lots that await a notice (its
    `awaits`: counted by its lots rule, so not yet expired, and not noticed) or, given the
    notice's `lead`, those due one (its `is_due`). Not noticed is `null`, which matches the
    field absent and is an equality on the index expiry_notice_due (`$exists: false` is not)."""
    query = matching_at(EXPIRY_NOTICE_DUE.lots, now)
    if lead is not None:
        latest = EXPIRY_NOTICE_DUE.latest_expiry_due(now, lead)
        query["expiresAt"] = {**query["expiresAt"], "$lte": latest}
    return {**query, _NOTICED: None}


_EXPIRY_ORDER: Final = (("expiresAt", ASCENDING), ("_id", ASCENDING))
_NOTICE_INDEX: Final = "expiry_notice_due"


class ExpiringLotReader:
    """The lots whose CREDITS_EXPIRING notice is due, read from the credit lots collection."""

    def __init__(self, mongo: Mongo, session: Session) -> None:
        self._mongo = mongo
        self._session = session
        self._lots = mongo.c.credit_lots

    async def due(
        self,
        now: datetime,
        notice: timedelta,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[ExpiringLot]:
        """The lots due a notice at `now` (`EXPIRY_NOTICE_DUE`, `notice` its lead), in
        (expiresAt, _id) order."""
        query = after_key(_awaiting_notice(now, lead=notice), _EXPIRY_ORDER, after)
        cursor = self._soonest_first(query, {"memberId": 1, "expiresAt": 1}, limit)
        return [ExpiringLot(doc["_id"], doc["memberId"], doc["expiresAt"]) async for doc in cursor]

    async def first_due_at(self, notice: timedelta, *, expiring_after: datetime) -> datetime | None:
        """When the first notice of a lot that awaits one at `expiring_after` falls due."""
        docs = await self._soonest_first(
            _awaiting_notice(expiring_after), {"expiresAt": 1}, 1
        ).to_list()
        return EXPIRY_NOTICE_DUE.due_at(docs[0]["expiresAt"], notice) if docs else None

    def _soonest_first(self, query: Doc, fields: Doc, limit: int) -> AsyncCursor[Doc]:
        """The first `limit` lots `query` finds (`fields` of them), soonest to expire first,
        read along the index expiry_notice_due."""
        cursor = self._lots.find(query, fields, session=self._session)
        return self._mongo.hinted(cursor.sort(list(_EXPIRY_ORDER)).limit(limit), _NOTICE_INDEX)


class ExpiringLotMarker(ExpiringLotReader):
    """Expiring lots' notices marked inside a transaction."""

    def __init__(self, mongo: Mongo, session: TransactionSession) -> None:
        super().__init__(mongo, session.driver)

    async def mark_noticed(self, lot_id: str, at: datetime) -> bool:
        """Mark a lot's notice given, if it still awaits one at `at` (`EXPIRY_NOTICE_DUE`:
        spendable and not marked); True if so."""
        result = await self._lots.update_one(
            {"_id": lot_id, **_awaiting_notice(at)},
            {"$set": {_NOTICED: at}},
            session=self._session,
        )
        return result.modified_count == 1
