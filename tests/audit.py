"""An audit of one member's credits: the invariants of SPEC 3-5, checked against storage.

It reads everything the member has (lots, ledger, InMails) and names every rule that does not
hold, so a test sees all that is wrong at once. An empty list means all is well.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from inmail.bootstrap import Container
from inmail.domain.credits import LAPSED, SPENDABLE, CreditLot, LedgerKind, LotRule, LotStatus
from inmail.domain.model import ConversationKind, LedgerEntry, Member
from inmail.repositories.mongo import Mongo
from inmail.services.base import Deps
from stored import cycle_of_grant, inmails_sent_by, ledger_of, lots_of


def held(rule: LotRule, lots: Iterable[CreditLot], now: datetime) -> int:
    """The credits in the lots `rule` counts at `now`: with SPENDABLE, the member's balance."""
    return sum(lot.remaining for lot in lots if rule.matches(lot, now))


async def audit_member(container: Container, member_id: str) -> list[str]:
    deps, mongo = container.deps, container.mongo
    member = await deps.reads.members.get(member_id)
    if member is None:
        return [f"member {member_id} does not exist"]
    now = deps.now()
    lots = await lots_of(mongo, member_id)
    entries = await ledger_of(mongo, member_id)
    reported = (await deps.reads.lots.balances([member_id], now))[member_id]
    problems = [
        *_ledger_chain(member, entries),
        *_balance(lots, entries, reported, now),
        *_lots(lots, entries),
        *_cap(deps, member, entries),
    ]
    problems.extend(await _conversations(mongo, member_id, entries))
    return problems


def _ledger_chain(member: Member, entries: list[LedgerEntry]) -> list[str]:
    problems: list[str] = []
    running = 0
    for expected_seq, entry in enumerate(entries, start=1):
        running += entry.delta
        if entry.seq != expected_seq:
            problems.append(f"ledger seq {entry.seq} where {expected_seq} was expected")
        if entry.balance_after != running:
            problems.append(
                f"ledger seq {entry.seq} ({entry.kind.value} {entry.delta:+d}): balanceAfter "
                f"{entry.balance_after} but the deltas so far sum to {running}"
            )
        if entry.balance_after < 0:
            problems.append(f"ledger seq {entry.seq}: negative balance {entry.balance_after}")
    if member.ledger_seq != len(entries):
        problems.append(f"member ledgerSeq {member.ledger_seq} but {len(entries)} entries")
    return problems


def _balance(
    lots: list[CreditLot], entries: list[LedgerEntry], reported: int, now: datetime
) -> list[str]:
    problems: list[str] = []
    spendable = held(SPENDABLE, lots, now)
    lapsed = held(LAPSED, lots, now)
    ledger_sum = sum(entry.delta for entry in entries)
    if spendable != ledger_sum - lapsed:
        problems.append(
            f"balance {spendable} (spendable lots) != ledger sum {ledger_sum} minus {lapsed} "
            "lapsed but not yet expired"
        )
    if reported != spendable:
        problems.append(f"the balance read reports {reported}, the lots hold {spendable}")
    if spendable < 0:
        problems.append(f"negative balance {spendable}")
    return problems


def _lots(lots: list[CreditLot], entries: list[LedgerEntry]) -> list[str]:
    problems: list[str] = []
    moved: Counter[str] = Counter()
    for entry in entries:
        if entry.lot_id is not None:
            moved[entry.lot_id] += entry.delta
    known = {lot.id for lot in lots}
    for lot in lots:
        if moved[lot.id] != lot.remaining:
            problems.append(
                f"lot {lot.id} ({lot.source.value}, {lot.status.value}) has {lot.remaining} "
                f"remaining but its ledger entries sum to {moved[lot.id]}"
            )
        if lot.status is not LotStatus.ACTIVE and lot.remaining != 0:
            problems.append(f"lot {lot.id} is {lot.status.value} with {lot.remaining} remaining")
        if lot.status is LotStatus.ACTIVE and lot.remaining == 0:
            problems.append(f"lot {lot.id} is ACTIVE with nothing remaining")
    for lot_id in set(moved) - known:
        problems.append(f"ledger entries name lot {lot_id}, which does not exist")
    return problems


def _cap(deps: Deps, member: Member, entries: list[LedgerEntry]) -> list[str]:
    """No grant under the current subscription raised the balance above its cap."""
    subscription = member.subscription
    if subscription is None or not subscription.is_active:
        return []
    cap = deps.plans.policy(subscription.plan, subscription.monthly_allotment).max_balance
    # The subscription's own grants name it; everything from its first grant on is under it.
    own = [e.seq for e in entries if e.grant_key and cycle_of_grant(e.grant_key) == subscription.id]
    start_seq = min(own, default=len(entries) + 1)
    return [
        f"ledger seq {entry.seq} ({entry.kind.value}) took the balance to "
        f"{entry.balance_after}, over the cap of {cap}"
        for entry in entries
        if entry.kind in (LedgerKind.GRANT, LedgerKind.CREDIT_BACK)
        and entry.seq >= start_seq
        and entry.balance_after > cap
    ]


async def _conversations(mongo: Mongo, member_id: str, entries: list[LedgerEntry]) -> list[str]:
    problems: list[str] = []
    sent = {c.id: c for c in await inmails_sent_by(mongo, member_id)}
    debits = Counter(e.conversation_id for e in entries if e.kind is LedgerKind.DEBIT)
    credit_backs = Counter(e.conversation_id for e in entries if e.kind is LedgerKind.CREDIT_BACK)
    for conversation_id in debits:
        if conversation_id not in sent:
            problems.append(f"a DEBIT names conversation {conversation_id}, no InMail of theirs")
    for conversation in sent.values():
        if conversation.kind is not ConversationKind.INMAIL:  # pragma: no cover - query filters
            continue
        if debits[conversation.id] != 1:
            problems.append(
                f"InMail {conversation.id} has {debits[conversation.id]} DEBIT entries, not 1"
            )
        if conversation.credited_back and credit_backs[conversation.id] != 1:
            problems.append(f"InMail {conversation.id} was credited back without an entry")
        if credit_backs[conversation.id] and conversation.responded_at is None:
            problems.append(f"InMail {conversation.id} was credited back without a response")
    for conversation_id, count in credit_backs.items():
        if count > 1:
            problems.append(f"conversation {conversation_id} has {count} CREDIT_BACK entries")
        if conversation_id not in sent:
            problems.append(f"a CREDIT_BACK names {conversation_id}, no InMail of theirs")
    return problems
