"""Round trips to MongoDB of the hot operations, counted by the commands the driver sends.

A round trip is a command: these counts do not depend on timing, so they are asserted exactly
where the design fixes them. Their speed is measured in `make bench`, not here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from inmail.repositories.mongo import Mongo
from inmail.services import scheduling
from support import Api, Person, new_key, open_api, serve_api
from support import test_settings as settings_for_tests
from wsclient import TRANSPORT_WS, GraphQLSocket

# Sent by the driver on its own, or by the live feed's change stream (its getMore), not by the
# request's work; the requests below read single batches.
_BACKGROUND = {"hello", "isMaster", "ismaster", "ping", "endSessions", "killCursors", "getMore"}


class Commands(CommandListener):
    """Every command the service sends to MongoDB while it listens, by name."""

    def __init__(self) -> None:
        self.listening = False
        self.sent: list[str] = []
        # The collection each `find` reads.
        self.found_in: list[str] = []
        # Each command that writes into `notifications`: the kind each upsert or insert names.
        self.notification_writes: list[list[str]] = []

    def started(self, event: CommandStartedEvent) -> None:
        if self.listening and event.command_name not in _BACKGROUND:
            self.sent.append(event.command_name)
            command = event.command
            if event.command_name == "find":
                self.found_in.append(str(command["find"]))
            if event.command_name == "update" and command.get("update") == "notifications":
                self.notification_writes.append(
                    [str(u["q"].get("kind")) for u in command.get("updates", [])]
                )
            if event.command_name == "insert" and command.get("insert") == "notifications":
                self.notification_writes.append(
                    [str(d.get("kind")) for d in command.get("documents", [])]
                )

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass

    def by_name(self) -> dict[str, int]:
        return dict(Counter(self.sent))


@pytest.fixture
async def counted(mongodb_uri: str, db_name: str) -> AsyncIterator[tuple[Api, Commands]]:
    commands = Commands()
    async with open_api(mongodb_uri, db_name, listeners=[commands]) as api:
        yield api, commands


async def during(commands: Commands, work: object) -> list[str]:
    commands.sent.clear()
    commands.found_in.clear()
    commands.notification_writes.clear()
    commands.listening = True
    try:
        await work  # type: ignore[misc]
    finally:
        commands.listening = False
    return list(commands.sent)


async def signed_in(api: Api, name: str, plan: str) -> Person:
    """A member who has used the service before (this process has met its token's member)."""
    person = await api.create_member(name, plan)
    assert (await api.gql("{ viewer { id } }", token=person.token))["viewer"]["id"] == person.id
    return person


async def ada_and_grace(api: Api, *, grace_signed_in: bool = False) -> tuple[Person, Person]:
    """Ada on Premium Career, signed in, and Grace on Basic, whom Ada may InMail."""
    ada = await signed_in(api, "Ada Lovelace", "PREMIUM_CAREER")
    if grace_signed_in:
        return ada, await signed_in(api, "Grace Hopper", "BASIC")
    return ada, await api.create_member("Grace Hopper", "BASIC")


async def an_inmail_grace_can_answer(api: Api) -> tuple[Person, str]:
    """Ada InMails Grace, both signed in: Grace, and the conversation she may respond to."""
    ada, grace = await ada_and_grace(api, grace_signed_in=True)
    sent = await api.send(ada, grace)
    return grace, sent["conversation"]["id"]


async def notification_writes(commands: Commands, work: Awaitable[object]) -> list[list[str]]:
    """The commands the work sends into `notifications`: for each, the kinds it writes."""
    await during(commands, work)
    return commands.notification_writes


COMPOSE_WINDOW = """
query($to: ID!) {
  compose(recipientId: $to) { canSend reason creditsLeft recipientIsConnection }
  viewer { inmailBalance }
}
"""


async def test_reading_ones_own_balance_is_one_round_trip(
    counted: tuple[Api, Commands],
) -> None:
    api, commands = counted
    ada = await signed_in(api, "Ada Lovelace", "PREMIUM_CAREER")
    sent = await during(commands, api.gql("{ viewer { inmailBalance } }", token=ada.token))
    assert sent == ["aggregate"]


VIEWER_FIRST = """
query($to: ID!) {
  viewer { inmailBalance }
  compose(recipientId: $to) { canSend reason creditsLeft recipientIsConnection }
}
"""


@pytest.mark.parametrize("document", [COMPOSE_WINDOW, VIEWER_FIRST], ids=["compose", "viewer"])
async def test_the_compose_window_is_one_round_trip_whichever_field_comes_first(
    counted: tuple[Api, Commands], document: str
) -> None:
    """The two members, the viewer's live lots and the awaiting check: one aggregate."""
    api, commands = counted
    ada, grace = await ada_and_grace(api)
    for awaiting in (False, True):
        shown: dict[str, Any] = {}

        async def window(into: dict[str, Any] = shown) -> None:
            into.update(await api.gql(document, {"to": grace.id}, ada.token))

        assert await during(commands, window()) == ["aggregate"]
        assert shown["viewer"]["inmailBalance"] == shown["compose"]["creditsLeft"]
        assert shown["compose"]["creditsLeft"] == (4 if awaiting else 5)
        assert shown["compose"]["reason"] == ("AWAITING_RESPONSE" if awaiting else None)
        if not awaiting:
            assert (await api.send(ada, grace))["errors"] == []


async def test_an_admin_reading_a_members_balance_sends_the_two_reads_together(
    counted: tuple[Api, Commands],
) -> None:
    api, commands = counted
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    sent = await during(
        commands,
        api.gql("query($id: ID!) { member(id: $id) { inmailBalance } }", {"id": ada.id}, api.admin),
    )
    assert sent == ["find", "find"]


SEND_COMMANDS = [
    "aggregate",  # sender, recipient, the sender's live lots, any other request under the key
    "update",  # the sender's ledger position and InMail count (the rate limit)
    "update",  # the lot the credit came from
    "insert",  # the ledger entry
    "insert",  # the conversation, with its first message and the send's record under its key
    # (unique indexes refuse a second awaiting InMail and a reused key)
    "insert",  # the recipient's notification and the conversation event, new with the
    # conversation (one insert into `notifications`; no webhook URL, no outbox entry)
    "commitTransaction",
]


async def test_a_send_reads_once_and_looks_for_no_conflict_first(
    counted: tuple[Api, Commands],
) -> None:
    """Neither a reused key nor a second awaiting InMail is looked for before writing: unique
    indexes refuse them, and only then does a careful rerun read (tests/api/test_sending.py
    shows those answers)."""
    api, commands = counted
    ada, grace = await ada_and_grace(api)
    sent = await during(commands, api.send(ada, grace, key=new_key()))
    assert sent == SEND_COMMANDS


async def test_a_retried_send_reads_the_first_answer_after_the_index_refuses_it(
    counted: tuple[Api, Commands],
) -> None:
    api, commands = counted
    ada, grace = await ada_and_grace(api)
    key = new_key()
    first = await api.send(ada, grace, key=key)
    retried = await during(commands, api.send(ada, grace, key=key))
    again = await api.send(ada, grace, key=key)
    assert first["errors"] == []
    assert again == first
    assert retried[-1] == "find"  # the first send's conversation, read back for the answer
    assert "abortTransaction" in retried  # the optimistic attempt, refused by an index
    assert retried.count("commitTransaction") == 1  # the careful rerun, which wrote nothing
    assert (await api.gql("{ viewer { inmailBalance } }", token=ada.token)) == {
        "viewer": {"inmailBalance": first["creditsLeft"]}
    }


async def test_a_response_reads_the_inmail_and_the_senders_wallet_in_two_reads(
    counted: tuple[Api, Commands],
) -> None:
    """The InMail, then its sender with the sender's live lots (for the credit back) in one."""
    api, commands = counted
    grace, conversation = await an_inmail_grace_can_answer(api)
    responded = await during(commands, api.respond(grace, conversation))
    assert responded[:2] == ["find", "aggregate"]
    # The answer is the conversation as the response's write returned it: nothing read after.
    assert responded[-1] == "commitTransaction"
    assert [n for n in responded if n in ("find", "aggregate")] == ["find", "aggregate"]


async def test_a_send_writes_the_notification_and_the_conversation_event_in_one_command(
    counted: tuple[Api, Commands],
) -> None:
    api, commands = counted
    ada, grace = await ada_and_grace(api)
    written = await notification_writes(commands, api.send(ada, grace, key=new_key()))
    assert written == [["INMAIL_RECEIVED", "CONVERSATION_EVENT"]]


async def test_a_response_writes_its_notifications_and_its_event_in_one_command(
    counted: tuple[Api, Commands],
) -> None:
    """The sender's RESPONSE_RECEIVED and CREDITED_BACK and the RESPONDED event: one command."""
    api, commands = counted
    grace, conversation = await an_inmail_grace_can_answer(api)
    reply = api.respond(grace, conversation, body="Happy to talk compilers.")
    written = await notification_writes(commands, reply)
    assert written == [["RESPONSE_RECEIVED", "CREDITED_BACK", "CONVERSATION_EVENT"]]


async def test_a_reminder_writes_its_notification_and_its_event_in_one_command(
    counted: tuple[Api, Commands],
) -> None:
    api, commands = counted
    ada, grace = await ada_and_grace(api)
    await api.send(ada, grace)
    later = api.advance(days=4)
    reminding = scheduling.remind_due(
        api.container.deps, later, batch_size=api.container.settings.scheduler_batch
    )
    written = await notification_writes(commands, reminding)
    assert commands.sent.count("commitTransaction") == 1  # one reminder, one transaction
    assert written == [["REMINDER", "CONVERSATION_EVENT"]]


async def test_a_page_asked_for_again_in_one_request_is_read_and_counted_once(
    counted: tuple[Api, Commands],
) -> None:
    """A list's count reads its whole range (a thread's messages, all of them): a document
    naming the same thread three hundred times, through `nodes` and aliases, sends what naming
    it once sends: its page and its count are read once, however many times it asks."""
    api, commands = counted
    grace, thread = await an_inmail_grace_can_answer(api)
    page = "... on Conversation { messageConnection(first: 5) { totalCount nodes { id } } }"

    def naming_it(aliases: int, times: int) -> str:
        ids = ", ".join(f'"{thread}"' for _ in range(times))
        fields = " ".join(f"a{n}: nodes(ids: [{ids}]) {{ {page} }}" for n in range(aliases))
        return "{ " + fields + " }"

    once = await during(commands, api.gql(naming_it(1, 1), token=grace.token))
    data = await api.gql(naming_it(3, 100), token=grace.token)
    often = await during(commands, api.gql(naming_it(3, 100), token=grace.token))

    answers = [node["messageConnection"] for n in range(3) for node in data[f"a{n}"]]
    assert len(answers) == 300
    assert all(answer == answers[0] for answer in answers)
    assert answers[0]["totalCount"] == 1
    assert Counter(often) == Counter(once), (once, often)
    assert "aggregate" in once  # the count


async def test_a_lists_count_is_read_once_whatever_pages_of_it_are_asked(
    counted: tuple[Api, Commands],
) -> None:
    """A count reads the whole list: twenty pages of one member's notifications, each of
    another size or from another cursor and each asking its totalCount, share one count (a
    6 KB document counting a list of 5,000 items 120 times scanned 540,000 index keys for a
    cost of 8,856). Another list's count is read apart."""
    api, commands = counted
    ada, grace = await ada_and_grace(api)
    await api.send(ada, grace)  # one notification for Grace
    first = await api.gql(
        "{ viewer { notifications(first: 1) { pageInfo { endCursor } } } }", token=grace.token
    )
    cursor = first["viewer"]["notifications"]["pageInfo"]["endCursor"]

    def counting(pages: int, unread_too: bool = False) -> str:
        fields = [
            f"p{i}_{n}: viewer {{ notifications(first: {i}, after: {json.dumps(after)}) "
            "{ totalCount } }"
            for i in range(1, pages + 1)
            for n, after in enumerate((None, cursor))
        ]
        if unread_too:
            fields.append("u: viewer { notifications(unreadOnly: true) { totalCount } }")
        return "{ " + " ".join(fields) + " }"

    once = await during(commands, api.gql(counting(1), token=grace.token))
    data = await api.gql(counting(10), token=grace.token)
    often = await during(commands, api.gql(counting(10), token=grace.token))
    other = await during(commands, api.gql(counting(10, unread_too=True), token=grace.token))

    assert {page["notifications"]["totalCount"] for page in data.values()} == {1}
    assert often.count("aggregate") == once.count("aggregate") >= 1  # the count, once
    assert other.count("aggregate") == once.count("aggregate") + 1  # another list's count


async def test_the_subscriptions_of_one_socket_read_an_events_conversation_once(
    mongodb_uri: str, db_name: str
) -> None:
    """A socket's subscriptions are handed the same event: the first reads its conversation,
    the others show what it read, instead of each reading it again. The next event is read
    afresh."""
    commands = Commands()
    mongo = Mongo.connect(mongodb_uri, db_name, listeners=[commands])
    document = "subscription { conversationUpdated { kind conversation { subject state } } }"
    async with serve_api(settings_for_tests(), mongo) as live:
        ada = await live.api.create_member("Ada Lovelace", "PREMIUM_CAREER")
        grace = await live.api.create_member("Grace Hopper", "BASIC")
        async with GraphQLSocket.open(live.url, grace.token, TRANSPORT_WS) as ws:
            operations = [await ws.subscribe(document) for _ in range(3)]
            commands.listening = True
            sent = await live.api.send(ada, grace, subject="Engines")
            received = [await ws.result(operation) for operation in operations]
            finds_for_one_event = commands.found_in.count("conversations")
            responded = await live.api.respond(grace, sent["conversation"]["id"])
            answered = [await ws.result(operation) for operation in operations]

    assert responded["errors"] == [], responded
    assert [update["data"]["conversationUpdated"] for update in received] == [
        {
            "kind": "INMAIL_RECEIVED",
            "conversation": {"subject": "Engines", "state": "AWAITING_RESPONSE"},
        }
    ] * 3
    assert [update["data"]["conversationUpdated"] for update in answered] == [
        {"kind": "RESPONDED", "conversation": {"subject": "Engines", "state": "ACCEPTED"}}
    ] * 3
    assert finds_for_one_event == 1
