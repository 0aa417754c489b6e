"""Every new notification is enqueued for webhook delivery in the transaction that wrote it."""

from __future__ import annotations

from typing import Any

from support import Api


async def outbox_of(api: Api, member_id: str) -> list[dict[str, Any]]:
    cursor = api.container.mongo.c.webhook_outbox.find({"memberId": member_id}).sort("at", 1)
    return [doc async for doc in cursor]


async def test_an_inmail_enqueues_its_recipients_notification_once_even_when_the_send_is_retried(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_CAREER")
    grace = await api.create_member("Grace Hopper", "BASIC")

    first = await api.send(ada, grace, key="ada-compilers")
    again = await api.send(ada, grace, key="ada-compilers")

    assert first["errors"] == []
    assert again["errors"] == []
    [event] = await outbox_of(api, grace.id)
    assert event["kind"] == "INMAIL_RECEIVED"
    assert event["data"] == {"conversationId": first["conversation"]["id"]}
    assert event["status"] == "PENDING"
    data = await api.gql("{ viewer { notifications { nodes { id kind } } } }", token=grace.token)
    [notification] = data["viewer"]["notifications"]["nodes"]
    assert notification == {"id": event["_id"], "kind": "INMAIL_RECEIVED"}


async def test_a_refused_send_enqueues_nothing(api: Api) -> None:
    basic = await api.create_member("Basil Basic", "BASIC")
    grace = await api.create_member("Grace Hopper", "BASIC")

    refused = await api.send(basic, grace)

    assert [e["code"] for e in refused["errors"]] == ["UPGRADE_REQUIRED"]
    assert await outbox_of(api, grace.id) == []
