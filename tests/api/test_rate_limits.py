"""Abuse limits (SPEC 4): InMails and messages per member and minute, through the API."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from inmail.clock import ManualClock
from inmail.services.rate_limits import Action, in_the_minute_before
from inmail.settings import Settings, SettingsError
from reliability.remote import Fleet
from reliability.servers import running
from support import Api, Person, codes, ledger_of, open_api, outcome, outcomes
from support import test_settings as settings_for_tests

T = TypeVar("T")

SEND = (
    "mutation($i: SendInMailInput!) { sendInMail(input: $i) { creditsLeft conversation { id } "
    "errors { code message field retryAfterSeconds } } }"
)
MESSAGE_FIELDS = "message { id } errors { code message retryAfterSeconds }"


@pytest.fixture
async def strict(mongodb_uri: str, db_name: str) -> AsyncIterator[Api]:
    """The service with small limits: 5 InMails and 10 messages a minute."""
    settings = settings_for_tests(
        rate_limit_inmails_per_minute=5, rate_limit_messages_per_minute=10
    )
    async with open_api(mongodb_uri, db_name, settings) as service:
        yield service


async def a_recruiter(api: Api, credits: int = 60) -> Person:
    """A grandfathered member with plenty of credits, so only the rate limit can stop them."""
    return await api.create_member("Rosalind Franklin", "LEGACY_PREMIUM", monthly_allotment=credits)


async def readers(api: Api, count: int) -> list[Person]:
    return list(
        await asyncio.gather(*(api.create_member(f"Reader {i}", "BASIC") for i in range(count)))
    )


async def a_recruiter_and_readers(api: Api, count: int) -> tuple[Person, list[Person]]:
    """Rosalind with credits to spare, and `count` members on Basic for her to InMail."""
    return await a_recruiter(api), await readers(api, count)


async def send(api: Api, sender: Person, recipient: Person, key: str) -> dict[str, Any]:
    variables = {
        "i": {
            "recipientId": recipient.id,
            "subject": "Crystallography?",
            "body": "Your photo 51 changed my mind.",
            "idempotencyKey": key,
        }
    }
    result: dict[str, Any] = (await api.gql(SEND, variables, sender.token))["sendInMail"]
    return result


async def inmail_each(api: Api, sender: Person, recipients: list[Person], keys: str) -> None:
    """The sender InMails each recipient in turn (under keys `keys-0`, `keys-1`...): all sent."""
    for i, recipient in enumerate(recipients):
        assert (await send(api, sender, recipient, f"{keys}-{i}"))["errors"] == []


async def sent_by(api: Api, member: Person) -> list[str]:
    data = await api.gql(
        "{ viewer { conversations(first: 100) { totalCount nodes { id } } } }",
        token=member.token,
    )
    connection = data["viewer"]["conversations"]
    assert connection["totalCount"] == len(connection["nodes"])
    return [node["id"] for node in connection["nodes"]]


async def messages_in(api: Api, member: Person, conversation_id: str) -> int:
    data = await api.gql(
        "query($id: ID!) { conversation(id: $id) { messages { id } } }",
        {"id": conversation_id},
        member.token,
    )
    return len(data["conversation"]["messages"])


async def counted(api: Api, action: Action, member: Person) -> int:
    """How many of the member's sends of `action` fall in the minute before now."""
    recent = await api.container.deps.reads.rate_limits.recent(action.value, member.id)
    return len(in_the_minute_before(recent, api.clock.now()))


async def direct_thread(api: Api, author: Person, friend: Person) -> str:
    """A free thread between two connections, opened with its first message."""
    await api.connect(author, friend)
    data = await api.gql(
        "mutation($i: SendMessageInput!) { sendMessage(input: $i) "
        "{ conversation { id } errors { code } } }",
        {"i": {"recipientId": friend.id, "body": "Tea at four?"}},
        author.token,
    )
    assert data["sendMessage"]["errors"] == []
    conversation_id: str = data["sendMessage"]["conversation"]["id"]
    return conversation_id


async def ada_and_charles_in_a_thread(api: Api) -> tuple[Person, Person, str]:
    """Ada and Charles, both on Basic, connected; Ada has opened their thread (message 1)."""
    ada = await api.create_member("Ada Lovelace", "BASIC")
    charles = await api.create_member("Charles Babbage", "BASIC")
    return ada, charles, await direct_thread(api, ada, charles)


def aliased_messages(count: int) -> str:
    fields = " ".join(
        f'm{i}: sendMessage(input: {{conversationId: $c, body: "Note {i}"}}) {{ {MESSAGE_FIELDS} }}'
        for i in range(count)
    )
    return f"mutation($c: ID!) {{ {fields} }}"


# InMails


async def test_the_thirty_first_inmail_in_a_minute_is_rate_limited_and_writes_nothing(
    api: Api,
) -> None:
    rosalind, people = await a_recruiter_and_readers(api, 31)
    await inmail_each(api, rosalind, people[:30], "photo")
    api.advance(seconds=20)  # still the same minute: 09:00:20
    balance, ledger = await api.balance(rosalind), await ledger_of(api, rosalind)
    conversations = await sent_by(api, rosalind)

    refused = await send(api, rosalind, people[30], "photo-30")

    assert codes(refused) == ["RATE_LIMITED"]
    assert refused["errors"][0]["retryAfterSeconds"] == 40
    assert "30 InMails a minute" in refused["errors"][0]["message"]
    assert refused["conversation"] is None
    assert refused["creditsLeft"] is None
    assert await api.balance(rosalind) == balance == 30
    assert await ledger_of(api, rosalind) == ledger
    assert await sent_by(api, rosalind) == conversations
    assert await counted(api, Action.INMAIL, rosalind) == 30


COMPOSE = (
    "query($r: ID!) { compose(recipientId: $r) { canSend reason creditsLeft retryAfterSeconds } }"
)


async def test_the_compose_window_says_rate_limited_when_sendinmail_would(strict: Api) -> None:
    rosalind, people = await a_recruiter_and_readers(strict, 6)
    await inmail_each(strict, rosalind, people[:5], "window")
    strict.advance(seconds=30)

    window = (await strict.gql(COMPOSE, {"r": people[5].id}, rosalind.token))["compose"]
    refused = await send(strict, rosalind, people[5], "window-5")
    # Another refusal that sendInMail makes first is the one the window gives.
    awaiting = (await strict.gql(COMPOSE, {"r": people[0].id}, rosalind.token))["compose"]

    assert codes(refused) == ["RATE_LIMITED"]
    # The window says when, as the refused send does.
    retry = refused["errors"][0]["retryAfterSeconds"]
    assert retry == 30
    assert window == {
        "canSend": False,
        "reason": "RATE_LIMITED",
        "creditsLeft": 55,
        "retryAfterSeconds": retry,
    }
    assert awaiting["reason"] == "AWAITING_RESPONSE"
    assert awaiting["retryAfterSeconds"] is None
    strict.advance(seconds=31)
    reopened = (await strict.gql(COMPOSE, {"r": people[5].id}, rosalind.token))["compose"]
    assert reopened == {
        "canSend": True,
        "reason": None,
        "creditsLeft": 55,
        "retryAfterSeconds": None,
    }
    assert (await send(strict, rosalind, people[5], "window-5b"))["errors"] == []


async def test_advancing_the_clock_past_the_minute_lets_the_next_inmail_through(
    strict: Api,
) -> None:
    rosalind, people = await a_recruiter_and_readers(strict, 7)
    await inmail_each(strict, rosalind, people[:5], "lab")
    strict.advance(seconds=59)
    late = await send(strict, rosalind, people[5], "lab-5")
    assert codes(late) == ["RATE_LIMITED"]
    assert late["errors"][0]["retryAfterSeconds"] == 1

    moved = await strict.gql(
        "mutation { advanceClock(input: {hours: 1}) { now errors { code } } }", token=strict.admin
    )
    assert moved["advanceClock"]["errors"] == []

    assert (await send(strict, rosalind, people[5], "lab-5"))["errors"] == []
    assert (await send(strict, rosalind, people[6], "lab-6"))["errors"] == []
    assert len(await sent_by(strict, rosalind)) == 7


async def test_no_sixty_seconds_hold_more_inmails_than_the_limit_across_the_turn_of_a_minute(
    strict: Api,
) -> None:
    rosalind, people = await a_recruiter_and_readers(strict, 9)
    strict.advance(seconds=50)
    await inmail_each(strict, rosalind, people[:2], "early")  # 2 at :50
    strict.advance(seconds=9)
    await inmail_each(strict, rosalind, people[2:5], "late")  # 3 at :59: the limit of 5

    strict.advance(seconds=1)  # the clock's next minute, the same sixty seconds
    turned = await send(strict, rosalind, people[5], "turn")
    assert codes(turned) == ["RATE_LIMITED"]
    assert turned["errors"][0]["retryAfterSeconds"] == 50  # the two of :50 leave at the next :50

    strict.advance(seconds=50)
    assert (await send(strict, rosalind, people[5], "turn"))["errors"] == []
    assert (await send(strict, rosalind, people[6], "turn-2"))["errors"] == []
    third = await send(strict, rosalind, people[7], "turn-3")
    assert codes(third) == ["RATE_LIMITED"]
    assert third["errors"][0]["retryAfterSeconds"] == 9  # the three of :59 leave at :59
    assert await counted(strict, Action.INMAIL, rosalind) == 5
    assert len(await sent_by(strict, rosalind)) == 7


async def test_refused_inmails_use_up_none_of_the_limit(strict: Api) -> None:
    rosalind, people = await a_recruiter_and_readers(strict, 6)
    for i in range(8):  # eight refusals, more than the limit of five
        result = await send(strict, rosalind, rosalind, f"self-{i}")
        assert codes(result) == ["CANNOT_MESSAGE_SELF"]
    assert await counted(strict, Action.INMAIL, rosalind) == 0

    results = [await send(strict, rosalind, reader, f"ok-{i}") for i, reader in enumerate(people)]

    assert [outcome(r) for r in results] == ["OK"] * 5 + ["RATE_LIMITED"]
    assert await counted(strict, Action.INMAIL, rosalind) == 5


async def test_a_retry_under_the_same_key_past_the_limit_returns_the_first_result(
    strict: Api,
) -> None:
    rosalind, people = await a_recruiter_and_readers(strict, 6)
    first = await send(strict, rosalind, people[0], "first-letter")
    await inmail_each(strict, rosalind, people[1:5], "letter")
    assert codes(await send(strict, rosalind, people[5], "one-too-many")) == ["RATE_LIMITED"]

    retry = await send(strict, rosalind, people[0], "first-letter")

    assert retry == first
    assert retry["errors"] == []
    assert await counted(strict, Action.INMAIL, rosalind) == 5
    assert await strict.balance(rosalind) == 55


async def test_fifty_concurrent_inmails_of_one_member_send_no_more_than_the_limit(
    strict: Api,
) -> None:
    rosalind, people = await a_recruiter_and_readers(strict, 50)

    results = await asyncio.gather(
        *(send(strict, rosalind, reader, f"burst-{i}") for i, reader in enumerate(people))
    )

    assert outcomes(results) == Counter({"OK": 5, "RATE_LIMITED": 45})
    assert len(await sent_by(strict, rosalind)) == 5
    assert await strict.balance(rosalind) == 55
    assert [e["kind"] for e in await ledger_of(strict, rosalind)] == ["GRANT"] + ["DEBIT"] * 5
    assert await counted(strict, Action.INMAIL, rosalind) == 5


async def while_the_clock_runs(api: Api, burst: Awaitable[list[T]]) -> list[T]:
    """The burst, with the service's clock moving on as a system clock would meanwhile: a
    transaction run again after a conflict sees sends logged later than its own start."""
    clock = api.container.clock
    assert isinstance(clock, ManualClock)
    started, began = clock.now(), time.monotonic()
    done = False

    async def tick() -> None:  # as fast as the wall clock, whatever the machine's load
        while not done:
            clock.set(started + timedelta(seconds=time.monotonic() - began))
            await asyncio.sleep(0)

    ticking = asyncio.create_task(tick())
    try:
        return await burst
    finally:
        done = True
        await ticking


async def test_fifty_concurrent_inmails_of_one_member_send_no_more_than_the_limit_as_time_runs(
    strict: Api,
) -> None:
    rosalind, people = await a_recruiter_and_readers(strict, 50)
    started = strict.clock.now()

    results = await while_the_clock_runs(
        strict,
        asyncio.gather(
            *(send(strict, rosalind, reader, f"burst-{i}") for i, reader in enumerate(people))
        ),
    )

    assert strict.clock.now() - started < timedelta(seconds=60), "the burst outlasted a minute"
    assert outcomes(results) == Counter({"OK": 5, "RATE_LIMITED": 45})
    assert len(await sent_by(strict, rosalind)) == 5
    assert await counted(strict, Action.INMAIL, rosalind) == 5


async def test_concurrent_sends_that_lose_a_race_count_nothing(strict: Api) -> None:
    rosalind, people = await a_recruiter_and_readers(strict, 6)

    # Twenty at once to one reader: one opens the conversation, the others roll back and are
    # refused with AWAITING_RESPONSE.
    results = await asyncio.gather(
        *(send(strict, rosalind, people[0], f"race-{i}") for i in range(20))
    )

    assert outcomes(results) == Counter({"OK": 1, "AWAITING_RESPONSE": 19})
    assert await counted(strict, Action.INMAIL, rosalind) == 1
    later = [
        await send(strict, rosalind, reader, f"after-{i}") for i, reader in enumerate(people[1:])
    ]
    assert [outcome(r) for r in later] == ["OK"] * 4 + ["RATE_LIMITED"]


async def test_each_member_has_a_limit_of_their_own(strict: Api) -> None:
    rosalind, maurice = await a_recruiter(strict), await a_recruiter(strict)
    people = await readers(strict, 6)
    await inmail_each(strict, rosalind, people[:5], "r")
    assert codes(await send(strict, rosalind, people[5], "r-5")) == ["RATE_LIMITED"]

    assert (await send(strict, maurice, people[5], "m-0"))["errors"] == []


# Messages


async def test_the_sixty_first_message_in_a_minute_is_rate_limited_even_in_aliases(
    api: Api,
) -> None:
    ada, charles, thread = await ada_and_charles_in_a_thread(api)  # message 1 of the minute
    flood = aliased_messages(30)

    first = await api.gql(flood, {"c": thread}, ada.token)
    second = await api.gql(flood, {"c": thread}, ada.token)

    assert [outcome(p) for p in first.values()] == ["OK"] * 30
    assert [outcome(p) for p in second.values()] == ["OK"] * 29 + ["RATE_LIMITED"]
    refused = second["m29"]
    assert refused["message"] is None
    assert refused["errors"][0]["retryAfterSeconds"] == 60
    assert "60 messages a minute" in refused["errors"][0]["message"]
    assert await messages_in(api, ada, thread) == 60
    assert await counted(api, Action.MESSAGE, ada) == 60

    # The other party has a limit of their own, and the next minute a fresh one.
    reply = await api.gql(aliased_messages(1), {"c": thread}, charles.token)
    assert outcome(reply["m0"]) == "OK"
    api.advance(minutes=1)
    later = await api.gql(aliased_messages(1), {"c": thread}, ada.token)
    assert outcome(later["m0"]) == "OK"
    assert await messages_in(api, ada, thread) == 62


async def test_one_request_of_thirty_aliased_messages_is_held_to_the_messages_limit(
    strict: Api,
) -> None:
    ada, _, thread = await ada_and_charles_in_a_thread(strict)  # message 1 of 10

    flood = await strict.gql(aliased_messages(30), {"c": thread}, ada.token)

    assert [outcome(flood[f"m{i}"]) for i in range(30)] == ["OK"] * 9 + ["RATE_LIMITED"] * 21
    assert await messages_in(strict, ada, thread) == 10
    assert await counted(strict, Action.MESSAGE, ada) == 10


async def test_a_written_response_is_a_message_and_held_to_the_same_limit(strict: Api) -> None:
    """A REPLY's body joins the thread as one of the recipient's messages: it counts, and past
    the limit the response waits like any message (nothing recorded, no credit back yet)."""
    ada, _, thread = await ada_and_charles_in_a_thread(strict)  # Ada's message 1 of 10
    grace = await strict.create_member("Grace Hopper", "PREMIUM_CAREER")
    first = (await strict.send(grace, ada))["conversation"]["id"]
    quiet = await strict.create_member("Mary Quiet", "BASIC")
    second = (await strict.send(grace, quiet))["conversation"]["id"]
    assert (await strict.gql(aliased_messages(9), {"c": thread}, ada.token))["m8"]["errors"] == []

    refused = await strict.respond(ada, first, "REPLY", "Happy to talk.")
    quick = await strict.respond(quiet, second, "INTERESTED")

    assert codes(refused) == ["RATE_LIMITED"]
    assert "10 messages a minute" in refused["errors"][0]["message"]
    assert quick["errors"] == []  # a response without words writes no message
    assert await counted(strict, Action.MESSAGE, quiet) == 0
    assert await messages_in(strict, ada, first) == 1  # the InMail alone
    strict.advance(minutes=1)
    answered = await strict.respond(ada, first, "REPLY", "Happy to talk.")
    assert answered["errors"] == []
    assert answered["creditedBack"] is True
    assert await counted(strict, Action.MESSAGE, ada) == 1
    assert await messages_in(strict, ada, first) == 2


async def test_no_sixty_seconds_hold_more_messages_than_the_limit(strict: Api) -> None:
    ada, _, thread = await ada_and_charles_in_a_thread(strict)  # message 1 of 10, at :00
    strict.advance(seconds=59)
    nine = await strict.gql(aliased_messages(9), {"c": thread}, ada.token)  # at :59
    assert [outcome(p) for p in nine.values()] == ["OK"] * 9

    strict.advance(seconds=1)  # :00 of the clock's next minute
    one = aliased_messages(1)
    assert outcome((await strict.gql(one, {"c": thread}, ada.token))["m0"]) == "OK"  # 1 left
    refused = (await strict.gql(one, {"c": thread}, ada.token))["m0"]
    assert outcome(refused) == "RATE_LIMITED"
    assert refused["errors"][0]["retryAfterSeconds"] == 59
    strict.advance(seconds=59)
    assert outcome((await strict.gql(one, {"c": thread}, ada.token))["m0"]) == "OK"
    assert await messages_in(strict, ada, thread) == 12


async def test_fifty_concurrent_messages_of_one_member_send_no_more_than_the_limit(
    strict: Api,
) -> None:
    ada, _, thread = await ada_and_charles_in_a_thread(strict)  # message 1 of 10
    one = aliased_messages(1)

    results = await asyncio.gather(*(strict.gql(one, {"c": thread}, ada.token) for _ in range(50)))

    assert Counter(outcome(r["m0"]) for r in results) == Counter({"OK": 9, "RATE_LIMITED": 41})
    assert await messages_in(strict, ada, thread) == 10
    assert await counted(strict, Action.MESSAGE, ada) == 10


async def test_sends_logged_later_than_a_send_count_against_it(strict: Api) -> None:
    """Sends logged at times after a send's own (a process whose clock is ahead, or sends that
    committed while this one's transaction ran again with the time it started at) are in its
    minute too; only times more than a minute ahead (a manual clock set back) are not."""
    ada, _, thread = await ada_and_charles_in_a_thread(strict)  # message 1 of 10
    rosalind, people = await a_recruiter_and_readers(strict, 2)
    now = strict.clock.now()
    ahead = [now + timedelta(seconds=s) for s in range(1, 10)]  # 9 more: 10 of 10
    c = strict.container.mongo.c
    await c.rate_limits.update_one(
        {"_id": f"message:{ada.id}"}, {"$push": {"times": {"$each": ahead}}}
    )
    await c.members.update_one({"_id": rosalind.id}, {"$set": {"inmailSends": ahead[:5]}})

    message = (await strict.gql(aliased_messages(1), {"c": thread}, ada.token))["m0"]
    inmail = await send(strict, rosalind, people[0], "ahead-1")

    assert outcome(message) == outcome(inmail) == "RATE_LIMITED"
    assert message["errors"][0]["retryAfterSeconds"] == 60  # when the thread's first message leaves
    await c.members.update_one(
        {"_id": rosalind.id}, {"$set": {"inmailSends": [now + timedelta(seconds=61)] * 5}}
    )
    assert outcome(await send(strict, rosalind, people[1], "ahead-2")) == "OK"


async def test_refused_messages_use_up_none_of_the_limit(strict: Api) -> None:
    ada = await strict.create_member("Ada Lovelace", "BASIC")
    charles = await strict.create_member("Charles Babbage", "BASIC")
    for _ in range(12):  # not connected yet: refused, twelve times
        data = await strict.gql(
            "mutation($i: SendMessageInput!) { sendMessage(input: $i) { errors { code } } }",
            {"i": {"recipientId": charles.id, "body": "Hello?"}},
            ada.token,
        )
        assert codes(data["sendMessage"]) == ["NOT_CONNECTED"]

    thread = await direct_thread(strict, ada, charles)
    flood = await strict.gql(aliased_messages(10), {"c": thread}, ada.token)

    assert [outcome(flood[f"m{i}"]) for i in range(10)] == ["OK"] * 9 + ["RATE_LIMITED"]
    assert await messages_in(strict, ada, thread) == 10


# Across processes, storage, settings


@pytest.mark.slow
async def test_a_burst_spread_over_two_processes_never_sends_more_than_the_limit(
    mongodb_uri: str, db_name: str, tmp_path: Path
) -> None:
    with running(
        2, mongodb_uri, db_name, tmp_path, INMAIL_RATE_LIMIT_INMAILS_PER_MINUTE="5"
    ) as servers:
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as client:
            fleet = Fleet(client, [server.url for server in servers], retries=2)
            sender = await fleet.create_member("Rosalind Franklin", "PREMIUM_BUSINESS")
            people = await asyncio.gather(
                *(fleet.create_member(f"Reader {i}", "BASIC", card=None) for i in range(40))
            )

            async def one(i: int, reader: Person) -> tuple[int, str]:
                variables = {
                    "i": {
                        "recipientId": reader.id,
                        "subject": "Hello",
                        "body": "Two servers, one limit.",
                        "idempotencyKey": f"burst-{i}",
                    }
                }
                data = await fleet.on(i % 2).gql(SEND, variables, sender.token)
                return i % 2, outcome(data["sendInMail"])

            results = await asyncio.gather(*(one(i, r) for i, r in enumerate(people)))
            balance = await fleet.balance(sender)
            conversations = await fleet.gql(
                "{ viewer { conversations(first: 100) { totalCount } } }", token=sender.token
            )

    # A connection a server dropped for a failure of its own shows in its log, whether or not
    # the client's retry then got an answer.
    assert all("Traceback" not in server.log() for server in servers)
    assert Counter(code for _, code in results) == Counter({"OK": 5, "RATE_LIMITED": 35})
    assert {server for server, _ in results} == {0, 1}
    assert balance == 15 - 5
    assert conversations["viewer"]["conversations"]["totalCount"] == 5


async def ttl_monitor_after(api: Api, wall_time: timedelta) -> int:
    """Delete what MongoDB's TTL monitor would have deleted `wall_time` of real time from now."""
    deleted = await api.container.mongo.c.rate_limits.delete_many(
        {"deleteAfter": {"$lt": datetime.now(UTC) + wall_time}}
    )
    return deleted.deleted_count


async def test_a_manual_clock_standing_still_keeps_its_message_window_however_long_it_stands(
    strict: Api,
) -> None:
    """SPEC 7: rate-limit windows run on the service's clock. Wall-clock hours pass while a
    manual clock stands still; the window stays shut until the service's clock moves on."""
    ada, _, thread = await ada_and_charles_in_a_thread(strict)  # message 1 of 10
    nine = await strict.gql(aliased_messages(9), {"c": thread}, ada.token)
    assert [outcome(p) for p in nine.values()] == ["OK"] * 9

    assert await ttl_monitor_after(strict, timedelta(hours=3)) == 0
    one = aliased_messages(1)
    assert outcome((await strict.gql(one, {"c": thread}, ada.token))["m0"]) == "RATE_LIMITED"
    strict.advance(seconds=60)
    assert outcome((await strict.gql(one, {"c": thread}, ada.token))["m0"]) == "OK"


async def test_on_the_system_clock_an_idle_message_log_is_left_to_the_ttl_index(
    mongodb_uri: str, db_name: str
) -> None:
    settings = settings_for_tests(clock="system", clock_start=None)
    async with open_api(mongodb_uri, db_name, settings) as api:
        await ada_and_charles_in_a_thread(api)
        assert await ttl_monitor_after(api, timedelta(minutes=1)) == 0  # still in use
        assert await ttl_monitor_after(api, timedelta(minutes=11)) == 1  # idle: forgotten
        assert await api.container.mongo.c.rate_limits.count_documents({}) == 0


async def test_old_windows_are_deleted_by_a_ttl_index(api: Api) -> None:
    indexes = {
        index["name"]: index
        async for index in await api.container.mongo.c.rate_limits.list_indexes()
    }
    assert indexes["expired"]["expireAfterSeconds"] == 0
    assert dict(indexes["expired"]["key"]) == {"deleteAfter": 1}


def test_the_limits_default_to_thirty_inmails_and_sixty_messages_and_refuse_zero() -> None:
    settings = Settings.from_env({})
    assert (settings.rate_limit_inmails_per_minute, settings.rate_limit_messages_per_minute) == (
        30,
        60,
    )
    with pytest.raises(SettingsError, match="INMAIL_RATE_LIMIT_INMAILS_PER_MINUTE"):
        Settings.from_env({"INMAIL_RATE_LIMIT_INMAILS_PER_MINUTE": "0"})
