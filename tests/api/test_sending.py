"""Sending an InMail (SPEC 4), and spending credits from lots (SPEC 3), through the API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from inmail.clock import ManualClock
from inmail.domain.model import LedgerEntry
from inmail.services import charges
from inmail.services import inmail as inmail_service
from inmail.services.base import CLOCK_SKEW, bring_up_to_date
from support import (
    Api,
    Person,
    ada_and_grace,
    api_time,
    cancel_subscription,
    change_plan,
    charges_of,
    codes,
    ledger_of,
    lots_of,
    send_and_retry,
    subscription_of,
    update_card,
)

DECLINING_CARD = {"brand": "Visa", "last4": "0002", "expMonth": 12, "expYear": 2030}
CARD_EXPIRING_JANUARY_2026 = {"brand": "Visa", "last4": "1111", "expMonth": 1, "expYear": 2026}


async def conversations_of(api: Api, member: Person) -> list[dict[str, Any]]:
    data = await api.gql(
        "{ viewer { conversations(first: 100) { totalCount nodes { id state subject "
        "sender { id } recipient { id } messages { body author { id } } } } } }",
        token=member.token,
    )
    nodes: list[dict[str, Any]] = data["viewer"]["conversations"]["nodes"]
    return nodes


async def refused_without_a_trace(api: Api, sender: Person, result: dict[str, Any]) -> None:
    """A refused send leaves no conversation and no ledger entry beyond the first grant."""
    assert result["conversation"] is None
    assert result["creditsLeft"] is None
    assert await conversations_of(api, sender) == []
    assert [entry["kind"] for entry in await ledger_of(api, sender)] == ["GRANT"]


async def refused_as_invalid_input(
    api: Api, sender: Person, recipient: Person, subject: str, body: str, field: str
) -> str:
    """A send of this subject and body, refused as invalid input on `field` without a trace;
    the error's message."""
    result = await api.send(sender, recipient, subject=subject, body=body)
    assert codes(result) == ["INVALID_INPUT"], (subject[:20], body[:20])
    assert result["errors"][0]["field"] == field
    await refused_without_a_trace(api, sender, result)
    message: str = result["errors"][0]["message"]
    return message


async def test_a_successful_inmail_costs_one_credit_and_awaits_a_response(api: Api) -> None:
    ada, grace = await ada_and_grace(api)

    result = await api.send(ada, grace, subject="  Compilers?  ", body="  Let us talk.  ")

    assert result["errors"] == []
    assert result["creditsLeft"] == 4
    assert result["conversation"]["state"] == "AWAITING_RESPONSE"
    assert result["conversation"]["subject"] == "Compilers?"
    assert result["conversation"]["sentAt"] == "2026-01-15T09:00:00Z"
    assert await api.balance(ada) == 4
    [conversation] = await conversations_of(api, ada)
    assert conversation["sender"] == {"id": ada.id}
    assert conversation["recipient"] == {"id": grace.id}
    assert conversation["messages"] == [{"body": "Let us talk.", "author": {"id": ada.id}}]
    debit = (await ledger_of(api, ada))[-1]
    assert (debit["kind"], debit["delta"], debit["balanceAfter"]) == ("DEBIT", -1, 4)
    assert debit["conversation"] == {"id": conversation["id"]}
    assert [c["id"] for c in await conversations_of(api, grace)] == [conversation["id"]]


async def test_a_basic_member_gets_upgrade_required(api: Api) -> None:
    basil = await api.create_member("Basil Basic", "BASIC")
    grace = await api.create_member("Grace Hopper", "BASIC")

    result = await api.send(basil, grace)

    assert codes(result) == ["UPGRADE_REQUIRED"]
    assert result["conversation"] is None
    assert await conversations_of(api, basil) == []
    assert await api.balance(basil) == 0


async def test_a_connection_gets_recipient_is_connection_and_no_credit_is_spent(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    charles = await api.create_member("Charles Babbage", "BASIC")
    await api.connect(ada, charles)

    result = await api.send(ada, charles)

    assert codes(result) == ["RECIPIENT_IS_CONNECTION"]
    assert result["errors"][0]["field"] == "recipientId"
    assert await api.balance(ada) == 5
    await refused_without_a_trace(api, ada, result)


async def test_a_member_cannot_inmail_themselves(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    result = await api.send(ada, ada)

    assert codes(result) == ["CANNOT_MESSAGE_SELF"]
    assert await api.balance(ada) == 5
    await refused_without_a_trace(api, ada, result)


async def test_an_unknown_recipient_is_not_found(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    for recipient_id in ["000000000000000000000000", "no-such-member", ""]:
        result = await api.send(ada, recipient_id)

        assert codes(result) == ["NOT_FOUND"], recipient_id
        await refused_without_a_trace(api, ada, result)
    assert await api.balance(ada) == 5


async def test_subject_and_body_outside_their_lengths_after_trimming_are_invalid_input(
    api: Api,
) -> None:
    ada, grace = await ada_and_grace(api)
    cases = [
        ("", "Hello there.", "subject"),
        ("   \n\t ", "Hello there.", "subject"),
        ("S" * 201, "Hello there.", "subject"),
        (" " + "S" * 201 + " ", "Hello there.", "subject"),
        ("Hello", "", "body"),
        ("Hello", "    ", "body"),
        ("Hello", "B" * 2001, "body"),
    ]

    for subject, body, field in cases:
        await refused_as_invalid_input(api, ada, grace, subject, body, field)
    assert await api.balance(ada) == 5


async def test_text_that_shows_nothing_or_holds_control_characters_is_refused_and_spends_nothing(
    api: Api,
) -> None:
    ada, grace = await ada_and_grace(api)
    cases = [
        ("\u3164", "Hello there.", "subject", "subject must not be blank."),
        ("\u2800", "Hello there.", "subject", "subject must not be blank."),
        ("Hello", "\u0301\ufe0f", "body", "body must not be blank."),
        ("a\x00b", "Hello there.", "subject", "found U+0000"),
        ("Hi\x07there", "Hello there.", "subject", "found U+0007"),
        ("Hello", "\x1b[2Jgone", "body", "found U+001B"),
    ]

    for subject, body, field, words in cases:
        message = await refused_as_invalid_input(api, ada, grace, subject, body, field)

        assert words in message, (subject, body)
    assert await api.balance(ada) == 5
    sent = await api.send(ada, grace, subject="Caf\u00e9\n\u2615\ufe0f", body="Line one\n\tTwo")
    assert sent["errors"] == []
    assert sent["conversation"]["subject"] == "Caf\u00e9 \u2615\ufe0f"  # one line


async def test_subject_and_body_at_their_limits_after_trimming_are_accepted(api: Api) -> None:
    ada, grace = await ada_and_grace(api)

    result = await api.send(
        ada, grace, subject="   " + "S" * 200 + "   ", body="\n" + "B" * 2000 + "\n"
    )

    assert result["errors"] == []
    assert result["conversation"]["subject"] == "S" * 200
    [conversation] = await conversations_of(api, ada)
    assert conversation["messages"][0]["body"] == "B" * 2000


async def test_a_cancelled_member_gets_subscription_inactive(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    assert (await cancel_subscription(api, ada))["errors"] == []

    result = await api.send(ada, grace)

    assert codes(result) == ["SUBSCRIPTION_INACTIVE"]
    assert await conversations_of(api, ada) == []


async def test_a_member_moved_to_basic_gets_upgrade_required(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    assert (await change_plan(api, ada, "BASIC"))["errors"] == []

    result = await api.send(ada, grace)

    assert codes(result) == ["UPGRADE_REQUIRED"]


async def test_an_expired_card_blocks_sending_until_the_payment_method_is_updated(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", card=CARD_EXPIRING_JANUARY_2026)
    grace = await api.create_member("Grace Hopper", "BASIC")
    api.advance(days=16, hours=14, minutes=59, seconds=59)  # 2026-01-31T23:59:59Z
    assert (await api.send(ada, grace))["errors"] == []  # good through its expiry month
    linus = await api.create_member("Linus Torvalds", "BASIC")

    api.advance(seconds=1)  # 2026-02-01T00:00:00Z
    refused = await api.send(ada, linus)

    assert codes(refused) == ["PAYMENT_METHOD_EXPIRED"]
    assert refused["errors"][0]["field"] is None  # the card on file is no input of the send
    assert await api.balance(ada) == 4
    assert len(await conversations_of(api, ada)) == 1
    new_card = {"brand": "Visa", "last4": "4242", "expMonth": 12, "expYear": 2030}
    assert (await update_card(api, ada, new_card))["errors"] == []
    assert (await api.send(ada, linus))["errors"] == []
    assert await api.balance(ada) == 3


async def test_a_second_inmail_while_the_first_awaits_a_response_gets_awaiting_response(
    api: Api,
) -> None:
    ada, grace = await ada_and_grace(api)
    first = await api.send(ada, grace)

    second = await api.send(ada, grace, subject="Following up", body="Did you see my note?")

    assert codes(second) == ["AWAITING_RESPONSE"]
    assert await api.balance(ada) == 4
    assert [c["id"] for c in await conversations_of(api, ada)] == [first["conversation"]["id"]]


async def test_an_inmail_in_the_other_direction_is_not_blocked_by_one_awaiting_a_response(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    grace = await api.create_member("Grace Hopper", "PREMIUM_CAREER")
    assert (await api.send(ada, grace))["errors"] == []

    assert (await api.send(grace, ada))["errors"] == []


async def test_after_a_response_the_sender_may_inmail_that_recipient_again(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    first = await api.send(ada, grace)
    assert (await api.respond(grace, first["conversation"]["id"], "NOT_INTERESTED"))["errors"] == []

    again = await api.send(ada, grace, subject="One more idea")

    assert again["errors"] == []
    assert again["conversation"]["id"] != first["conversation"]["id"]
    assert again["creditsLeft"] == 4  # 5 - 1 + 1 credited back - 1


async def test_a_member_without_credits_gets_insufficient_credits(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    recipients = [await api.create_member(f"Reader {i}", "BASIC") for i in range(6)]
    for recipient in recipients[:5]:
        assert (await api.send(ada, recipient))["errors"] == []
    assert await api.balance(ada) == 0

    result = await api.send(ada, recipients[5])

    assert codes(result) == ["INSUFFICIENT_CREDITS"]
    assert await api.balance(ada) == 0
    assert len(await conversations_of(api, ada)) == 5
    assert [e["kind"] for e in await ledger_of(api, ada)] == ["GRANT"] + ["DEBIT"] * 5


async def test_the_checks_come_in_the_order_of_the_spec(api: Api) -> None:
    basil = await api.create_member("Basil Basic", "BASIC")
    friend = await api.create_member("Frieda Friend", "BASIC")
    await api.connect(basil, friend)

    # Invalid input is reported before anything is looked up.
    assert codes(await api.send(basil, "no-such-member", subject="")) == ["INVALID_INPUT"]
    # An unknown recipient before the sender's plan.
    assert codes(await api.send(basil, "no-such-member")) == ["NOT_FOUND"]
    # Self before the plan; a connection before the plan.
    assert codes(await api.send(basil, basil)) == ["CANNOT_MESSAGE_SELF"]
    assert codes(await api.send(basil, friend)) == ["RECIPIENT_IS_CONNECTION"]


async def test_the_plan_checks_come_before_awaiting_response(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", card=CARD_EXPIRING_JANUARY_2026)
    grace = await api.create_member("Grace Hopper", "BASIC")
    assert (await api.send(ada, grace))["errors"] == []
    api.advance(days=17)  # the card has expired

    assert codes(await api.send(ada, grace)) == ["PAYMENT_METHOD_EXPIRED"]
    await cancel_subscription(api, ada)
    assert codes(await api.send(ada, grace)) == ["SUBSCRIPTION_INACTIVE"]
    await change_plan(api, ada, "BASIC")
    assert codes(await api.send(ada, grace)) == ["UPGRADE_REQUIRED"]


async def test_a_premium_member_without_a_card_on_file_may_still_send(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", card=None)
    grace = await api.create_member("Grace Hopper", "BASIC")

    assert (await api.send(ada, grace))["errors"] == []


async def test_awaiting_response_comes_before_insufficient_credits(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    others = [await api.create_member(f"Reader {i}", "BASIC") for i in range(4)]
    assert (await api.send(ada, grace))["errors"] == []
    for other in others:
        assert (await api.send(ada, other))["errors"] == []

    assert codes(await api.send(ada, grace)) == ["AWAITING_RESPONSE"]


async def test_a_retry_with_the_same_idempotency_key_returns_the_first_conversation(
    api: Api,
) -> None:
    ada, grace = await ada_and_grace(api)

    first, retry = await send_and_retry(api, ada, grace, key="send-grace-1")

    assert retry["conversation"]["id"] == first["conversation"]["id"]
    assert retry["creditsLeft"] == first["creditsLeft"] == 4
    assert await api.balance(ada) == 4
    assert len(await conversations_of(api, ada)) == 1
    assert [e["kind"] for e in await ledger_of(api, ada)] == ["GRANT", "DEBIT"]


async def test_the_same_idempotency_key_with_a_different_request_is_refused(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    linus = await api.create_member("Linus Torvalds", "BASIC")
    await api.send(ada, grace, key="k-1")

    other_recipient = await api.send(ada, linus, key="k-1")
    other_body = await api.send(ada, grace, key="k-1", body="A different note.")
    as_a_purchase = await api.purchase(ada, 1, key="k-1")

    assert codes(other_recipient) == ["IDEMPOTENCY_KEY_REUSED"]
    assert codes(other_body) == ["IDEMPOTENCY_KEY_REUSED"]
    assert codes(as_a_purchase) == ["IDEMPOTENCY_KEY_REUSED"]
    assert await api.balance(ada) == 4
    assert len(await conversations_of(api, ada)) == 1


async def test_idempotency_keys_belong_to_their_sender(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    alan = await api.create_member("Alan Turing", "PREMIUM_CAREER")
    grace = await api.create_member("Grace Hopper", "BASIC")

    by_ada = await api.send(ada, grace, key="shared-key")
    by_alan = await api.send(alan, grace, key="shared-key")

    assert by_ada["errors"] == by_alan["errors"] == []
    assert by_ada["conversation"]["id"] != by_alan["conversation"]["id"]
    assert await api.balance(ada) == await api.balance(alan) == 4


async def test_a_refused_send_does_not_use_up_its_idempotency_key(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", card=CARD_EXPIRING_JANUARY_2026)
    grace = await api.create_member("Grace Hopper", "BASIC")
    api.advance(days=20)
    assert codes(await api.send(ada, grace, key="k-after-card")) == ["PAYMENT_METHOD_EXPIRED"]
    good = {"brand": "Visa", "last4": "4242", "expMonth": 12, "expYear": 2030}
    assert (await update_card(api, ada, good))["errors"] == []

    result = await api.send(ada, grace, key="k-after-card")

    assert result["errors"] == []
    assert result["creditsLeft"] == 4


async def test_spending_takes_from_the_lot_that_expires_soonest(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    api.advance(days=3)
    assert (await api.purchase(ada, 3))["errors"] == []
    [purchased, allotment] = await lots_of(api, ada)
    assert (purchased["source"], allotment["source"]) == ("PURCHASE", "MONTHLY_ALLOTMENT")
    readers = [await api.create_member(f"Reader {i}", "BASIC") for i in range(6)]

    for reader in readers:
        assert (await api.send(ada, reader))["errors"] == []

    debits = [e for e in await ledger_of(api, ada) if e["kind"] == "DEBIT"]
    assert [d["lot"]["id"] for d in debits] == [allotment["id"]] * 5 + [purchased["id"]]
    by_id = {lot["id"]: lot for lot in await lots_of(api, ada)}
    assert (by_id[allotment["id"]]["remaining"], by_id[allotment["id"]]["status"]) == (
        0,
        "DEPLETED",
    )
    assert (by_id[purchased["id"]]["remaining"], by_id[purchased["id"]]["status"]) == (
        2,
        "ACTIVE",
    )


async def test_a_credit_is_spendable_one_second_before_its_90_days_and_not_at_90_days(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")  # first lot: 5, until 15 Apr
    [first_lot] = await lots_of(api, ada)
    assert first_lot["expiresAt"] == "2026-04-15T09:00:00Z"
    readers = [await api.create_member(f"Reader {i}", "BASIC") for i in range(2)]

    api.advance(days=90, seconds=-1)
    # Catching up grants 15 Feb and 15 Mar (5 each); 15 Apr is clamped at the cap of 15.
    one_second_before = await api.send(ada, readers[0])
    assert one_second_before["errors"] == []
    assert one_second_before["creditsLeft"] == 14
    debit = (await ledger_of(api, ada))[-1]
    assert (debit["kind"], debit["lot"]["id"]) == ("DEBIT", first_lot["id"])

    api.advance(seconds=1)
    assert await api.balance(ada) == 10  # the 4 left of the first lot no longer count
    at_90_days = await api.send(ada, readers[1])

    assert at_90_days["creditsLeft"] == 9
    entries = await ledger_of(api, ada)
    expire, debit = entries[-2], entries[-1]
    assert (expire["kind"], expire["delta"], expire["lot"]["id"]) == ("EXPIRE", -4, first_lot["id"])
    assert expire["at"] == "2026-04-15T09:00:00Z"
    assert debit["kind"] == "DEBIT"
    assert debit["lot"]["id"] != first_lot["id"]
    by_id = {lot["id"]: lot for lot in await lots_of(api, ada)}
    assert by_id[first_lot["id"]]["status"] == "EXPIRED"


class ReadOnceBefore:
    """A clock first read before a change committed (by a send, whose transaction then runs
    again after that change), and read after it from then on."""

    is_manual = True

    def __init__(self, before: datetime, after: datetime) -> None:
        self._readings, self._after = iter([before]), after

    def now(self) -> datetime:
        return next(self._readings, self._after)


async def lapsed_at_its_time(api: Api) -> tuple[Person, Person, dict[str, Any], datetime]:
    """Ada, whose first lot (5 credits) lapsed 90 days on and was written expired at its time,
    her latest ledger entry; Grace, whom she may write to; that lot; and when it expired."""
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    [first_lot] = await lots_of(api, ada)
    grace = await api.create_member("Grace Hopper", "BASIC")
    expiry = api.advance(days=90)
    await bring_up_to_date(api.container.deps, ada.id)
    return ada, grace, first_lot, expiry


async def test_a_send_asked_before_a_change_of_the_sender_committed_is_dated_after_it(
    api: Api,
) -> None:
    ada, grace, first_lot, expiry = await lapsed_at_its_time(api)
    opened_at = expiry + timedelta(minutes=5)
    asked_before = ReadOnceBefore(expiry - timedelta(hours=1), opened_at)
    deps = replace(api.container.deps, clock=asked_before)

    sent = await inmail_service.send_inmail(deps, ada.id, grace.id, "Hi", "Hello", "k1")

    assert sent.conversation.sent_at == opened_at
    entries = await ledger_of(api, ada)
    times = [api_time(entry["at"]) for entry in entries]
    assert times == sorted(times)
    expire, debit = entries[-2], entries[-1]
    assert (expire["kind"], expire["lot"]["id"]) == ("EXPIRE", first_lot["id"])
    assert (debit["kind"], api_time(debit["at"])) == ("DEBIT", opened_at)
    assert debit["lot"]["id"] != first_lot["id"]
    assert debit["balanceAfter"] == expire["balanceAfter"] - 1 == await api.balance(ada)


@pytest.mark.parametrize("behind", [timedelta(milliseconds=300), timedelta(hours=1)], ids=str)
async def test_a_send_in_a_process_behind_is_dated_after_the_latest_entry_within_the_skew(
    api: Api, behind: timedelta
) -> None:
    """A member's latest entry written by a process whose clock runs ahead dates a send after
    it, within CLOCK_SKEW; further ahead (a clock set wrong), it does not hold the member's sends
    in the future: the send is dated by its own process's clock."""
    ada, grace, _, expiry = await lapsed_at_its_time(api)
    deps = replace(api.container.deps, clock=ManualClock(expiry - behind))

    sent = await inmail_service.send_inmail(deps, ada.id, grace.id, "Hi", "Hello", "k1")

    assert sent.conversation.sent_at == (expiry if behind <= CLOCK_SKEW else expiry - behind)


async def test_a_response_is_never_dated_before_the_inmail_it_answers(api: Api) -> None:
    """An InMail sent in a process whose clock runs a little ahead, answered at once in one whose
    clock does not."""
    ada, grace = await ada_and_grace(api)
    ahead = ManualClock(api.clock.now() + timedelta(milliseconds=400))
    sent = await inmail_service.send_inmail(
        replace(api.container.deps, clock=ahead), ada.id, grace.id, "Hi", "Hello", "k1"
    )

    answered = await api.respond(grace, sent.conversation.id)

    assert answered["errors"] == []
    assert api_time(answered["conversation"]["respondedAt"]) == sent.conversation.sent_at


class RunningClock:
    """The service's clock from `start` on, running as the wall clock does."""

    is_manual = False

    def __init__(self, start: datetime) -> None:
        self._start, self._started = start, time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._started)


async def test_concurrent_sends_of_one_member_on_a_running_clock_are_dated_in_ledger_order(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "LEGACY_PREMIUM", monthly_allotment=30)
    readers = [await api.create_member(f"Reader {i}", "BASIC") for i in range(24)]
    running = replace(api.container.deps, clock=RunningClock(api.clock.now()))

    await asyncio.gather(
        *(
            inmail_service.send_inmail(running, ada.id, reader.id, "Hi", "Hello", f"key-{i}")
            for i, reader in enumerate(readers)
        )
    )

    entries = await ledger_of(api, ada)
    assert [entry["kind"] for entry in entries] == ["GRANT"] + ["DEBIT"] * 24
    times = [api_time(entry["at"]) for entry in entries]
    assert times == sorted(times)
    assert [entry["balanceAfter"] for entry in entries] == list(range(30, 5, -1))


async def test_a_key_first_used_by_a_purchase_is_refused_for_a_send(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    assert (await api.purchase(ada, 2, key="k-bought"))["errors"] == []

    as_a_send = await api.send(ada, grace, key="k-bought")

    assert codes(as_a_send) == ["IDEMPOTENCY_KEY_REUSED"]
    assert as_a_send["conversation"] is None
    assert await api.balance(ada) == 7
    assert await conversations_of(api, ada) == []


async def test_a_key_first_used_by_a_declined_purchase_is_refused_for_a_send(api: Api) -> None:
    dora = await api.create_member("Dora Declined", "PREMIUM_CAREER", card=DECLINING_CARD)
    grace = await api.create_member("Grace Hopper", "BASIC")
    assert codes(await api.purchase(dora, 2, key="k-declined")) == ["PAYMENT_DECLINED"]

    as_a_send = await api.send(dora, grace, key="k-declined")
    retried_purchase = await api.purchase(dora, 2, key="k-declined")

    assert codes(as_a_send) == ["IDEMPOTENCY_KEY_REUSED"]
    await refused_without_a_trace(api, dora, as_a_send)
    assert await api.balance(dora) == 5
    assert codes(retried_purchase) == ["PAYMENT_DECLINED"]


async def test_a_key_first_used_by_a_plan_change_is_refused_for_a_send(api: Api) -> None:
    ada, grace = await ada_and_grace(api)
    assert (await change_plan(api, ada, "PREMIUM_BUSINESS", key="k-upgrade"))["errors"] == []

    as_a_send = await api.send(ada, grace, key="k-upgrade")

    assert codes(as_a_send) == ["IDEMPOTENCY_KEY_REUSED"]
    assert as_a_send["conversation"] is None
    assert await api.balance(ada) == 15
    assert await conversations_of(api, ada) == []
    assert "DEBIT" not in [entry["kind"] for entry in await ledger_of(api, ada)]


async def test_a_key_first_used_by_a_send_is_refused_for_a_plan_change_and_a_purchase(
    api: Api,
) -> None:
    ada, grace = await ada_and_grace(api)
    assert (await api.send(ada, grace, key="k-sent"))["errors"] == []

    as_a_plan_change = await change_plan(api, ada, "PREMIUM_BUSINESS", key="k-sent")
    as_a_purchase = await api.purchase(ada, 2, key="k-sent")

    assert codes(as_a_plan_change) == codes(as_a_purchase) == ["IDEMPOTENCY_KEY_REUSED"]
    assert await charges_of(api, ada) == []
    assert (await subscription_of(api, ada))["plan"]["type"] == "PREMIUM_CAREER"
    assert await api.balance(ada) == 4


@pytest.mark.parametrize("paid", ["purchase", "plan change"])
async def test_a_send_landing_after_a_paid_request_looked_at_its_key_wins_it_before_any_charge(
    api: Api, monkeypatch: pytest.MonkeyPatch, paid: str
) -> None:
    """The paid request found the key free, then a send under it committed before the payment
    intent was recorded: the intent is refused in its own transaction, and nothing is charged."""
    ada, grace = await ada_and_grace(api)
    sends: list[dict[str, Any]] = []
    open_intent = charges.open_intent

    async def a_send_lands_first(*args: Any) -> Any:
        sends.append(await api.send(ada, grace, key="k-raced"))
        return await open_intent(*args)

    monkeypatch.setattr(charges, "open_intent", a_send_lands_first)
    if paid == "purchase":
        refused = await api.purchase(ada, 2, key="k-raced")
    else:
        refused = await change_plan(api, ada, "PREMIUM_BUSINESS", key="k-raced")
    monkeypatch.undo()

    [sent] = sends
    assert sent["errors"] == []
    assert codes(refused) == ["IDEMPOTENCY_KEY_REUSED"]
    assert await charges_of(api, ada) == []
    assert await api.container.mongo.c.payment_intents.count_documents({}) == 0
    assert (await subscription_of(api, ada))["plan"]["type"] == "PREMIUM_CAREER"
    assert await api.balance(ada) == 4
    retried = await api.send(ada, grace, key="k-raced")
    assert retried["conversation"]["id"] == sent["conversation"]["id"]


async def test_a_paid_request_recorded_while_a_send_under_its_key_runs_has_the_send_refused(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The send read its key free; a plan change's intent under the key (its charge then
    declined) was recorded before the send wrote: the send's transaction conflicts, and its
    retry finds the key taken."""
    dora = await api.create_member("Dora Declined", "PREMIUM_CAREER", card=DECLINING_CARD)
    grace = await api.create_member("Grace Hopper", "BASIC")
    changes: list[dict[str, Any]] = []
    may_inmail = inmail_service._sender_may_inmail

    async def a_plan_change_lands_meanwhile(*args: Any) -> Any:
        account = await may_inmail(*args)
        if not changes:
            changes.append(await change_plan(api, dora, "PREMIUM_BUSINESS", key="k-raced"))
        return account

    monkeypatch.setattr(inmail_service, "_sender_may_inmail", a_plan_change_lands_meanwhile)
    refused = await api.send(dora, grace, key="k-raced")
    monkeypatch.undo()

    assert [codes(change) for change in changes] == [["PAYMENT_DECLINED"]]
    assert codes(refused) == ["IDEMPOTENCY_KEY_REUSED"]
    await refused_without_a_trace(api, dora, refused)
    assert await api.balance(dora) == 5


async def test_a_send_whose_record_was_kept_apart_from_its_conversation_is_still_answered(
    api: Api,
) -> None:
    """Sends written before conversations carried their key left their record in
    `idempotency`, as other keyed requests do: a retry of one gets its first answer."""
    ada, grace = await ada_and_grace(api)
    first = await api.send(ada, grace, key="k-old")
    c = api.container.mongo.c
    carried = await c.conversations.find_one_and_update(
        {"_id": first["conversation"]["id"]}, {"$unset": {"sentUnder": ""}}
    )
    assert carried is not None
    held = carried["sentUnder"]
    await c.idempotency.insert_one(
        {
            "_id": "old-record",
            "memberId": ada.id,
            "key": "k-old",
            "operation": "sendInMail",
            "requestHash": held["requestHash"],
            "at": held["at"],
            "result": {"conversationId": carried["_id"], "creditsLeft": held["creditsLeft"]},
        }
    )

    # Grace answers, so nothing but the key could stop a second InMail to her.
    assert (await api.respond(grace, first["conversation"]["id"], "NOT_INTERESTED"))["errors"] == []

    retry = await api.send(ada, grace, key="k-old")
    other = await api.send(ada, grace, key="k-old", body="A different note.")

    assert retry["errors"] == []
    assert retry["conversation"]["id"] == first["conversation"]["id"]
    assert retry["creditsLeft"] == first["creditsLeft"] == 4
    assert codes(other) == ["IDEMPOTENCY_KEY_REUSED"]
    assert len(await conversations_of(api, ada)) == 1
    assert [e["kind"] for e in await ledger_of(api, ada)].count("DEBIT") == 1


class FailingListener:
    async def publish(self, entries: Sequence[LedgerEntry]) -> None:
        raise RuntimeError("a listener that fails")


class RecordingListener:
    def __init__(self) -> None:
        self.entries: list[LedgerEntry] = []

    async def publish(self, entries: Sequence[LedgerEntry]) -> None:
        self.entries.extend(entries)


async def test_a_listener_failing_after_the_commit_leaves_the_send_answered_as_done(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    ada = await api.create_member("Ada Lovelace")
    grace = await api.create_member("Grace Hopper")
    after = RecordingListener()
    api.container.events.listeners[:0] = [FailingListener(), after]

    sent = await api.send(ada, grace)

    assert sent["errors"] == []
    assert await api.balance(ada) == 4
    assert "a listener of committed ledger entries failed" in caplog.text
    # The listeners after it still hear the send's entry.
    assert [(e.member_id, e.delta, e.balance_after) for e in after.entries] == [(ada.id, -1, 4)]
