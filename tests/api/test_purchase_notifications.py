"""A completed purchase is told to its member, who reads it (and only they) with its purchase."""

from __future__ import annotations

from support import Api

PURCHASE_NOTICES = """
{ viewer { notifications { nodes { kind lot { id } purchase {
    id quantity status amount { amount currency } } } } } }
"""


async def test_a_completed_purchase_notifies_its_member_with_the_purchase_and_its_lot(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")

    bought = await api.purchase(ada, 3, key="ada-three")

    assert bought["errors"] == []
    data = await api.gql(PURCHASE_NOTICES, token=ada.token)
    notices = [n for n in data["viewer"]["notifications"]["nodes"] if n["purchase"]]
    assert notices == [
        {
            "kind": "PURCHASE_COMPLETED",
            "lot": {"id": bought["lot"]["id"]},
            "purchase": {
                "id": notices[0]["purchase"]["id"],
                "quantity": 3,
                "status": "COMPLETED",
                "amount": {"amount": 3000, "currency": "USD"},
            },
        }
    ]


async def test_a_purchase_notice_is_its_members_alone_and_an_admin_reads_it_through_the_member(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    grace = await api.create_member("Grace Hopper", "PREMIUM_CAREER")
    await api.purchase(ada, 1)

    data = await api.gql(PURCHASE_NOTICES, token=grace.token)

    assert [n for n in data["viewer"]["notifications"]["nodes"] if n["purchase"]] == []
    admin_view = await api.gql(
        "query($id: ID!) { member(id: $id) { notifications { nodes { kind purchase { id } } } } }",
        {"id": ada.id},
        token=api.admin,
    )
    kinds = [n["kind"] for n in admin_view["member"]["notifications"]["nodes"] if n["purchase"]]
    assert kinds == ["PURCHASE_COMPLETED"]
