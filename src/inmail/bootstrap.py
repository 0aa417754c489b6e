"""The composition root: the one place that names concrete classes and wires them together."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from inmail.auth import TokenService, development_secret
from inmail.clock import Clock, ManualClock, SystemClock
from inmail.domain.plans import PlanTable
from inmail.observability import LedgerMetrics
from inmail.repositories.changes import LedgerChanges
from inmail.repositories.leases import LeaseRepository
from inmail.repositories.memory import InMemoryMongo, SoleProcessLease
from inmail.repositories.mongo import Mongo
from inmail.repositories.records import ChargeRepository
from inmail.repositories.unit_of_work import MongoUnitOfWork
from inmail.scheduler import DEFAULT_LEASE_TTL, DEFAULT_STOP_GRACE, Scheduler
from inmail.services import scheduling
from inmail.services.base import Deps, Limits, NullPublisher
from inmail.services.events import BalancePublisher, FanOut
from inmail.services.live import Broker
from inmail.services.payments import BuiltinGateway, PaymentGateway
from inmail.settings import Settings

log = logging.getLogger(__name__)

GatewayFactory = Callable[[ChargeRepository], PaymentGateway]
"""Builds the payment gateway; given the built-in gateway's book of charges."""


class Background(Protocol):
    """A task that lives as long as the app: started after indexes, stopped before the client."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Container:
    settings: Settings
    clock: Clock
    mongo: Mongo
    tokens: TokenService
    deps: Deps
    gateway: PaymentGateway
    events: FanOut
    live: Broker
    charges: ChargeRepository
    background: list[Background] = field(default_factory=list)
    scheduler: Scheduler | None = None


def make_clock(settings: Settings) -> Clock:
    if settings.manual_clock:
        start = settings.clock_start or datetime.now(UTC).replace(microsecond=0)
        return ManualClock(start)
    return SystemClock()


def jwt_secret(settings: Settings) -> str:
    return settings.jwt_secret or development_secret(settings.data_dir)


def in_memory_mongo(db_name: str) -> Mongo:
    """The fallback where no mongod can run: one process, nothing kept."""
    return InMemoryMongo(db_name)


def build_deps(
    mongo: Mongo,
    clock: Clock,
    plans: PlanTable,
    *,
    limits: Limits | None = None,
    publisher: BalancePublisher | None = None,
    gateway: PaymentGateway | None = None,
) -> Deps:
    """What the use cases run on: a unit of work on `mongo`, the clock, the plans."""
    return Deps(
        uow=MongoUnitOfWork(mongo),
        clock=clock,
        plans=plans,
        limits=limits or Limits(),
        publisher=publisher or NullPublisher(),
        gateway=gateway,
    )


def lease_store(mongo: Mongo) -> scheduling.LeaseStore:
    if isinstance(mongo, InMemoryMongo):
        return SoleProcessLease()
    return LeaseRepository(mongo)


def build_scheduler(
    deps: Deps,
    mongo: Mongo,
    *,
    interval: float,
    batch_size: int | None = None,
    lease_ttl: timedelta | None = None,
    stop_grace: float | None = None,
    owner: str | None = None,
) -> Scheduler:
    return Scheduler(
        deps,
        lease_store(mongo),
        interval=interval,
        batch_size=batch_size or scheduling.DEFAULT_BATCH,
        lease_ttl=lease_ttl or DEFAULT_LEASE_TTL,
        stop_grace=DEFAULT_STOP_GRACE if stop_grace is None else stop_grace,
        owner=owner,
    )


def build_broker(deps: Deps, mongo: Mongo, events: FanOut) -> Broker:
    """Live updates from the ledger's change stream, or from this process where there is none."""
    changes = None if isinstance(mongo, InMemoryMongo) else (lambda: LedgerChanges(mongo))
    return Broker(deps.reads.ledger, events, changes)


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
    deps = build_deps(
        mongo,
        clock,
        settings.plans,
        limits=Limits(
            max_purchase_quantity=settings.max_purchase_quantity,
            reminder_delay=timedelta(hours=settings.reminder_delay_hours),
        ),
        publisher=events,
        gateway=payments,
    )
    live = build_broker(deps, mongo, events)
    container = Container(
        settings=settings,
        clock=clock,
        mongo=mongo,
        tokens=TokenService(jwt_secret(settings)),
        deps=deps,
        gateway=payments,
        events=events,
        live=live,
        charges=charges,
        background=[live],
    )
    if settings.scheduler_enabled:
        scheduler = build_scheduler(
            deps, mongo, interval=settings.scheduler_interval, batch_size=settings.scheduler_batch
        )
        container.background.append(scheduler)
        container.scheduler = scheduler
    return container
