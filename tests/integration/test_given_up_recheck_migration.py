"""The start-up migration that has reconciliation look once more at intents given up before.

Earlier versions declined a payment intent on a retry whose card was refused now without asking
the gateway for a charge an earlier attempt under the key had made, and abandoned one without
looking again for a charge that landed after; neither was looked at again: such a charge was
neither granted nor refunded. Start-up gives every declined or abandoned intent without a
recheck one, due at once, so that the next reconciliation pass finds such a charge and refunds
it.
"""

from __future__ import annotations

from datetime import timedelta

from inmail.domain.intents import IntentStatus, PaymentIntent
from inmail.domain.plans import DEFAULT_PLAN_TABLE
from inmail.repositories.migrations import GIVEN_UP_RECHECK
from inmail.repositories.migrations import _recheck_given_up_intents as recheck_given_up
from inmail.services.charges import reconcile_charges
from inmail.services.fulfilments import FULFILMENTS
from support import Api, charges_of, migrate_from_two_processes, orphan_charge


async def _given_up_as_before(api: Api, intent: PaymentIntent, status: IntentStatus) -> None:
    """The intent as an earlier version left it declined or abandoned: no charge recorded, no
    recheck."""
    given_up = {"status": status.value, f"at{status.value.title()}": api.clock.now()}
    await api.container.mongo.c.payment_intents.update_one(
        {"_id": intent.id}, {"$set": given_up, "$unset": {"chargeId": "", "recheckAt": ""}}
    )


async def test_a_charge_under_an_intent_given_up_before_is_refunded_at_the_next_pass(
    api: Api, mongodb_uri: str, db_name: str
) -> None:
    ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
    grace = await api.create_member("Grace Hopper", "PREMIUM_BUSINESS")
    linus = await api.create_member("Linus Torvalds", "PREMIUM_BUSINESS")
    charged = await orphan_charge(api, ada, 2, status=IntentStatus.PENDING)
    uncharged = await orphan_charge(api, grace, 3, status=IntentStatus.PENDING)
    abandoned = await orphan_charge(api, linus, 1, status=IntentStatus.PENDING)
    await _given_up_as_before(api, charged, IntentStatus.DECLINED)
    await _given_up_as_before(api, uncharged, IntentStatus.DECLINED)
    await _given_up_as_before(api, abandoned, IntentStatus.ABANDONED)
    await api.container.mongo.c.charges.delete_many({"memberId": grace.id})
    mongo, intents = api.container.mongo, api.container.deps.reads.intents
    await mongo.c.migrations.delete_one({"_id": GIVEN_UP_RECHECK})
    api.advance(days=30)  # declined long before this version started

    await migrate_from_two_processes(mongo, mongodb_uri, db_name, DEFAULT_PLAN_TABLE)
    due = await intents.next_recheck_at(None)
    await reconcile_charges(
        api.container.deps, api.clock.now(), batch_size=10, fulfilments=FULFILMENTS
    )

    assert due == api.clock.now() - timedelta(days=30)
    assert await mongo.c.migrations.find_one({"_id": GIVEN_UP_RECHECK}) is not None
    refunded, left = await intents.get(charged.id), await intents.get(uncharged.id)
    late = await intents.get(abandoned.id)
    assert refunded is not None
    assert left is not None
    assert late is not None
    assert (refunded.status, left.status) == (IntentStatus.REFUNDED, IntentStatus.DECLINED)
    assert late.status is IntentStatus.REFUNDED
    assert [(c["amount"], c["status"]) for c in await charges_of(api, ada)] == [(2000, "REFUNDED")]
    assert [(c["amount"], c["status"]) for c in await charges_of(api, linus)] == [
        (1000, "REFUNDED")
    ]
    assert await charges_of(api, grace) == []
    assert await intents.next_recheck_at(None) is None  # each looked at once, the hour long past
    assert await api.balance(ada) == await api.balance(grace) == await api.balance(linus) == 15
    # Later start-ups skip it; run again all the same, it is one more look that changes nothing.
    await migrate_from_two_processes(mongo, mongodb_uri, db_name, DEFAULT_PLAN_TABLE)
    assert await intents.next_recheck_at(None) is None
    assert await recheck_given_up(mongo) == (1,)  # the one found uncharged
    await reconcile_charges(
        api.container.deps, api.clock.now(), batch_size=10, fulfilments=FULFILMENTS
    )
    assert await intents.next_recheck_at(None) is None
    assert [(c["amount"], c["status"]) for c in await charges_of(api, ada)] == [(2000, "REFUNDED")]
    assert await charges_of(api, grace) == []


async def test_a_new_database_records_the_given_up_recheck_migration(api: Api) -> None:
    assert await api.container.mongo.c.migrations.find_one({"_id": GIVEN_UP_RECHECK}) is not None
