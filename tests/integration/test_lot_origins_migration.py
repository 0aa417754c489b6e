"""The start-up migration that names, on each bought or credited-back lot, what it came from.

Earlier versions named a lot's purchase or conversation on its GRANT or CREDIT_BACK entry
alone, so the EXPIRE or FORFEIT entry that later took the lot away named neither. Start-up
copies the name from each grant entry onto its lot, once; a lot that names it is left alone.
"""

from __future__ import annotations

from collections import Counter

from inmail.domain.plans import DEFAULT_PLAN_TABLE
from inmail.repositories.migrations import LOT_ORIGINS
from inmail.repositories.migrations import _name_lot_origins as name_lot_origins
from inmail.repositories.mongo import NO_TRANSACTION, Doc
from support import Api, ada_and_grace, cancel_subscription, migrate_from_two_processes

ORIGINS = {"purchaseId": "", "conversationId": ""}


async def _lots(api: Api) -> dict[str, Doc]:
    mongo = api.container.mongo
    return {
        doc["_id"]: doc
        for doc in await mongo.find_all(mongo.c.credit_lots, {}, session=NO_TRANSACTION)
    }


async def test_each_bought_or_credited_back_lot_is_given_its_origin_once(
    api: Api, mongodb_uri: str, db_name: str
) -> None:
    ada, grace = await ada_and_grace(api)
    bought = await api.purchase(ada, 2, key="k-bought")
    sent = await api.send(ada, grace)
    assert bought["errors"] == sent["errors"] == []
    conversation_id = sent["conversation"]["id"]
    assert (await api.respond(grace, conversation_id, "INTERESTED"))["errors"] == []
    as_granted = await _lots(api)
    c = api.container.mongo.c
    grants = await api.container.mongo.find_all(
        c.ledger, {"kind": {"$in": ["GRANT", "CREDIT_BACK"]}}, session=NO_TRANSACTION
    )
    named_by_grant = {e["lotId"]: (e.get("purchaseId"), e.get("conversationId")) for e in grants}
    origins = {
        doc["source"]: (doc.get("purchaseId"), doc.get("conversationId"))
        for doc in as_granted.values()
        if doc["memberId"] == ada.id
    }
    assert origins == {
        "PURCHASE": named_by_grant[bought["lot"]["id"]],
        "CREDIT_BACK": (None, conversation_id),
        "MONTHLY_ALLOTMENT": (None, None),
    }
    assert origins["PURCHASE"][0]
    await c.credit_lots.update_many({}, {"$unset": ORIGINS})
    await c.migrations.delete_one({"_id": LOT_ORIGINS})

    await migrate_from_two_processes(api.container.mongo, mongodb_uri, db_name, DEFAULT_PLAN_TABLE)

    assert await _lots(api) == as_granted
    assert await c.migrations.find_one({"_id": LOT_ORIGINS}) is not None
    # A second run, without the marker, finds nothing left to write.
    assert await name_lot_origins(api.container.mongo) == (0,)
    assert await _lots(api) == as_granted

    # What the lots now name, the entries that take them away name too.
    assert (await cancel_subscription(api, ada))["errors"] == []
    forfeits = [
        e
        for e in (
            await api.container.mongo.find_all(
                c.ledger, {"kind": "FORFEIT"}, session=NO_TRANSACTION
            )
        )
        if e["memberId"] == ada.id
    ]
    assert Counter((e.get("purchaseId"), e.get("conversationId")) for e in forfeits) == Counter(
        (doc.get("purchaseId"), doc.get("conversationId"))
        for doc in as_granted.values()
        if doc["memberId"] == ada.id and doc["status"] == "ACTIVE" and doc["remaining"] > 0
    )
