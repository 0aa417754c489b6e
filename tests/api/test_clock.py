"""advanceClock: an admin moves a manual clock, and every job that became due runs on the way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inmail.clock import SystemClock
from stored import notifications_of
from support import Api, api_time, open_api
from support import test_settings as settings_with

ADVANCE = (
    "mutation($i: AdvanceClockInput!) "
    "{ advanceClock(input: $i) { now errors { code message field } } }"
)
JAN_31 = datetime(2026, 1, 31, tzinfo=UTC)


async def advance(api: Api, **by: int) -> dict[str, Any]:
    body = await api.raw(ADVANCE, {"i": by}, api.admin)
    assert body.get("errors") is None, body["errors"]
    result: dict[str, Any] = body["data"]["advanceClock"]
    return result


async def advance_to(api: Api, when: datetime) -> None:
    delta = when - api.clock.now()
    result = await advance(api, days=delta.days, hours=delta.seconds // 3600)
    assert result["errors"] == []
    assert api_time(result["now"]) == when


@pytest.fixture
async def api_jan_31(mongodb_uri: str, db_name: str) -> AsyncIterator[Api]:
    async with open_api(mongodb_uri, db_name, settings_with(clock_start=JAN_31)) as service:
        yield service


async def test_a_career_member_who_spends_nothing_fills_to_the_cap_and_loses_old_lots(
    api_jan_31: Api,
) -> None:
    api = api_jan_31
    grace = await api.create_member("Grace Hopper", "PREMIUM_CAREER")
    assert await api.balance(grace) == 5
    expected = [
        (datetime(2026, 2, 28, tzinfo=UTC), 10),  # anchor 31 clamps to February's last day
        (datetime(2026, 3, 31, tzinfo=UTC), 15),  # and returns to the 31st
        (datetime(2026, 4, 30, tzinfo=UTC), 15),  # the cap: April's grant is clamped to 0
        (datetime(2026, 5, 1, tzinfo=UTC), 10),  # the 31 January lot lived 90 days
        (datetime(2026, 5, 29, tzinfo=UTC), 5),  # and the 28 February lot too
        (datetime(2026, 5, 31, tzinfo=UTC), 10),  # May's allotment
    ]
    for when, balance in expected:
        await advance_to(api, when)
        assert (await api.balance(grace), when) == (balance, when)

    ledger = await api.gql(
        "{ viewer { ledger(first: 50) { nodes { at kind delta balanceAfter } } } }",
        token=grace.token,
    )
    entries = list(reversed(ledger["viewer"]["ledger"]["nodes"]))
    assert [(api_time(e["at"]), e["kind"], e["delta"]) for e in entries] == [
        (JAN_31, "GRANT", 5),
        (datetime(2026, 2, 28, tzinfo=UTC), "GRANT", 5),
        (datetime(2026, 3, 31, tzinfo=UTC), "GRANT", 5),
        (datetime(2026, 4, 30, tzinfo=UTC), "GRANT", 0),
        (datetime(2026, 5, 1, tzinfo=UTC), "EXPIRE", -5),
        (datetime(2026, 5, 29, tzinfo=UTC), "EXPIRE", -5),
        (datetime(2026, 5, 31, tzinfo=UTC), "GRANT", 5),
    ]
    assert entries[-1]["balanceAfter"] == 10 == sum(e["delta"] for e in entries)


async def test_an_unanswered_inmail_is_reminded_once_at_its_due_time(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    alan = await api.create_member("Alan Turing", "PREMIUM_BUSINESS")
    sent = await api.send(ada, alan)
    conversation_id = sent["conversation"]["id"]
    sent_at = api_time(sent["conversation"]["sentAt"])

    await advance(api, days=1)
    assert await reminder_sent_at(api, alan.token, conversation_id) is None
    await advance(api, days=2)
    reminded = await reminder_sent_at(api, alan.token, conversation_id)
    assert reminded is not None
    assert reminded == sent_at + timedelta(hours=48)
    assert reminded - sent_at <= timedelta(hours=72)

    await advance(api, days=30)
    assert await reminder_sent_at(api, alan.token, conversation_id) == reminded
    notifications = await notifications_of(api.container.mongo, alan.id)
    about_inmails = [(n.kind, n.conversation_id) for n in notifications if n.conversation_id]
    assert about_inmails == [
        ("INMAIL_RECEIVED", conversation_id),
        ("REMINDER", conversation_id),
    ]


async def test_an_inmail_answered_in_time_is_never_reminded(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    alan = await api.create_member("Alan Turing", "PREMIUM_BUSINESS")
    sent = await api.send(ada, alan)
    await advance(api, hours=5)
    await api.respond(alan, sent["conversation"]["id"], "MAYBE_LATER")
    await advance(api, days=10)
    assert await reminder_sent_at(api, alan.token, sent["conversation"]["id"]) is None
    notes = await notifications_of(api.container.mongo, alan.id)
    assert [n.kind for n in notes if n.conversation_id] == ["INMAIL_RECEIVED"]


async def reminder_sent_at(api: Api, token: str, conversation_id: str) -> datetime | None:
    data = await api.gql(
        "query($id: ID!) { conversation(id: $id) { reminderSentAt } }",
        {"id": conversation_id},
        token,
    )
    value = data["conversation"]["reminderSentAt"]
    return api_time(value) if value else None


async def test_advance_clock_answers_the_new_now(api: Api) -> None:
    result = await advance(api, days=2, hours=3)
    assert result == {"now": "2026-01-17T12:00:00Z", "errors": []}
    assert (await api.gql("{ now }"))["now"] == "2026-01-17T12:00:00Z"


async def test_a_member_may_not_advance_the_clock(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    body = await api.raw(ADVANCE, {"i": {"days": 40}}, ada.token)
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    anonymous = await api.raw(ADVANCE, {"i": {"days": 40}})
    assert [e["extensions"]["code"] for e in anonymous["errors"]] == ["UNAUTHENTICATED"]
    assert api.clock.now() == datetime(2026, 1, 15, 9, tzinfo=UTC)
    assert await api.balance(ada) == 5


@pytest.mark.parametrize(
    ("by", "field"),
    [
        ({}, None),
        ({"days": 0, "hours": 0}, None),
        ({"days": -1}, "days"),
        ({"days": 2, "hours": -1}, "hours"),
        ({"days": 3661}, "days"),
        ({"days": 2_147_483_647}, "days"),
        ({"hours": 2_147_483_647}, "hours"),
        ({"days": 3660, "hours": 1}, "days"),
    ],
)
async def test_an_advance_that_is_not_forward_or_too_far_is_invalid_input(
    api: Api, by: dict[str, int], field: str | None
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    result = await advance(api, **by)
    assert [(e["code"], e["field"]) for e in result["errors"]] == [("INVALID_INPUT", field)]
    assert api_time(result["now"]) == datetime(2026, 1, 15, 9, tzinfo=UTC) == api.clock.now()
    assert await api.balance(ada) == 5


async def test_without_a_manual_clock_advance_clock_is_refused_and_changes_nothing(
    mongodb_uri: str, db_name: str
) -> None:
    async with open_api(mongodb_uri, db_name, settings_with(clock="system")) as api:
        assert isinstance(api.container.clock, SystemClock)
        ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
        before = await api.gql("{ viewer { ledger(first: 10) { totalCount } } }", token=ada.token)
        result = await advance(api, days=400)
        assert [e["code"] for e in result["errors"]] == ["INVALID_INPUT"]
        assert abs(api_time(result["now"]) - datetime.now(UTC)) < timedelta(hours=1)
        after = await api.gql("{ viewer { ledger(first: 10) { totalCount } } }", token=ada.token)
        assert after == before
        assert await api.balance(ada) == 5


async def test_in_production_advance_clock_does_not_exist(mongodb_uri: str, db_name: str) -> None:
    """SPEC 7: in production there is no advanceClock to call, not even for an admin."""
    production = settings_with(env="production", clock="system", introspection=False)
    async with open_api(mongodb_uri, db_name, production) as api:
        body = await api.raw(ADVANCE, {"i": {"days": 400}}, api.admin)
        listed = await api.gql("{ now }", token=api.admin)

    assert body.get("data") is None
    assert [(e["message"], e["extensions"]["code"]) for e in body["errors"]] == [
        ("Unknown type 'AdvanceClockInput'.", "GRAPHQL_VALIDATION_FAILED"),
        ("Cannot query field 'advanceClock' on type 'Mutation'.", "GRAPHQL_VALIDATION_FAILED"),
    ]
    assert abs(api_time(listed["now"]) - datetime.now(UTC)) < timedelta(hours=1)


async def test_with_several_workers_a_manual_clock_stays_where_it_started(
    mongodb_uri: str, db_name: str
) -> None:
    """Each worker process keeps its own manual clock: moving the one a request lands on would
    leave the others behind (reads and sends on two times at once), so none moves."""
    async with open_api(mongodb_uri, db_name, settings_with(workers=2)) as api:
        ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
        started = api.clock.now()

        result = await advance(api, days=40)

        assert [(e["code"], e["message"]) for e in result["errors"]] == [
            (
                "INVALID_INPUT",
                "Each worker keeps its own manual clock: to move it, run one worker "
                "(INMAIL_WORKERS=1).",
            )
        ]
        assert api_time(result["now"]) == started == api.clock.now()
        assert await api.balance(ada) == 5
