"""The composition root: the one place that names concrete classes and wires them together."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, Protocol, TypeVar

from inmail.auth import KnownMembers, TokenService, Viewer, development_secret
from inmail.clock import Clock, ManualClock, SystemClock
from inmail.domain.access import ReadRefused
from inmail.observability import LedgerMetrics
from inmail.repositories.mongo import Mongo
from inmail.repositories.notifications import NoticeOptions
from inmail.repositories.records import ChargeRepository
from inmail.repositories.unit_of_work import MongoUnitOfWork
from inmail.scheduler import DEFAULT_LEASE_TTL, PASS_STALL_LIMIT, Scheduler
from inmail.services.background import STOP_GRACE
from inmail.services.base import (
    Deps,
    Limits,
    NullPublisher,
    UseCase,
    bring_up_to_date,
    unwritten_changes,
)
from inmail.services.events import BalancePublisher, FanOut
from inmail.services.live import Broker, InboxBroker
from inmail.services.payments import BuiltinGateway, PaymentGateway
from inmail.services.rate_limits import RateLimits
from inmail.services.reads import Reader
from inmail.services.webhooks import WebhookConfig, WebhookWorker
from inmail.settings import Settings

GatewayFactory = Callable[[ChargeRepository], PaymentGateway]
"""Builds the payment gateway; given the built-in gateway's book of charges."""


class Background(Protocol):
    """A task that lives as long as the app: started after indexes, stopped before the client."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Container:
    settings: Settings
    clock: Clock
    mongo: Mongo
    tokens: TokenService
    deps: Deps
    events: FanOut
    live: Broker
    inbox: InboxBroker
    charges: ChargeRepository
    scheduler: Scheduler | None
    webhooks: WebhookWorker | None
    background: tuple[Background, ...]
    """What the app starts with its lifespan and stops at its end, in that order."""
    known_members: KnownMembers = field(default_factory=KnownMembers)

    def reader(
        self,
        viewer: Callable[[], Viewer | None],
        caller_id: Callable[[], str | None],
        refuse: Callable[[ReadRefused], Exception],
    ) -> Reader:
        """A request's reads, as `viewer` may see them (`refuse` words a refusal for the API)."""
        deps = self.deps
        return Reader(
            viewer,
            deps.reads,
            clock=deps.now,
            plans=deps.plans,
            max_page_size=self.settings.max_page_size,
            refuse=refuse,
            caller_id=caller_id,
            bring_up_to_date=functools.partial(bring_up_to_date, deps),
        )

    def run(self, use_case: UseCase[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """A use case on the service's dependencies: what a request calls, never holding them."""
        return use_case(self.deps, *args, **kwargs)

    def deadline(
        self, ends_by: float | None = None, *, timed: bool = True
    ) -> AbstractContextManager[None]:
        """Bounds the database work of what runs inside it by INMAIL_DATABASE_TIMEOUT (unless
        not `timed`); with `ends_by` (unix seconds), no transaction begun inside it commits
        from then on."""
        return self.deps.uow.deadline(ends_by, timed=timed)


def make_clock(settings: Settings) -> Clock:
    if settings.manual_clock:
        start = settings.clock_start or datetime.now(UTC).replace(microsecond=0)
        return ManualClock(start, movable=settings.workers == 1)
    return SystemClock()


def jwt_secret(settings: Settings) -> str:
    return settings.jwt_secret or development_secret(settings.data_dir)


def limits(settings: Settings) -> Limits:
    return Limits(
        max_purchase_quantity=settings.max_purchase_quantity,
        reminder_delay=timedelta(hours=settings.reminder_delay_hours),
        expiry_notice=timedelta(days=settings.expiry_notice_days),
    )


def rate_limits(settings: Settings, clock: Clock) -> RateLimits:
    return RateLimits(
        inmails_per_minute=settings.rate_limit_inmails_per_minute,
        messages_per_minute=settings.rate_limit_messages_per_minute,
        forget_idle_logs=not clock.is_manual,
    )


def build_deps(
    mongo: Mongo,
    clock: Clock,
    settings: Settings,
    *,
    publisher: BalancePublisher | None = None,
    gateway: PaymentGateway | None = None,
    webhooks: bool = True,
    database_timeout: float | None = None,
) -> Deps:
    """What the use cases run on: a unit of work on `mongo`, the clock, the payment gateway (the
    built-in one over `mongo`'s book of charges unless one is given), and the plans and limits
    of `settings`; `webhooks` says whether new notifications are enqueued for webhook delivery,
    `database_timeout` how long a request's database work may take in all (None: no bound)."""
    bounds = limits(settings)
    return Deps(
        uow=MongoUnitOfWork(
            mongo,
            notices=NoticeOptions(webhooks=webhooks, expiry_notice=bounds.expiry_notice),
            timeout=database_timeout,
        ),
        clock=clock,
        plans=settings.plans,
        limits=bounds,
        rate_limits=rate_limits(settings, clock),
        publisher=publisher or NullPublisher(),
        gateway=BuiltinGateway(ChargeRepository(mongo)) if gateway is None else gateway,
    )


def build_scheduler(
    deps: Deps,
    mongo: Mongo,
    *,
    interval: float,
    batch_size: int,
    lease_ttl: timedelta | None = None,
    stop_grace: float | None = None,
    stall_limit: float = PASS_STALL_LIMIT,
    owner: str | None = None,
) -> Scheduler:
    return Scheduler(
        deps,
        mongo.lease_store(),
        interval=interval,
        batch_size=batch_size,
        lease_ttl=lease_ttl or DEFAULT_LEASE_TTL,
        stop_grace=STOP_GRACE if stop_grace is None else stop_grace,
        stall_limit=stall_limit,
        owner=owner,
    )


def build_broker(deps: Deps, mongo: Mongo) -> Broker:
    """Live updates from the database's feed of committed ledger entries."""
    return Broker(
        deps.reads.ledger,
        mongo.ledger_changes(),
        now=deps.now,
        unwritten=lambda member_id: unwritten_changes(deps, member_id),
    )


def build_inbox(deps: Deps, mongo: Mongo) -> InboxBroker:
    """Live notifications and conversation events, from the database's feed of them."""
    return InboxBroker(deps.reads.notifications, mongo.inbox_changes())


def build_webhooks(settings: Settings, mongo: Mongo, clock: Clock) -> WebhookWorker | None:
    """The outbox's delivery worker, when INMAIL_WEBHOOK_URL is set and the database can lease
    its events to a worker (one in every process).

    Events are enqueued only where such a worker is built (`build_deps(webhooks=...)`): every
    process of a deployment should be given the same URL, or a process without one writes
    notifications that no webhook will carry.
    """
    if settings.webhook_url is None or settings.webhook_secret is None:
        return None
    outbox = mongo.webhook_outbox()
    if outbox is None:
        return None
    config = WebhookConfig(
        url=settings.webhook_url,
        secret=settings.webhook_secret,
        timeout=settings.webhook_timeout,
        poll_interval=settings.webhook_poll_interval,
    )
    return WebhookWorker(outbox, clock, config)


def build_container(
    settings: Settings,
    mongo: Mongo,
    clock: Clock | None = None,
    *,
    gateway: GatewayFactory = BuiltinGateway,
) -> Container:
    clock = clock or make_clock(settings)
    events = FanOut()
    events.listeners.append(LedgerMetrics())
    charges = ChargeRepository(mongo)
    payments = gateway(charges)
    webhooks = build_webhooks(settings, mongo, clock)
    deps = build_deps(
        mongo,
        clock,
        settings,
        publisher=events,
        gateway=payments,
        database_timeout=settings.database_timeout,
        webhooks=webhooks is not None,  # nothing would deliver what is enqueued otherwise
    )
    live = build_broker(deps, mongo)
    inbox = build_inbox(deps, mongo)
    scheduler = (
        build_scheduler(
            deps, mongo, interval=settings.scheduler_interval, batch_size=settings.scheduler_batch
        )
        if settings.scheduler_enabled
        else None
    )
    return Container(
        settings=settings,
        clock=clock,
        mongo=mongo,
        tokens=TokenService(jwt_secret(settings), settings.token_max_lifetime),
        deps=deps,
        events=events,
        live=live,
        inbox=inbox,
        charges=charges,
        scheduler=scheduler,
        webhooks=webhooks,
        background=tuple(task for task in (live, inbox, scheduler, webhooks) if task is not None),
    )
