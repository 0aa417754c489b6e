"""Buying extra credits: checked and bound to its request before any charge (SPEC 6).

The request's key, quantity and amount are fixed in a payment intent before the card is charged
(services/charges.py), so what is granted is exactly what was charged: a retry under the key gets
the first purchase, another quantity under it is refused before any charge.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from inmail.domain.credits import CreditLot, CreditSource, purchase_grant_key
from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.intents import IntentKind, PaymentIntent
from inmail.domain.model import Member
from inmail.domain.notifications import Notification
from inmail.domain.rules import check_purchase_quantity, purchase_refusal
from inmail.services import charges
from inmail.services.base import Account, Deps
from inmail.services.idempotency import (
    KeyedOutcome,
    KeyedRequest,
    remember_fulfilled,
    replay,
)
from inmail.services.unit_of_work import Transaction


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    lot: CreditLot | None
    credits_left: int


async def purchase_credits(deps: Deps, member_id: str, quantity: int, key: str) -> PurchaseResult:
    check_purchase_quantity(quantity, deps.limits.max_purchase_quantity)
    request = KeyedRequest.of(member_id, key, IntentKind.PURCHASE, quantity=quantity)
    if (outcome := await replay(deps.reads.idempotency, request)) is not None:
        return await _result(deps, outcome)  # this purchase, granted already
    intent = await charges.existing_intent(deps, request)
    if intent is None:
        now = deps.now()
        member = await _member_may_buy(deps, member_id, quantity, now)
        price = member.policy(deps.plans).credit_price
        assert price is not None, "a plan that can buy has a credit price"
        fresh = charges.new_intent(request, price.times(quantity), now, quantity=quantity)
        intent = await charges.open_intent(
            deps, fresh, request, functools.partial(_fits_with_what_is_on_order, deps)
        )
    done = await charges.pay_and_fulfil(deps, intent, grant_purchase)
    await deps.publisher.publish(done.entries)
    return await _result(deps, done.outcome)


async def _member_may_buy(deps: Deps, member_id: str, quantity: int, now: datetime) -> Member:
    """Checked before any charge, on the balance as the grant will see it (due renewals
    included), so that a purchase over the cap is refused before the card is charged."""
    preview = await Account.load(deps.reads, deps.plans, member_id, now)
    if preview is None:
        raise DomainError(ErrorCode.NOT_FOUND, Reason.OWN_MEMBER_MISSING)
    member = preview.member
    refusal = purchase_refusal(
        member, plans=deps.plans, now=now, quantity=quantity, balance=preview.balance
    )
    if refusal:
        raise refusal
    return member


async def _fits_with_what_is_on_order(deps: Deps, tx: Transaction, intent: PaymentIntent) -> None:
    """The cap again, in the transaction that records the intent, counting what the member's
    other open purchases may still grant: of concurrent purchases that would pass the cap
    together, those recorded after the first that fills it are refused before any charge.

    The transaction also takes the member's turn (`idempotency.take_key`), so that two purchases
    of one member record their intents in turn, each seeing the other's: without it both could
    count the same credits on order and both be charged."""
    assert intent.quantity is not None
    now = deps.now()
    account = await Account.load(tx, deps.plans, intent.member_id, now)
    if account is None:
        raise DomainError(ErrorCode.NOT_FOUND, Reason.OWN_MEMBER_MISSING)
    on_order = await tx.intents.credits_on_order(intent.member_id)
    refusal = purchase_refusal(
        account.member,
        plans=deps.plans,
        now=now,
        quantity=intent.quantity,
        balance=account.balance + on_order,
    )
    if refusal:
        raise refusal


async def grant_purchase(
    tx: Transaction, deps: Deps, intent: PaymentIntent, now: datetime
) -> charges.Fulfilled:
    """Grant what the charge paid for: the intent's quantity, never a request's."""
    assert intent.quantity is not None
    assert intent.charge_id is not None
    account = await Account.load(tx, deps.plans, intent.member_id, now, latest=deps.now())
    assert account is not None, "members are never deleted"
    now = account.now  # the purchase is recorded when its lot is granted
    member = account.member
    refusal = purchase_refusal(
        member,
        plans=deps.plans,
        now=now,
        quantity=intent.quantity,
        balance=account.balance,
        charged=True,
    )
    if refusal:
        raise refusal
    lot = account.wallet.grant(
        CreditSource.PURCHASE,
        intent.quantity,
        now,
        member.policy(deps.plans).max_balance,
        grant_key=purchase_grant_key(intent.charge_id),
        purchase_id=intent.id,
    )
    assert lot is not None, "a purchase within the cap is granted whole"
    entries = await account.save(tx)
    await tx.purchases.insert(charges.purchase_of(intent, now, lot_id=lot.id))
    await tx.notifications.add(Notification.purchase_completed(member.id, intent.id, lot.id, now))
    outcome = KeyedOutcome(lot.id, account.balance)
    await remember_fulfilled(tx.idempotency, charges.request_of(intent), outcome, now)
    return charges.Fulfilled(outcome, entries)


async def _result(deps: Deps, outcome: KeyedOutcome) -> PurchaseResult:
    lot_id = outcome.subject_id
    lots = await deps.reads.lots.get_many([lot_id]) if lot_id else {}
    return PurchaseResult(lots.get(lot_id) if lot_id else None, outcome.credits_left)
