"""Webhook events as the outbox holds them, and what became of an attempt to deliver one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One event for the webhook endpoint: what happened, to whom, when (service time)."""

    id: str
    kind: str
    member_id: str
    at: datetime
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt: when (service time), the HTTP status or the error, how long."""

    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class Claimed:
    """An event this worker holds the lease of: deliver it, then `finish` with the token."""

    event: OutboxEvent
    token: str
    attempt_count: int
    first_attempt_at: datetime | None = None
    """When its delivery was first tried (service time); None before its first attempt."""
