"""SPEC 5a: RENEWED tells a member of every allotment granted: a cycle's start, and a new
subscription's first (joining a paid plan, a plan change, a resubscription after cancelling),
once each, with the lot it granted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from support import Api, Person, cancel_subscription, change_plan

RENEWALS = "{ viewer { notifications { nodes { kind at lot { source quantity } } } } }"


async def renewals(api: Api, member: Person) -> list[tuple[str, int | None]]:
    """The member's RENEWED notifications, oldest first: (time, quantity of its lot)."""
    data = await api.gql(RENEWALS, token=member.token)
    nodes: list[dict[str, Any]] = data["viewer"]["notifications"]["nodes"]
    return [
        (n["at"], n["lot"]["quantity"] if n["lot"] else None)
        for n in reversed(nodes)
        if n["kind"] == "RENEWED"
    ]


async def test_joining_a_paid_plan_tells_the_member_of_its_first_allotment(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    basic = await api.create_member("Grace Hopper", "BASIC")

    assert [quantity for _, quantity in await renewals(api, ada)] == [5]
    assert await renewals(api, basic) == []  # no allotment, nothing to tell


async def test_a_plan_change_and_a_resubscription_each_tell_of_their_first_allotment(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    api.clock.advance(timedelta(days=3))
    changed = await change_plan(api, ada, "PREMIUM_BUSINESS")
    api.clock.advance(timedelta(days=3))
    cancelled = await cancel_subscription(api, ada)
    api.clock.advance(timedelta(days=3))
    again = await change_plan(api, ada, "PREMIUM_CAREER")

    assert changed["errors"] == cancelled["errors"] == again["errors"] == []
    told = await renewals(api, ada)
    assert [quantity for _, quantity in told] == [5, 15, 5]
    assert len({at for at, _ in told}) == 3  # each at its own grant
    assert await renewals(api, ada) == told  # and each once
