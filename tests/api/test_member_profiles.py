"""What the schema's `Member` object holds: for a viewer who is not that member (and no admin),
its public profile only (SPEC 8). A field written later against what the object holds can
show nothing private: the private fields ask the reads by the member's id, which refuse."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from inmail.schema import types
from support import Api, send_message

# All a member's public profile shows (the plan's grandfathered allotment with its plan), and
# whether the viewer is one of the member's connections.
PUBLIC = {"id", "name", "headline", "plan", "monthly_allotment", "is_connection"}

# Every way a query reaches another member: by id, by node, as a conversation's parties (read
# ahead with a page of conversations, and read one by one), as a message's author.
EVERY_PATH = """
query($grace: ID!, $thread: ID!) {
  member(id: $grace) { id name isConnection plan { type } }
  node(id: $grace) { id }
  nodes(ids: [$grace]) { id }
  viewer { conversations { nodes { sender { id } recipient { id } } } }
  conversation(id: $thread) { sender { name } messages { author { id headline } } }
}
"""


def _held(member: types.Member) -> list[Any]:
    """Everything a schema `Member` object keeps, its private attributes included."""
    return list(vars(member).values())


async def test_a_member_object_built_for_another_member_holds_only_their_public_profile(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER", headline="Analyst")
    grace = await api.create_member("Grace Hopper", "PREMIUM_BUSINESS", headline="Admiral")
    await api.connect(ada, grace)
    sent = await send_message(api, grace, "Shall we talk compilers?", recipient=ada)
    assert sent["errors"] == []
    built: list[types.Member] = []
    make = types.Member.__init__

    def recorded(member: types.Member, *args: Any, **kwargs: Any) -> None:
        make(member, *args, **kwargs)
        built.append(member)

    monkeypatch.setattr(types.Member, "__init__", recorded)

    data = await api.gql(
        EVERY_PATH, {"grace": grace.id, "thread": sent["conversation"]["id"]}, ada.token
    )

    assert data["member"]["isConnection"] is True
    assert data["conversation"]["messages"][0]["author"]["headline"] == "Admiral"
    graces = [member for member in built if member.id == grace.id]
    assert len(graces) == 6
    inspected = 0
    for member in graces:
        for value in _held(member):
            if dataclasses.is_dataclass(value):
                shown = {field.name for field in dataclasses.fields(value)}
                assert shown <= PUBLIC, f"{type(value).__name__} holds {shown - PUBLIC}"
                inspected += 1
    assert inspected >= len(graces), "no member held her profile as a record to inspect"


async def test_a_legacy_members_grandfathered_terms_are_shown_to_them_and_admins_alone(
    api: Api,
) -> None:
    """SPEC 1 and 8: the plan is public, a subscription's own terms are its member's."""
    olive = await api.create_member("Olive Oldtimer", "LEGACY_PREMIUM", monthly_allotment=7)
    ada = await api.create_member("Ada Lovelace")
    query = (
        "query($id: ID!) { member(id: $id) { plan { type monthlyAllotment maxBalance } } "
        "node(id: $id) { ... on Member { plan { monthlyAllotment } } } }"
    )

    seen = {
        who: await api.gql(query, {"id": olive.id}, token=token)
        for who, token in (("olive", olive.token), ("admin", api.admin), ("ada", ada.token))
    }

    own = {"type": "LEGACY_PREMIUM", "monthlyAllotment": 7, "maxBalance": 21}
    published = {"type": "LEGACY_PREMIUM", "monthlyAllotment": 10, "maxBalance": 30}
    assert seen["olive"]["member"]["plan"] == seen["admin"]["member"]["plan"] == own
    assert seen["ada"]["member"]["plan"] == published
    assert seen["ada"]["node"]["plan"] == {"monthlyAllotment": 10}
    assert seen["olive"]["node"]["plan"] == {"monthlyAllotment": 7}
