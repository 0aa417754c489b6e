"""The start-up migration that has reconciliation look once more at intents declined before.

Earlier versions declined a payment intent on a retry whose card was refused now without asking
the gateway for a charge an earlier attempt under the key had made, and never looked at a
declined intent again: such a charge was neither granted nor refunded. Start-up gives every
declined intent without a recheck one, due at once, so that the next reconciliation pass finds
such a charge and refunds it.
"""

from __future__ import annotations

from datetime import timedelta

from inmail.domain.intents import IntentStatus, PaymentIntent
from inmail.domain.plans import DEFAULT_PLAN_TABLE
from inmail.repositories.migrations import DECLINED_RECHECK
from inmail.repositories.migrations import _recheck_declined_intents as recheck_declined
from inmail.services.charges import reconcile_charges
from inmail.services.fulfilments import FULFILMENTS
from support import Api, charges_of, migrate_from_two_processes, orphan_charge


async def _declined_as_before(api: Api, intent: PaymentIntent) -> None:
    """The intent as an earlier version left it declined: no charge recorded, no recheck."""
    await api.container.mongo.c.payment_intents.update_one(
        {"_id": intent.id},
        {"$set": {"status": "DECLINED", "atDeclined": api.clock.now()}, "$unset": {"chargeId": ""}},
    )


async def test_a_charge_under_an_intent_declined_before_is_refunded_at_the_next_pass(
    api: Api, mongodb_uri: str, db_name: str
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    grace = await api.create_member("Grace Hopper", "PREMIUM_BUSINESS")
    charged = await orphan_charge(api, ada, 2, status=IntentStatus.PENDING)
    uncharged = await orphan_charge(api, grace, 3, status=IntentStatus.PENDING)
    await _declined_as_before(api, charged)
    await _declined_as_before(api, uncharged)
    await api.container.mongo.c.charges.delete_many({"memberId": grace.id})
    mongo, intents = api.container.mongo, api.container.deps.reads.intents
    await mongo.c.migrations.delete_one({"_id": DECLINED_RECHECK})
    api.advance(days=30)  # declined long before this version started

    await migrate_from_two_processes(mongo, mongodb_uri, db_name, DEFAULT_PLAN_TABLE)
    due = await intents.next_recheck_at(None)
    await reconcile_charges(
        api.container.deps, api.clock.now(), batch_size=10, fulfilments=FULFILMENTS
    )

    assert due == api.clock.now() - timedelta(days=30)
    assert await mongo.c.migrations.find_one({"_id": DECLINED_RECHECK}) is not None
    refunded, left = await intents.get(charged.id), await intents.get(uncharged.id)
    assert refunded is not None
    assert left is not None
    assert (refunded.status, left.status) == (IntentStatus.REFUNDED, IntentStatus.DECLINED)
    assert [(c["amount"], c["status"]) for c in await charges_of(api, ada)] == [(2000, "REFUNDED")]
    assert await charges_of(api, grace) == []
    assert await intents.next_recheck_at(None) is None  # each looked at once, the hour long past
    assert await api.balance(ada) == await api.balance(grace) == 15
    # Later start-ups skip it; run again all the same, it is one more look that changes nothing.
    await migrate_from_two_processes(mongo, mongodb_uri, db_name, DEFAULT_PLAN_TABLE)
    assert await intents.next_recheck_at(None) is None
    assert await recheck_declined(mongo) == (1,)
    await reconcile_charges(
        api.container.deps, api.clock.now(), batch_size=10, fulfilments=FULFILMENTS
    )
    assert await intents.next_recheck_at(None) is None
    assert [(c["amount"], c["status"]) for c in await charges_of(api, ada)] == [(2000, "REFUNDED")]
    assert await charges_of(api, grace) == []


async def test_a_new_database_records_the_declined_recheck_migration(api: Api) -> None:
    assert await api.container.mongo.c.migrations.find_one({"_id": DECLINED_RECHECK}) is not None
