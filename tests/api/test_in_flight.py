"""What one member's requests in flight over HTTP may cost together, in one process: past it
the next is refused before it runs, and try again (SECURITY.md, "Cost in flight per member")."""

from __future__ import annotations

import asyncio
from typing import Any

from support import HeldGateway, held_gateways, open_api
from support import test_settings as settings_for_tests

BUDGET = 94
# Cost 92 (60 conversations, their page's read, the viewer): alone it fits the budget, beside
# a purchase in flight (cost 3) it does not.
READ = "{ viewer { conversations(first: 60) { nodes { id } } } }"
ADMINS_READ = "query($m: ID!) { member(id: $m) { conversations(first: 60) { nodes { id } } } }"
WAIT = 30.0  # a bound on waiting for the app, never a measure of speed


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors") or []]


async def test_a_members_requests_in_flight_are_held_to_a_cost_together(
    mongodb_uri: str, db_name: str
) -> None:
    made, held = held_gateways(HeldGateway)
    settings = settings_for_tests().with_changes(max_cost_in_flight_per_member=BUDGET)
    async with open_api(mongodb_uri, db_name, settings, gateway=held) as api:
        ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
        grace = await api.create_member("Grace Hopper", "BASIC")
        alone = await api.raw(READ, token=ada.token)
        over = await api.raw(READ.replace("60", "80"), token=ada.token)
        buying = asyncio.create_task(api.purchase(ada, 1))
        await asyncio.wait_for(made[0].charging.wait(), WAIT)
        refused = await api.raw(READ, token=ada.token)
        as_graphql_response = await api.client.post(
            "/graphql",
            json={"query": READ},
            headers={
                "Authorization": f"Bearer {ada.token}",
                "Accept": "application/graphql-response+json",
            },
        )
        theirs = await api.raw(READ, token=grace.token)
        admins = await api.raw(
            READ.replace("viewer", "member(id: $m)").replace("{ ", "query($m: ID!) { ", 1),
            {"m": ada.id},
            api.admin,
        )
        made[0].release.set()
        bought = await asyncio.wait_for(buying, WAIT)
        after = await api.raw(READ, token=ada.token)

    cost = alone["extensions"]["cost"]["requestedQueryCost"]
    assert codes(alone) == []
    assert codes(over) == []  # one request alone always runs, whatever it costs
    assert over["extensions"]["cost"]["requestedQueryCost"] > BUDGET
    assert cost <= BUDGET
    assert refused.get("data") is None
    [error] = refused["errors"]
    extensions = error["extensions"]
    assert extensions["code"] == "SERVICE_UNAVAILABLE"
    assert extensions["requestedQueryCost"] == cost
    assert 0 < extensions["heldQueryCost"] <= BUDGET < extensions["heldQueryCost"] + cost
    assert extensions["maximumHeld"] == BUDGET
    assert extensions["retryAfterSeconds"] == 1
    # Under graphql-response+json the refusal is a 503, which says when to try again.
    assert as_graphql_response.status_code == 503
    assert as_graphql_response.headers["retry-after"] == "1"
    assert as_graphql_response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert codes(theirs) == []  # another member's share is theirs
    assert codes(admins) == []  # admins are not held to it
    assert bought["errors"] == []
    assert codes(after) == []  # the purchase gave its share back
