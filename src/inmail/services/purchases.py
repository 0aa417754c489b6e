"""Buying extra credits: checked before any charge, charged once, granted once (SPEC 6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from inmail.domain.credits import CreditLot, CreditSource, purchase_grant_key
from inmail.domain.errors import DomainError, ErrorCode
from inmail.domain.model import LedgerEntry, Member, Purchase
from inmail.domain.notifications import Notification
from inmail.domain.rules import purchase_refusal
from inmail.repositories.mongo import new_id
from inmail.repositories.records import IdempotencyRecord, Refusal
from inmail.services.base import Account, Deps
from inmail.services.idempotency import KeyedOutcome, KeyedRequest, answer, remember, replay
from inmail.services.payments import Charge, PaymentDeclined, PaymentGateway
from inmail.services.unit_of_work import Transaction

OPERATION = "purchaseInMailCredits"


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    lot: CreditLot | None
    credits_left: int


@dataclass(frozen=True, slots=True)
class _Granted:
    outcome: KeyedOutcome
    entries: list[LedgerEntry]


async def purchase_credits(
    deps: Deps, gateway: PaymentGateway, member_id: str, quantity: int, key: str
) -> PurchaseResult:
    maximum = deps.limits.max_purchase_quantity
    if isinstance(quantity, bool) or not 1 <= quantity <= maximum:
        raise DomainError(ErrorCode.INVALID_INPUT, f"quantity must be 1 to {maximum}.", "quantity")
    request = KeyedRequest.of(member_id, key, OPERATION, quantity=quantity)
    now = deps.now()
    if (prior := await deps.reads.idempotency.find(member_id, request.key)) is not None:
        if prior.refusal is not None and prior.request_hash == request.fingerprint:
            await _finish_refund(deps, gateway, request, now)
        return await _result(deps, answer(prior, request))
    member = await _member_may_buy(deps, member_id, quantity, now)
    charge = await _charge(gateway, request, quantity, member, now)
    try:
        granted = await deps.uow.run(_grant, deps, request, charge, quantity, now)
    except DomainError as exc:
        if exc.code is not ErrorCode.IDEMPOTENCY_KEY_REUSED:
            # The balance moved between the check and the grant.
            await _refund(deps, gateway, charge, request, exc, now)
        raise
    await deps.publisher.publish(granted.entries)
    return await _result(deps, granted.outcome)


async def _member_may_buy(deps: Deps, member_id: str, quantity: int, now: datetime) -> Member:
    """Checked before any charge, on the balance as the grant will see it (due renewals
    included), so that a purchase over the cap is refused before the card is charged."""
    member = await deps.reads.members.get(member_id)
    if member is None:
        raise DomainError(ErrorCode.NOT_FOUND, "Your member record does not exist.")
    preview = await Account.open(deps.reads, deps.plans, member, now)
    refusal = purchase_refusal(
        member, plans=deps.plans, now=now, quantity=quantity, balance=preview.balance
    )
    if refusal:
        raise refusal
    return member


async def _charge(
    gateway: PaymentGateway, request: KeyedRequest, quantity: int, member: Member, now: datetime
) -> Charge:
    assert member.payment_method is not None, "purchase_refusal requires a card"
    try:
        return await gateway.charge(member.id, request.key, quantity, member.payment_method, now)
    except PaymentDeclined as exc:
        raise DomainError(
            ErrorCode.PAYMENT_METHOD_EXPIRED, f"The payment was declined: {exc}.", "paymentMethod"
        ) from None


async def _grant(
    tx: Transaction,
    deps: Deps,
    request: KeyedRequest,
    charge: Charge,
    quantity: int,
    now: datetime,
) -> _Granted:
    if (prior := await replay(tx.idempotency, request)) is not None:
        return _Granted(prior, [])  # a concurrent retry of this purchase got here first
    member = await tx.members.get(request.member_id)
    assert member is not None, "members are never deleted"
    account = await Account.open(tx, deps.plans, member, now)
    refusal = purchase_refusal(
        member, plans=deps.plans, now=now, quantity=quantity, balance=account.balance
    )
    if refusal:
        raise refusal
    purchase_id = new_id()
    lot = account.wallet.grant(
        CreditSource.PURCHASE,
        quantity,
        now,
        member.policy(deps.plans).max_balance,
        grant_key=purchase_grant_key(charge.id),
        purchase_id=purchase_id,
    )
    assert lot is not None, "a purchase within the cap is granted whole"
    entries = await account.save(tx)
    await tx.purchases.insert(
        Purchase(purchase_id, member.id, quantity, charge.id, lot.id, now, request.key)
    )
    await tx.notifications.add(Notification.purchase_completed(member.id, purchase_id, lot.id, now))
    outcome = KeyedOutcome(lot.id, account.balance)
    await remember(tx.idempotency, request, outcome, now)
    return _Granted(outcome, entries)


async def _result(deps: Deps, outcome: KeyedOutcome) -> PurchaseResult:
    lot_id = outcome.subject_id
    lots = await deps.reads.lots.get_many([lot_id]) if lot_id else {}
    return PurchaseResult(lots.get(lot_id) if lot_id else None, outcome.credits_left)


async def _refund(
    deps: Deps,
    gateway: PaymentGateway,
    charge: Charge,
    request: KeyedRequest,
    refusal: DomainError,
    now: datetime,
) -> None:
    """Refund a charge whose grant was refused, unless a retry under its key was granted.

    A retry of this purchase shares its charge; holding the key while refunding keeps such a
    retry from granting credits on a charge that is being given back (it gets this refusal).
    """
    held = request.record(now, refusal=Refusal(refusal.code, refusal.message, refusal.field))
    if not await deps.uow.run(_hold, held):
        return  # a retry was granted on this charge, or is refunding it
    try:
        await gateway.refund(charge, now)
    finally:
        await deps.uow.run(_release, request)


async def _finish_refund(
    deps: Deps, gateway: PaymentGateway, request: KeyedRequest, now: datetime
) -> None:
    """A retry that finds its key held by a refusal makes sure the refund happened.

    The process that held the key may have died before refunding: refunding again is a no-op,
    and a charge that bought a lot is never refunded. Then the key is free for a fresh attempt.
    """
    charge = await gateway.find(request.member_id, request.key)
    if charge is not None and not await deps.reads.purchases.exists_for_charge(charge.id):
        await gateway.refund(charge, now)
    await deps.uow.run(_release, request)


async def _hold(tx: Transaction, record: IdempotencyRecord) -> bool:
    return await tx.idempotency.hold(record)


async def _release(tx: Transaction, request: KeyedRequest) -> None:
    await tx.idempotency.release(request.member_id, request.key)
