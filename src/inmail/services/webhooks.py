"""Webhook delivery: every event of the outbox POSTed, signed, to INMAIL_WEBHOOK_URL.

Each process runs a `WebhookWorker` when a URL is set. It claims due events from the outbox
(repositories/outbox.py) with a lease, so that of several processes one sends a given event at a
time, and sends each as JSON `{"id", "kind", "memberId", "at", "data"}` with the headers

    InMail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the secret>
    InMail-Event-Id: <id>

A 2xx answer delivers the event. Every other answer, a timeout or a connection that fails is an
attempt to retry: after 10 s, 20 s, 40 s ... at most an hour apart (each shortened by up to a
fifth at random, so that many failed events do not come back at once), until the event is a day
old; an attempt made after that which fails too marks it FAILED. Every attempt is recorded on the
event. Delivery is at least once: a receiver dedupes by the event id.

Due times and backoff run on the service's clock (a manual clock and `advanceClock` drive them);
the signature's `t` is real time, as the receiver's clock is, and so is the lease on an event in
flight. The worker only ever runs in the background: a request enqueues an event in its own
transaction and never waits for a delivery.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import httpx

from inmail.clock import Clock
from inmail.domain.outbox import Attempt, Claimed, OutboxEvent
from inmail.repositories.outbox import OutboxStore
from inmail.services.background import STOP_GRACE, finish_within, repeat

log = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "InMail-Signature"
EVENT_ID_HEADER: Final = "InMail-Event-Id"
DEFAULT_TOLERANCE: Final = 300.0
"""How far (seconds) a receiver should let a signature's timestamp be from its own clock."""

STOPPED: Final = "cut short: the process delivering it was stopping"
GIVE_BACK_WITHIN: Final = 2.0
"""Seconds a delivery cut short by a stop waits to record itself and give its event back: past
them (a database out of reach) the event's lease lapses by itself, and it is sent again then."""


# Signing


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `InMail-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def _mac(secret: str, timestamp: int | str, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """Whether `header` (an `InMail-Signature` value) signs `body` with `secret`, made within
    `tolerance` seconds of `now` (unix seconds). One `v1=` entry matching is enough (the service
    sends one; the format allows one per secret, as Stripe's does); the comparison takes
    constant time."""
    timestamp, candidates = _signature_parts(header)
    # ASCII digits only: str.isdigit() also takes digits such as "²", which int() refuses.
    if timestamp is None or not _decimal(timestamp) or len(timestamp) > 12 or not candidates:
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    return _matches_any(_mac(secret, timestamp, body), candidates)


def _signature_parts(header: str) -> tuple[str | None, list[str]]:
    """An `InMail-Signature` value's timestamp (`t=`) and signatures (`v1=`); no timestamp
    when the header has none, or more than one (which one was signed is then a guess)."""
    timestamps: list[str] = []
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            candidates.append(value)
    return (timestamps[0] if len(timestamps) == 1 else None), candidates


def _matches_any(expected: str, candidates: list[str]) -> bool:
    """Whether any candidate is the `expected` signature. Every candidate is compared, in
    constant time, so the time taken does not tell which one matched; as bytes, since a header
    may carry characters that a comparison of strings refuses."""
    signature = expected.encode()
    matches = [
        hmac.compare_digest(signature, candidate.encode("utf-8", "replace"))
        for candidate in candidates
    ]
    return any(matches)


def _decimal(text: str) -> bool:
    return text.isascii() and text.isdigit()


def payload(event: OutboxEvent) -> bytes:
    """The JSON body for `event`: compact, times in ISO 8601 UTC."""
    return json.dumps(
        {
            "id": event.id,
            "kind": event.kind,
            "memberId": event.member_id,
            "at": _iso(event.at),
            "data": dict(event.data),
        },
        separators=(",", ":"),
        default=_json_default,
    ).encode()


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return _iso(value if value.tzinfo else value.replace(tzinfo=UTC))
    raise TypeError(f"not JSON: {type(value).__name__}")


# Backoff


@dataclass(frozen=True, slots=True)
class Backoff:
    """When a failed event is tried again: `first`, doubled each failure, at most `cap`, each
    delay shortened by up to `jitter` (a fraction) at random; given up once `window` has passed
    since its first attempt.

    The window runs from the first attempt, not from the event's own time: an event may be
    older than the window when it is written (a billing cycle granted on catch-up carries its
    cycle's start), and it is owed the whole window of retries all the same."""

    first: timedelta = timedelta(seconds=10)
    cap: timedelta = timedelta(hours=1)
    jitter: float = 0.2
    window: timedelta = timedelta(hours=24)

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> timedelta:
        """The wait after the `failures`-th failed attempt in a row (1 for the first)."""
        exponent = min(max(failures - 1, 0), 32)
        full: timedelta = min(self.first * (2**exponent), self.cap)
        shortened: timedelta = full * (1 - self.jitter * rand())
        return shortened

    def most_attempts(self) -> int:
        """The most attempts its schedule can make for one event: every delay at its shortest
        (full jitter), and one more attempt after each that still falls within the window."""
        attempts, elapsed = 1, timedelta(0)
        while elapsed < self.window:
            elapsed += self.delay(attempts, rand=lambda: 1.0)
            attempts += 1
        return attempts

    def retry_at(
        self,
        first_attempt_at: datetime,
        now: datetime,
        failures: int,
        rand: Callable[[], float] = random.random,
    ) -> datetime | None:
        """When to try again after a failed attempt at `now`; None once the window is over."""
        if now - first_attempt_at >= self.window:
            return None
        return now + self.delay(failures, rand)


# Delivery


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: str
    timeout: float
    poll_interval: float
    concurrency: int = 4
    backoff: Backoff = Backoff()
    lease: timedelta | None = None
    """How long a claimed event is held (real time); default: 3 timeouts, at least a minute."""

    @property
    def lease_ttl(self) -> timedelta:
        if self.lease is not None:
            return self.lease
        return max(timedelta(seconds=60), timedelta(seconds=3 * self.timeout))


class WebhookWorker:
    """Delivers the outbox in the background: started and stopped with the app."""

    def __init__(
        self,
        outbox: OutboxStore,
        clock: Clock,
        config: WebhookConfig,
        *,
        owner: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        wall_clock: Callable[[], float] = time.time,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.outbox = outbox
        self.clock = clock
        self.config = config
        self.owner = owner or f"webhooks-{uuid.uuid4().hex}"
        # Attempts kept per event: every one the schedule makes, with room for those a lapsed
        # lease adds (an attempt cut short, and the one that takes the event over).
        self._kept = 2 * config.backoff.most_attempts()
        self._transport = transport
        self._wall_clock = wall_clock
        self._stop_grace = stop_grace
        self._client: httpx.AsyncClient | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Held by each background pass, and by `alone` for as long as its block runs; while
        # `alone` waits for it, the background pass claims nothing more.
        self._passing = asyncio.Lock()
        self._wanted_alone = 0

    async def start(self) -> None:
        if self._task is None:
            self._stopping.clear()
            self._client = self._new_client()
            self._task = asyncio.create_task(self._loop(), name="inmail-webhooks")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            self._wake.set()
            # Deliveries in flight get a moment to end, not their whole timeout: one cut short
            # is recorded and due again at once (or, the database out of reach, sent again once
            # its lease lapses): at least once either way.
            await finish_within(task, self._stop_grace, "webhooks")
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def wake(self) -> None:
        """Look for due events now rather than at the next poll (e.g. after a commit)."""
        self._wake.set()

    async def _loop(self) -> None:
        await repeat(
            self._background_pass,
            interval=self.config.poll_interval,
            stopping=self._stopping,
            wake=self._wake,
            what="webhooks",
        )

    async def _background_pass(self) -> int:
        async with self._passing:
            return await self._drain(background=True)

    @asynccontextmanager
    async def alone(self) -> AsyncIterator[None]:
        """While the block runs, this worker attempts only what the block's own `drain` calls
        do: a background pass in flight ends first, and the next one waits for the block.

        For a manual clock moved forward (`advance_clock`): an attempt in flight records when
        its retry falls due from the time it began, and the clock must not pass that time
        before the walk has seen it.
        """
        self._wanted_alone += 1
        try:
            async with self._passing:
                yield
        finally:
            self._wanted_alone -= 1

    async def next_due_after(self, after: datetime) -> datetime | None:
        """When the next delivery attempt after `after` (service time) falls due, if any."""
        return await self.outbox.next_due_after(after)

    async def drain(self) -> int:
        """Attempt every event due now, `concurrency` at a time; how many attempts were made."""
        return await self._drain(background=False)

    async def _drain(self, *, background: bool) -> int:
        if self._client is None:
            self._client = self._new_client()
        lanes = [self._lane(background) for _ in range(self.config.concurrency)]
        # Every lane ends before the pass does, even when one of them fails.
        results = await asyncio.gather(*lanes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(r for r in results if isinstance(r, int))

    async def _lane(self, background: bool) -> int:
        """Claims and delivers due events until none is left, the worker stops, or (in the
        background) `alone` waits: then the attempts in flight end and the pass does."""
        made = 0
        while not self._stopping.is_set() and not (background and self._wanted_alone):
            claimed = await self.outbox.claim(
                self.owner, self.clock.now(), self.config.lease_ttl, self._kept
            )
            if claimed is None:
                break
            await self.deliver(claimed)
            made += 1
        return made

    async def deliver(self, claimed: Claimed) -> Attempt:
        """Send one claimed event, record the attempt and what comes next. An attempt cut short
        (the worker stopping, after its grace) is recorded and the event is due again at once,
        for this process's successor or another process, rather than when its lease lapses."""
        at, started = self.clock.now(), time.monotonic()
        try:
            attempt = await self._send(claimed.event, at, started)
        except asyncio.CancelledError:
            await self._give_back(claimed, Attempt(at, None, STOPPED, _ms_since(started)))
            raise
        failures = claimed.attempt_count + 1  # every earlier attempt failed, or it is not pending
        retry_at = (
            None
            if attempt.delivered
            else self.config.backoff.retry_at(
                claimed.first_attempt_at or attempt.at, attempt.at, failures
            )
        )
        held = await self.outbox.finish(claimed, attempt, retry_at=retry_at, keep=self._kept)
        event = claimed.event
        if attempt.delivered:
            log.debug("webhooks: %s delivered", event.id)
        elif retry_at is not None:
            log.info(
                "webhooks: %s not delivered (%s); again at %s",
                event.id,
                attempt.error or attempt.status_code,
                retry_at.isoformat(),
            )
        else:
            log.error("webhooks: %s FAILED after %d attempts", event.id, failures)
        if not held:
            log.warning("webhooks: the lease on %s lapsed during its delivery", event.id)
        return attempt

    async def _give_back(self, claimed: Claimed, attempt: Attempt) -> None:
        try:
            async with asyncio.timeout(GIVE_BACK_WITHIN):
                await self.outbox.finish(claimed, attempt, retry_at=attempt.at, keep=self._kept)
        except Exception as exc:  # its lease lapses, and the claim that follows records it
            log.warning(
                "webhooks: could not give %s back (%s); it is sent again once its lease lapses",
                claimed.event.id,
                f"no answer within {GIVE_BACK_WITHIN:g} s"
                if isinstance(exc, TimeoutError)
                else exc,
            )

    async def _send(self, event: OutboxEvent, at: datetime, started: float) -> Attempt:
        client = self._client or self._new_client()
        body = payload(event)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "inmail-webhooks/1",
            EVENT_ID_HEADER: event.id,
            SIGNATURE_HEADER: sign(self.config.secret, body, int(self._wall_clock())),
        }
        status: int | None = None
        error: str | None = None
        try:
            # One deadline for the whole exchange, however slowly the receiver trickles.
            async with asyncio.timeout(self.config.timeout):
                request = client.build_request(
                    "POST", self.config.url, content=body, headers=headers
                )
                response = await client.send(request, stream=True)
                status = response.status_code
                await response.aclose()  # the answer's body is not read
        except TimeoutError:
            error = f"no answer within {self.config.timeout:g} s"
        except (httpx.HTTPError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:  # recorded as a failed attempt: backoff, then FAILED
            log.exception("a webhook delivery failed unexpectedly")
            error = f"{type(exc).__name__}: {exc}"[:300]
        return Attempt(at=at, status_code=status, error=error, duration_ms=_ms_since(started))

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self.config.timeout,
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment sees signed events
            transport=self._transport,
            limits=httpx.Limits(max_connections=self.config.concurrency),
        )


def _ms_since(started: float) -> int:
    """Milliseconds since `started` (a `time.monotonic()` reading)."""
    return int((time.monotonic() - started) * 1000)
