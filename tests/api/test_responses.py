"""Responses and credit-back (SPEC 5), and free messages after a response, through the API."""

from __future__ import annotations

from typing import Any

import pytest

from support import (
    Api,
    Person,
    ada_and_grace,
    cancel_subscription,
    codes,
    ledger_of,
    lots_of,
    send_message,
)


async def an_inmail(api: Api) -> tuple[Person, Person, str]:
    ada, grace = await ada_and_grace(api)
    sent = await api.send(ada, grace)
    assert sent["errors"] == []
    return ada, grace, sent["conversation"]["id"]


async def spend(api: Api, sender: Person, count: int) -> None:
    for i in range(count):
        reader = await api.create_member(f"Reader {i}", "BASIC")
        assert (await api.send(sender, reader))["errors"] == []


async def credit_backs_of(api: Api, member: Person) -> list[dict[str, Any]]:
    return [entry for entry in await ledger_of(api, member) if entry["kind"] == "CREDIT_BACK"]


@pytest.mark.parametrize(
    ("response", "body", "state"),
    [
        ("INTERESTED", None, "ACCEPTED"),
        ("MAYBE_LATER", None, "ACCEPTED"),
        ("NOT_INTERESTED", None, "DECLINED"),
        ("REPLY", "Yes, Tuesday works.", "ACCEPTED"),
    ],
)
async def test_each_kind_of_response_credits_the_sender_back_once_and_sets_its_state(
    api: Api, response: str, body: str | None, state: str
) -> None:
    ada, grace, conversation_id = await an_inmail(api)
    api.advance(days=2)

    result = await api.respond(grace, conversation_id, response, body)

    assert result["errors"] == []
    assert result["creditedBack"] is True
    assert result["conversation"] == {
        "id": conversation_id,
        "state": state,
        "response": response,
        "respondedAt": "2026-01-17T09:00:00Z",
        "creditedBack": True,
    }
    assert await api.balance(ada) == 5
    [credit_back] = await credit_backs_of(api, ada)
    assert (credit_back["delta"], credit_back["balanceAfter"]) == (1, 5)
    assert credit_back["conversation"] == {"id": conversation_id}
    lot = (await lots_of(api, ada))[0]  # newest first
    assert lot["source"] == "CREDIT_BACK"
    assert (lot["grantedAt"], lot["expiresAt"]) == ("2026-01-17T09:00:00Z", "2026-04-17T09:00:00Z")
    assert await api.balance(grace) == 0  # the recipient's own credits are untouched


async def test_the_forfeit_of_a_credit_back_lot_names_the_conversation_that_earned_it(
    api: Api,
) -> None:
    """SPEC 3: the entry that takes a lot away belongs to what the lot's grant belonged to."""
    ada, grace, conversation_id = await an_inmail(api)
    assert (await api.respond(grace, conversation_id, "INTERESTED"))["errors"] == []
    assert (await cancel_subscription(api, ada))["errors"] == []

    data = await api.gql(
        "{ viewer { ledger(first: 10) { nodes { kind delta lot { source conversation { id } } "
        "conversation { id } } } } }",
        token=ada.token,
    )

    named = [
        (e["kind"], e["delta"], e["conversation"])
        for e in data["viewer"]["ledger"]["nodes"]
        if e["lot"] and e["lot"]["source"] == "CREDIT_BACK"
    ]
    earned_by = {"id": conversation_id}
    assert named == [("FORFEIT", -1, earned_by), ("CREDIT_BACK", 1, earned_by)]
    lots = [e["lot"] for e in data["viewer"]["ledger"]["nodes"] if e["lot"]]
    assert {lot["source"]: lot["conversation"] for lot in lots} == {
        "CREDIT_BACK": earned_by,
        "MONTHLY_ALLOTMENT": None,
    }


async def test_a_reply_keeps_its_body_as_a_message_in_the_conversation(api: Api) -> None:
    ada, grace, conversation_id = await an_inmail(api)

    await api.respond(grace, conversation_id, "REPLY", "  Yes, Tuesday works.  ")

    data = await api.gql(
        "query($id: ID!) { conversation(id: $id) { messages { body author { id } } } }",
        {"id": conversation_id},
        ada.token,
    )
    assert data["conversation"]["messages"][-1] == {
        "body": "Yes, Tuesday works.",
        "author": {"id": grace.id},
    }


async def test_a_reply_without_a_body_is_invalid_input_and_changes_nothing(api: Api) -> None:
    ada, grace, conversation_id = await an_inmail(api)

    for body in [None, "", "   "]:
        result = await api.respond(grace, conversation_id, "REPLY", body)

        assert codes(result) == ["INVALID_INPUT"], body
        assert result["errors"][0]["field"] == "body"
        assert result["creditedBack"] is False
    assert await api.balance(ada) == 4
    # The InMail still awaits a response, which can still come.
    assert (await api.respond(grace, conversation_id, "INTERESTED"))["creditedBack"] is True


async def test_a_reply_over_2000_characters_is_invalid_input(api: Api) -> None:
    ada, grace, conversation_id = await an_inmail(api)

    result = await api.respond(grace, conversation_id, "REPLY", "x" * 2001)

    assert codes(result) == ["INVALID_INPUT"]
    assert await api.balance(ada) == 4


async def test_only_the_recipient_may_respond(api: Api) -> None:
    ada, _grace, conversation_id = await an_inmail(api)

    by_sender = await api.respond(ada, conversation_id, "INTERESTED")

    assert codes(by_sender) == ["NOT_RECIPIENT"]
    assert await api.balance(ada) == 4
    assert await credit_backs_of(api, ada) == []


async def test_a_stranger_responding_is_told_the_inmail_does_not_exist(api: Api) -> None:
    ada, _grace, conversation_id = await an_inmail(api)
    mallory = await api.create_member("Mallory Meddler", "PREMIUM_CAREER")

    by_stranger = await api.respond(mallory, conversation_id, "INTERESTED")

    assert codes(by_stranger) == ["NOT_FOUND"]
    assert await api.balance(ada) == 4


async def test_responding_to_an_unknown_conversation_is_not_found(api: Api) -> None:
    grace = await api.create_member("Grace Hopper", "BASIC")

    result = await api.respond(grace, "000000000000000000000000", "INTERESTED")

    assert codes(result) == ["NOT_FOUND"]


async def test_a_second_response_is_refused_with_already_responded(api: Api) -> None:
    ada, grace, conversation_id = await an_inmail(api)
    await api.respond(grace, conversation_id, "NOT_INTERESTED")

    second = await api.respond(grace, conversation_id, "REPLY", "Actually, yes!")

    assert codes(second) == ["ALREADY_RESPONDED"]
    assert await api.balance(ada) == 5
    assert len(await credit_backs_of(api, ada)) == 1
    data = await api.gql(
        "query($id: ID!) { conversation(id: $id) { state response messages { body } } }",
        {"id": conversation_id},
        grace.token,
    )
    assert data["conversation"]["state"] == "DECLINED"
    assert data["conversation"]["response"] == "NOT_INTERESTED"
    assert len(data["conversation"]["messages"]) == 1


async def test_a_response_at_90_days_is_recorded_but_earns_nothing(api: Api) -> None:
    ada, grace, conversation_id = await an_inmail(api)
    api.advance(days=90)
    await spend(api, ada, 2)  # keep the sender below the cap, where a credit-back would show
    balance_before = await api.balance(ada)
    assert balance_before == 9  # 15 at the cap, minus 4 expired at 90 days, minus 2 spent

    result = await api.respond(grace, conversation_id, "INTERESTED")

    assert result["errors"] == []
    assert result["creditedBack"] is False
    assert result["conversation"]["state"] == "ACCEPTED"
    assert result["conversation"]["creditedBack"] is False
    assert result["conversation"]["respondedAt"] == "2026-04-15T09:00:00Z"
    assert await api.balance(ada) == balance_before
    assert await credit_backs_of(api, ada) == []
    assert [lot for lot in await lots_of(api, ada) if lot["source"] == "CREDIT_BACK"] == []


async def test_a_response_one_second_before_90_days_earns_the_credit_back(api: Api) -> None:
    ada, grace, conversation_id = await an_inmail(api)
    api.advance(days=90, seconds=-1)
    await spend(api, ada, 2)  # renewals have filled the balance to its cap; make room
    assert await api.balance(ada) == 13

    result = await api.respond(grace, conversation_id, "MAYBE_LATER")

    assert result["creditedBack"] is True
    assert await api.balance(ada) == 14
    [credit_back] = await credit_backs_of(api, ada)
    assert credit_back["at"] == "2026-04-15T08:59:59Z"
    assert credit_back["delta"] == 1


async def test_a_response_while_the_sender_is_cancelled_earns_nothing(api: Api) -> None:
    ada, grace, conversation_id = await an_inmail(api)
    assert (await cancel_subscription(api, ada))["errors"] == []

    result = await api.respond(grace, conversation_id, "INTERESTED")

    assert result["errors"] == []
    assert result["creditedBack"] is False
    assert result["conversation"]["state"] == "ACCEPTED"
    assert await api.balance(ada) == 0
    assert await credit_backs_of(api, ada) == []


async def test_a_credit_back_at_the_cap_is_clamped_to_zero_and_still_leaves_a_ledger_entry(
    api: Api,
) -> None:
    ada, grace, conversation_id = await an_inmail(api)  # 4 left of a cap of 15
    assert (await api.purchase(ada, 10))["errors"] == []
    assert (await api.purchase(ada, 1))["errors"] == []
    assert await api.balance(ada) == 15

    result = await api.respond(grace, conversation_id, "INTERESTED")

    assert result["errors"] == []
    assert result["creditedBack"] is False
    assert await api.balance(ada) == 15
    [credit_back] = await credit_backs_of(api, ada)
    assert (credit_back["delta"], credit_back["balanceAfter"]) == (0, 15)
    assert credit_back["lot"] is None
    assert credit_back["conversation"] == {"id": conversation_id}


async def test_after_a_response_both_parties_may_message_for_free(api: Api) -> None:
    ada, grace, conversation_id = await an_inmail(api)
    await api.respond(grace, conversation_id, "INTERESTED")

    from_grace = await send_message(api, grace, "When suits you?", conversation_id=conversation_id)
    from_ada = await send_message(api, ada, "Tuesday at ten.", conversation_id=conversation_id)

    assert from_grace["errors"] == from_ada["errors"] == []
    bodies = [m["body"] for m in from_ada["conversation"]["messages"]]
    assert bodies[-2:] == ["When suits you?", "Tuesday at ten."]
    assert await api.balance(ada) == 5  # 5 - 1 + 1: messages cost nothing


async def test_no_free_message_in_an_inmail_that_awaits_a_response(api: Api) -> None:
    ada, _grace, conversation_id = await an_inmail(api)

    result = await send_message(api, ada, "Hello again?", conversation_id=conversation_id)

    assert codes(result) == ["AWAITING_RESPONSE"]


async def test_connections_message_each_other_for_free(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "BASIC")
    charles = await api.create_member("Charles Babbage", "BASIC")
    await api.connect(ada, charles)

    first = await send_message(api, ada, "Dinner on Friday?", recipient=charles)
    reply = await send_message(api, charles, "Gladly.", recipient=ada)

    assert first["errors"] == reply["errors"] == []
    assert first["conversation"]["id"] == reply["conversation"]["id"]
    assert [m["body"] for m in reply["conversation"]["messages"]] == [
        "Dinner on Friday?",
        "Gladly.",
    ]


async def test_a_free_message_to_someone_not_connected_gets_not_connected(api: Api) -> None:
    ada, grace = await ada_and_grace(api)

    result = await send_message(api, ada, "Hi!", recipient=grace)

    assert codes(result) == ["NOT_CONNECTED"]
    assert await api.balance(ada) == 5
