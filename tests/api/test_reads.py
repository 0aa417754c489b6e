"""Reading: Relay connections and their page sizes, the compose window, and round trips."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.monitoring import CommandStartedEvent

from support import (
    Api,
    Person,
    ReadLog,
    ada_and_grace,
    cancel_subscription,
    change_plan,
    graphql_error_codes,
    open_api,
    walk,
)

CARD_EXPIRING_JANUARY_2026 = {"brand": "Visa", "last4": "1111", "expMonth": 1, "expYear": 2026}


async def inmails_to_many(api: Api, sender: Person, count: int) -> list[str]:
    ids = []
    for i in range(count):
        reader = await api.create_member(f"Reader {i}", "BASIC")
        result = await api.send(sender, reader)
        assert result["errors"] == []
        ids.append(result["conversation"]["id"])
    return ids


async def test_walking_conversations_with_first_and_after_meets_every_one_once(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    sent = []
    for _ in range(7):
        sent.extend(await inmails_to_many(api, ada, 1))
        api.advance(minutes=1)

    seen = await walk(api, ada.token, "conversations", "id sentAt", page_size=2)

    assert [c["id"] for c in seen] == list(reversed(sent))  # newest first, each once
    data = await api.gql(
        "{ viewer { conversations(first: 2) { totalCount pageInfo { hasNextPage } "
        "edges { cursor node { id } } nodes { id } } } }",
        token=ada.token,
    )
    page = data["viewer"]["conversations"]
    assert page["totalCount"] == 7
    assert page["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["id"] for e in page["edges"]] == [n["id"] for n in page["nodes"]]


async def test_conversations_sent_in_the_same_instant_are_each_met_once(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    sent = await inmails_to_many(api, ada, 5)  # the clock stands still: same sentAt

    for size in (1, 2, 3):
        seen = await walk(api, ada.token, "conversations", "id", page_size=size)
        assert sorted(c["id"] for c in seen) == sorted(sent)
        assert len(seen) == 5


async def test_walking_the_ledger_meets_every_entry_once_in_order(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    for quantity in (1, 2, 3):
        assert (await api.purchase(ada, quantity))["errors"] == []

    entries = await walk(api, ada.token, "ledger", "id delta balanceAfter", page_size=1)

    assert [(e["delta"], e["balanceAfter"]) for e in entries] == [(3, 11), (2, 8), (1, 6), (5, 5)]
    assert len({e["id"] for e in entries}) == 4


async def test_the_ledgers_balance_after_and_sum_of_deltas_always_match_the_balance(
    api: Api,
) -> None:
    ada, grace = await ada_and_grace(api)
    seen: list[int] = []

    async def check() -> None:
        entries = list(reversed(await walk(api, ada.token, "ledger", "delta balanceAfter")))
        running = 0
        for entry in entries:
            running += entry["delta"]
            assert entry["balanceAfter"] == running
        balance = await api.balance(ada)
        assert running == balance
        seen.append(balance)

    await check()
    first = await api.send(ada, grace)
    await check()
    await api.purchase(ada, 7)
    await check()
    await api.respond(grace, first["conversation"]["id"], "INTERESTED")
    await check()
    api.advance(days=45)
    await inmails_to_many(api, ada, 2)  # catches up 15 Feb, clamped at the cap
    await check()
    api.advance(days=50)
    await inmails_to_many(api, ada, 1)  # expires January's lots, grants 15 Mar and 15 Apr
    await check()
    await change_plan(api, ada, "PREMIUM_BUSINESS")
    await check()
    await cancel_subscription(api, ada)
    await check()

    assert seen == [5, 4, 11, 12, 13, 4, 15, 0]


async def test_credit_lots_filter_by_status_and_page_through(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    for quantity in (1, 2, 3):
        assert (await api.purchase(ada, quantity))["errors"] == []
    await cancel_subscription(api, ada)
    await inmails_to_many(api, await api.create_member("Bob", "PREMIUM_CAREER"), 1)

    forfeited = await walk(api, ada.token, "creditLots", "id status", args="status: [FORFEITED]")
    active = await walk(api, ada.token, "creditLots", "id", args="status: [ACTIVE, DEPLETED]")
    every = await walk(api, ada.token, "creditLots", "id", page_size=3)

    assert len(forfeited) == 4
    assert {lot["status"] for lot in forfeited} == {"FORFEITED"}
    assert active == []
    assert sorted(lot["id"] for lot in every) == sorted(lot["id"] for lot in forfeited)
    data = await api.gql(
        "{ creditLots(status: [FORFEITED], first: 1) { totalCount nodes { status } } }",
        token=ada.token,
    )
    assert data["creditLots"]["totalCount"] == 4
    # An empty filter names no status: no lot is in none of them.
    empty = await api.gql(
        "{ creditLots(status: [], first: 5) { totalCount nodes { id } } }", token=ada.token
    )
    assert empty["creditLots"] == {"totalCount": 0, "nodes": []}


async def test_conversations_filter_by_state(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    answered = await api.send(ada, grace)
    await api.respond(grace, answered["conversation"]["id"], "NOT_INTERESTED")
    await inmails_to_many(api, ada, 2)

    declined = await walk(api, ada.token, "conversations", "id", args="state: DECLINED")
    waiting = await walk(api, ada.token, "conversations", "id", args="state: AWAITING_RESPONSE")

    assert [c["id"] for c in declined] == [answered["conversation"]["id"]]
    assert len(waiting) == 2


async def test_a_page_size_over_100_is_a_bad_user_input_error(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    queries = [
        "{ viewer { conversations(first: 101) { totalCount } } }",
        "{ viewer { ledger(first: 101) { totalCount } } }",
        "{ viewer { creditLots(first: 101) { totalCount } } }",
        "{ creditLots(first: 101) { totalCount } }",
        "{ viewer { ledger(first: -1) { totalCount } } }",
    ]

    for query in queries:
        body = await api.raw(query, token=ada.token)

        assert graphql_error_codes(body) == ["BAD_USER_INPUT"], query
        assert "100" in body["errors"][0]["message"]


async def test_a_page_of_exactly_100_is_allowed(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    data = await api.gql("{ viewer { ledger(first: 100) { totalCount } } }", token=ada.token)

    assert data["viewer"]["ledger"]["totalCount"] == 1


async def test_a_page_of_none_says_whether_any_follow(api: Api) -> None:
    """Relay's hasNextPage: more than `first` edges after the cursor, for `first: 0` too."""
    ada, grace = await ada_and_grace(api)
    await api.send(ada, grace)
    lists = "ledger conversations creditLots notifications"
    empty_lists = "purchases"
    fields = " ".join(
        f"{name}(first: 0) {{ totalCount edges {{ cursor }} pageInfo {{ hasNextPage }} }}"
        for name in [*lists.split(), empty_lists]
    )

    viewer = (await api.gql(f"{{ viewer {{ {fields} }} }}", token=ada.token))["viewer"]

    for name in lists.split():
        assert viewer[name]["edges"] == [], name
        assert viewer[name]["pageInfo"]["hasNextPage"] is (viewer[name]["totalCount"] > 0), name
    assert viewer["ledger"]["pageInfo"]["hasNextPage"] is True
    assert viewer[empty_lists]["pageInfo"]["hasNextPage"] is False


async def test_a_cursor_the_service_did_not_make_is_a_bad_user_input_error(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    for cursor in ["garbage", "W10=", "WyJ4Il0=", "eyJhIjogMX0=", "WzEsIDJd"]:
        body = await api.raw(
            "query($c: String) { viewer { conversations(after: $c) { totalCount } "
            "ledger(after: $c) { totalCount } creditLots(after: $c) { totalCount } } }",
            {"c": cursor},
            token=ada.token,
        )

        assert graphql_error_codes(body) == ["BAD_USER_INPUT"] * 3, cursor


def forged(list_name: str, *values: object) -> str:
    """A cursor written by hand for the list `list_name`, as the service writes its own."""
    return base64.urlsafe_b64encode(json.dumps([list_name, *values]).encode()).decode()


LISTS = [
    ("conversations", "viewer { conversations(after: $c) { totalCount } }"),
    ("credit_lots", "viewer { creditLots(after: $c) { totalCount } }"),
    ("notifications", "viewer { notifications(after: $c) { totalCount } }"),
    ("purchases", "viewer { purchases(after: $c) { totalCount } }"),
    ("credit_lots", "creditLots(after: $c) { totalCount }"),
    (
        "messages",
        "node(id: $id) { ... on Conversation { messageConnection(after: $c) { totalCount } } }",
    ),
]


async def refusals_on_every_list(
    api: Api, cursor_for: Callable[[str], str]
) -> list[tuple[str, list[str | None]]]:
    """Each list of LISTS asked for the page after `cursor_for(its list's name)`: the codes of
    the errors, by list."""
    ada, grace = await ada_and_grace(api)
    sent = await api.send(ada, grace)
    thread = sent["conversation"]["id"]
    answers = []
    for name, field in LISTS:
        # A thread's messages are the conversation's list; every other list is the member's.
        named = f"messages:{thread}" if name == "messages" else f"{name}:{ada.id}"
        variables = {"c": cursor_for(named)}
        declared = "$c: String"
        if "$id" in field:
            variables["id"] = thread
            declared += ", $id: ID!"
        body = await api.raw(f"query({declared}) {{ {field} }}", variables, token=ada.token)
        answers.append((field, graphql_error_codes(body)))
    return answers


@pytest.mark.parametrize(
    "values",
    [
        ("0001-01-01T00:00:00+05:00", "x"),  # before year 1 once in UTC
        ("9999-12-31T23:00:00-05:00", "x"),  # after year 9999 once in UTC
        ("2026-01-15T00:00:00+00:00", "\ud800"),  # a lone surrogate
        ("2026-01-15T00:00:00+00:00", "x" * 600),  # far longer than any cursor made
    ],
)
async def test_a_forged_cursor_of_the_right_shape_is_a_bad_user_input_error_on_every_list(
    api: Api, values: tuple[str, str]
) -> None:
    answers = await refusals_on_every_list(api, lambda name: forged(name, *values))

    assert answers == [(field, ["BAD_USER_INPUT"]) for _, field in LISTS]


async def test_json_nested_deeper_than_the_parser_goes_is_a_bad_user_input_error(
    api: Api,
) -> None:
    nested = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode()

    answers = await refusals_on_every_list(api, lambda _: nested)

    assert answers == [(field, ["BAD_USER_INPUT"]) for _, field in LISTS]


THREAD_PAGE = (
    "u: node(id: $u) { ... on Conversation { messageConnection(after: $c) { totalCount } } }"
)


async def test_a_cursor_the_api_gave_for_another_list_is_a_bad_user_input_error(api: Api) -> None:
    """Most lists' cursors are (time, id): one list's would read as a place in another."""
    ada, grace = await ada_and_grace(api)
    mary = await api.create_member("Mary Somerville", "PREMIUM_CAREER")
    threads = [(await api.send(ada, grace))["conversation"]["id"]]
    threads.append((await api.send(mary, ada))["conversation"]["id"])
    cursors = await api.gql(
        "query($t: ID!, $u: ID!) { viewer { creditLots { edges { cursor } } "
        "conversations { edges { cursor } } notifications { edges { cursor } } } "
        "t: node(id: $t) { ... on Conversation { messageConnection { edges { cursor } } } } "
        "u: node(id: $u) { ... on Conversation { messageConnection { edges { cursor } } } } }",
        {"t": threads[0], "u": threads[1]},
        token=ada.token,
    )
    lots, conversations, notifications = (
        cursors["viewer"][name]["edges"][0]["cursor"]
        for name in ("creditLots", "conversations", "notifications")
    )
    message = cursors["t"]["messageConnection"]["edges"][0]["cursor"]
    misplaced = [
        ("viewer { conversations(after: $c) { totalCount } }", lots),
        ("viewer { notifications(after: $c) { totalCount } }", conversations),
        ("viewer { purchases(after: $c) { totalCount } }", notifications),
        ("viewer { creditLots(after: $c) { totalCount } }", message),
        (THREAD_PAGE, message),
    ]

    for field, cursor in misplaced:
        declared = "$c: String, $u: ID!" if "$u" in field else "$c: String"
        variables = {"c": cursor, "u": threads[1]} if "$u" in field else {"c": cursor}
        body = await api.raw(f"query({declared}) {{ {field} }}", variables, token=ada.token)
        assert graphql_error_codes(body) == ["BAD_USER_INPUT"], field


async def test_a_cursor_of_another_members_list_of_the_same_kind_is_a_bad_user_input_error(
    api: Api,
) -> None:
    ada, grace = await ada_and_grace(api)
    mary = await api.create_member("Mary Somerville", "PREMIUM_CAREER")
    assert (await api.send(ada, grace))["errors"] == []
    to_ada = await api.send(mary, ada)
    # Ada's response is one of Mary's notifications.
    assert (await api.respond(ada, to_ada["conversation"]["id"], "INTERESTED"))["errors"] == []
    lists = "conversations creditLots ledger notifications"
    query = (
        "{ viewer { " + " ".join(f"{n} {{ edges {{ cursor }} }}" for n in lists.split()) + " } }"
    )
    theirs = (await api.gql(query, token=mary.token))["viewer"]
    mine = (await api.gql(query, token=ada.token))["viewer"]

    for name in lists.split():
        for owner, cursors in (("mary", theirs), ("ada", mine)):
            cursor = cursors[name]["edges"][0]["cursor"]
            body = await api.raw(
                f"query($c: String) {{ viewer {{ {name}(after: $c) {{ totalCount }} }} }}",
                {"c": cursor},
                token=ada.token,
            )
            expected = ["BAD_USER_INPUT"] if owner == "mary" else []
            assert graphql_error_codes(body) == expected, (name, owner)


@pytest.mark.parametrize("position", [2**63, -(2**63) - 1, 1e30])
async def test_a_ledger_cursor_past_what_bson_holds_is_a_bad_user_input_error(
    api: Api, position: float
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    body = await api.raw(
        "query($c: String) { viewer { ledger(after: $c) { totalCount } } }",
        {"c": forged("ledger", position)},
        token=ada.token,
    )

    assert graphql_error_codes(body) == ["BAD_USER_INPUT"]


async def test_compose_says_the_viewer_can_send_and_with_how_many_credits(api: Api) -> None:
    ada, grace = await ada_and_grace(api)

    data = await api.gql(
        "query($r: ID!) { compose(recipientId: $r) { canSend reason creditsLeft "
        "recipientIsConnection } }",
        {"r": grace.id},
        ada.token,
    )

    assert data["compose"] == {
        "canSend": True,
        "reason": None,
        "creditsLeft": 5,
        "recipientIsConnection": False,
    }


async def compose(api: Api, viewer: Person, recipient_id: str) -> dict[str, Any]:
    return await api.payload(
        "compose",
        "query($r: ID!) { compose(recipientId: $r) { canSend reason creditsLeft "
        "recipientIsConnection } }",
        {"r": recipient_id},
        viewer.token,
    )


async def test_compose_gives_the_same_reason_sending_would(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", card=CARD_EXPIRING_JANUARY_2026)
    basil = await api.create_member("Basil Basic", "BASIC")
    charles = await api.create_member("Charles Babbage", "BASIC")
    grace = await api.create_member("Grace Hopper", "BASIC")
    await api.connect(ada, charles)
    await api.send(ada, grace)

    cases = {
        "000000000000000000000000": "NOT_FOUND",
        ada.id: "CANNOT_MESSAGE_SELF",
        charles.id: "RECIPIENT_IS_CONNECTION",
        grace.id: "AWAITING_RESPONSE",
    }
    for recipient_id, reason in cases.items():
        shown = await compose(api, ada, recipient_id)
        assert (shown["canSend"], shown["reason"]) == (False, reason)
        assert [e["code"] for e in (await api.send(ada, recipient_id))["errors"]] == [reason]
    assert (await compose(api, ada, charles.id))["recipientIsConnection"] is True
    assert (await compose(api, basil, grace.id))["reason"] == "UPGRADE_REQUIRED"
    api.advance(days=17)
    assert (await compose(api, ada, basil.id))["reason"] == "PAYMENT_METHOD_EXPIRED"


async def test_compose_says_insufficient_credits_when_none_are_left(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    await inmails_to_many(api, ada, 5)

    shown = await compose(api, ada, grace.id)

    assert shown == {
        "canSend": False,
        "reason": "INSUFFICIENT_CREDITS",
        "creditsLeft": 0,
        "recipientIsConnection": False,
    }


async def test_compose_with_a_cancelled_subscription_says_subscription_inactive(
    api: Api,
) -> None:
    ada, grace = await ada_and_grace(api)
    await cancel_subscription(api, ada)

    assert (await compose(api, ada, grace.id))["reason"] == "SUBSCRIPTION_INACTIVE"


# --- round trips ------------------------------------------------------------------------------


MEMBER_PAGE = """
query($id: ID!) {
  member(id: $id) {
    name inmailBalance plan { type }
    subscription { status paymentMethod { last4 } }
    conversations(first: 100) {
      totalCount
      nodes {
        id subject state
        sender { id name headline plan { type } isConnection }
        recipient { id name plan { type } }
        messages { body author { name } }
      }
    }
    ledger(first: 100) {
      totalCount
      nodes { kind delta lot { id source status } conversation { id sender { name } } }
    }
    creditLots(first: 100) { totalCount nodes { id remaining } }
  }
}
"""


async def reads_for_a_member_page(
    mongodb_uri: str, db_name: str, conversations: int
) -> tuple[list[str], int]:
    """(reads, conversations shown) for an admin's view of a member who received them."""
    counter = ReadLog()
    async with open_api(mongodb_uri, db_name, listeners=[counter]) as api:
        grace = await api.create_member("Grace Hopper", "PREMIUM_CAREER")
        senders = await asyncio.gather(
            *(api.create_member(f"Sender {i}", "PREMIUM_CAREER") for i in range(conversations))
        )
        sent = await asyncio.gather(*(api.send(sender, grace) for sender in senders))
        assert all(result["errors"] == [] for result in sent)
        for sender in senders[:4]:  # Grace's own InMails, so that her ledger names some
            assert (await api.send(grace, sender))["errors"] == []
        counter.listening = True
        data = await api.gql(MEMBER_PAGE, {"id": grace.id}, api.admin)
        counter.listening = False
    shown = data["member"]["conversations"]["nodes"]
    assert all(c["sender"]["name"] and c["messages"][0]["author"]["name"] for c in shown)
    return [f"{command} {collection}" for command, collection in counter.reads], len(shown)


async def test_a_member_pages_database_reads_do_not_grow_with_its_conversations(
    mongodb_uri: str,
) -> None:
    import uuid

    from pymongo import MongoClient

    names = [f"t_{uuid.uuid4().hex[:16]}" for _ in range(2)]
    try:
        reads_10, shown_10 = await reads_for_a_member_page(mongodb_uri, names[0], 10)
        reads_100, shown_100 = await reads_for_a_member_page(mongodb_uri, names[1], 100)
    finally:
        client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
        for name in names:
            client.drop_database(name)
        client.close()

    assert (shown_10, shown_100) == (14, 100)
    # Sibling fields (the conversations page, the ledger page) resolve concurrently, so whether
    # their nested lookups share one DataLoader batch depends on timing: the count may differ by
    # a batch between runs, but one lookup per item would add about 90 reads here.
    assert len(reads_10) <= 12, reads_10
    assert len(reads_100) <= 12, reads_100


class _EntryAddedBeforeTheCount(ReadLog):
    """Adds an entry to a member's ledger, through a client of its own, just as the service
    starts to count that ledger: a write landing between a page's read and its count."""

    def __init__(self, mongodb_uri: str, db_name: str) -> None:
        super().__init__()
        client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri)
        self._ledger = client[db_name]["ledger"]
        self.member_id: str | None = None
        self.added = 0

    def started(self, event: CommandStartedEvent) -> None:
        command = event.command
        counting = event.command_name == "aggregate" and command.get("aggregate") == "ledger"
        if counting and self.member_id is not None and not self.added:
            self.added += 1
            entry = {"_id": "added-meanwhile", "memberId": self.member_id, "seq": 9}
            self._ledger.insert_one(entry)

    def close(self) -> None:
        self._ledger.database.client.close()


async def test_a_lists_total_count_is_of_the_same_moment_as_its_page(
    mongodb_uri: str, db_name: str
) -> None:
    adding = _EntryAddedBeforeTheCount(mongodb_uri, db_name)
    try:
        async with open_api(mongodb_uri, db_name, listeners=[adding]) as api:
            ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
            query = "{ viewer { ledger(first: 10) { totalCount nodes { kind } } } }"
            adding.member_id = ada.id
            ledger = (await api.gql(query, token=ada.token))["viewer"]["ledger"]
            assert adding.added == 1, "the entry was not added between the page and its count"
            # The page and its count read the same snapshot: the entry added in between is in
            # neither. Read afresh, it is counted.
            assert ledger == {"totalCount": 1, "nodes": [{"kind": "GRANT"}]}
            fresh = "{ viewer { ledger(first: 0) { totalCount } } }"
            assert (await api.gql(fresh, token=ada.token))["viewer"]["ledger"]["totalCount"] == 2
    finally:
        adding.close()
