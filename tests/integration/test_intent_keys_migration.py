"""The start-up migration that records each payment intent's key in `idempotency`.

A send finds out whether a purchase or a plan change took its key in the one read it makes,
which joins `idempotency`. Intents opened by earlier versions have no record there (a declined
purchase, a plan change) or one without its intent (a completed purchase): start-up writes the
missing ones, once, and leaves every existing record as it is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from inmail.domain.intents import IntentKind, IntentStatus
from inmail.domain.keyed import KeyedOutcome
from inmail.domain.money import Money
from inmail.domain.plans import DEFAULT_PLAN_TABLE
from inmail.repositories.intents import PaymentIntentRepository
from inmail.repositories.migrations import INTENT_KEYS
from inmail.repositories.mongo import NO_TRANSACTION, Doc
from inmail.repositories.records import IdempotencyReader, IdempotencyRepository
from inmail.services import charges
from inmail.services.idempotency import KeyedRequest
from support import (
    Api,
    ada_and_grace,
    change_plan,
    charges_of,
    codes,
    migrate_from_two_processes,
)

DECLINING_CARD = {"brand": "Visa", "last4": "0002", "expMonth": 12, "expYear": 2030}


async def _records(api: Api) -> dict[str, Doc]:
    mongo = api.container.mongo
    docs = await mongo.find_all(mongo.c.idempotency, {}, session=NO_TRANSACTION)
    return {doc["key"]: doc for doc in docs}


async def _as_an_earlier_version_left_them(api: Api) -> None:
    """Only a completed purchase had a record, written when it was granted, without its
    intent; the others had none."""
    c = api.container.mongo.c
    await c.idempotency.delete_many({"result": {"$exists": False}})
    await c.idempotency.update_many({}, {"$unset": {"intentId": ""}})
    await c.migrations.delete_one({"_id": INTENT_KEYS})


async def test_each_payment_intent_takes_its_key_in_idempotency_once(
    api: Api, mongodb_uri: str, db_name: str
) -> None:
    ada, grace = await ada_and_grace(api)
    dora = await api.create_member("Dora Declined", "PREMIUM_CAREER", card=DECLINING_CARD)
    bought = await api.purchase(ada, 2, key="k-bought")
    assert bought["errors"] == []
    assert codes(await api.purchase(dora, 2, key="k-declined")) == ["PAYMENT_DECLINED"]
    assert (await change_plan(api, ada, "PREMIUM_BUSINESS", key="k-upgrade"))["errors"] == []
    as_opened = await _records(api)
    assert sorted(as_opened) == ["k-bought", "k-declined", "k-upgrade"]
    await _as_an_earlier_version_left_them(api)
    earlier = await _records(api)
    assert sorted(earlier) == ["k-bought"]

    mongo = api.container.mongo
    await migrate_from_two_processes(mongo, mongodb_uri, db_name, DEFAULT_PLAN_TABLE)
    migrated = await _records(api)

    assert migrated["k-bought"] == earlier["k-bought"]  # kept as it was
    for key in ("k-declined", "k-upgrade"):
        written, opened = migrated[key], as_opened[key]
        assert written.keys() == opened.keys()
        assert {k: v for k, v in written.items() if k != "_id"} == {
            k: v for k, v in opened.items() if k != "_id"
        }
    assert await mongo.c.migrations.find_one({"_id": INTENT_KEYS}) is not None
    # Again, with the marker or without it: nothing changes.
    await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
    await mongo.c.migrations.delete_one({"_id": INTENT_KEYS})
    await mongo.create_indexes(plans=DEFAULT_PLAN_TABLE)
    assert await _records(api) == migrated

    # The keys are taken for sends, and the paid requests' retries answer as before.
    refused: list[dict[str, Any]] = [
        await api.send(ada, grace, key="k-bought"),
        await api.send(dora, grace, key="k-declined"),
        await api.send(ada, grace, key="k-upgrade"),
    ]
    assert [codes(r) for r in refused] == [["IDEMPOTENCY_KEY_REUSED"]] * 3
    assert (await api.purchase(ada, 2, key="k-bought"))["lot"]["id"] == bought["lot"]["id"]
    assert codes(await api.purchase(dora, 2, key="k-declined")) == ["PAYMENT_DECLINED"]
    assert len(await charges_of(api, ada)) == 2


async def test_a_key_an_inmail_holds_beside_an_intent_keeps_the_send_s_answer(
    api: Api, mongodb_uri: str, db_name: str
) -> None:
    """Earlier versions let a send and a purchase racing under one key both take it. The
    migration leaves such a key to the send: its retry is answered as before, and the intent
    (declined here) still answers the purchase's."""
    ada, grace = await ada_and_grace(api)
    sent = await api.send(ada, grace, key="k-both")
    request = KeyedRequest.of(ada.id, "k-both", IntentKind.PURCHASE, quantity=2)
    intent = charges.new_intent(request, Money(2000, "USD"), api.clock.now(), quantity=2)
    mongo = api.container.mongo
    async with mongo.session_transaction() as session:
        await PaymentIntentRepository(mongo, session).insert(
            replace(intent, status=IntentStatus.DECLINED)
        )
    await _as_an_earlier_version_left_them(api)

    await migrate_from_two_processes(mongo, mongodb_uri, db_name, DEFAULT_PLAN_TABLE)

    assert await _records(api) == {}
    retried = await api.send(ada, grace, key="k-both")
    assert codes(retried) == []
    assert retried["conversation"]["id"] == sent["conversation"]["id"]

    # A grant never writes over the record another request keeps under its key.
    other = KeyedRequest.of(ada.id, "k-kept", "sendInMail", recipientId=grace.id)
    bought = KeyedRequest.of(ada.id, "k-kept", IntentKind.PURCHASE, quantity=2)
    async with mongo.session_transaction() as session:
        records = IdempotencyRepository(mongo, session)
        await records.insert(other.record(api.clock.now(), KeyedOutcome("c-1", 4)))
        await records.fulfil(bought.record(api.clock.now(), KeyedOutcome("lot-1", 6)))
    kept = await IdempotencyReader(mongo, NO_TRANSACTION).find(ada.id, "k-kept")
    assert kept is not None
    assert (kept.operation, kept.outcome) == ("sendInMail", KeyedOutcome("c-1", 4))


async def test_a_new_database_records_the_intent_keys_migration(api: Api) -> None:
    mongo = api.container.mongo
    assert await mongo.c.migrations.find_one({"_id": INTENT_KEYS}) is not None
