"""SPEC 5a: CREDITS_EXPIRING once per lot that still has credits, due seven days before its
expiry. The scheduler gives each as it falls due; a lot that lapsed while no process gave it (the
service down, the scheduler off) is told of when it is expired, dated when it fell due."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from inmail.services import scheduling
from support import Api, Person, api_time

NOTICES = (
    "{ viewer { notifications(first: 100) { nodes { kind at lot { id expiresAt remaining } } } } }"
)


async def expiry_notices(api: Api, member: Person) -> list[dict[str, Any]]:
    """The member's CREDITS_EXPIRING notifications, oldest first (reading them brings the
    member's credits up to now, as every read does)."""
    data = await api.gql(NOTICES, token=member.token)
    nodes: list[dict[str, Any]] = data["viewer"]["notifications"]["nodes"]
    return [n for n in reversed(nodes) if n["kind"] == "CREDITS_EXPIRING"]


async def test_a_lot_that_lapsed_unnoticed_is_told_of_once_dated_when_its_notice_fell_due(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")  # 5 credits, for 90 days
    joined = api.clock.now()
    api.advance(days=100)  # nothing ran meanwhile: no scheduler, no request

    told = await expiry_notices(api, ada)

    assert len(told) == 1
    [notice] = told
    expired_at = api_time(notice["lot"]["expiresAt"])
    assert expired_at == joined + timedelta(days=90)
    assert notice["lot"]["remaining"] == 0  # expired since
    assert api_time(notice["at"]) == expired_at - timedelta(days=7)
    # February's lot expires in mid-May: not due yet, and not told of early.
    api.advance(days=30)
    later = await expiry_notices(api, ada)
    assert [n["lot"]["id"] for n in later][:1] == [notice["lot"]["id"]]
    assert len(later) == len({n["lot"]["id"] for n in later}) == 2  # and the first, once


async def test_a_lot_told_of_in_time_is_not_told_of_again_when_it_lapses(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    api.advance(days=85)  # the first lot's notice fell due two days ago
    report = await scheduling.notify_expiring(api.container.deps, api.clock.now(), batch_size=10)
    assert report.changed == 1
    given = await expiry_notices(api, ada)
    api.advance(days=10)  # it has lapsed since

    assert [(n["lot"]["id"], n["at"]) for n in await expiry_notices(api, ada)] == [
        (n["lot"]["id"], n["at"]) for n in given
    ]
    assert api_time(given[0]["at"]) == api.clock.now() - timedelta(days=10)


async def test_a_lot_spent_before_it_lapsed_is_not_told_of(api: Api) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    for i in range(5):
        grace = await api.create_member(f"Grace Hopper {i}", "BASIC")
        assert (await api.send(ada, grace))["errors"] == []
    api.advance(days=100)

    assert await expiry_notices(api, ada) == []
