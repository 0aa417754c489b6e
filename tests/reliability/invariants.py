"""The invariants of credits, checked on what is stored, whoever wrote it and however it ended.

Written from SPEC alone (sections 3-6), on the raw collections: a member's ledger is gapless and
adds up, every lot is accounted for by its entries, every InMail has exactly one debit and every
debit its InMail, a credit-back happens at most once per InMail, and every successful charge has
exactly one purchase. `problems()` returns what is broken, in words; [] means all hold.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from inmail.domain.plans import DEFAULT_PLAN_TABLE, PlanTable, PlanType

Doc = dict[str, Any]
LOT_LIFETIME = timedelta(days=90)


@dataclass
class Snapshot:
    """Every document of each collection the invariants read, under the collection's name."""

    members: list[Doc] = field(default_factory=list)
    credit_lots: list[Doc] = field(default_factory=list)
    ledger: list[Doc] = field(default_factory=list)
    conversations: list[Doc] = field(default_factory=list)
    purchases: list[Doc] = field(default_factory=list)
    charges: list[Doc] = field(default_factory=list)
    idempotency: list[Doc] = field(default_factory=list)
    payment_intents: list[Doc] = field(default_factory=list)


COLLECTIONS = tuple(f.name for f in fields(Snapshot))


def keyed_records(snapshot: Snapshot) -> dict[tuple[str, str], Doc]:
    """Every record of a request under a key, by (member, key): those in `idempotency`, and a
    send's, which its conversation carries (`sentUnder`), in the same form."""
    records = {(r["memberId"], r["key"]): r for r in snapshot.idempotency}
    for c in snapshot.conversations:
        if (held := c.get("sentUnder")) is not None:
            result = {"conversationId": c["_id"], "creditsLeft": held["creditsLeft"]}
            records[(c["senderId"], held["key"])] = {"key": held["key"], "result": result}
    return records


async def load(db: AsyncDatabase[Doc]) -> Snapshot:
    snapshot = Snapshot()
    for name in COLLECTIONS:
        setattr(snapshot, name, [doc async for doc in db[name].find({})])
    return snapshot


def load_sync(uri: str, db_name: str) -> Snapshot:
    client: MongoClient[Doc] = MongoClient(uri, tz_aware=True)
    try:
        db = client[db_name]
        snapshot = Snapshot()
        for name in COLLECTIONS:
            setattr(snapshot, name, list(db[name].find({})))
        return snapshot
    finally:
        client.close()


def _by(docs: Iterable[Doc], key: str) -> dict[Any, list[Doc]]:
    grouped: dict[Any, list[Doc]] = defaultdict(list)
    for doc in docs:
        grouped[doc.get(key)].append(doc)
    return grouped


def cap_of(member: Doc, plans: PlanTable = DEFAULT_PLAN_TABLE) -> int:
    subscription = member.get("subscription") or {}
    return plans.policy(PlanType(member["plan"]), subscription.get("monthlyAllotment")).max_balance


def spendable(lots: Iterable[Doc], now: datetime) -> int:
    return sum(
        lot["remaining"] for lot in lots if lot["status"] == "ACTIVE" and now < lot["expiresAt"]
    )


def problems(snapshot: Snapshot, now: datetime) -> list[str]:
    found: list[str] = []
    lots_of = _by(snapshot.credit_lots, "memberId")
    entries_of = _by(snapshot.ledger, "memberId")
    conversations = {c["_id"]: c for c in snapshot.conversations}
    purchases = {p["_id"]: p for p in snapshot.purchases}
    lots = {lot["_id"]: lot for lot in snapshot.credit_lots}
    debits: Counter[str] = Counter()
    credit_backs: Counter[str] = Counter()

    for member in snapshot.members:
        mid = member["_id"]
        entries = sorted(entries_of.get(mid, []), key=lambda e: e["seq"])
        member_lots = lots_of.get(mid, [])
        seqs = [e["seq"] for e in entries]
        if seqs != list(range(1, len(entries) + 1)):
            found.append(f"{mid}: ledger seqs are not 1..n: {seqs}")
        if member.get("ledgerSeq", 0) != len(entries):
            found.append(f"{mid}: ledgerSeq {member.get('ledgerSeq')} but {len(entries)} entries")
        running = 0
        for e in entries:
            running += e["delta"]
            if running != e["balanceAfter"]:
                found.append(
                    f"{mid}: entry {e['seq']} {e['kind']} balanceAfter {e['balanceAfter']} "
                    f"but the deltas add up to {running}"
                )
            if e["balanceAfter"] < 0:
                found.append(f"{mid}: entry {e['seq']} takes the balance below zero")
            if e["kind"] == "DEBIT":
                if e["delta"] != -1 or not e.get("conversationId"):
                    found.append(f"{mid}: debit {e['seq']} is not -1 for a conversation")
                else:
                    debits[e["conversationId"]] += 1
                    c = conversations.get(e["conversationId"])
                    if c is None or c["senderId"] != mid or c.get("kind", "INMAIL") != "INMAIL":
                        found.append(f"{mid}: debit {e['seq']} has no InMail of this sender")
            if e["kind"] == "CREDIT_BACK":
                cid = e.get("conversationId")
                c = conversations.get(cid) if cid else None
                if c is None or c["senderId"] != mid or c.get("respondedAt") is None:
                    found.append(f"{mid}: credit-back {e['seq']} has no responded InMail")
                elif cid is not None:
                    credit_backs[cid] += 1
                    if bool(c.get("creditedBack")) != (e["delta"] > 0):
                        found.append(f"{mid}: conversation {cid} creditedBack disagrees")
            if e["kind"] in ("EXPIRE", "FORFEIT"):
                lot = lots.get(e.get("lotId"))
                wanted = "EXPIRED" if e["kind"] == "EXPIRE" else "FORFEITED"
                if lot is None or lot["status"] != wanted or e["delta"] > 0:
                    found.append(f"{mid}: {e['kind']} {e['seq']} does not match its lot")
                elif e["kind"] == "EXPIRE" and e["at"] != lot["expiresAt"]:
                    found.append(f"{mid}: EXPIRE {e['seq']} not written at the lot's expiry")
            if e.get("purchaseId"):
                # A grant adds what was bought; an EXPIRE or FORFEIT of the bought lot names the
                # purchase too, and takes away what was left of it.
                p = purchases.get(e["purchaseId"])
                quantity = p["quantity"] if p is not None and p["lotId"] == e.get("lotId") else None
                if e["kind"] == "GRANT" and quantity != e["delta"]:
                    found.append(f"{mid}: grant {e['seq']} does not match its purchase")
                elif e["kind"] != "GRANT" and (
                    quantity is None or not -quantity <= e["delta"] <= 0
                ):
                    found.append(f"{mid}: {e['kind']} {e['seq']} does not match its purchase")

        total = sum(e["delta"] for e in entries)
        held = sum(lot["remaining"] for lot in member_lots if lot["status"] == "ACTIVE")
        if total != held:
            found.append(f"{mid}: ledger adds up to {total}, ACTIVE lots hold {held}")
        lapsed = [
            lot
            for lot in member_lots
            if lot["status"] == "ACTIVE" and lot["remaining"] > 0 and lot["expiresAt"] <= now
        ]
        balance = spendable(member_lots, now)
        if not lapsed and balance != total:
            found.append(f"{mid}: balance {balance} but the ledger adds up to {total}")
        if balance > cap_of(member):
            found.append(f"{mid}: balance {balance} above the cap {cap_of(member)}")
        subscription = member.get("subscription")
        if (subscription is None or subscription["status"] != "ACTIVE") and held:
            found.append(f"{mid}: holds {held} credits without an active subscription")

        for lot in member_lots:
            lid = lot["_id"]
            if not 0 <= lot["remaining"] <= lot["quantity"] or lot["quantity"] <= 0:
                found.append(f"{mid}: lot {lid} has remaining {lot['remaining']}/{lot['quantity']}")
            if (lot["status"] == "ACTIVE") != (lot["remaining"] > 0):
                found.append(f"{mid}: lot {lid} is {lot['status']} with {lot['remaining']} left")
            if lot["expiresAt"] != lot["grantedAt"] + LOT_LIFETIME:
                found.append(f"{mid}: lot {lid} does not live 90 days")
            own = [e for e in entries if e.get("lotId") == lid]
            if sum(e["delta"] for e in own) != lot["remaining"]:
                found.append(f"{mid}: lot {lid}'s entries do not add up to its remaining")
            grants = [e for e in own if e["kind"] in ("GRANT", "CREDIT_BACK")]
            if len(grants) != 1 or grants[0]["delta"] != lot["quantity"]:
                found.append(f"{mid}: lot {lid} is not granted by exactly one entry")

    for c in snapshot.conversations:
        if c.get("kind", "INMAIL") != "INMAIL":
            continue
        if debits[c["_id"]] != 1:
            found.append(f"conversation {c['_id']} has {debits[c['_id']]} debits")
        if credit_backs[c["_id"]] > 1:
            found.append(f"conversation {c['_id']} was credited back {credit_backs[c['_id']]}x")
        if (c.get("respondedAt") is None) != (c["state"] == "AWAITING_RESPONSE"):
            found.append(f"conversation {c['_id']} is {c['state']} with respondedAt mismatch")
        if c.get("creditedBack") and credit_backs[c["_id"]] != 1:
            found.append(f"conversation {c['_id']} says creditedBack without its entry")
    awaiting = Counter(
        (c["senderId"], c["recipientId"])
        for c in snapshot.conversations
        if c["state"] == "AWAITING_RESPONSE"
    )
    found += [
        f"{pair} has {n} InMails awaiting a response" for pair, n in awaiting.items() if n > 1
    ]

    found += money_problems(snapshot, lots)
    purchase_lots = {p.get("lotId") for p in snapshot.purchases}
    for lot in snapshot.credit_lots:
        if lot["source"] == "PURCHASE" and lot["_id"] not in purchase_lots:
            found.append(f"PURCHASE lot {lot['_id']} has no purchase")

    for record in keyed_records(snapshot).values():
        result = record.get("result") or {}
        if "conversationId" in result and result["conversationId"] not in conversations:
            found.append(f"idempotency key {record['key']} points at a missing conversation")
        if "lotId" in result and result["lotId"] not in lots:
            found.append(f"idempotency key {record['key']} points at a missing lot")
    return found


def money_problems(snapshot: Snapshot, lots: dict[str, Doc]) -> list[str]:
    """Money is never minted nor kept for nothing: every charge that stands bought exactly one
    completed purchase or plan change; every refunded charge bought nothing; each purchase's
    lot holds exactly the credits its charge paid for."""
    found: list[str] = []
    charges = {c["_id"]: c for c in snapshot.charges}
    intents = {i["_id"]: i for i in snapshot.payment_intents}
    completed = [p for p in snapshot.purchases if p.get("status", "COMPLETED") == "COMPLETED"]
    bought = Counter(p["chargeId"] for p in completed)
    bought.update(
        i["chargeId"]
        for i in intents.values()
        if i["kind"] == "changePlan" and i["status"] == "COMPLETED"
    )
    for charge_id, charge in charges.items():
        standing = charge["status"] == "SUCCEEDED"
        if standing and bought[charge_id] != 1:
            found.append(f"charge {charge_id} stands with {bought[charge_id]} purchases")
        if not standing and bought[charge_id] != 0:
            found.append(f"refunded charge {charge_id} bought {bought[charge_id]} purchases")
    for p in snapshot.purchases:
        found_charge = charges.get(p["chargeId"])
        if found_charge is None:
            found.append(f"purchase {p['_id']} has no charge")
            continue
        charge = found_charge
        if p.get("status", "COMPLETED") == "REFUNDED":
            if charge["status"] != "REFUNDED" or p.get("lotId") is not None:
                found.append(f"refunded purchase {p['_id']} kept its charge or a lot")
            continue
        lot = lots.get(p["lotId"])
        if lot is None or lot["source"] != "PURCHASE" or lot["quantity"] != p["quantity"]:
            found.append(f"purchase {p['_id']} has no matching PURCHASE lot")
        amount = p.get("amount") or {}
        if "amount" in charge and amount.get("amount") != charge["amount"]:
            found.append(f"purchase {p['_id']} grants other than its charge paid for")
        intent = intents.get(p["_id"])
        if intent is not None and intent["quantity"] != p["quantity"]:
            found.append(f"purchase {p['_id']} grants other than its intent charged for")
    return found
