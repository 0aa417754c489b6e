"""Every new notification is enqueued for webhook delivery in the transaction that wrote it,
where webhooks are delivered (INMAIL_WEBHOOK_URL is set); without them, nothing is enqueued."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import support
from inmail.processes import free_port
from support import Api, ada_and_grace, open_api, send_and_retry


@pytest.fixture
async def api(mongodb_uri: str, db_name: str) -> AsyncIterator[Api]:
    # Nothing listens on the webhook's port: the worker's attempts fail, events stay PENDING.
    settings = support.test_settings(
        webhook_url=f"http://127.0.0.1:{free_port()}/inmail",
        webhook_secret="whsec-test-outbox",
        webhook_poll_interval=60,
    )
    async with open_api(mongodb_uri, db_name, settings) as api:
        yield api


async def outbox_of(api: Api, member_id: str) -> list[dict[str, Any]]:
    cursor = api.container.mongo.c.webhook_outbox.find({"memberId": member_id}).sort("at", 1)
    return [doc async for doc in cursor]


async def test_an_inmail_enqueues_its_recipients_notification_once_even_when_the_send_is_retried(
    api: Api,
) -> None:
    ada, grace = await ada_and_grace(api)

    first, _ = await send_and_retry(api, ada, grace, key="ada-compilers")

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


async def test_without_a_webhook_url_notifications_are_kept_but_nothing_is_enqueued(
    mongodb_uri: str, db_name: str
) -> None:
    async with open_api(mongodb_uri, db_name) as api:
        ada, grace = await ada_and_grace(api)
        assert (await api.send(ada, grace))["errors"] == []
        data = await api.gql("{ viewer { notifications { nodes { kind } } } }", token=grace.token)
        assert data["viewer"]["notifications"]["nodes"] == [{"kind": "INMAIL_RECEIVED"}]
        assert await api.container.mongo.c.webhook_outbox.count_documents({}) == 0
