"""The start-up migration of LEGACY_PREMIUM subscriptions stored without an allotment.

An earlier version stored no allotment for a LEGACY_PREMIUM subscription started without one, so
its allotment and cap followed the plan table's current default. Start-up (Mongo.create_indexes)
writes the default configured for that start-up into each, once: a second run, even with
another default, changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

from inmail.domain.model import Member, Subscription
from inmail.domain.plans import PlanTable, PlanType, plan_table_from_overrides
from inmail.repositories.members import MemberReader, member_to_doc
from inmail.repositories.migrations import LEGACY_TERMS
from inmail.repositories.mongo import NO_TRANSACTION, Doc, Mongo, new_id
from support import migrate_from_two_processes

AT = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
DEFAULT_OF_TWELVE = plan_table_from_overrides({"LEGACY_PREMIUM": {"monthlyAllotment": 12}})
DEFAULT_OF_TWENTY = plan_table_from_overrides({"LEGACY_PREMIUM": {"monthlyAllotment": 20}})


def _member(name: str, plan: PlanType, allotment: int | None = None) -> Member:
    subscription = None
    if plan is not PlanType.BASIC:
        subscription = Subscription.start(new_id(), plan, AT, AT.day, allotment)
    return Member(new_id(), name, None, plan, AT, subscription)


def _without_allotment_key(doc: Doc) -> Doc:
    """A subscription as the oldest versions wrote it: no `monthlyAllotment` key at all."""
    subscription = dict(doc["subscription"])
    del subscription["monthlyAllotment"]
    return doc | {"subscription": subscription}


async def _stored(mongo: Mongo) -> dict[str, Doc]:
    docs = await mongo.find_all(mongo.c.members, {}, session=NO_TRANSACTION)
    return {doc["name"]: doc for doc in docs}


async def _terms(mongo: Mongo, member_id: str, plans: PlanTable) -> tuple[int, int]:
    member = await MemberReader(mongo, NO_TRANSACTION).get(member_id)
    assert member is not None
    policy = member.policy(plans)
    return policy.monthly_allotment, policy.max_balance


async def test_legacy_subscriptions_without_an_allotment_keep_the_default_of_the_first_start_up(
    mongodb_uri: str, db_name: str
) -> None:
    olive = _member("Olive Oldtimer", PlanType.LEGACY_PREMIUM)
    otto = _member("Otto Oldest", PlanType.LEGACY_PREMIUM)
    cancelled = Subscription.start(new_id(), PlanType.LEGACY_PREMIUM, AT, AT.day).canceled()
    gone = Member(new_id(), "Gwen Gone", None, PlanType.BASIC, AT, cancelled)
    seven = _member("Sid Seven", PlanType.LEGACY_PREMIUM, 7)
    ada = _member("Ada Lovelace", PlanType.PREMIUM_CAREER)
    basil = _member("Basil Basic", PlanType.BASIC)
    mongo = Mongo.connect(mongodb_uri, db_name)
    try:
        await mongo.c.members.insert_many(
            [
                member_to_doc(olive),
                _without_allotment_key(member_to_doc(otto)),
                member_to_doc(gone),
                member_to_doc(seven),
                member_to_doc(ada),
                member_to_doc(basil),
            ]
        )
        before = await _stored(mongo)

        await migrate_from_two_processes(mongo, mongodb_uri, db_name, DEFAULT_OF_TWELVE)
        migrated = await _stored(mongo)

        for name in ("Olive Oldtimer", "Otto Oldest", "Gwen Gone"):
            written = before[name] | {
                "subscription": before[name]["subscription"] | {"monthlyAllotment": 12}
            }
            assert migrated[name] == written, name
        for name in ("Sid Seven", "Ada Lovelace", "Basil Basic"):
            assert migrated[name] == before[name], name
        assert await mongo.c.migrations.find_one({"_id": LEGACY_TERMS}) is not None

        # Later start-ups with another default change nothing, with the marker or without it.
        await mongo.create_indexes(plans=DEFAULT_OF_TWENTY)
        await mongo.c.migrations.delete_one({"_id": LEGACY_TERMS})
        await mongo.create_indexes(plans=DEFAULT_OF_TWENTY)
        assert await _stored(mongo) == migrated

        # The grandfathered terms no longer follow the table: allotment 12, cap 3 x 12.
        assert await _terms(mongo, olive.id, DEFAULT_OF_TWENTY) == (12, 36)
        assert await _terms(mongo, otto.id, DEFAULT_OF_TWENTY) == (12, 36)
        assert await _terms(mongo, seven.id, DEFAULT_OF_TWENTY) == (7, 21)
    finally:
        await mongo.close()


async def test_a_new_database_records_the_legacy_terms_migration(mongo: Mongo) -> None:
    assert await mongo.c.migrations.find_one({"_id": LEGACY_TERMS}) is not None
