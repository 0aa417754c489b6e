"""Global object identification: `node(id)` and `nodes(ids)` fetch any object the API ever
showed by its id, under the rules of the fields that showed it; and every connection's
`pageInfo` says whether items precede its page and where the page starts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from inmail.resolvers.cost import ROUND_TRIP as R
from support import Api, Person, ReadLog, graphql_error_codes, open_api

# What each kind of object shows, asked the same way through node() and through its own field.
SHOWN = {
    "Member": "name headline",
    "Conversation": "subject state sentAt",
    "Message": "body sentAt",
    "CreditLot": "source quantity remaining grantedAt expiresAt lotStatus: status",
    "LedgerEntry": "entryKind: kind delta balanceAfter at",
    "Purchase": "quantity purchaseStatus: status at amount { amount currency }",
    "Notification": "notificationKind: kind at readAt",
}
# (Fields of one name but of other types are aliased: one selection asks for every kind.)
EVERY_KIND = " ".join(f"... on {kind} {{ {fields} }}" for kind, fields in SHOWN.items())
NODE = f"query($id: ID!) {{ node(id: $id) {{ __typename id {EVERY_KIND} }} }}"
NODES = f"query($ids: [ID!]!) {{ nodes(ids: $ids) {{ __typename id {EVERY_KIND} }} }}"
UNKNOWN = "65f0c0ffee0000000000beef"  # shaped like the service's ids, naming nothing


@dataclass
class Ledger:
    """Ada (PREMIUM_CAREER) bought credits and sent Bob (BASIC) an InMail, which he answered;
    Dan (PREMIUM_CAREER) is a stranger to both. `objects` holds one of Ada's objects of every
    kind (as her own fields show it), keyed by its type name."""

    ada: Person
    bob: Person
    dan: Person
    objects: dict[str, dict[str, Any]]


async def first_node(
    api: Api, token: str, path: str, typename: str, **where: Any
) -> dict[str, Any]:
    data = await api.gql(
        f"{{ viewer {{ {path}(first: 100) {{ nodes {{ __typename id {SHOWN[typename]} }} }} }} }}",
        token=token,
    )
    nodes = data["viewer"][path]["nodes"]
    found: dict[str, Any] = next(n for n in nodes if all(n[k] == v for k, v in where.items()))
    return found


async def build_ledger(api: Api) -> Ledger:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", headline="Analyst")
    bob = await api.create_member("Bob Babbage", "BASIC", card=None)
    dan = await api.create_member("Dan Stranger", "PREMIUM_CAREER")
    assert (await api.purchase(ada, 2))["errors"] == []
    sent = await api.send(ada, bob, subject="The Analytical Engine", body="Shall we talk gears?")
    conversation_id = sent["conversation"]["id"]
    assert (await api.respond(bob, conversation_id, "REPLY", "Gladly, on Tuesday."))["errors"] == []

    data = await api.gql(
        f"query($ada: ID!, $inmail: ID!) {{ member(id: $ada) {{ __typename id {SHOWN['Member']} }} "
        f"conversation(id: $inmail) {{ __typename id {SHOWN['Conversation']} "
        f"messages {{ __typename id {SHOWN['Message']} }} }} }}",
        {"ada": ada.id, "inmail": conversation_id},
        ada.token,
    )
    conversation = data["conversation"]
    messages = conversation.pop("messages")
    objects = {
        "Member": data["member"],
        "Conversation": conversation,
        "Message": messages[0],
        "CreditLot": await first_node(api, ada.token, "creditLots", "CreditLot", source="PURCHASE"),
        "LedgerEntry": await first_node(api, ada.token, "ledger", "LedgerEntry", entryKind="DEBIT"),
        "Purchase": await first_node(api, ada.token, "purchases", "Purchase"),
        "Notification": await first_node(
            api, ada.token, "notifications", "Notification", notificationKind="CREDITED_BACK"
        ),
    }
    assert messages[0]["body"] == "Shall we talk gears?"
    return Ledger(ada, bob, dan, objects)


async def test_every_kind_of_object_with_an_id_implements_node(api: Api) -> None:
    data = await api.gql(
        '{ __type(name: "Node") { kind fields { name } possibleTypes { name } } }', token=api.admin
    )
    node = data["__type"]
    assert node["kind"] == "INTERFACE"
    assert node["fields"] == [{"name": "id"}]
    assert sorted(t["name"] for t in node["possibleTypes"]) == sorted(SHOWN)


async def test_the_owner_fetches_each_of_her_objects_by_the_id_the_api_gave_her(
    api: Api,
) -> None:
    ledger = await build_ledger(api)

    for kind, shown in ledger.objects.items():
        data = await api.gql(NODE, {"id": shown["id"]}, ledger.ada.token)
        assert data["node"] == shown, kind
        assert data["node"]["__typename"] == kind


async def test_an_admin_fetches_every_object_of_every_member(api: Api) -> None:
    ledger = await build_ledger(api)

    for kind, shown in ledger.objects.items():
        data = await api.gql(NODE, {"id": shown["id"]}, api.admin)
        assert data["node"] == shown, kind


async def test_the_other_party_fetches_the_inmail_and_its_messages_but_nothing_private(
    api: Api,
) -> None:
    ledger = await build_ledger(api)

    seen = {
        kind: (await api.gql(NODE, {"id": shown["id"]}, ledger.bob.token))["node"]
        for kind, shown in ledger.objects.items()
    }
    assert seen == {
        "Member": ledger.objects["Member"],
        "Conversation": ledger.objects["Conversation"],
        "Message": ledger.objects["Message"],
        "CreditLot": None,
        "LedgerEntry": None,
        "Purchase": None,
        "Notification": None,
    }


async def test_to_a_stranger_a_private_object_reads_exactly_like_an_unknown_id(api: Api) -> None:
    ledger = await build_ledger(api)
    unknown = await api.raw(NODE, {"id": UNKNOWN}, ledger.dan.token)
    assert unknown == {"data": {"node": None}, "extensions": unknown["extensions"]}

    for kind, shown in ledger.objects.items():
        body = await api.raw(NODE, {"id": shown["id"]}, ledger.dan.token)
        if kind == "Member":
            assert body["data"]["node"] == shown  # a public profile
        else:
            assert body == unknown, kind


async def test_a_members_profile_fetched_by_id_keeps_its_private_fields_private(api: Api) -> None:
    ledger = await build_ledger(api)
    query = "query($id: ID!) { node(id: $id) { id ... on Member { name inmailBalance } } }"

    body = await api.raw(query, {"id": ledger.ada.id}, ledger.dan.token)
    assert body["data"]["node"] == {
        "id": ledger.ada.id,
        "name": "Ada Lovelace",
        "inmailBalance": None,
    }
    assert graphql_error_codes(body) == ["FORBIDDEN"]
    own = await api.gql(query, {"id": ledger.ada.id}, ledger.ada.token)
    assert own["node"]["inmailBalance"] == 7  # 5 a month, 2 bought, 1 sent, 1 credited back


async def test_an_anonymous_caller_is_asked_to_sign_in_as_for_the_fields_themselves(
    api: Api,
) -> None:
    ledger = await build_ledger(api)

    member = await api.raw("query($id: ID!) { member(id: $id) { id } }", {"id": ledger.ada.id})
    assert member["data"] == {"member": None}
    [refusal] = member["errors"]
    assert refusal["extensions"]["code"] == "UNAUTHENTICATED"

    for kind, shown in ledger.objects.items():
        body = await api.raw(NODE, {"id": shown["id"]}, None)
        assert body["data"] == {"node": None}, kind
        assert [e["message"] for e in body["errors"]] == [refusal["message"]], kind
        assert graphql_error_codes(body) == ["UNAUTHENTICATED"], kind
    ids = [o["id"] for o in ledger.objects.values()]
    body = await api.raw(NODES, {"ids": ids}, None)
    assert body["data"] is None  # nodes is a non-null list: the refusal nulls the whole answer
    assert graphql_error_codes(body) == ["UNAUTHENTICATED"]


async def test_nodes_answers_in_the_order_asked_with_null_for_unknown_and_foreign_ids(
    api: Api,
) -> None:
    ledger = await build_ledger(api)
    o = ledger.objects
    ids = [
        o["Message"]["id"],
        UNKNOWN,
        o["CreditLot"]["id"],  # Ada's: not Bob's to see
        o["Member"]["id"],
        o["Conversation"]["id"],
        "not-even-an-object-id",
        o["Message"]["id"],  # asked twice, answered twice
        o["Notification"]["id"],  # Ada's
    ]

    as_bob = await api.gql(NODES, {"ids": ids}, ledger.bob.token)
    assert as_bob["nodes"] == [
        o["Message"],
        None,
        None,
        o["Member"],
        o["Conversation"],
        None,
        o["Message"],
        None,
    ]
    as_ada = await api.gql(NODES, {"ids": ids}, ledger.ada.token)
    assert as_ada["nodes"] == [
        o["Message"],
        None,
        o["CreditLot"],
        o["Member"],
        o["Conversation"],
        None,
        o["Message"],
        o["Notification"],
    ]
    assert (await api.gql(NODES, {"ids": []}, ledger.ada.token))["nodes"] == []


async def test_more_than_a_hundred_ids_are_refused_with_a_clear_error(api: Api) -> None:
    ada = await api.create_member()
    hundred = [f"{i:024x}" for i in range(100)]

    body = await api.raw(NODES, {"ids": [*hundred, ada.id]}, ada.token)
    assert graphql_error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["message"] == (
        "ids: at most 100 ids at a time; ask for the rest in another request."
    )
    assert body["data"] is None
    exactly = await api.gql(NODES, {"ids": [*hundred[1:], ada.id]}, ada.token)
    assert exactly["nodes"][:99] == [None] * 99
    assert exactly["nodes"][99]["id"] == ada.id


def cost_of(body: dict[str, Any]) -> int:
    cost: int = body["extensions"]["cost"]["requestedQueryCost"]
    return cost


async def test_the_cost_of_nodes_counts_the_ids_asked_for_up_to_the_cap(api: Api) -> None:
    ada = await api.create_member()
    ledger_page = (
        "query($ids: [ID!]!) { nodes(ids: $ids) { id "
        "... on Member { ledger(first: 10) { nodes { id } } } } }"
    )

    one = await api.raw("query($id: ID!) { node(id: $id) { id } }", {"id": ada.id}, ada.token)
    assert cost_of(one) == 1
    three = await api.raw(
        "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": [ada.id] * 3}, ada.token
    )
    assert cost_of(three) == 3
    literal = await api.raw(
        f'{{ nodes(ids: ["{ada.id}", "{UNKNOWN}"]) {{ id }} }}', token=ada.token
    )
    assert cost_of(literal) == 2
    nested = await api.raw(ledger_page, {"ids": [ada.id, UNKNOWN]}, ada.token)
    assert cost_of(nested) == 2 * (1 + (1 + R) + 10)
    too_many = await api.raw(ledger_page, {"ids": [UNKNOWN] * 150}, ada.token)
    assert cost_of(too_many) == 100 * (1 + (1 + R) + 10)  # counted at the cap; refused all the same
    assert graphql_error_codes(too_many) == ["BAD_USER_INPUT"]


async def test_nodes_of_deep_objects_are_refused_by_cost_before_anything_is_read(
    api: Api,
) -> None:
    ada = await api.create_member()
    deep = (
        "query($ids: [ID!]!) { nodes(ids: $ids) { id ... on Member { "
        "conversations(first: 100) { nodes { messages { id } } } } } }"
    )

    few = await api.raw(deep, {"ids": [ada.id, UNKNOWN]}, ada.token)
    assert cost_of(few) == 2 * (1 + (1 + R) + 100 * (1 + 100))
    assert few["data"]["nodes"][0] == {"id": ada.id, "conversations": {"nodes": []}}
    many = await api.raw(deep, {"ids": [UNKNOWN] * 100}, ada.token)
    assert cost_of(many) == 100 * (1 + (1 + R) + 100 * (1 + 100))
    assert graphql_error_codes(many) == ["QUERY_TOO_COSTLY"]


async def test_empty_pages_aliased_under_repeated_ids_are_refused_as_the_reads_they_are(
    api: Api,
) -> None:
    """Thirty aliased connections of no items under a hundred ids are 9,000 reads; each is
    costed as one, so the request is refused before any of them is made."""
    ada = await api.create_member()
    fields = " ".join(
        f"l{i}: ledger(first: 0) {{ totalCount pageInfo {{ hasPreviousPage }} }}" for i in range(30)
    )
    query = f"query($ids: [ID!]!) {{ nodes(ids: $ids) {{ ... on Member {{ {fields} }} }} }}"

    flood = await api.raw(query, {"ids": [ada.id] * 100}, ada.token)
    few = await api.raw(query, {"ids": [ada.id] * 2}, ada.token)

    assert graphql_error_codes(flood) == ["QUERY_TOO_COSTLY"]
    assert flood.get("data") is None
    assert cost_of(flood) == 100 * (1 + 30 * (1 + 3 * R + 1))
    assert few.get("errors") is None
    assert [node["l29"]["totalCount"] for node in few["data"]["nodes"]] == [1, 1]


# --- round trips ------------------------------------------------------------------------------


async def test_nodes_reads_each_collection_a_fixed_number_of_times_however_many_ids_it_is_given(
    mongodb_uri: str, db_name: str
) -> None:
    counter = ReadLog()
    async with open_api(mongodb_uri, db_name, listeners=[counter]) as api:
        ledger = await build_ledger(api)
        ids = [o["id"] for o in ledger.objects.values()]
        padded = ids + [f"{i:024x}" for i in range(100 - len(ids))]

        counter.listening = True
        few = await api.gql(NODES, {"ids": ids}, api.admin)
        few_reads = counter.collections_read()
        many = await api.gql(NODES, {"ids": padded}, api.admin)
        many_reads = counter.collections_read()
        message_alone = await api.gql(NODES, {"ids": [ledger.objects["Message"]["id"]]}, api.admin)
        message_reads = counter.collections_read()
        with pytest.raises(AssertionError):
            await api.gql(NODES, {"ids": [*padded, UNKNOWN]}, api.admin)
        refused_reads = counter.collections_read()
        counter.listening = False

    assert few["nodes"] == list(ledger.objects.values())
    assert many["nodes"][: len(ids)] == few["nodes"]
    expected = {
        "members": 1,
        # By id (the message's conversation, who may read it, was among the ids), and by the id
        # of the first message an InMail keeps in it.
        "conversations": 2,
        "messages": 1,
        "credit_lots": 1,
        "ledger": 1,
        "purchases": 1,
        "notifications": 1,
    }
    assert Counter(few_reads) == expected
    assert Counter(many_reads) == expected
    # The id names no conversation; the message's own comes with it (joined to the message's
    # read), so no read follows: someone else's message is answered as fast as an unknown id.
    assert message_alone["nodes"] == [ledger.objects["Message"]]
    assert Counter(message_reads) == expected
    assert refused_reads == []


async def test_someone_elses_message_is_refused_with_the_reads_of_an_unknown_id(
    mongodb_uri: str, db_name: str
) -> None:
    """Whose a message is comes in the reads that find it: a stranger asking for it makes the
    same reads, in the same round trips, as for an id that names nothing (no read follows that
    would tell the two apart by time)."""
    counter = ReadLog()
    async with open_api(mongodb_uri, db_name, listeners=[counter]) as api:
        ledger = await build_ledger(api)
        message_id = ledger.objects["Message"]["id"]
        query = "query($id: ID!) { node(id: $id) { id } }"
        await api.gql(query, {"id": UNKNOWN}, ledger.dan.token)  # Dan's own record, read once

        counter.listening = True
        theirs = await api.gql(query, {"id": message_id}, ledger.dan.token)
        their_reads = counter.reads[:]
        counter.collections_read()
        nothing = await api.gql(query, {"id": UNKNOWN}, ledger.dan.token)
        nothing_reads = counter.reads[:]
        counter.listening = False

    assert theirs == nothing == {"node": None}
    assert sorted(their_reads) == sorted(nothing_reads)


# --- pageInfo ---------------------------------------------------------------------------------

PAGE = (
    "query($first: Int, $after: String) {{ viewer {{ {path}(first: $first, after: $after) "
    "{{ edges {{ cursor }} pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }} }} "
    "}} }}"
)


async def page_of(
    api: Api, member: Person, path: str, first: int, after: str | None = None
) -> dict[str, Any]:
    data = await api.gql(PAGE.format(path=path), {"first": first, "after": after}, member.token)
    page: dict[str, Any] = data["viewer"][path]
    return page


@pytest.mark.parametrize(
    "path",
    [
        "conversations",
        "creditLots",
        "ledger",
        "purchases",
        "notifications",
    ],
)
async def test_page_info_on_the_first_a_later_and_an_empty_page(api: Api, path: str) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    grace = await api.create_member("Grace Hopper", "PREMIUM_CAREER")
    for quantity in (1, 2, 3):
        assert (await api.purchase(ada, quantity))["errors"] == []
    for name in ("Bob Basic", "Cy Basic"):
        assert (await api.send(ada, await api.create_member(name, "BASIC")))["errors"] == []
    assert (await api.send(grace, ada))["errors"] == []

    first = await page_of(api, ada, path, 2)
    cursors = [e["cursor"] for e in first["edges"]]
    assert first["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": cursors[0],
        "endCursor": cursors[1],
    }
    later = await page_of(api, ada, path, 1, after=cursors[1])
    assert later["pageInfo"]["hasPreviousPage"] is True
    assert later["pageInfo"]["startCursor"] == later["edges"][0]["cursor"]
    assert later["pageInfo"]["endCursor"] == later["edges"][0]["cursor"]
    nothing_asked = await page_of(api, ada, path, 0, after=cursors[0])
    assert nothing_asked["edges"] == []
    assert nothing_asked["pageInfo"]["hasPreviousPage"] is True
    assert nothing_asked["pageInfo"]["startCursor"] is None

    newcomer = await api.create_member("Eve Newcomer", "BASIC", card=None)
    empty = await page_of(api, newcomer, path, 5)
    assert empty == {
        "edges": [],
        "pageInfo": {
            "hasNextPage": False,
            "hasPreviousPage": False,
            "startCursor": None,
            "endCursor": None,
        },
    }


async def test_after_the_last_item_the_page_is_empty_yet_items_precede_it(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    whole = await page_of(api, ada, "ledger", 100)
    assert len(whole["edges"]) == 1  # her first month's grant

    past_the_end = await page_of(api, ada, "ledger", 10, after=whole["pageInfo"]["endCursor"])
    assert past_the_end == {
        "edges": [],
        "pageInfo": {
            "hasNextPage": False,
            "hasPreviousPage": True,
            "startCursor": None,
            "endCursor": None,
        },
    }


async def test_has_previous_page_counts_only_items_still_in_the_list(api: Api) -> None:
    """Bob reads his newest unread notice, then pages on through the unread ones: nothing
    unread precedes the next page any more."""
    bob = await api.create_member("Bob Basic", "BASIC", card=None)
    for name in ("Ada Sender", "Cy Sender", "Dan Sender"):
        sender = await api.create_member(name, "PREMIUM_CAREER")
        assert (await api.send(sender, bob))["errors"] == []
        api.advance(minutes=1)
    query = (
        "query($after: String) { viewer { notifications(unreadOnly: true, first: 1, "
        "after: $after) { nodes { id } pageInfo { hasPreviousPage startCursor endCursor } } } }"
    )
    newest = (await api.gql(query, {"after": None}, bob.token))["viewer"]["notifications"]
    still_unread = (await api.gql(query, {"after": newest["pageInfo"]["endCursor"]}, bob.token))[
        "viewer"
    ]["notifications"]
    assert still_unread["pageInfo"]["hasPreviousPage"] is True

    marked = await api.gql(
        "mutation($i: MarkNotificationsReadInput!) { markNotificationsRead(input: $i) "
        "{ unreadCount errors { code } } }",
        {"i": {"ids": [newest["nodes"][0]["id"]]}},
        bob.token,
    )
    assert marked["markNotificationsRead"] == {"unreadCount": 2, "errors": []}
    after_reading = (await api.gql(query, {"after": newest["pageInfo"]["endCursor"]}, bob.token))[
        "viewer"
    ]["notifications"]
    assert after_reading["nodes"] == still_unread["nodes"]
    assert after_reading["pageInfo"]["hasPreviousPage"] is False


async def test_a_threads_message_pages_say_where_they_start_and_what_precedes_them(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    bob = await api.create_member("Bob Basic", "BASIC", card=None)
    conversation_id = (await api.send(ada, bob))["conversation"]["id"]
    assert (await api.respond(bob, conversation_id, "REPLY", "Tuesday works."))["errors"] == []
    query = (
        "query($id: ID!, $after: String) { conversation(id: $id) { messageConnection(first: 1, "
        "after: $after) { edges { cursor node { body } } pageInfo { hasNextPage "
        "hasPreviousPage startCursor endCursor } } } }"
    )

    first = (await api.gql(query, {"id": conversation_id, "after": None}, bob.token))[
        "conversation"
    ]["messageConnection"]
    assert first["pageInfo"]["hasPreviousPage"] is False
    assert first["pageInfo"]["startCursor"] == first["edges"][0]["cursor"]
    second = (
        await api.gql(
            query, {"id": conversation_id, "after": first["pageInfo"]["endCursor"]}, bob.token
        )
    )["conversation"]["messageConnection"]
    assert [e["node"]["body"] for e in second["edges"]] == ["Tuesday works."]
    assert second["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "startCursor": second["edges"][0]["cursor"],
        "endCursor": second["edges"][0]["cursor"],
    }


async def test_has_previous_page_is_asked_of_the_database_only_when_selected(
    mongodb_uri: str, db_name: str
) -> None:
    counter = ReadLog()
    async with open_api(mongodb_uri, db_name, listeners=[counter]) as api:
        ada = (await build_ledger(api)).ada
        query = (
            "query($after: String) {{ viewer {{ ledger(first: 1, after: $after) "
            "{{ edges {{ cursor }} pageInfo {{ endCursor {extra} }} }} }} }}"
        )
        first = await api.gql(query.format(extra=""), {"after": None}, ada.token)
        after = first["viewer"]["ledger"]["pageInfo"]["endCursor"]

        counter.listening = True
        await api.gql(query.format(extra=""), {"after": after}, ada.token)
        without = counter.collections_read()
        second = await api.gql(query.format(extra="hasPreviousPage"), {"after": after}, ada.token)
        with_it = counter.collections_read()
        counter.listening = False

    assert second["viewer"]["ledger"]["pageInfo"]["hasPreviousPage"] is True
    assert without.count("ledger") == 1
    assert with_it.count("ledger") == 2
