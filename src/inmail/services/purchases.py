"""Buying extra credits: checked before any charge, charged once, granted once (SPEC 6)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inmail.domain.credits import CreditLot, CreditSource
from inmail.domain.errors import DomainError, ErrorCode
from inmail.domain.model import LedgerEntry, Purchase
from inmail.domain.rules import purchase_refusal
from inmail.repositories.mongo import Session, new_id
from inmail.services.base import Account, Deps, request_hash, transact
from inmail.services.inmail import clean_idempotency_key, reused_key
from inmail.services.payments import Charge, PaymentDeclined, PaymentGateway


@dataclass(frozen=True, slots=True)
class PurchaseResult:
    lot: CreditLot | None
    credits_left: int


async def purchase_credits(
    deps: Deps, gateway: PaymentGateway, member_id: str, quantity: int, key: str
) -> PurchaseResult:
    maximum = deps.limits.max_purchase_quantity
    if isinstance(quantity, bool) or not 1 <= quantity <= maximum:
        raise DomainError(ErrorCode.INVALID_INPUT, f"quantity must be 1 to {maximum}.", "quantity")
    key = clean_idempotency_key(key)
    fingerprint = request_hash("purchaseInMailCredits", quantity=quantity)
    now = deps.now()

    prior = await deps.idempotency.find(member_id, key)
    if prior is not None:
        if prior.get("refusal") is not None and prior["requestHash"] == fingerprint:
            await _finish_refund(deps, gateway, member_id, key, now)
        return await _replay(deps, prior, fingerprint)
    member = await deps.members.get(member_id)
    if member is None:
        raise DomainError(ErrorCode.NOT_FOUND, "Your member record does not exist.")
    # The balance as the grant will see it (due renewals included), so that a purchase over
    # the cap is refused before the card is charged, not refunded after.
    preview = await Account.open(deps, member, now, session=None)
    refusal = purchase_refusal(
        member, plans=deps.plans, now=now, quantity=quantity, balance=preview.balance
    )
    if refusal:
        raise refusal
    assert member.payment_method is not None
    try:
        charge = await gateway.charge(member_id, key, quantity, member.payment_method, now)
    except PaymentDeclined as exc:
        raise DomainError(
            ErrorCode.PAYMENT_METHOD_EXPIRED, f"The payment was declined: {exc}.", "paymentMethod"
        ) from None

    async def work(session: Session) -> tuple[str | None, int, list[LedgerEntry]]:
        prior = await deps.idempotency.find(member_id, key, session)
        if prior is not None:  # a concurrent retry of this purchase got here first
            _check_prior(prior, fingerprint)
            return prior["result"]["lotId"], prior["result"]["creditsLeft"], []
        current = await deps.members.get(member_id, session)
        assert current is not None
        account = await Account.open(deps, current, now, session)
        refusal = purchase_refusal(
            current, plans=deps.plans, now=now, quantity=quantity, balance=account.balance
        )
        if refusal:
            raise refusal
        purchase_id = new_id()
        lot = account.wallet.grant(
            CreditSource.PURCHASE,
            quantity,
            now,
            current.policy(deps.plans).max_balance,
            grant_key=f"purchase:{charge.id}",
            purchase_id=purchase_id,
        )
        assert lot is not None, "a purchase within the cap is granted whole"
        entries = await account.save(deps, session)
        await deps.purchases.insert(
            Purchase(
                id=purchase_id,
                member_id=member_id,
                quantity=quantity,
                charge_id=charge.id,
                lot_id=lot.id,
                at=now,
                idempotency_key=key,
            ),
            session,
        )
        await deps.idempotency.insert(
            member_id,
            key,
            operation="purchaseInMailCredits",
            request_hash=fingerprint,
            result={"lotId": lot.id, "creditsLeft": account.balance},
            at=now,
            session=session,
        )
        return lot.id, account.balance, entries

    try:
        lot_id, credits_left, entries = await transact(deps, work)
    except DomainError as exc:
        if exc.code is not ErrorCode.IDEMPOTENCY_KEY_REUSED:
            # The balance moved between the check and the grant.
            await _refund(deps, gateway, charge, member_id, key, fingerprint, exc, now)
        raise
    await deps.publisher.publish(entries)
    lots = await deps.lots.get_many([lot_id]) if lot_id else {}
    return PurchaseResult(lots.get(lot_id) if lot_id else None, credits_left)


async def _refund(
    deps: Deps,
    gateway: PaymentGateway,
    charge: Charge,
    member_id: str,
    key: str,
    fingerprint: str,
    refusal: DomainError,
    now: datetime,
) -> None:
    """Refund a charge whose grant was refused, unless a retry under its key was granted.

    A retry of this purchase shares its charge; holding the key while refunding keeps such a
    retry from granting credits on a charge that is being given back (it gets this refusal).
    """
    held = await deps.idempotency.hold(
        member_id,
        key,
        operation="purchaseInMailCredits",
        request_hash=fingerprint,
        refusal={"code": refusal.code.value, "message": refusal.message, "field": refusal.field},
        at=now,
    )
    if not held:
        return  # a retry was granted on this charge, or is refunding it
    try:
        await gateway.refund(charge, now)
    finally:
        await deps.idempotency.release(member_id, key)


async def _finish_refund(
    deps: Deps, gateway: PaymentGateway, member_id: str, key: str, now: datetime
) -> None:
    """A retry that finds its key held by a refusal makes sure the refund happened.

    The process that held the key may have died before refunding: refunding again is a no-op,
    and a charge that bought a lot is never refunded. Then the key is free for a fresh attempt.
    """
    charge = await gateway.find(member_id, key)
    if charge is not None and not await deps.purchases.exists_for_charge(charge.id):
        await gateway.refund(charge, now)
    await deps.idempotency.release(member_id, key)


def _check_prior(prior: dict[str, Any], fingerprint: str) -> None:
    if prior["requestHash"] != fingerprint:
        raise reused_key()
    refusal = prior.get("refusal")
    if refusal is not None:  # the first attempt was refused and is being refunded
        raise DomainError(ErrorCode(refusal["code"]), refusal["message"], refusal["field"])


async def _replay(deps: Deps, prior: dict[str, Any], fingerprint: str) -> PurchaseResult:
    _check_prior(prior, fingerprint)
    result = prior["result"]
    assert isinstance(result, dict)
    lots = await deps.lots.get_many([result["lotId"]])
    return PurchaseResult(lots.get(result["lotId"]), int(result["creditsLeft"]))
