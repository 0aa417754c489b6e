"""Purchases as earlier versions stored them, read by this one."""

from __future__ import annotations

from datetime import UTC, datetime

from inmail.domain.model import PurchaseStatus
from inmail.domain.money import Money
from inmail.repositories.mongo import NO_TRANSACTION, Mongo
from inmail.repositories.records import PurchaseReader

AT = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)


async def test_a_purchase_recorded_before_prices_existed_reads_as_charged_the_default_price(
    mongo: Mongo,
) -> None:
    await mongo.c.purchases.insert_one(
        {
            "_id": "p-1",
            "memberId": "ada",
            "quantity": 3,
            "chargeId": "ch-1",
            "lotId": "lot-1",
            "at": AT,
            "idempotencyKey": "k-1",
        }
    )

    purchase = await PurchaseReader(mongo, NO_TRANSACTION).get("p-1")

    assert purchase is not None
    assert purchase.amount == Money(3000, "USD")  # USD 10.00 a credit
    assert purchase.status is PurchaseStatus.COMPLETED
    assert (purchase.quantity, purchase.lot_id, purchase.at) == (3, "lot-1", AT)
