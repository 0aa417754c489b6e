"""Every hot query is served by an index: explain() of the commands the repositories really send.

A command listener records what each repository method sends to mongod; each recorded find,
aggregate or count is then explained as sent. A winning plan must use an index (IXSCAN, an
index-only COUNT_SCAN, or the _id lookups' IDHACK / EXPRESS) and never scan the collection. The
data is shaped so that the planner has a real choice: many members, lots, conversations and
ledger entries, few of them due.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import monitoring

from inmail.domain.conversations import ConversationFilter, ConversationRole, ConversationState
from inmail.domain.credits import CreditLot, CreditSource, LedgerKind, LotFilter, LotStatus
from inmail.domain.model import (
    Conversation,
    ConversationKind,
    LedgerEntry,
    Member,
    Message,
    Subscription,
)
from inmail.domain.notifications import ConversationChange, ConversationEvent, Notification
from inmail.domain.pages import Page
from inmail.domain.plans import DEFAULT_PLAN_TABLE, PlanType
from inmail.repositories.conversations import conversation_from_doc, conversation_to_doc
from inmail.repositories.credit_lots import lot_to_doc
from inmail.repositories.ledger import entry_to_doc
from inmail.repositories.members import member_to_doc
from inmail.repositories.messages import message_to_doc
from inmail.repositories.mongo import Doc, Mongo, new_id
from inmail.repositories.notifications import event_to_doc, notification_to_doc
from inmail.repositories.unit_of_work import Reads


def sent_by(member_id: str) -> ConversationFilter:
    return ConversationFilter(member_id, role=ConversationRole.SENT)


def received_by(member_id: str) -> ConversationFilter:
    return ConversationFilter(member_id, role=ConversationRole.RECEIVED)


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MEMBERS = 120
NOTICE = timedelta(days=7)  # CREDITS_EXPIRING's lead (SPEC 5a)
EXPLAINED = ("find", "aggregate", "count", "distinct")
# Fields of a command that belong to its session or transport, not to the query.
NOT_QUERY = frozenset(
    {"lsid", "$db", "$clusterTime", "$readPreference", "txnNumber", "autocommit", "readConcern"}
)
INDEX_STAGES = frozenset(
    {"IXSCAN", "COUNT_SCAN", "IDHACK", "EXPRESS_IXSCAN", "EXPRESS_CLUSTERED_IXSCAN"}
)


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[Doc] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in EXPLAINED:
            self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@dataclass
class World:
    mongo: Mongo
    recorder: Recorder
    reads: Reads
    member_ids: list[str]
    conversations: list[Conversation]
    message_ids: list[str]  # some kept apart, some the first message kept in an InMail

    @property
    def conversation_ids(self) -> list[str]:
        return [c.id for c in self.conversations]


def _member(i: int) -> Member:
    started = NOW - timedelta(days=40 + i % 30)
    subscription = Subscription.start(new_id(), PlanType.PREMIUM_CAREER, started, started.day)
    # A few members are due for renewal now; most are not.
    due = NOW - timedelta(hours=1) if i % 20 == 0 else NOW + timedelta(days=1 + i % 25)
    subscription = replace(subscription, next_renewal_at=due)
    return Member(
        id=new_id(),
        name=f"Member {i}",
        headline=None,
        plan=PlanType.PREMIUM_CAREER,
        created_at=started,
        subscription=subscription,
        ledger_seq=10,
    )


def _lots(member_id: str, i: int) -> list[Doc]:
    docs = []
    for k in range(6):
        granted = NOW - timedelta(days=10 * k + i % 7)
        # Old lots are spent or lapsed; an ACTIVE lot past expiresAt now and then.
        status = LotStatus.ACTIVE if k < 3 or (k == 3 and i % 10 == 0) else LotStatus.DEPLETED
        docs.append(
            lot_to_doc(
                CreditLot(
                    id=new_id(),
                    member_id=member_id,
                    source=CreditSource.MONTHLY_ALLOTMENT,
                    quantity=5,
                    remaining=3 if status is LotStatus.ACTIVE else 0,
                    granted_at=granted,
                    expires_at=NOW - timedelta(days=1) if k == 3 else granted + timedelta(days=90),
                    status=status,
                )
            )
        )
    return docs


def _entries(member_id: str) -> list[Doc]:
    return [
        entry_to_doc(
            LedgerEntry(
                id=new_id(),
                member_id=member_id,
                seq=seq,
                at=NOW - timedelta(hours=seq),
                kind=LedgerKind.DEBIT,
                delta=-1,
                balance_after=10 - seq,
                lot_id=None,
            )
        )
        for seq in range(1, 11)
    ]


def _stored(kind: ConversationKind, sender: str, recipient: str, **fields: Any) -> Doc:
    """A new conversation between the two, as the repositories store it."""
    conversation = Conversation(
        id=new_id(), kind=kind, sender_id=sender, recipient_id=recipient, **fields
    )
    return conversation_to_doc(conversation)


def _conversation(sender: str, recipient: str, i: int) -> Doc:
    sent = NOW - timedelta(hours=i)
    awaiting = i % 3 == 0
    # Half the InMails keep their first message with them, as a send writes them; the others
    # were stored before, their first message kept apart with the rest.
    first = Message(new_id(), sender, "Hello there", sent) if i % 2 == 0 else None
    return _stored(
        ConversationKind.INMAIL,
        sender,
        recipient,
        subject="Hello",
        state=ConversationState.AWAITING_RESPONSE if awaiting else ConversationState.ACCEPTED,
        sent_at=sent,
        responded_at=None if awaiting else sent + timedelta(hours=1),
        reminder_due_at=sent + timedelta(hours=48),
        first_message=first,
    )


@contextlib.asynccontextmanager
async def recorded(mongodb_uri: str, db_name: str) -> AsyncIterator[tuple[Mongo, Recorder]]:
    """A database with the service's indexes, and the query commands sent to it recorded."""
    recorder = Recorder()
    mongo = Mongo.connect(mongodb_uri, db_name, listeners=[recorder])
    try:
        await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
        yield mongo, recorder
    finally:
        await mongo.close()


@pytest.fixture
async def world(mongodb_uri: str, db_name: str) -> AsyncIterator[World]:
    async with recorded(mongodb_uri, db_name) as (mongo, recorder):
        members = [_member(i) for i in range(MEMBERS)]
        ids = [m.id for m in members]
        await mongo.c.members.insert_many([member_to_doc(m) for m in members])
        await mongo.c.credit_lots.insert_many(
            [doc for i, member_id in enumerate(ids) for doc in _lots(member_id, i)]
        )
        await mongo.c.ledger.insert_many([doc for member_id in ids for doc in _entries(member_id)])
        # Six conversations sent by each member, to six different members.
        conversations = [
            _conversation(ids[i % MEMBERS], ids[(i % MEMBERS + 1 + i // MEMBERS) % MEMBERS], i)
            for i in range(6 * MEMBERS)
        ]
        # And a direct thread between each member and the next, started by the later one.
        conversations += [_direct(ids[(i + 1) % MEMBERS], ids[i], i) for i in range(MEMBERS)]
        await mongo.c.conversations.insert_many(conversations)
        # Twenty messages in each conversation.
        messages = [
            message_to_doc(
                doc["_id"],
                Message(new_id(), doc["senderId"], f"Message {k}", NOW + timedelta(minutes=k)),
            )
            for doc in conversations
            for k in range(20)
        ]
        await mongo.c.messages.insert_many(messages)
        firsts = [doc["first"]["_id"] for doc in conversations if "first" in doc]
        message_ids = [m["_id"] for m in messages[::40][:50]] + firsts[:50]
        await mongo.c.idempotency.insert_many(
            [
                {
                    "_id": new_id(),
                    "memberId": member_id,
                    "key": f"key-{k}",
                    "operation": "sendInMail",
                    "requestHash": "x",
                    "at": NOW,
                    "result": {"conversationId": new_id(), "creditsLeft": 3},
                }
                for member_id in ids
                for k in range(5)
            ]
        )
        await _notifications_and_events(mongo, conversations)
        threads = [conversation_from_doc(doc) for doc in conversations]
        yield World(mongo, recorder, Reads.on(mongo), ids, threads, message_ids)


async def _notifications_and_events(mongo: Mongo, conversations: list[Doc]) -> None:
    """Each InMail's notification for its recipient (every other one read) and its event, and
    a message event in each conversation, in the one collection that holds both."""
    docs: list[Doc] = []
    for doc in conversations:
        conversation = conversation_from_doc(doc)
        at = conversation.sent_at
        if conversation.kind is ConversationKind.INMAIL:
            docs.append(notification_to_doc(Notification.inmail_received(conversation, at)))
        docs.append(event_to_doc(ConversationEvent.of(ConversationChange.INMAIL, conversation, at)))
        when = at + timedelta(minutes=3)
        note = Message(new_id(), conversation.sender_id, "Thanks for the note.", when)
        change = ConversationEvent.of(ConversationChange.MESSAGE, conversation, when, note)
        docs.append(event_to_doc(change))
    await mongo.c.notifications.insert_many(docs)
    await mongo.c.notifications.update_many(
        {"memberId": {"$exists": True}, "at": {"$lt": NOW - timedelta(hours=300)}},
        {"$set": {"readAt": NOW}},
    )


def _direct(starter: str, other: str, i: int) -> Doc:
    sent = NOW - timedelta(hours=i, minutes=30)
    return _stored(
        ConversationKind.DIRECT,
        starter,
        other,
        subject="",
        state=ConversationState.ACCEPTED,
        sent_at=sent,
    )


def _winning_plans(explain: Any) -> list[Any]:
    """Every winning plan in an explain() reply (an aggregate's pushed-down $cursor included)."""
    found: list[Any] = []
    if isinstance(explain, dict):
        for key, value in explain.items():
            if key == "winningPlan":
                found.append(value)
            elif key != "rejectedPlans":
                found.extend(_winning_plans(value))
    elif isinstance(explain, list):
        for item in explain:
            found.extend(_winning_plans(item))
    return found


def _plan_facts(plan: Any, stages: set[str], indexes: set[str]) -> None:
    if isinstance(plan, dict):
        if isinstance(plan.get("stage"), str):
            stages.add(plan["stage"])
        if isinstance(plan.get("indexName"), str):
            indexes.add(plan["indexName"])
        for value in plan.values():
            _plan_facts(value, stages, indexes)
    elif isinstance(plan, list):
        for item in plan:
            _plan_facts(item, stages, indexes)


async def explain_sent(
    w: World, call: Callable[[], Awaitable[object]]
) -> list[tuple[str, set[str], set[str]]]:
    """Run `call`, then explain each query command it sent: (command, stages, index names)."""
    w.recorder.commands.clear()
    await call()
    sent = list(w.recorder.commands)
    assert sent, "the call sent no query"
    facts = []
    for command in sent:
        name = next(iter(command))
        query = {k: v for k, v in command.items() if k not in NOT_QUERY}
        explain = await w.mongo.db.command({"explain": query, "verbosity": "queryPlanner"})
        plans = _winning_plans(explain)
        assert plans, f"no winning plan in the explain of {query}"
        stages: set[str] = set()
        indexes: set[str] = set()
        _plan_facts(plans, stages, indexes)
        facts.append((name, stages, indexes))
    return facts


def _one(w: World) -> str:
    return w.member_ids[7]


async def _counted(page: Awaitable[Page[Any]]) -> int:
    """A list's page read, and then counted at the page's snapshot."""
    return await (await page).count()


HOT_QUERIES: dict[str, tuple[Callable[[World], Awaitable[object]], set[str]]] = {
    # name: (the repository call, the indexes it may use)
    "spendable lots of a member": (
        lambda w: w.reads.lots.active_for(_one(w)),
        {"member_spendable"},
    ),
    "spendable lots of a batch of members": (
        lambda w: w.reads.lots.active_for_many(w.member_ids[:50]),
        {"member_spendable"},
    ),
    "balance aggregate": (
        lambda w: w.reads.lots.balances(w.member_ids[:3], NOW),
        {"member_spendable"},
    ),
    "lapsed lots (the expiry job)": (
        lambda w: w.reads.lots.lapsed_members(NOW, after=None, limit=50),
        {"lapsed_keyset"},
    ),
    "earliest expiry": (lambda w: w.reads.lots.next_expiry_at(NOW), {"lapsed_keyset"}),
    "lots due an expiry notice": (
        lambda w: w.reads.notifications.expiring.due(NOW, NOTICE, after=None, limit=100),
        {"expiry_notice_due"},
    ),
    "earliest expiry notice": (
        lambda w: w.reads.notifications.expiring.first_due_at(NOTICE, expiring_after=NOW),
        {"expiry_notice_due"},
    ),
    "credit lots page": (
        lambda w: w.reads.lots.page(LotFilter(_one(w)), 20, None),
        {"member_newest"},
    ),
    "credit lots page count": (
        lambda w: _counted(w.reads.lots.page(LotFilter(_one(w)), 20, None)),
        {"member_newest", "member_spendable"},
    ),
    "awaiting conversation between two members": (
        lambda w: w.reads.conversations.awaiting_between(w.member_ids[1], w.member_ids[8]),
        {"one_awaiting_per_pair", "sender_newest"},
    ),
    "direct thread of a pair": (
        lambda w: w.reads.conversations.direct_between(w.member_ids[8], w.member_ids[7]),
        {"one_direct_per_sender_pair"},
    ),
    "latest messages of a page of conversations (DataLoader batch)": (
        lambda w: w.reads.messages.latest_for_many(w.conversations[:50]),
        {"conversation_oldest"},
    ),
    "messages page (oldest first)": (
        lambda w: w.reads.messages.page(w.conversations[3], 10, None),
        {"conversation_oldest"},
    ),
    "messages page of an InMail that keeps its first message": (
        lambda w: w.reads.messages.page(w.conversations[4], 10, None),
        {"conversation_oldest"},
    ),
    "messages count": (
        lambda w: _counted(w.reads.messages.page(w.conversations[3], 10, None)),
        {"conversation_oldest"},
    ),
    "messages by id, kept apart or first in their InMail (DataLoader batch)": (
        lambda w: w.reads.messages.get_many(w.message_ids),
        {"_id_", "first_message"},
    ),
    "ledger page": (lambda w: w.reads.ledger.page(_one(w), 20, None), {"member_seq"}),
    "ledger page count": (
        lambda w: _counted(w.reads.ledger.page(_one(w), 20, None)),
        {"member_seq"},
    ),
    "idempotency lookup": (lambda w: w.reads.idempotency.find(_one(w), "key-3"), {"key_once"}),
    "lookup of a key no request used (then a send's, in its conversation)": (
        lambda w: w.reads.idempotency.find(_one(w), "never-used"),
        {"key_once", "send_key_once"},
    ),
    "members due for renewal": (
        lambda w: w.reads.members.due_ids_for_renewal(NOW, after_id=None, limit=500),
        {"renewals_due"},
    ),
    "earliest renewal": (lambda w: w.reads.members.next_renewal_at(NOW), {"renewals_due"}),
    "reminders due": (
        lambda w: w.reads.conversations.reminders_due_after(NOW, after=None, limit=100),
        {"reminders_due_keyset"},
    ),
    "earliest reminder": (
        lambda w: w.reads.conversations.next_reminder_due_at(NOW - timedelta(days=30)),
        {"reminders_due_keyset"},
    ),
    "open payment intents by age (reconciliation)": (
        lambda w: w.reads.intents.open_created_by(NOW, after=None, limit=100),
        {"open_by_age"},
    ),
    "payment intents given up, due for their recheck": (
        lambda w: w.reads.intents.rechecks_due(NOW, after=(NOW, "x"), limit=100),
        {"abandoned_recheck"},
    ),
    "earliest recheck of an intent given up": (
        lambda w: w.reads.intents.next_recheck_at(NOW),
        {"abandoned_recheck"},
    ),
    "members by id (DataLoader batch)": (
        lambda w: w.reads.members.get_many(w.member_ids[:100]),
        {"_id_"},
    ),
    "member by id": (lambda w: w.reads.members.get(_one(w)), {"_id_"}),
    "notifications page (newest first)": (
        lambda w: w.reads.notifications.page(_one(w), False, 20, None),
        {"member_newest_keyset"},
    ),
    "unread notifications page": (
        lambda w: w.reads.notifications.page(_one(w), True, 20, None),
        {"member_newest_keyset", "member_unread_keyset"},
    ),
    "unread notifications count": (
        lambda w: w.reads.notifications.count(_one(w), True),
        {"member_unread_keyset"},
    ),
    "notifications since (the inbox catch-up)": (
        lambda w: w.reads.notifications.since(w.member_ids[:50], w.member_ids[0], timedelta(0)),
        {"member_newest_keyset", "member_unread_keyset", "_id_"},
    ),
    "conversation events since (the inbox catch-up)": (
        lambda w: w.reads.notifications.events_since(
            w.member_ids[:50], w.member_ids[0], timedelta(0)
        ),
        {"_id_"},
    ),
}


# A listing's page and its count read with one filter, by the same indexes.
CONVERSATION_LISTINGS: dict[str, tuple[Callable[[str], ConversationFilter], set[str]]] = {
    "conversations (sender or recipient, newest first)": (
        ConversationFilter,
        {"sender_newest", "recipient_newest"},
    ),
    "sent box (InMails sent, direct threads started)": (
        sent_by,
        {"sender_newest", "direct_started_by_newest"},
    ),
    "inbox (InMails received, direct threads started by the other)": (
        received_by,
        {"recipient_newest", "direct_started_with_newest"},
    ),
    "accepted inbox": (
        lambda member_id: ConversationFilter(
            member_id, ConversationState.ACCEPTED, ConversationRole.RECEIVED
        ),
        {"recipient_state_newest", "recipient_newest", "direct_started_with_newest"},
    ),
}


def _page_and_count(
    which: Callable[[str], ConversationFilter],
) -> tuple[Callable[[World], Awaitable[object]], Callable[[World], Awaitable[object]]]:
    def page(w: World) -> Awaitable[object]:
        return w.reads.conversations.page(which(_one(w)), 100, None)

    def count(w: World) -> Awaitable[object]:
        return _counted(w.reads.conversations.page(which(_one(w)), 100, None))

    return page, count


for _name, (_which, _indexes) in CONVERSATION_LISTINGS.items():
    _page, _count = _page_and_count(_which)
    HOT_QUERIES[f"{_name}: page"] = (_page, _indexes)
    HOT_QUERIES[f"{_name}: count"] = (_count, _indexes)


@pytest.mark.parametrize("name", list(HOT_QUERIES))
async def test_a_hot_query_is_served_by_an_index_and_never_scans_the_collection(
    world: World, name: str
) -> None:
    call, allowed = HOT_QUERIES[name]
    for command, stages, indexes in await explain_sent(world, lambda: call(world)):
        assert "COLLSCAN" not in stages, f"{name}: {command} scans the collection: {stages}"
        assert stages & INDEX_STAGES, f"{name}: {command} uses no index: {stages}"
        assert indexes <= allowed, f"{name}: {command} uses {indexes}, expected {allowed}"


async def test_the_next_pages_use_the_same_indexes_as_the_first(world: World) -> None:
    reads, member_id = world.reads, _one(world)
    all_theirs = ConversationFilter(member_id)
    conversations = await reads.conversations.page(all_theirs, 5, None)
    ledger = await reads.ledger.page(member_id, 5, None)
    lots = await reads.lots.page(LotFilter(member_id), 2, None)
    inbox = await reads.conversations.page(received_by(member_id), 2, None)
    thread = world.conversations[4]
    assert thread.first_message is not None
    messages = await reads.messages.page(thread, 5, None)
    assert inbox.end_cursor
    assert messages.end_cursor
    assert conversations.end_cursor
    assert ledger.end_cursor
    assert lots.end_cursor
    next_pages: list[tuple[Callable[[], Awaitable[object]], set[str]]] = [
        (
            lambda: reads.conversations.page(
                ConversationFilter(member_id), 5, conversations.end_cursor
            ),
            {"sender_newest", "recipient_newest"},
        ),
        (lambda: reads.ledger.page(member_id, 5, ledger.end_cursor), {"member_seq"}),
        (lambda: reads.lots.page(LotFilter(member_id), 2, lots.end_cursor), {"member_newest"}),
        (
            lambda: reads.conversations.page(received_by(member_id), 2, inbox.end_cursor),
            {"recipient_newest", "direct_started_with_newest"},
        ),
        (
            lambda: reads.messages.page(thread, 5, messages.end_cursor),
            {"conversation_oldest"},
        ),
    ]
    for call, allowed in next_pages:
        for command, stages, indexes in await explain_sent(world, call):
            assert "COLLSCAN" not in stages, (command, stages)
            assert stages & INDEX_STAGES, (command, stages)
            assert indexes <= allowed, (command, indexes)


# --- a long history: what a page reads is what it returns -----------------------------------

LONG = 1500  # items of each kind in one member's history


@dataclass
class History:
    mongo: Mongo
    recorder: Recorder
    reads: Reads
    member_id: str


@pytest.fixture
async def history(mongodb_uri: str, db_name: str) -> AsyncIterator[History]:
    """One member with a long history of each list a member can pile up (answered InMails both
    ways, spent and forfeited lots, read notifications, purchases), with the few items a
    filter asks for at the list's far end (the oldest)."""
    async with recorded(mongodb_uri, db_name) as (mongo, recorder):
        me, others = new_id(), [new_id() for _ in range(LONG)]
        oldest = NOW - timedelta(days=400)

        def at(i: int) -> datetime:  # item i of LONG, newest last
            return oldest + timedelta(hours=i)

        conversations = [
            _stored(
                ConversationKind.INMAIL,
                me if i % 2 else others[i],
                others[i] if i % 2 else me,
                subject="Hello",
                # The first few (the oldest) still await a response; the rest were answered.
                state=ConversationState.AWAITING_RESPONSE if i < 3 else ConversationState.ACCEPTED,
                sent_at=at(i),
            )
            for i in range(LONG)
        ]
        await mongo.c.conversations.insert_many(conversations)
        lots = [
            CreditLot(
                id=new_id(),
                member_id=me,
                source=CreditSource.CREDIT_BACK,
                quantity=1,
                remaining=0 if i >= 3 else 1,
                granted_at=at(i),
                expires_at=at(i) + timedelta(days=90),
                status=LotStatus.FORFEITED if i < 3 else LotStatus.DEPLETED,
            )
            for i in range(LONG)
        ]
        await mongo.c.credit_lots.insert_many([lot_to_doc(lot) for lot in lots])
        notifications = [
            notification_to_doc(Notification.inmail_received(conversation_from_doc(doc), at(i)))
            for i, doc in enumerate(conversations)
            if doc["recipientId"] == me
        ]
        await mongo.c.notifications.insert_many(notifications)
        oldest_unread = sorted(n["at"] for n in notifications)[2]
        await mongo.c.notifications.update_many(
            {"memberId": me, "at": {"$gt": oldest_unread}}, {"$set": {"readAt": NOW}}
        )
        await mongo.c.purchases.insert_many(
            [
                {
                    "_id": new_id(),
                    "memberId": me,
                    "quantity": 1,
                    "chargeId": new_id(),
                    "lotId": None,
                    "at": at(i // 2),  # two purchases at each time: ties broken by id
                    "idempotencyKey": f"buy-{i}",
                    "status": "COMPLETED",
                }
                for i in range(LONG)
            ]
        )
        yield History(mongo, recorder, Reads.on(mongo), me)


async def _walked(
    h: History, first_page: Callable[[], Awaitable[Page[Any]]], next_page: Any
) -> tuple[int, list[tuple[str, Doc]]]:
    """Walk a list to its end: how many items it held, and each page's read explained with its
    execution (query, executionStats). The counts a page may send are left out: a count reads
    its whole range."""
    h.recorder.commands.clear()
    page = await first_page()
    items = len(page.items)
    while page.has_next:
        page = await next_page(page.end_cursor)
        items += len(page.items)
    stats = []
    for query, explain in await _finds_explained(h.mongo, h.recorder):
        stages: set[str] = set()
        _plan_facts(_winning_plans(explain), stages, set())
        stats.append((str(query.get("filter")), {**explain["executionStats"], "stages": stages}))
    return items, stats


async def _finds_explained(mongo: Mongo, recorder: Recorder) -> list[tuple[Doc, Any]]:
    """Each find recorded, explained as it was sent, with its execution: (query, explain)."""
    explained = []
    for command in recorder.commands:
        if next(iter(command)) == "find":
            query = {k: v for k, v in command.items() if k not in NOT_QUERY}
            explain = await mongo.db.command({"explain": query, "verbosity": "executionStats"})
            explained.append((query, explain))
    return explained


def _live_lot(member_id: str, expires_at: datetime, **fields: object) -> Doc:
    """An ACTIVE lot of one credit, granted 90 days before it expires, as stored."""
    granted_at = expires_at - timedelta(days=90)
    source, status = CreditSource.PURCHASE, LotStatus.ACTIVE
    lot = CreditLot(new_id(), member_id, source, 1, 1, granted_at, expires_at, status)
    return {**lot_to_doc(lot), **fields}


LONG_LISTS: dict[str, tuple[int, Callable[[History], tuple[Any, Any]]]] = {
    # name: (how many items the list holds, its first page and the next)
    "conversations, every page": (
        LONG,
        lambda h: (
            lambda: h.reads.conversations.page(ConversationFilter(h.member_id), 100, None),
            lambda after: h.reads.conversations.page(ConversationFilter(h.member_id), 100, after),
        ),
    ),
    "sent box, every page": (
        LONG // 2,
        lambda h: (
            lambda: h.reads.conversations.page(sent_by(h.member_id), 100, None),
            lambda after: h.reads.conversations.page(sent_by(h.member_id), 100, after),
        ),
    ),
    "conversations awaiting a response (the oldest)": (
        3,
        lambda h: (
            lambda: h.reads.conversations.page(
                ConversationFilter(h.member_id, ConversationState.AWAITING_RESPONSE), 2, None
            ),
            lambda after: h.reads.conversations.page(
                ConversationFilter(h.member_id, ConversationState.AWAITING_RESPONSE), 2, after
            ),
        ),
    ),
    "forfeited lots (the oldest)": (
        3,
        lambda h: (
            lambda: h.reads.lots.page(LotFilter(h.member_id, (LotStatus.FORFEITED,), NOW), 2, None),
            lambda after: h.reads.lots.page(
                LotFilter(h.member_id, (LotStatus.FORFEITED,), NOW), 2, after
            ),
        ),
    ),
    "unread notifications (the oldest)": (
        3,
        lambda h: (
            lambda: h.reads.notifications.page(h.member_id, True, 2, None),
            lambda after: h.reads.notifications.page(h.member_id, True, 2, after),
        ),
    ),
    "purchases, every page": (
        LONG,
        lambda h: (
            lambda: h.reads.purchases.page(h.member_id, 100, None),
            lambda after: h.reads.purchases.page(h.member_id, 100, after),
        ),
    ),
}


@pytest.mark.parametrize("name", list(LONG_LISTS))
async def test_a_page_of_a_long_history_reads_about_what_it_returns(
    history: History, name: str
) -> None:
    """A member's history is theirs to pile up (an InMail a credit-back, a thread's messages):
    no page of it may cost in proportion to all of it. Each page's read examines at most three
    times the index keys and documents it returns (a list of two branches, sent and received,
    reads ahead in each to merge them), and a few more, wherever the page is in the list and
    however few items the filter matches, and never sorts in memory."""
    held, pages = LONG_LISTS[name]
    first_page, next_page = pages(history)
    items, walked = await _walked(history, first_page, next_page)
    assert items == held
    assert walked, "no page was read"
    for query, stats in walked:
        returned = stats["nReturned"]
        assert "SORT" not in stats["stages"], (name, query, stats["stages"])
        assert stats["totalKeysExamined"] <= 3 * returned + 4, (name, query, stats)
        assert stats["totalDocsExamined"] <= 3 * returned + 4, (name, query, stats)


async def test_an_expiry_notice_pass_reads_just_the_lots_it_tells_about(
    mongodb_uri: str, db_name: str
) -> None:
    """Every live lot expiring within the notice's lead is noticed once, and stays there until
    it expires: a pass (and the scheduler's look for the next due notice) may not read those
    again. Of LONG lots noticed and 3 not, the pass's read and the next-due read examine about
    what they return."""
    async with recorded(mongodb_uri, db_name) as (mongo, recorder):
        member_id = new_id()
        told = {"expiryNoticeAt": NOW - timedelta(days=1)}
        # The 3 latest to expire await their notice; every other was told.
        await mongo.c.credit_lots.insert_many(
            [
                _live_lot(
                    member_id, NOW + timedelta(days=5, minutes=i), **({} if i >= LONG else told)
                )
                for i in range(LONG + 3)
            ]
        )
        reads = Reads.on(mongo).notifications.expiring
        recorder.commands.clear()
        due = await reads.due(NOW, NOTICE, after=None, limit=100)
        first = await reads.first_due_at(NOTICE, expiring_after=NOW)
        assert len(due) == 3
        assert first == due[0].expires_at - NOTICE
        sent = await _finds_explained(mongo, recorder)
        assert len(sent) == 2
        for query, explain in sent:
            stats = explain["executionStats"]
            assert stats["totalKeysExamined"] <= stats["nReturned"] + 4, (query, stats)
            assert stats["totalDocsExamined"] <= stats["nReturned"] + 4, (query, stats)


async def test_an_expiry_pass_reads_the_lapsed_lots_not_every_members(
    mongodb_uri: str, db_name: str
) -> None:
    """Of LONG members holding a live lot, 3 hold lots that lapsed (2 each): the expiry job's
    walk, in batches of 2 members (each batch's lots then expired, as the job does), reads about
    the lapsed lots, not a key of every member, and finds each of the 3 members once."""
    async with recorded(mongodb_uri, db_name) as (mongo, recorder):
        members = sorted(new_id() for _ in range(LONG))
        lapsed = [members[5], members[700], members[1400]]
        docs = [_live_lot(member_id, NOW + timedelta(days=30)) for member_id in members]
        docs += [_live_lot(m, NOW - timedelta(hours=h)) for h in (1, 2) for m in lapsed]
        await mongo.c.credit_lots.insert_many(docs)
        lots = Reads.on(mongo).lots
        walked: list[Any] = []
        found: list[str] = []
        recorder.commands.clear()
        while batch := await lots.lapsed_members(
            NOW, after=walked[-1] if walked else None, limit=2
        ):
            walked.append(batch[-1].walked)
            found += [member.member_id for member in batch]
            await mongo.c.credit_lots.update_many(
                {"memberId": {"$in": found}, "expiresAt": {"$lte": NOW}},
                {"$set": {"status": LotStatus.EXPIRED.value}},
            )
        assert sorted(found) == sorted(lapsed)
        sent = await _finds_explained(mongo, recorder)
        assert len(sent) == 3
        for query, explain in sent:
            stats = explain["executionStats"]
            assert stats["totalKeysExamined"] <= 6 + 2, (query, stats)
            assert stats["totalDocsExamined"] <= 6 + 1, (query, stats)
