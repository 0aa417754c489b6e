"""Paid requests: an intent recorded first, then the charge, then what it buys or a refund.

A paid request (buying credits, changing to a Premium plan) goes through `pay_and_fulfil`:

1. `open_intent` records what is being bought and for how much under the request's key, before
   any charge; another request under that key is refused here (IDEMPOTENCY_KEY_REUSED).
2. The gateway charges the intent's amount, under the intent's id as its idempotency key, so a
   retry, a concurrent twin or the reconciler never charges twice. A refusal (the card expired
   meanwhile, a decline) ends the intent DECLINED only once the gateway says it holds no charge
   under it: a retry after an attempt whose charge went through, its answer lost, completes it.
3. One transaction does what the charge bought (the grant, the plan change) and marks the intent
   COMPLETED; if it is refused (the cap was reached meanwhile), the intent goes to REFUNDING and
   the charge is given back.

`reconcile_charges` finishes intents left open by a process that died between those steps: it
completes or refunds each, exactly once, whichever process runs it and however many do. An
intent it gives up as never charged is looked up at the gateway again every RECHECK_EVERY for
RECHECK_FOR, and so is one a request declined: a request whose charge was still under way, and
whose process died before it could record it, leaves that charge to be refunded at the next look.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Concatenate, Final, ParamSpec, Protocol, TypeVar

from inmail.domain.billing import PaymentMethod
from inmail.domain.errors import DomainError, ErrorCode, Reason
from inmail.domain.intents import GIVEN_UP, IntentKind, IntentStatus, PaymentIntent
from inmail.domain.keyed import KeyedOutcome, KeyedRefusal
from inmail.domain.model import LedgerEntry, Purchase, PurchaseStatus
from inmail.domain.money import Money
from inmail.domain.notifications import Notification
from inmail.domain.plans import PlanType
from inmail.domain.rules import card_refusal
from inmail.repositories.intents import PaymentIntentReader, PaymentIntentRepository
from inmail.services.base import Deps
from inmail.services.idempotency import KeyedRequest, reused_key, take_key
from inmail.services.payments import Charge, ChargeRequest, PaymentDeclined, PaymentGateway
from inmail.services.unit_of_work import DatabaseUnavailable, Transaction, new_id

log = logging.getLogger(__name__)

RECONCILE_AFTER: Final = timedelta(minutes=2)
"""How old an open intent must be before reconciliation takes it over from its request."""

RECHECK_EVERY: Final = timedelta(minutes=5)
"""How often reconciliation asks the gateway again about an intent it gave up as never charged:
a charge landing meanwhile is refunded within SPEC's 10 minutes."""
RECHECK_FOR: Final = timedelta(hours=1)
"""For how long after giving an intent up reconciliation keeps asking."""

LAPSED = KeyedRefusal(ErrorCode.INVALID_INPUT, Reason.REQUEST_LAPSED, "idempotencyKey")

_CHARGED_BACK: Final = (IntentStatus.REFUNDING, IntentStatus.REFUNDED)
"""An intent in one of these was charged, and its charge is refunded."""


@dataclass(frozen=True, slots=True)
class Fulfilled:
    outcome: KeyedOutcome
    entries: list[LedgerEntry]


Fulfil = Callable[[Transaction, Deps, PaymentIntent, datetime], Awaitable[Fulfilled]]
"""Does what a charge bought, inside the transaction that marks its intent COMPLETED; raises a
DomainError when it can no longer be done (then the charge is refunded)."""


def new_intent(
    request: KeyedRequest,
    amount: Money,
    now: datetime,
    *,
    quantity: int | None = None,
    plan: PlanType | None = None,
    terms: str | None = None,
) -> PaymentIntent:
    return PaymentIntent(
        id=new_id(),
        member_id=request.member_id,
        key=request.key,
        kind=IntentKind(request.operation),
        request_hash=request.fingerprint,
        amount=amount,
        created_at=now,
        quantity=quantity,
        plan=plan,
        terms=terms,
    )


def purchase_of(
    intent: PaymentIntent,
    at: datetime,
    *,
    lot_id: str | None,
    status: PurchaseStatus = PurchaseStatus.COMPLETED,
) -> Purchase:
    """The purchase a charged intent for credits ends in: its lot granted, or refunded."""
    assert intent.quantity is not None, "a purchase's intent holds its quantity"
    assert intent.charge_id is not None, "a purchase is recorded once charged"
    return Purchase(
        id=intent.id,
        member_id=intent.member_id,
        quantity=intent.quantity,
        charge_id=intent.charge_id,
        lot_id=lot_id,
        at=at,
        idempotency_key=intent.key,
        amount=intent.amount,
        status=status,
    )


async def existing_intent(deps: Deps, request: KeyedRequest) -> PaymentIntent | None:
    """The intent already recorded under the request's key; raises if it was another request."""
    intent = await deps.reads.intents.find(request.member_id, request.key)
    return _asked_by(intent, request) if intent is not None else None


Admit = Callable[[Transaction, PaymentIntent], Awaitable[None]]
"""A last check of a new intent inside the transaction that records it; raises a DomainError
to refuse it (before any charge)."""


async def open_intent(
    deps: Deps, intent: PaymentIntent, request: KeyedRequest, admit: Admit | None = None
) -> PaymentIntent:
    """Record the intent (once `admit` let it), or return the one a concurrent twin recorded
    first under its key."""
    return _asked_by(await deps.uow.run(_open, intent, admit), request)


def _asked_by(intent: PaymentIntent, request: KeyedRequest) -> PaymentIntent:
    """The intent, if it was opened for this very request; a reused key is refused."""
    if intent.kind != request.operation or intent.request_hash != request.fingerprint:
        raise reused_key()
    return intent


async def _open(tx: Transaction, intent: PaymentIntent, admit: Admit | None) -> PaymentIntent:
    existing = await tx.intents.find(intent.member_id, intent.key)
    if existing is not None:
        return existing
    # The key's record, which a send under the key finds in the one read it makes anyway, is
    # written after the intent; a key held already is refused before `admit` is asked.
    request = request_of(intent)
    record = request.record(intent.created_at, intent_id=intent.id)
    recorded = functools.partial(_record_intent, tx, intent, admit)
    await take_key(tx, request, record, once_free=recorded)
    return intent


async def _record_intent(tx: Transaction, intent: PaymentIntent, admit: Admit | None) -> None:
    """Insert the intent once `admit` let it, in the member's turn (`take_key` took it)."""
    if admit is not None:
        await admit(tx, intent)
    await tx.intents.insert(intent)  # the unique (member, key) index decides a race


def request_of(intent: PaymentIntent) -> KeyedRequest:
    """The request an intent was opened for."""
    return KeyedRequest(intent.member_id, intent.key, intent.kind, intent.request_hash)


def _refused(refusal: KeyedRefusal | None, *, refunded: bool = False) -> DomainError:
    """The refusal to answer; `refunded`: the request was charged, and the charge is (being)
    refunded, which the answer then says."""
    error = (refusal or LAPSED).error()
    if refunded:
        error.data["refunded"] = 1
    return error


async def pay_and_fulfil(deps: Deps, intent: PaymentIntent, fulfil: Fulfil) -> Fulfilled:
    """Take an intent as far as it goes: charged once (through `deps.gateway`), then completed
    or refunded."""
    gateway, now = deps.gateway, deps.now()
    if intent.status == IntentStatus.PENDING:
        intent = await _charge(deps, gateway, intent, now)
    if intent.status == IntentStatus.CHARGED:
        return await _complete_or_refund(deps, gateway, intent, fulfil, now)
    if intent.status == IntentStatus.COMPLETED and intent.outcome is not None:
        return Fulfilled(intent.outcome, [])
    if intent.status == IntentStatus.REFUNDING:
        await _finish_refund(deps, gateway, intent, now)
    raise _refused(intent.refusal, refunded=intent.status in _CHARGED_BACK)


async def _charge(
    deps: Deps, gateway: PaymentGateway, intent: PaymentIntent, now: datetime
) -> PaymentIntent:
    """Charge a PENDING intent's amount to the member's card and record the charge; an expired
    card or a declined charge ends the intent DECLINED, unless it was charged already."""
    card = await _card_to_charge(deps, intent, now)
    if isinstance(card, DomainError):
        return await _decline(deps, gateway, intent, card, now)
    try:
        charge = await gateway.charge(
            ChargeRequest(intent.member_id, intent.id, intent.amount, card, now, intent.kind)
        )
    except PaymentDeclined as exc:
        declined = DomainError(
            ErrorCode.PAYMENT_DECLINED, Reason.PAYMENT_DECLINED, None, detail=str(exc)
        )
        return await _decline(deps, gateway, intent, declined, now)
    return await _record_charge(deps, intent, charge, now)


async def _card_to_charge(
    deps: Deps, intent: PaymentIntent, now: datetime
) -> PaymentMethod | DomainError:
    """The member's card, or the refusal of it if it expired since the intent was opened."""
    member = await deps.reads.members.get(intent.member_id)
    assert member is not None, "members are never deleted"
    card = member.payment_method
    refusal = card_refusal(card, now, required=True)
    if refusal is not None:
        # Checked before the intent was opened; the card changed since. The intent ends as a
        # decline does (a retry under its key answers the same; a new key, after the card is
        # updated, buys), and holds no room under the cap meanwhile.
        return refusal
    assert card is not None, "a missing card is refused"
    return card


async def _decline(
    deps: Deps, gateway: PaymentGateway, intent: PaymentIntent, error: DomainError, now: datetime
) -> PaymentIntent:
    """End a PENDING intent DECLINED and raise its refusal, which the request and any retry under
    its key are answered with. Unless the gateway holds a charge under the intent already (an
    earlier attempt's, whose answer was lost, or a concurrent twin's): that charge is recorded
    instead, and the intent goes on. A charge landing after the decline is refunded: by the
    attempt that made it (`_record_charge`), or by reconciliation, which looks again (`recheck`)."""
    charge = await gateway.find(intent.member_id, intent.id)
    if charge is not None:
        return await _record_charge(deps, intent, charge, now)
    refusal = KeyedRefusal.of(error)
    if await _give_up(deps, intent.id, IntentStatus.DECLINED, refusal, now):
        raise _refused(refusal)
    return await _current(deps, intent.id)  # a twin or reconciliation moved it first


async def _give_up(
    deps: Deps, intent_id: str, status: IntentStatus, refusal: KeyedRefusal, now: datetime
) -> bool:
    """End a PENDING intent in `status` (one of GIVEN_UP) with its refusal, to be looked up at
    the gateway again in RECHECK_EVERY; False if it moved on meanwhile."""
    return await deps.uow.run(
        _move,
        intent_id,
        (IntentStatus.PENDING,),
        status,
        now,
        refusal=refusal,
        recheck_at=now + RECHECK_EVERY,
    )


async def _record_charge(
    deps: Deps, intent: PaymentIntent, charge: Charge, now: datetime
) -> PaymentIntent:
    """The intent CHARGED with this charge; or as recorded now, if another moved it first."""
    if await deps.uow.run(
        _move, intent.id, (IntentStatus.PENDING,), IntentStatus.CHARGED, now, charge_id=charge.id
    ):
        return _with(intent, IntentStatus.CHARGED, charge.id)
    current = await _current(deps, intent.id)
    # A twin or reconciliation may have given the intent up as never charged while this charge
    # was under way: the charge goes back through the intent, so that a crash here is reconciled
    # too.
    if current.status in GIVEN_UP:
        if await _to_refund(deps, intent.id, charge, now):
            return _with(current, IntentStatus.REFUNDING, charge.id)
        current = await _current(deps, intent.id)  # reconciliation found the charge first
    return current  # a twin or reconciliation recorded the charge first


async def _to_refund(deps: Deps, intent_id: str, charge: Charge, now: datetime) -> bool:
    """Record a charge made for an intent given up, to be refunded; False if it moved on."""
    return await deps.uow.run(
        _move,
        intent_id,
        GIVEN_UP,
        IntentStatus.REFUNDING,
        now,
        charge_id=charge.id,
    )


async def _current(deps: Deps, intent_id: str) -> PaymentIntent:
    """The intent as it is recorded now (another request or reconciler may have moved it)."""
    intent = await deps.reads.intents.get(intent_id)
    assert intent is not None, "intents are never deleted"
    return intent


def _with(intent: PaymentIntent, status: IntentStatus, charge_id: str) -> PaymentIntent:
    return replace(intent, status=status, charge_id=charge_id)


P = ParamSpec("P")
T = TypeVar("T")


def _on_intents(
    write: Callable[Concatenate[PaymentIntentRepository, P], Awaitable[T]],
) -> Callable[Concatenate[Transaction, P], Awaitable[T]]:
    """A write of the intents repository as a step of `deps.uow.run`, in its transaction."""

    async def step(tx: Transaction, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await write(tx.intents, *args, **kwargs)

    return step


_move = _on_intents(PaymentIntentRepository.move)
_recheck_next = _on_intents(PaymentIntentRepository.recheck_next)


async def _complete_or_refund(
    deps: Deps, gateway: PaymentGateway, intent: PaymentIntent, fulfil: Fulfil, now: datetime
) -> Fulfilled:
    try:
        return await deps.uow.run(_complete, deps, intent.id, fulfil, now)
    except DomainError as exc:
        refusal = KeyedRefusal.of(exc)
        moved = await deps.uow.run(
            _move, intent.id, (IntentStatus.CHARGED,), IntentStatus.REFUNDING, now, refusal=refusal
        )
        current = await _current(deps, intent.id)
        if moved or current.status == IntentStatus.REFUNDING:
            await _finish_refund(deps, gateway, current, now)
            raise _refused(current.refusal, refunded=True) from None
        if current.status == IntentStatus.COMPLETED and current.outcome is not None:
            return Fulfilled(current.outcome, [])  # completed by a twin meanwhile
        if current.status == IntentStatus.REFUNDED:  # refunded by a twin meanwhile
            raise _refused(current.refusal, refunded=True) from None
        raise


async def _complete(
    tx: Transaction, deps: Deps, intent_id: str, fulfil: Fulfil, now: datetime
) -> Fulfilled:
    intent = await tx.intents.get(intent_id)
    assert intent is not None, "intents are never deleted"
    if intent.status == IntentStatus.COMPLETED and intent.outcome is not None:
        return Fulfilled(intent.outcome, [])  # a twin or reconciliation completed it first
    if intent.status != IntentStatus.CHARGED:
        raise _refused(intent.refusal)
    done = await fulfil(tx, deps, intent, now)
    moved = await tx.intents.move(
        intent.id, (IntentStatus.CHARGED,), IntentStatus.COMPLETED, now, outcome=done.outcome
    )
    assert moved, "the snapshot read the intent CHARGED; a concurrent move is a write conflict"
    return done


async def _finish_refund(
    deps: Deps, gateway: PaymentGateway, intent: PaymentIntent, now: datetime
) -> None:
    """Refund an intent in REFUNDING at the gateway (again is harmless), then record it."""
    assert intent.charge_id is not None, "an intent is REFUNDING only once charged"
    charge = await gateway.find(intent.member_id, intent.id)
    if charge is not None:
        await gateway.refund(charge, now)
    else:  # pragma: no cover - a provider that lost its own charge
        log.error("payment intent %s: the gateway has no charge to refund", intent.id)
    await deps.uow.run(_refunded, intent.id, now)


async def _refunded(tx: Transaction, intent_id: str, now: datetime) -> None:
    intent = await tx.intents.get(intent_id)
    assert intent is not None, "intents are never deleted"
    if not await tx.intents.move(intent_id, (IntentStatus.REFUNDING,), IntentStatus.REFUNDED, now):
        return  # recorded already
    if intent.quantity is not None and intent.charge_id is not None:
        await tx.purchases.insert(
            purchase_of(intent, now, lot_id=None, status=PurchaseStatus.REFUNDED)
        )
        await tx.notifications.add(Notification.purchase_refunded(intent.member_id, intent.id, now))


# Reconciliation: intents left open by a request that never came back.


@dataclass
class Reconciled:
    completed: int = 0
    refunded: int = 0
    lapsed: int = 0
    failed: list[str] = field(default_factory=list)  # the intents whose reconciliation failed
    stopped: bool = False  # `go_on` ended the work before the last intent


async def reconcile_charges(
    deps: Deps,
    now: datetime,
    *,
    batch_size: int,
    fulfilments: Mapping[IntentKind, Fulfil],
    after: timedelta = RECONCILE_AFTER,
    go_on: Callable[[], Awaitable[bool]] | None = None,
) -> Reconciled:
    """Complete or refund every intent opened `after` ago or earlier and still open, then look
    again at the gateway (`deps.gateway`) for each intent given up whose recheck is due.
    `fulfilments`: what each kind of intent buys (services/fulfilments.py). `go_on`, asked
    before each intent, ends the work there when it answers False (a scheduler stopping or
    without its lease); what is left waits for the next pass.

    Safe on any number of processes at once: the charge is idempotent per intent, and each
    intent leaves CHARGED by one conditional move, to COMPLETED or to REFUNDING, never both.
    """
    report, gateway = Reconciled(), deps.gateway

    async def told_to_stop() -> bool:
        report.stopped = go_on is not None and not await go_on()
        return report.stopped

    async for intent in _open_intents(deps.reads.intents, now - after, batch_size):
        if await told_to_stop():
            return report
        await _reconcile_or_log(
            _reconcile_one(deps, gateway, fulfilments, intent, now, report), intent, report
        )
    async for intent in _rechecks_due(deps.reads.intents, now, batch_size):
        if await told_to_stop():
            return report
        await _reconcile_or_log(_recheck_one(deps, gateway, intent, now, report), intent, report)
    return report


_Key = tuple[datetime, str]


class _ReadBatch(Protocol):
    """Reads a batch of intents in key order, after a key (repositories/intents.py)."""

    def __call__(self, *, after: _Key | None) -> Awaitable[list[PaymentIntent]]: ...


def _open_intents(
    intents: PaymentIntentReader, opened_by: datetime, batch_size: int
) -> AsyncIterator[PaymentIntent]:
    """Every intent opened by `opened_by` and still open, oldest first."""
    batch = functools.partial(intents.open_created_by, opened_by, limit=batch_size)
    return _keyset(batch, lambda i: (i.created_at, i.id))


def _rechecks_due(
    intents: PaymentIntentReader, now: datetime, batch_size: int
) -> AsyncIterator[PaymentIntent]:
    """Every intent given up whose look at the gateway again is due by `now`, soonest first."""
    batch = functools.partial(intents.rechecks_due, now, limit=batch_size)
    return _keyset(batch, lambda i: (i.recheck_at or now, i.id))


async def _keyset(
    read: _ReadBatch, key_of: Callable[[PaymentIntent], _Key]
) -> AsyncIterator[PaymentIntent]:
    """Every intent `read` lists, batch after batch, each batch after the last one's key."""
    key: _Key | None = None
    while batch := await read(after=key):
        key = key_of(batch[-1])
        for intent in batch:
            yield intent


async def _reconcile_or_log(
    work: Awaitable[None], intent: PaymentIntent, report: Reconciled
) -> None:
    """One intent's reconciliation; its failure is logged and reported, and the pass goes on
    (but not without the database)."""
    try:
        await work
    except DatabaseUnavailable:
        raise
    except Exception:
        log.exception("reconciliation: payment intent %s failed", intent.id)
        report.failed.append(intent.id)


async def _reconcile_one(
    deps: Deps,
    gateway: PaymentGateway,
    fulfilments: Mapping[IntentKind, Fulfil],
    intent: PaymentIntent,
    now: datetime,
    report: Reconciled,
) -> None:
    if intent.status == IntentStatus.PENDING:
        if await _abandoned(deps, gateway, intent, now):
            report.lapsed += 1
            return
        intent = await _current(deps, intent.id)
    if intent.status == IntentStatus.REFUNDING:
        await _finish_refund(deps, gateway, intent, now)
        report.refunded += 1
        return
    if intent.status != IntentStatus.CHARGED:
        return
    fulfil = fulfilments[intent.kind]
    try:
        done = await _complete_or_refund(deps, gateway, intent, fulfil, now)
    except DomainError:
        report.refunded += 1
        return
    if done.entries:  # empty: a retry or another reconciler completed it first
        report.completed += 1
        await deps.publisher.publish(done.entries)


async def _abandoned(
    deps: Deps, gateway: PaymentGateway, intent: PaymentIntent, now: datetime
) -> bool:
    """Give up a PENDING intent the gateway has no charge for (True), or record the charge it
    has as the intent's; False when the intent moved on meanwhile."""
    charge: Charge | None = await gateway.find(intent.member_id, intent.id)
    if charge is not None:
        await deps.uow.run(
            _move,
            intent.id,
            (IntentStatus.PENDING,),
            IntentStatus.CHARGED,
            now,
            charge_id=charge.id,
        )
        return False
    return await _give_up(deps, intent.id, IntentStatus.ABANDONED, LAPSED, now)


async def _recheck_one(
    deps: Deps, gateway: PaymentGateway, intent: PaymentIntent, now: datetime, report: Reconciled
) -> None:
    """A look at the gateway for an intent given up: a charge found there was made by a request
    that never came back to record it, and is refunded through the intent."""
    given_up = intent.status in GIVEN_UP
    charge = await gateway.find(intent.member_id, intent.id) if given_up else None
    if charge is None:
        await deps.uow.run(_recheck_next, intent.id, _next_recheck(intent, now))
        return
    log.warning("payment intent %s was charged after it was given up: refunding", intent.id)
    await _to_refund(deps, intent.id, charge, now)
    current = await _current(deps, intent.id)
    if current.status == IntentStatus.REFUNDING:  # else its request or another pass refunded it
        await _finish_refund(deps, gateway, current, now)
        report.refunded += 1


def _next_recheck(intent: PaymentIntent, now: datetime) -> datetime | None:
    """When to look again at an intent given up; None once RECHECK_FOR has passed (or it is no
    longer given up)."""
    if intent.status not in GIVEN_UP or intent.given_up_at is None:
        return None
    at = now + RECHECK_EVERY
    return at if at <= intent.given_up_at + RECHECK_FOR else None
