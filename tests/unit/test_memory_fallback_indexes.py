"""The in-memory fallback keeps the rules a unique index keeps on the server: a partial unique
index refuses a second document its filter holds, and only such a document, and a transaction
that raises leaves the data as it found them. So a send may lean on the indexes here too."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from inmail.app import create_app
from inmail.bootstrap import build_container
from inmail.domain.conversations import ConversationState
from inmail.domain.plans import DEFAULT_PLAN_TABLE
from inmail.repositories.memory import InMemoryMongo
from inmail.repositories.mongo import DuplicateKeyError
from inmail.repositories.unit_of_work import MongoUnitOfWork
from support import Api, ada_and_grace, ledger_of, outcomes
from support import test_settings as settings_with

AWAITING = ConversationState.AWAITING_RESPONSE.value
ANSWERED = ConversationState.ACCEPTED.value


def _conversation(conversation_id: str, state: str, sender: str = "ada") -> dict[str, Any]:
    return {"_id": conversation_id, "senderId": sender, "recipientId": "grace", "state": state}


@pytest.fixture
async def mongo() -> InMemoryMongo:
    mongo = InMemoryMongo("partial_indexes")
    await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
    return mongo


async def _stored(mongo: InMemoryMongo) -> list[dict[str, Any]]:
    return await mongo.c.conversations.find({}, sort=[("_id", 1)]).to_list()


async def test_a_second_document_a_partial_unique_index_holds_is_refused_and_not_stored(
    mongo: InMemoryMongo,
) -> None:
    await mongo.c.conversations.insert_one(_conversation("c1", AWAITING))
    await mongo.c.conversations.insert_one(_conversation("c2", ANSWERED))
    before = await _stored(mongo)

    with pytest.raises(DuplicateKeyError) as refused:
        await mongo.c.conversations.insert_one(_conversation("c3", AWAITING))
    assert refused.value.code == 11000
    with pytest.raises(DuplicateKeyError):  # an update that brings one under the filter
        await mongo.c.conversations.update_one({"_id": "c2"}, {"$set": {"state": AWAITING}})
    assert await _stored(mongo) == before


async def test_documents_outside_a_partial_filter_share_its_keys_as_on_the_server(
    mongo: InMemoryMongo,
) -> None:
    await mongo.c.conversations.insert_many(
        [_conversation("c1", ANSWERED), _conversation("c2", ANSWERED)]
    )
    await mongo.c.conversations.insert_one(_conversation("c3", AWAITING))
    await mongo.c.conversations.update_one({"_id": "c3"}, {"$set": {"state": ANSWERED}})
    await mongo.c.conversations.insert_one(_conversation("c4", AWAITING))
    # A grant is written once per key (`grant_once`); an entry without a key is no grant.
    entries = [{"_id": f"e{n}", "memberId": "ada", "seq": n, "grantKey": None} for n in (1, 2)]
    await mongo.c.ledger.insert_many(entries)

    assert [c["state"] for c in await _stored(mongo)] == [ANSWERED] * 3 + [AWAITING]
    assert await mongo.c.ledger.count_documents({}) == 2


async def test_a_transaction_that_raises_leaves_the_data_as_it_found_them(
    mongo: InMemoryMongo,
) -> None:
    conversations, rate_limits = mongo.c.conversations, mongo.c.rate_limits
    await conversations.insert_many([_conversation("c1", AWAITING), _conversation("c2", ANSWERED)])
    before = await _stored(mongo)

    async def written_then_refused() -> None:
        async with MongoUnitOfWork(mongo).transaction():
            await conversations.update_one({"_id": "c1"}, {"$set": {"state": ANSWERED}})
            await conversations.delete_one({"_id": "c2"})
            await conversations.insert_one(_conversation("c3", AWAITING))
            await conversations.update_one(
                {"_id": "c4"}, {"$set": {"state": AWAITING}}, upsert=True
            )
            await rate_limits.find_one_and_update(
                {"_id": "log"}, {"$push": {"times": 1}}, upsert=True
            )
            await conversations.insert_one(_conversation("c5", AWAITING, sender="alan"))
            await conversations.insert_one(_conversation("c6", AWAITING, sender="alan"))

    with pytest.raises(DuplicateKeyError):
        await written_then_refused()
    assert await _stored(mongo) == before
    assert await rate_limits.count_documents({}) == 0


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    settings = settings_with()
    container = build_container(settings, InMemoryMongo("sends"))
    app = create_app(settings, container=container)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, container)


async def test_concurrent_sends_to_one_recipient_make_one_conversation_and_spend_one_credit(
    api: Api,
) -> None:
    ada, grace = await ada_and_grace(api)

    results = await asyncio.gather(*(api.send(ada, grace) for _ in range(5)))

    assert outcomes(results) == Counter({"OK": 1, "AWAITING_RESPONSE": 4})
    assert await api.balance(ada) == 4
    assert [e["kind"] for e in await ledger_of(api, ada)] == ["GRANT", "DEBIT"]


async def test_concurrent_retries_of_one_send_are_answered_by_the_first(api: Api) -> None:
    ada, grace = await ada_and_grace(api)

    results = await asyncio.gather(*(api.send(ada, grace, key="once") for _ in range(5)))

    assert outcomes(results) == Counter({"OK": 5})
    assert len({result["conversation"]["id"] for result in results}) == 1
    assert await api.balance(ada) == 4
    assert [e["kind"] for e in await ledger_of(api, ada)] == ["GRANT", "DEBIT"]
