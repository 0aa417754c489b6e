"""The composition root: the one place that names concrete classes and wires them together."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from inmail.auth import TokenService, development_secret
from inmail.clock import Clock, ManualClock, SystemClock
from inmail.observability import LedgerMetrics
from inmail.repositories.mongo import Mongo
from inmail.scheduler import Scheduler
from inmail.services.base import Deps, Limits
from inmail.services.events import FanOut
from inmail.services.live import Broker
from inmail.services.payments import BuiltinGateway, PaymentGateway
from inmail.settings import Settings

log = logging.getLogger(__name__)


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
    background: list[Background] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


def make_clock(settings: Settings) -> Clock:
    if settings.manual_clock:
        start = settings.clock_start or datetime.now(UTC).replace(microsecond=0)
        return ManualClock(start)
    return SystemClock()


def jwt_secret(settings: Settings) -> str:
    return settings.jwt_secret or development_secret(settings.data_dir)


def build_container(settings: Settings, mongo: Mongo, clock: Clock | None = None) -> Container:
    clock = clock or make_clock(settings)
    events = FanOut()
    events.listeners.append(LedgerMetrics())
    deps = Deps(
        mongo=mongo,
        clock=clock,
        plans=settings.plans,
        limits=Limits(
            max_purchase_quantity=settings.max_purchase_quantity,
            reminder_delay=timedelta(hours=settings.reminder_delay_hours),
        ),
        publisher=events,
    )
    live = Broker(deps, events)
    container = Container(
        settings=settings,
        clock=clock,
        mongo=mongo,
        tokens=TokenService(
            jwt_secret(settings), timedelta(hours=settings.token_max_lifetime_hours)
        ),
        deps=deps,
        gateway=BuiltinGateway(deps.charges),
        events=events,
        live=live,
        background=[live],
    )
    if settings.scheduler_enabled:
        scheduler = Scheduler(
            deps, interval=settings.scheduler_interval, batch_size=settings.scheduler_batch
        )
        container.background.append(scheduler)
        container.extras["scheduler"] = scheduler
    return container
