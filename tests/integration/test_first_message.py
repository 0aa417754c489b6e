"""An InMail's first message kept in the conversation reads exactly like one kept apart.

A send writes the conversation with its first message in one insert (field `first`); every
other message, and every message of a conversation stored before, is a document of the
`messages` collection. The same threads are written both ways, each in a database of its own
(so ids, times and cursors are the same), and every read of a thread must answer alike: the
latest 100, every page of `messageConnection` at several sizes, the count and messages by id.
The answers are also checked against the thread itself, so that both ways could not be wrong
alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from inmail.domain.conversations import ConversationState
from inmail.domain.model import Conversation, ConversationKind, Message
from inmail.domain.pages import Page, encode_cursor
from inmail.domain.plans import DEFAULT_PLAN_TABLE
from inmail.repositories.conversations import ConversationReader, ConversationRepository
from inmail.repositories.messages import LATEST, MessageReader, MessageRepository, message_to_doc
from inmail.repositories.mongo import Mongo, TransactionSession, new_id

SENT = datetime(2026, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)
LENGTHS = (1, 2, 100, 101, 250)
PAGE_SIZES = (1, 2, 7, 50, 100)
ADA = "ada-lovelace"
CHARLES = "charles-babbage"


@dataclass(frozen=True)
class Thread:
    conversation: Conversation  # with its first message, as a send writes it
    messages: list[Message]  # the whole thread, oldest first

    @property
    def first(self) -> Message:
        return self.messages[0]


def _thread(length: int, *, same_instant_reply: bool = False) -> Thread:
    """An InMail from Ada to Charles and the letters that follow, a few seconds apart; two
    letters now and then in the same millisecond (their ids decide their order). With
    `same_instant_reply`, the first reply carries the InMail's own time, as under a clock that
    stood still."""
    opening = Message(new_id(), ADA, "Dear Mr Babbage, about your Analytical Engine.", SENT)
    messages = [opening]
    for k in range(1, length):
        at = SENT + timedelta(seconds=3 * (k // 2) + (0 if same_instant_reply else 1))
        author = (CHARLES, ADA)[k % 2]
        messages.append(Message(new_id(), author, f"Letter {k} on the engine's notes.", at))
    messages.sort(key=lambda m: (m.sent_at, m.id))
    assert messages[0] == opening, "the InMail opens its thread"
    conversation = Conversation(
        id=new_id(),
        kind=ConversationKind.INMAIL,
        sender_id=ADA,
        recipient_id=CHARLES,
        subject="The Analytical Engine",
        state=ConversationState.ACCEPTED if length > 1 else ConversationState.AWAITING_RESPONSE,
        sent_at=SENT,
        first_message=opening,
    )
    return Thread(conversation, messages)


THREADS = [_thread(n) for n in LENGTHS] + [_thread(3, same_instant_reply=True)]


async def _write_new_way(mongo: Mongo, thread: Thread) -> None:
    async with mongo.session_transaction() as session:
        await ConversationRepository(mongo, session).insert(thread.conversation)
    replies = [message_to_doc(thread.conversation.id, m) for m in thread.messages[1:]]
    if replies:
        await mongo.c.messages.insert_many(replies)


async def _write_old_way(mongo: Mongo, thread: Thread) -> None:
    """As conversations stored before were: every message, the first too, kept apart."""
    async with mongo.session_transaction() as session:
        await ConversationRepository(mongo, session).insert(
            replace(thread.conversation, first_message=None)
        )
    docs = [message_to_doc(thread.conversation.id, m) for m in thread.messages]
    await mongo.c.messages.insert_many(docs)


@pytest.fixture
async def both(mongodb_uri: str, db_name: str, mongo: Mongo) -> AsyncIterator[tuple[Mongo, Mongo]]:
    """(new way, old way): the same threads, each database written one way."""
    old_name = f"{db_name}_old"
    old = Mongo.connect(mongodb_uri, old_name)
    await old.create_indexes(plans=DEFAULT_PLAN_TABLE)
    try:
        for thread in THREADS:
            await _write_new_way(mongo, thread)
            await _write_old_way(old, thread)
        yield mongo, old
    finally:
        await old.client.drop_database(old_name)
        await old.close()


async def _conversations(mongo: Mongo) -> dict[str, Conversation]:
    """The conversations as a reader gets them (the new way's with their first message)."""
    return await ConversationReader(mongo, None).get_many(t.conversation.id for t in THREADS)


async def _readers_both_ways(
    both: tuple[Mongo, Mongo],
) -> list[tuple[MessageReader, dict[str, Conversation]]]:
    """For the new way's store, then the old's: its message reader and its conversations."""
    return [(MessageReader(mongo, None), await _conversations(mongo)) for mongo in both]


async def _pages(reader: MessageReader, conversation: Conversation, size: int) -> list[Any]:
    """Every page of the thread, `size` at a time from the start, with what each says of the
    pages around it; and the page after each cursor seen, two at a time."""
    seen: list[Any] = []
    cursors: list[str] = []
    after: str | None = None
    while True:
        page = await reader.page(conversation, size, after)
        seen.append(await _facts(page))
        cursors += [str(cursor) for cursor, _ in page.items]
        if not page.has_next or not page.items:
            break
        after = page.end_cursor
    for cursor in cursors[:: max(1, len(cursors) // 40)]:
        seen.append(await _facts(await reader.page(conversation, 2, cursor)))
    return seen


async def _facts(page: Page[Message]) -> tuple[list[tuple[str, Message]], bool, bool]:
    return (
        [(str(cursor), item) for cursor, item in page.items],
        page.has_next,
        await page.previous(),
    )


def test_the_threads_include_each_length_asked_for_and_a_reply_in_the_inmails_instant() -> None:
    assert sorted(len(t.messages) for t in THREADS) == [1, 2, 3, 100, 101, 250]
    tied = next(t for t in THREADS if len(t.messages) == 3)
    assert tied.messages[1].sent_at == tied.first.sent_at


async def test_a_send_keeps_the_first_message_in_the_conversation_and_nothing_apart(
    both: tuple[Mongo, Mongo],
) -> None:
    new, old = both
    thread = THREADS[0]
    doc = await new.c.conversations.find_one({"_id": thread.conversation.id})
    assert doc is not None
    assert doc["first"] == {
        "_id": thread.first.id,
        "authorId": ADA,
        "body": "Dear Mr Babbage, about your Analytical Engine.",
        "sentAt": SENT,
    }
    assert await new.c.messages.count_documents({"conversationId": thread.conversation.id}) == 0
    assert await old.c.messages.count_documents({"conversationId": thread.conversation.id}) == 1
    old_doc = await old.c.conversations.find_one({"_id": thread.conversation.id})
    assert old_doc is not None
    assert "first" not in old_doc


async def test_the_latest_hundred_are_the_same_either_way_and_reach_the_first_only_if_near(
    both: tuple[Mongo, Mongo],
) -> None:
    new, old = both
    answers = []
    for mongo in both:
        conversations = await _conversations(mongo)
        answers.append(
            await MessageReader(mongo, None).latest_for_many(
                [conversations[t.conversation.id] for t in THREADS]
            )
        )
    assert answers[0] == answers[1]
    for thread in THREADS:
        latest = answers[0][thread.conversation.id]
        assert latest == thread.messages[-LATEST:]
        assert (thread.first in latest) == (len(thread.messages) <= LATEST)
    assert new is not old


async def test_fewer_than_the_latest_hundred_are_also_the_same_either_way(
    both: tuple[Mongo, Mongo],
) -> None:
    for limit in (1, 2, 3, 99):
        answers = []
        for mongo in both:
            conversations = list((await _conversations(mongo)).values())
            answers.append(await MessageReader(mongo, None).latest_for_many(conversations, limit))
        assert answers[0] == answers[1], limit
        for thread in THREADS:
            expected = thread.messages[-limit:]
            assert answers[0][thread.conversation.id] == expected


@pytest.mark.parametrize("size", PAGE_SIZES)
async def test_every_page_at_every_size_is_the_same_either_way(
    both: tuple[Mongo, Mongo], size: int
) -> None:
    new, old = both
    new_conversations, old_conversations = await _conversations(new), await _conversations(old)
    for thread in THREADS:
        key = thread.conversation.id
        assert new_conversations[key].first_message == thread.first
        assert old_conversations[key].first_message is None
        walked = await _pages(MessageReader(new, None), new_conversations[key], size)
        assert walked == await _pages(MessageReader(old, None), old_conversations[key], size)
        # From the start, the pages hold the whole thread once, oldest first.
        pages = walked[: -(-len(thread.messages) // size)]
        assert [m for items, _, _ in pages for _, m in items] == thread.messages
        assert [has_next for _, has_next, _ in pages] == [True] * (len(pages) - 1) + [False]
        assert [previous for _, _, previous in pages] == [False] + [True] * (len(pages) - 1)


async def test_a_page_of_none_and_a_cursor_at_the_first_message_answer_alike(
    both: tuple[Mongo, Mongo],
) -> None:
    readers = await _readers_both_ways(both)
    for thread in THREADS:
        answers: list[Any] = []
        for reader, conversations in readers:
            conversation = conversations[thread.conversation.id]
            at_first = (await reader.page(conversation, 1, None)).end_cursor
            assert at_first is not None
            answers.append(
                [
                    await _facts(await reader.page(conversation, 0, None)),
                    await _facts(await reader.page(conversation, 0, at_first)),
                    await _facts(await reader.page(conversation, 3, at_first)),
                    at_first,
                ]
            )
        assert answers[0] == answers[1]
        empty, empty_after_first, after_first, _ = answers[0]
        # A page of none says whether any follow (Relay: more than `first` edges after).
        assert empty == ([], True, False)
        assert empty_after_first == ([], len(thread.messages) > 1, True)
        assert [m for _, m in after_first[0]] == thread.messages[1:4]


async def test_the_count_includes_the_first_message_either_way(
    both: tuple[Mongo, Mongo],
) -> None:
    for thread in THREADS:
        counts = []
        for mongo in both:
            conversation = (await _conversations(mongo))[thread.conversation.id]
            reader = MessageReader(mongo, None)
            at_first = (await reader.page(conversation, 1, None)).end_cursor
            for first, after in ((0, None), (2, None), (0, at_first), (2, at_first)):
                counts.append(await (await reader.page(conversation, first, after)).count())
        assert counts == [len(thread.messages)] * 8


def _placed(found: dict[str, tuple[Conversation, Message]]) -> dict[str, tuple[str, Message]]:
    """Each message found with its conversation's id, its conversation's parties checked (who
    may read the message)."""
    stored = {t.conversation.id: t.conversation for t in THREADS}
    for conversation, _ in found.values():
        parties = (conversation.sender_id, conversation.recipient_id)
        assert parties == (stored[conversation.id].sender_id, stored[conversation.id].recipient_id)
    return {i: (conversation.id, message) for i, (conversation, message) in found.items()}


async def _by_id_in_a_transaction(mongo: Mongo, ids: list[str]) -> dict[str, tuple[str, Message]]:
    async def read(session: TransactionSession) -> dict[str, tuple[Conversation, Message]]:
        return await MessageRepository(mongo, session).get_many(ids)

    return _placed(await mongo.run_transaction(read))


async def test_any_message_is_found_by_its_id_with_its_conversation_either_way(
    both: tuple[Mongo, Mongo],
) -> None:
    ids = [m.id for t in THREADS for m in t.messages] + [new_id()]
    expected = {m.id: (t.conversation.id, m) for t in THREADS for m in t.messages}
    for mongo in both:
        assert _placed(await MessageReader(mongo, None).get_many(ids)) == expected
        assert await _by_id_in_a_transaction(mongo, ids) == expected
        firsts = [t.first.id for t in THREADS]
        assert _placed(await MessageReader(mongo, None).get_many(firsts)) == {
            t.first.id: (t.conversation.id, t.first) for t in THREADS
        }
        assert await MessageReader(mongo, None).get_many([]) == {}
        # Once more, after reads of every kind: none leaves anything behind that changes it.
        assert _placed(await MessageReader(mongo, None).get_many(ids)) == expected


def _cursors_around(first: Message, conversation_id: str) -> list[str]:
    """Cursors a client may write by hand around the first message: a time with no zone (read as
    UTC), another zone, finer than a millisecond, ids just before and after, far off."""
    at, ident = first.sent_at, first.id
    thread = f"messages:{conversation_id}"  # the list a thread's cursors name
    india = timezone(timedelta(hours=5, minutes=30))
    return [
        encode_cursor([at.replace(tzinfo=None), ident], thread),
        encode_cursor([at.astimezone(india), ident], thread),
        encode_cursor([at + timedelta(microseconds=700), ident], thread),
        encode_cursor([at - timedelta(microseconds=1), ident], thread),
        encode_cursor([at, ""], thread),
        encode_cursor([at, ident + "0"], thread),
        encode_cursor([at - timedelta(milliseconds=1), "zzzz"], thread),
        encode_cursor([at + timedelta(seconds=1), ""], thread),
        encode_cursor([datetime(1970, 1, 1, tzinfo=UTC), ident], thread),
        encode_cursor([datetime(9999, 12, 31, tzinfo=UTC), ident], thread),
    ]


async def test_cursors_written_by_hand_around_the_first_message_answer_alike(
    both: tuple[Mongo, Mongo],
) -> None:
    readers = await _readers_both_ways(both)
    for thread in THREADS:
        for cursor in _cursors_around(thread.first, thread.conversation.id):
            answers = []
            for reader, conversations in readers:
                conversation = conversations[thread.conversation.id]
                answers.append(await _facts(await reader.page(conversation, 3, cursor)))
            assert answers[0] == answers[1], (len(thread.messages), cursor)
    # The first of them reads as UTC: the page after the first message.
    reader, conversations = readers[0]
    thread = THREADS[-1]
    page = await reader.page(
        conversations[thread.conversation.id],
        3,
        _cursors_around(thread.first, thread.conversation.id)[0],
    )
    assert [m for _, m in page.items] == thread.messages[1:3]
