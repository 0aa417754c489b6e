"""Threads of any length, one direct thread per pair, and the inbox and sent box (SPEC 4).

On the real mongod, through GraphQL. The long thread is mostly inserted directly (for speed),
with hundreds of messages sent through the API past the point where an embedded thread used to
hit MongoDB's 16 MB document limit.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import bson
import pytest

from inmail.domain.model import Message
from inmail.repositories.messages import message_to_doc
from inmail.repositories.mongo import new_id
from inmail.schema import types
from support import Api, Person, ReadLog, ada_and_grace, open_api, send_message

CLEF = "\U0001d11e"  # four bytes in UTF-8: 2,000 of them make an 8 KB message
LONG_BODY = CLEF * 2000
THREAD = 5000
THROUGH_THE_API = 300
PAGE = 100

MESSAGES = """
query($id: ID!) { conversation(id: $id) { id messages { id sentAt author { id } } } }
"""
MESSAGE_PAGE = """
query($id: ID!, $first: Int, $after: String) { conversation(id: $id) {
  messageConnection(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } nodes { id body } } } }
"""


async def _connected(api: Api, *names: str) -> list[Person]:
    people = [await api.create_member(name, "PREMIUM_CAREER") for name in names]
    for other in people[1:]:
        await api.connect(people[0], other)
    return people


SAY = """
mutation($i: SendMessageInput!) { sendMessage(input: $i) {
  conversation { id } message { id } errors { code message } } }
"""


async def _say(api: Api, author: Person, body: str, conversation_id: str) -> dict[str, Any]:
    """A message into a thread, answered without the thread's messages."""
    return await api.payload(
        "sendMessage", SAY, {"i": {"conversationId": conversation_id, "body": body}}, author.token
    )


async def _message_page(
    api: Api, reader: Person, conversation_id: str, first: int, after: str | None
) -> dict[str, Any]:
    data = await api.gql(
        MESSAGE_PAGE, {"id": conversation_id, "first": first, "after": after}, reader.token
    )
    page: dict[str, Any] = data["conversation"]["messageConnection"]
    return page


async def test_a_thread_of_five_thousand_messages_takes_each_further_one_and_pages_in_order(
    api: Api,
) -> None:
    ada, grace = await _connected(api, "Ada Lovelace", "Grace Hopper")
    opened = await send_message(api, ada, LONG_BODY, recipient=grace)
    assert opened["errors"] == []
    thread = opened["conversation"]["id"]
    order = [opened["message"]["id"]]

    # The bulk of the thread, inserted directly: 8 KB each, one millisecond apart.
    start = api.clock.now()
    bulk = THREAD - 1 - THROUGH_THE_API
    for first in range(0, bulk, 500):
        docs = []
        for i in range(first, min(first + 500, bulk)):
            writer = (ada, grace)[i % 2].id
            message = Message(new_id(), writer, LONG_BODY, start + timedelta(milliseconds=i + 1))
            docs.append(message_to_doc(thread, message))
            order.append(message.id)
        await api.container.mongo.c.messages.insert_many(docs)
    api.advance(minutes=1)

    # Far past 16 MB of messages, every further one is accepted, from either side.
    stored = await api.container.mongo.c.messages.aggregate(
        [
            {"$match": {"conversationId": thread}},
            {"$group": {"_id": None, "bytes": {"$sum": {"$bsonSize": "$$ROOT"}}}},
        ]
    )
    (total,) = [doc["bytes"] async for doc in stored]
    assert total > 16 * 1024 * 1024
    for i in range(THROUGH_THE_API):
        sender = (grace, ada)[i % 2]
        sent = await _say(api, sender, LONG_BODY, thread)
        assert sent["errors"] == [], sent["errors"]
        order.append(sent["message"]["id"])
        if i % 100 == 99:  # each writer stays under the 60 messages a minute limit
            api.advance(minutes=1)
    assert len(order) == THREAD

    # `messages`: exactly the latest 100, oldest first.
    data = await api.gql(MESSAGES, {"id": thread}, grace.token)
    assert [m["id"] for m in data["conversation"]["messages"]] == order[-100:]

    # The conversation document itself stays small: its messages are not in it.
    doc = await api.container.mongo.c.conversations.find_one({"_id": thread})
    assert doc is not None
    assert "messages" not in doc
    assert len(bson.encode(doc)) < 1024

    # messageConnection visits every message once, oldest first.
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await _message_page(api, ada, thread, PAGE, after)
        assert page["totalCount"] == THREAD
        seen += [node["id"] for node in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == order
    assert len(set(seen)) == THREAD

    # Reading one message of the thread answers with one message, not the thread.
    response = await api.post(MESSAGE_PAGE, {"id": thread, "first": 1, "after": None}, ada.token)
    one = json.loads(response.content)["data"]["conversation"]["messageConnection"]
    assert [node["id"] for node in one["nodes"]] == order[:1]
    assert len(response.content) < 64 * 1024, len(response.content)


async def test_a_message_page_larger_than_the_maximum_is_refused(api: Api) -> None:
    ada, grace = await _connected(api, "Ada Lovelace", "Grace Hopper")
    opened = await send_message(api, ada, "Shall we pair on the compiler?", recipient=grace)
    body = await api.raw(
        MESSAGE_PAGE,
        {"id": opened["conversation"]["id"], "first": 101, "after": None},
        ada.token,
    )
    assert "first must be between 0 and 100" in json.dumps(body["errors"])
    bad = await api.raw(
        MESSAGE_PAGE,
        {"id": opened["conversation"]["id"], "first": 5, "after": "not-a-cursor"},
        ada.token,
    )
    assert "after" in json.dumps(bad["errors"])


async def test_twenty_first_messages_at_once_between_two_connections_make_one_thread(
    api: Api,
) -> None:
    ada, grace = await _connected(api, "Ada Lovelace", "Grace Hopper")
    results = await asyncio.gather(
        *(
            send_message(api, author, f"Hello number {i}", recipient=other)
            for i, (author, other) in enumerate([(ada, grace), (grace, ada)] * 10)
        )
    )
    assert all(result["errors"] == [] for result in results), results
    threads = {result["conversation"]["id"] for result in results}
    assert len(threads) == 1
    (thread,) = threads
    assert await api.container.mongo.c.conversations.count_documents({"kind": "DIRECT"}) == 1
    page = await _message_page(api, grace, thread, 100, None)
    assert page["totalCount"] == 20
    assert sorted(node["body"] for node in page["nodes"]) == sorted(
        f"Hello number {i}" for i in range(20)
    )


async def _follow(
    api: Api, reader: Person, thread: str, cursor: str | None, until: asyncio.Event
) -> tuple[list[str], int]:
    """A client keeping up with a thread: it asks again and again for what came after the
    last message it saw, and once more after `until` is set. The bodies in the order seen, and
    how many of them it saw before `until` was set."""
    seen: list[str] = []
    seen_before = 0
    while True:
        last_round = until.is_set()
        page = await _message_page(api, reader, thread, 20, cursor)
        seen += [node["body"] for node in page["nodes"]]
        if not until.is_set():
            seen_before = len(seen)
        cursor = page["pageInfo"]["endCursor"] or cursor
        if last_round and not page["pageInfo"]["hasNextPage"]:
            return seen, seen_before
        await asyncio.sleep(0)


async def test_a_client_paging_forward_through_a_thread_sees_every_message_sent_meanwhile(
    api: Api,
) -> None:
    """Forty messages at once from both parties, on a stopped clock, while a client follows
    the thread from its last cursor: it sees each once, in the thread's own order. A message
    committed after a later one it had already seen would be behind its cursor, for good."""
    ada, grace = await _connected(api, "Ada Lovelace", "Grace Hopper")
    opened = await send_message(api, ada, "Opening", recipient=grace)
    thread = opened["conversation"]["id"]
    start = await _message_page(api, grace, thread, 1, None)
    done = asyncio.Event()

    async def senders() -> list[dict[str, Any]]:
        sent = await asyncio.gather(
            *(
                _say(api, author, f"Message {i}", thread)
                for i, author in enumerate([ada, grace] * 20)
            )
        )
        done.set()
        return sent

    sent, (seen, seen_while_sending) = await asyncio.gather(
        senders(), _follow(api, grace, thread, start["pageInfo"]["endCursor"], done)
    )

    assert all(result["errors"] == [] for result in sent), sent
    everything = await api.gql(MESSAGES, {"id": thread}, grace.token)
    listed = everything["conversation"]["messages"]
    times = [datetime.fromisoformat(message["sentAt"]) for message in listed]
    assert times == sorted(set(times)), "two messages of one thread share a time"
    bodies = await _message_page(api, grace, thread, 100, None)
    assert seen == [node["body"] for node in bodies["nodes"]][1:]
    assert sorted(seen) == sorted(f"Message {i}" for i in range(40))
    assert seen_while_sending > 0, "the client read nothing while the messages were being sent"


async def test_a_thread_stored_before_it_kept_its_latest_time_adds_after_its_newest(
    api: Api,
) -> None:
    """A thread whose conversation predates `lastMessageAt`, holding a message later than the
    clock (a manual clock started again earlier, another host's clock): the next message
    goes after that one, not after the thread's start."""
    ada, grace = await _connected(api, "Ada Lovelace", "Grace Hopper")
    opened = await send_message(api, ada, "Opening", recipient=grace)
    thread = opened["conversation"]["id"]
    conversations, messages = api.container.mongo.c.conversations, api.container.mongo.c.messages
    await conversations.update_one({"_id": thread}, {"$unset": {"lastMessageAt": ""}})
    later = Message(new_id(), grace.id, "From ahead", api.clock.now() + timedelta(days=1))
    await messages.insert_one(message_to_doc(thread, later))

    added = await _say(api, ada, "After it", thread)

    assert added["errors"] == []
    page = await _message_page(api, grace, thread, 10, None)
    assert [node["body"] for node in page["nodes"]] == ["Opening", "From ahead", "After it"]
    stored = await conversations.find_one({"_id": thread})
    assert stored is not None
    assert stored["lastMessageAt"] == later.sent_at + timedelta(milliseconds=1)


ROLES = """
query($role: ConversationRole, $state: ConversationState, $first: Int, $after: String) {
  viewer { conversations(role: $role, state: $state, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    nodes { id kind state sender { id } recipient { id } } } } }
"""


async def _listed(
    api: Api, viewer: Person, role: str | None, state: str | None = None
) -> tuple[list[str], int]:
    data = await api.gql(ROLES, {"role": role, "state": state, "first": 20}, viewer.token)
    found = data["viewer"]["conversations"]
    return [node["id"] for node in found["nodes"]], found["totalCount"]


async def test_the_inbox_holds_what_others_started_and_the_sent_box_what_the_viewer_started(
    api: Api,
) -> None:
    # Created in this order, so Ada has the smallest id: a thread Bob starts with her is
    # stored under her id, and must still be her RECEIVED and his SENT.
    ada, bob, carol = await _connected(api, "Ada Lovelace", "Bob Kahn", "Carol Shaw")
    grace = await api.create_member("Grace Hopper", "PREMIUM_CAREER")
    alan = await api.create_member("Alan Turing", "PREMIUM_CAREER")

    to_grace = (await api.send(ada, grace))["conversation"]["id"]
    api.advance(minutes=1)
    from_alan = (await api.send(alan, ada))["conversation"]["id"]
    api.advance(minutes=1)
    from_bob = (await send_message(api, bob, "Lunch on Friday?", recipient=ada))["conversation"][
        "id"
    ]
    api.advance(minutes=1)
    to_carol = (await send_message(api, ada, "Your game was great.", recipient=carol))[
        "conversation"
    ]["id"]
    api.advance(minutes=1)
    assert (await api.respond(ada, from_alan, "NOT_INTERESTED"))["errors"] == []

    # Newest first, as every conversation list.
    assert await _listed(api, ada, "SENT") == ([to_carol, to_grace], 2)
    assert await _listed(api, ada, "RECEIVED") == ([from_bob, from_alan], 2)
    assert await _listed(api, ada, None) == ([to_carol, from_bob, from_alan, to_grace], 4)
    assert await _listed(api, bob, "SENT") == ([from_bob], 1)
    assert await _listed(api, bob, "RECEIVED") == ([], 0)
    assert await _listed(api, carol, "RECEIVED") == ([to_carol], 1)
    assert await _listed(api, grace, "RECEIVED") == ([to_grace], 1)
    assert await _listed(api, grace, "SENT") == ([], 0)

    # With a state: the inbox's InMails still awaiting an answer, and the declined one.
    assert await _listed(api, ada, "RECEIVED", "AWAITING_RESPONSE") == ([], 0)
    assert await _listed(api, ada, "RECEIVED", "DECLINED") == ([from_alan], 1)
    assert await _listed(api, ada, "SENT", "AWAITING_RESPONSE") == ([to_grace], 1)

    # Paging the inbox one at a time visits both, once.
    first = await api.gql(ROLES, {"role": "RECEIVED", "first": 1}, ada.token)
    page = first["viewer"]["conversations"]
    assert page["pageInfo"]["hasNextPage"] is True
    second = await api.gql(
        ROLES, {"role": "RECEIVED", "first": 1, "after": page["pageInfo"]["endCursor"]}, ada.token
    )
    rest = second["viewer"]["conversations"]
    assert [n["id"] for n in page["nodes"] + rest["nodes"]] == [from_bob, from_alan]
    assert rest["pageInfo"]["hasNextPage"] is False

    # The direct thread's sender is who wrote first, whatever id it is stored under.
    bobs = next(n for n in page["nodes"] if n["id"] == from_bob)
    assert bobs["kind"] == "DIRECT"
    assert (bobs["sender"]["id"], bobs["recipient"]["id"]) == (bob.id, ada.id)


OPENING = """
query($id: ID!) { node(id: $id) { __typename id ... on Message { body author { id } } } }
"""


async def test_an_inmail_thread_past_a_hundred_keeps_its_opening_in_its_pages_and_by_id(
    api: Api,
) -> None:
    """The InMail's first message is kept with the conversation, the rest apart: the latest 100
    leave it out once the thread is longer, the pages and the count still hold it first."""
    ada, grace = await ada_and_grace(api)
    sent = await api.send(ada, grace, body="Would you review my notes on the engine?")
    assert sent["errors"] == []
    thread = sent["conversation"]["id"]
    api.advance(minutes=1)
    assert (await api.respond(grace, thread, "INTERESTED"))["errors"] == []
    page = await _message_page(api, grace, thread, 1, None)
    (opening,) = page["nodes"]
    assert opening["body"] == "Would you review my notes on the engine?"
    order = [opening["id"]]
    for i in range(101):
        said = await _say(api, (grace, ada)[i % 2], f"Note {i}: the Bernoulli numbers", thread)
        assert said["errors"] == [], said["errors"]
        order.append(said["message"]["id"])
        if i % 100 == 99:  # each writer stays under the 60 messages a minute limit
            api.advance(minutes=1)

    latest = await api.gql(MESSAGES, {"id": thread}, ada.token)
    assert [m["id"] for m in latest["conversation"]["messages"]] == order[-100:]
    for size in (1, 7, 100):
        seen: list[str] = []
        after: str | None = None
        while True:
            page = await _message_page(api, ada, thread, size, after)
            assert page["totalCount"] == 102
            seen += [node["id"] for node in page["nodes"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert seen == order, size
    found = await api.gql(OPENING, {"id": opening["id"]}, grace.token)
    assert found["node"] == {
        "__typename": "Message",
        "id": opening["id"],
        "body": "Would you review my notes on the engine?",
        "author": {"id": ada.id},
    }
    stranger = await api.create_member("Alan Turing", "BASIC")
    assert (await api.gql(OPENING, {"id": opening["id"]}, stranger.token))["node"] is None


async def test_a_message_names_its_recipient_or_its_thread_and_is_told_which_it_lacks(
    api: Api,
) -> None:
    ada, grace = await _connected(api, "Ada Lovelace", "Grace Hopper")
    opened = await send_message(api, ada, "Tea at four?", recipient=grace)
    thread = opened["conversation"]["id"]

    neither = await api.payload("sendMessage", SAY, {"i": {"body": "Hello"}}, ada.token)
    both = await api.payload(
        "sendMessage",
        SAY,
        {"i": {"body": "Hello", "recipientId": grace.id, "conversationId": thread}},
        ada.token,
    )

    assert [(e["code"], e["message"]) for e in neither["errors"]] == [
        (
            "INVALID_INPUT",
            "Give recipientId (a new thread with a connection) or conversationId (a reply).",
        )
    ]
    assert [(e["code"], e["message"]) for e in both["errors"]] == [
        ("INVALID_INPUT", "Give either recipientId or conversationId, not both.")
    ]


async def test_what_a_mutation_wrote_is_read_by_the_payloads_and_mutations_after_it(
    api: Api,
) -> None:
    """Mutations run one after another, each payload read after its write: the second
    message's payload shows both messages, though the first's read the same page before it."""
    ada, alan = await _connected(api, "Ada Lovelace", "Alan Turing")
    page = "conversation { messageConnection(first: 10) { totalCount nodes { body } } }"
    document = (
        "mutation($to: ID!) { "
        f'a: sendMessage(input: {{recipientId: $to, body: "one"}}) {{ {page} errors {{ code }} }} '
        f'b: sendMessage(input: {{recipientId: $to, body: "two"}}) {{ {page} errors {{ code }} }} '
        "}"
    )

    data = await api.gql(document, {"to": alan.id}, token=ada.token)

    first, second = (data[name]["conversation"]["messageConnection"] for name in ("a", "b"))
    assert first == {"totalCount": 1, "nodes": [{"body": "one"}]}
    assert second == {"totalCount": 2, "nodes": [{"body": "one"}, {"body": "two"}]}


@pytest.fixture
def loaded_one_by_one(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The members read through `Member.load`, one awaitable each: what a field asks for a member
    the request has not read yet (an author read with the messages answers at once instead)."""
    loaded: list[str] = []
    real_load = vars(types.Member)["load"].__func__

    async def counted(cls: type[types.Member], info: Any, member_id: str) -> types.Member:
        loaded.append(member_id)
        member: types.Member = await real_load(cls, info, member_id)
        return member

    monkeypatch.setattr(types.Member, "load", classmethod(counted))
    return loaded


AUTHORS = """
query($ids: [ID!]!) { nodes(ids: $ids) { ... on Conversation {
  messages { body author { id name } }
  messageConnection(first: 10) { nodes { body author { id name } } } } } }
"""


async def test_a_threads_authors_are_read_with_its_messages_not_one_by_one_after_them(
    api: Api, loaded_one_by_one: list[str]
) -> None:
    ada, grace = await _connected(api, "Ada Lovelace", "Grace Hopper")
    first = await send_message(api, ada, "Hello Grace", recipient=grace)
    thread = first["conversation"]["id"]
    await send_message(api, grace, "Hello Ada", conversation_id=thread)
    await send_message(api, ada, "How are you?", conversation_id=thread)
    data = await api.gql(AUTHORS, {"ids": [thread, thread]}, grace.token)
    said = [("Ada Lovelace", "Hello Grace"), ("Grace Hopper", "Hello Ada")]
    said.append(("Ada Lovelace", "How are you?"))
    for node in data["nodes"]:
        for listed in (node["messages"], node["messageConnection"]["nodes"]):
            assert [(m["author"]["name"], m["body"]) for m in listed] == said
            assert {m["author"]["id"] for m in listed} == {ada.id, grace.id}
    assert loaded_one_by_one == []


async def test_a_page_of_conversations_reads_its_messages_authors_with_the_page(
    api: Api, loaded_one_by_one: list[str]
) -> None:
    ada, grace, alan = await _connected(api, "Ada Lovelace", "Grace Hopper", "Alan Turing")
    for other in (grace, alan):
        sent = await send_message(api, ada, f"Hello {other.id}", recipient=other)
        await send_message(api, other, "Hello Ada", conversation_id=sent["conversation"]["id"])
    data = await api.gql(
        "{ viewer { conversations(first: 10) { nodes { messages { body author { id } } } } } }",
        token=ada.token,
    )
    threads = data["viewer"]["conversations"]["nodes"]
    assert sorted([m["author"]["id"] for m in t["messages"]] for t in threads) == sorted(
        [[ada.id, other.id] for other in (grace, alan)]
    )
    assert loaded_one_by_one == []


async def test_a_threads_authors_are_read_once_and_only_when_a_message_is_shown(
    mongodb_uri: str, db_name: str
) -> None:
    log = ReadLog()
    async with open_api(mongodb_uri, db_name, listeners=[log]) as api:
        ada, grace = await _connected(api, "Ada Lovelace", "Grace Hopper")
        thread = (await send_message(api, ada, "Hello Grace", recipient=grace))["conversation"]
        await send_message(api, grace, "Hello Ada", conversation_id=thread["id"])
        asked = {
            "none shown": "messageConnection(first: 0) { totalCount nodes { author { id } } }",
            "a page": "messageConnection(first: 5) { nodes { author { id } } }",
            "the latest": "messages { author { id } }",
        }
        members_read: dict[str, int] = {}
        for name, field in asked.items():
            log.collections_read()
            log.listening = True
            data = await api.gql(
                f"query($id: ID!) {{ conversation(id: $id) {{ {field} }} }}",
                {"id": thread["id"]},
                grace.token,
            )
            log.listening = False
            members_read[name] = log.collections_read().count("members")
            assert data["conversation"] is not None
    # Both authors in one read, after the messages that name them; none when no message shows.
    assert members_read == {"none shown": 0, "a page": 1, "the latest": 1}
