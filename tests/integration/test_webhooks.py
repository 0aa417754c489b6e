"""Webhook delivery on the real mongod: a receiver started here that is down, fails, recovers.

Events are enqueued as a notification's are, `tx.outbox.add(...)` inside a transaction; the
manual clock drives the backoff; the receiver (tests/webhook_receiver.py) records every request.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

import pytest

from inmail.bootstrap import build_container
from inmail.clock import ManualClock
from inmail.domain.outbox import Attempt, Claimed, OutboxEvent
from inmail.repositories.mongo import DuplicateKeyError, Mongo
from inmail.repositories.outbox import CUT_SHORT, DELIVERED, FAILED, PENDING, OutboxStore
from inmail.repositories.unit_of_work import MongoUnitOfWork, Transaction
from inmail.services.webhooks import (
    STOPPED,
    Backoff,
    WebhookConfig,
    WebhookWorker,
    verify_signature,
)
from stored import outbox_count, outbox_event
from support import START, open_api
from support import test_settings as service_settings
from webhook_receiver import Receiver

SECRET = "whsec-the-lighthouse-at-the-end-of-the-pier"
KINDS = ["INMAIL_RECEIVED", "REMINDER", "RESPONSE_RECEIVED", "CREDITED_BACK", "RENEWED"]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()  # not listening yet: its port refuses connections
    yield made
    await made.stop()


def events(count: int) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            id=f"evt-{n:04d}",
            kind=KINDS[n % len(KINDS)],
            member_id=f"member-{n % 7}",
            at=START,
            data={"conversationId": f"conv-{n}", "credits": n % 5},
        )
        for n in range(count)
    ]


async def enqueue(mongo: Mongo, batch: list[OutboxEvent]) -> None:
    """As a use case does: each event added in the transaction of its change."""

    async def step(tx: Transaction, chunk: list[OutboxEvent]) -> None:
        for event in chunk:
            await tx.outbox.add(event)

    uow = MongoUnitOfWork(mongo)
    for i in range(0, len(batch), 3):
        await uow.run(step, batch[i : i + 3])


Recorded = tuple[int | None, str | None, datetime]  # an attempt's status, error, start


async def attempts_of(mongo: Mongo, event_id: str) -> list[Recorded]:
    """The event's attempts as recorded, each counted; only one cut short has no duration."""
    doc = await outbox_event(mongo, event_id)
    assert doc is not None
    attempts = doc["attempts"]
    assert doc["attemptCount"] == len(attempts)
    assert doc["firstAttemptAt"] == min(a["at"] for a in attempts)
    for attempt in attempts:
        assert "token" not in attempt or attempt["error"] == CUT_SHORT
        assert (attempt["durationMs"] is None) == (attempt["error"] == CUT_SHORT)
    return [(a["statusCode"], a["error"], a["at"]) for a in attempts]


MINUTE = timedelta(minutes=1)


async def one_enqueued(mongo: Mongo) -> tuple[OutboxStore, OutboxEvent]:
    [event] = events(1)
    await enqueue(mongo, [event])
    return OutboxStore(mongo), event


async def taken_over(store: OutboxStore, now: datetime, keep: int = 10) -> Claimed:
    """A claim at `now` (service time) once the lease held on the event lapses (database time)."""
    taken: list[Claimed] = []

    async def claimed() -> bool:
        got = await store.claim("next", now, timedelta(milliseconds=100), keep)
        taken.extend([] if got is None else [got])
        return bool(taken)

    await eventually(claimed)
    return taken[0]


def worker(mongo: Mongo, clock: ManualClock, url: str, owner: str | None = None) -> WebhookWorker:
    config = WebhookConfig(url, SECRET, timeout=5.0, poll_interval=0.05)
    return WebhookWorker(OutboxStore(mongo), clock, config, owner=owner)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 60.0) -> None:
    """Wait until `check` holds; `within` (seconds) only bounds a failing test."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.05)


async def test_every_event_arrives_signed_though_the_receiver_is_down_then_fails_for_an_hour(
    mongo: Mongo, receiver: Receiver
) -> None:
    clock = ManualClock(START)
    sent = events(25)
    await enqueue(mongo, sent)
    delivery = worker(mongo, clock, receiver.url)

    # Down: every connection is refused, recorded, and retried 8-10 s later on the service clock.
    assert await delivery.drain() == 25
    assert await delivery.drain() == 0  # nothing is due again before the clock moves
    for event in sent:
        doc = await outbox_event(mongo, event.id)
        assert doc is not None
        assert doc["status"] == PENDING
        assert doc["attemptCount"] == 1
        assert doc["attempts"][0]["statusCode"] is None
        assert "Connect" in doc["attempts"][0]["error"]
        due = doc["dueAt"].astimezone(START.tzinfo)
        assert START + timedelta(seconds=8) <= due <= START + timedelta(seconds=10)

    # Up but failing: 500 for an hour of service time, the worker running in the background.
    receiver.status = 500
    await receiver.start()
    await delivery.start()
    try:
        while clock.now() < START + timedelta(hours=1):
            # To the next retry, and wait until the background worker has made every due one.
            clock.set(await _next_due(mongo))
            await eventually(lambda: _nothing_due(mongo, clock))
        assert await _all_tried(mongo, sent, at_least=9)  # 10 s, 20 s, ... 1280 s, 2560 s
        assert receiver.delivered_ids() == {}
        assert {r.answered for r in receiver.requests} == {500}

        # Recovered: the next retry of each event delivers it.
        receiver.status = 200
        clock.advance(timedelta(hours=1))
        await eventually(lambda: _all_in(mongo, sent, DELIVERED))
    finally:
        await delivery.stop()

    delivered = receiver.delivered_ids()
    assert set(delivered) == {e.id for e in sent}, "an event was lost"
    now = time.time()
    for request in receiver.requests:
        signature = request.headers["inmail-signature"]
        assert verify_signature(SECRET, signature, request.body, now=now, tolerance=300)
        assert request.headers["content-type"] == "application/json"
    by_id = {e.id: e for e in sent}
    for request in receiver.requests:
        body = request.json
        event = by_id[body["id"]]
        assert body == {
            "id": event.id,
            "kind": event.kind,
            "memberId": event.member_id,
            "at": "2026-01-15T09:00:00Z",
            "data": dict(event.data),
        }
        assert request.event_id == event.id
    doc = await outbox_event(mongo, sent[0].id)
    assert doc is not None
    codes = [a["statusCode"] for a in doc["attempts"]]
    assert codes[0] is None
    assert codes[-1] == 200
    assert 500 in codes
    assert doc["attemptCount"] == len(doc["attempts"]) == len(codes)
    assert all(a["durationMs"] >= 0 for a in doc["attempts"])
    assert doc["leaseOwner"] is None
    assert doc["leaseUntil"] is None


async def _next_due(mongo: Mongo) -> datetime:
    first = await mongo.c.webhook_outbox.find_one({"status": PENDING}, sort=[("dueAt", 1)])
    assert first is not None
    due: datetime = first["dueAt"]
    return due


async def _nothing_due(mongo: Mongo, clock: ManualClock) -> bool:
    due = {
        "status": PENDING,
        "$or": [{"dueAt": {"$lte": clock.now()}}, {"leaseOwner": {"$ne": None}}],
    }
    return await mongo.c.webhook_outbox.count_documents(due) == 0


async def _all_tried(mongo: Mongo, sent: list[OutboxEvent], *, at_least: int) -> bool:
    for event in sent:
        doc = await outbox_event(mongo, event.id)
        if doc is None or doc["attemptCount"] < at_least:
            return False
    return True


async def _all_in(mongo: Mongo, sent: list[OutboxEvent], status: str) -> bool:
    for event in sent:
        doc = await outbox_event(mongo, event.id)
        if doc is None or doc["status"] != status:
            return False
    return True


async def one_event_to_a_failing_receiver(
    mongo: Mongo, clock: ManualClock, receiver: Receiver
) -> tuple[OutboxEvent, WebhookWorker]:
    """One event enqueued, a receiver answering 503, and a worker to deliver to it."""
    [event] = events(1)
    await enqueue(mongo, [event])
    receiver.status = 503
    await receiver.start()
    return event, worker(mongo, clock, receiver.url)


async def test_an_event_is_retried_for_a_day_and_then_marked_failed_with_every_attempt_kept(
    mongo: Mongo, receiver: Receiver
) -> None:
    clock = ManualClock(START)
    event, delivery = await one_event_to_a_failing_receiver(mongo, clock, receiver)

    attempts = 0
    while (doc := await outbox_event(mongo, event.id)) is not None and doc["status"] == PENDING:
        attempts += await delivery.drain()
        clock.advance(timedelta(minutes=20))
        assert attempts < 200
    assert doc is not None
    assert doc["status"] == FAILED
    assert doc["attemptCount"] == attempts == len(receiver.requests)
    kept = doc["attempts"]
    assert len(kept) == attempts > 20
    assert attempts <= Backoff().most_attempts()
    assert kept == sorted(kept, key=lambda a: a["at"])
    assert all(a["statusCode"] == 503 for a in kept)
    last = kept[-1]["at"].astimezone(START.tzinfo)
    assert timedelta(hours=24) <= last - START < timedelta(hours=26)
    assert doc["failedAt"] == kept[-1]["at"]
    # A failed event is kept, not delivered again.
    clock.advance(timedelta(days=2))
    assert await delivery.drain() == 0


async def test_a_send_the_http_client_refuses_is_a_failed_attempt_retried_with_backoff(
    mongo: Mongo, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a delivery raises is an attempt that failed, recorded: the backoff and the
    day's limit apply to it, rather than the event lying leased and tried again at each lease's
    end for as long as it is kept. (Settings refuse such a URL; this one comes past them.)"""
    clock = ManualClock(START)
    await enqueue(mongo, events(1))
    delivery = worker(mongo, clock, "http://hooks\u200b.example.com/inmail")

    assert await delivery.drain() == 1
    doc = await outbox_event(mongo, "evt-0000")
    assert doc is not None
    assert (doc["status"], doc["attemptCount"]) == (PENDING, 1)
    assert doc["attempts"][0]["error"].startswith("InvalidURL")
    assert doc["dueAt"].replace(tzinfo=START.tzinfo) > START  # backed off
    assert "a webhook delivery failed unexpectedly" in caplog.text


async def test_a_proxy_named_in_the_environment_never_sees_a_signed_event(
    mongo: Mongo, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY and the like may be set for the process's other needs: the events go to the
    configured URL alone (here the proxy named listens nowhere)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    await receiver.start()
    await enqueue(mongo, events(1))

    assert await worker(mongo, ManualClock(START), receiver.url).drain() == 1

    assert set(receiver.delivered_ids()) == {"evt-0000"}


async def test_an_event_older_than_a_day_when_written_is_still_retried_for_a_day(
    mongo: Mongo, receiver: Receiver
) -> None:
    # A billing cycle granted on catch-up carries its cycle's start, days before the write.
    clock = ManualClock(START + timedelta(days=2))
    event, delivery = await one_event_to_a_failing_receiver(mongo, clock, receiver)

    assert await delivery.drain() == 1
    doc = await outbox_event(mongo, event.id)
    assert doc is not None
    assert doc["status"] == PENDING
    assert doc["firstAttemptAt"].astimezone(START.tzinfo) == clock.now()
    while (doc := await outbox_event(mongo, event.id)) is not None and doc["status"] == PENDING:
        clock.advance(timedelta(minutes=20))
        await delivery.drain()
    assert doc is not None
    assert doc["status"] == FAILED
    first = doc["firstAttemptAt"].astimezone(START.tzinfo)
    assert timedelta(hours=24) <= doc["failedAt"].astimezone(START.tzinfo) - first
    # Once the receiver is back within that day, the event is delivered.
    [late] = [e for e in events(2) if e.id != event.id]
    await enqueue(mongo, [late])
    assert await delivery.drain() == 1
    clock.advance(timedelta(hours=23))
    receiver.status = 200
    while (doc := await outbox_event(mongo, late.id)) is not None and doc["status"] == PENDING:
        clock.advance(timedelta(minutes=20))
        await delivery.drain()
    assert doc is not None
    assert doc["status"] == DELIVERED


async def test_an_event_enqueued_twice_by_a_rerun_transaction_is_delivered_once(
    mongo: Mongo, receiver: Receiver
) -> None:
    [event] = events(1)
    await enqueue(mongo, [event])
    with pytest.raises(DuplicateKeyError):
        await enqueue(mongo, [event])
    assert await outbox_count(mongo, PENDING) == 1


async def test_two_workers_on_separate_clients_never_have_one_event_in_flight_twice(
    mongodb_uri: str, db_name: str, mongo: Mongo, receiver: Receiver
) -> None:
    clock = ManualClock(START)
    sent = events(40)
    await enqueue(mongo, sent)
    receiver.delay = 0.05  # each request stays in flight a while
    await receiver.start()
    other = Mongo.connect(mongodb_uri, db_name)
    try:
        first = worker(mongo, clock, receiver.url, owner="first")
        second = worker(other, clock, receiver.url)
        made = await asyncio.gather(first.drain(), second.drain())
    finally:
        await other.close()
    assert sum(made) == 40
    assert all(n > 0 for n in made), f"one worker did everything: {made}"
    assert receiver.delivered_ids() == {e.id: 1 for e in sent}
    assert max(receiver.most_in_flight.values()) == 1
    assert await outbox_count(mongo, DELIVERED) == 40


CHILD = r"""
import asyncio, sys
from datetime import datetime, timedelta

from inmail.clock import ManualClock
from inmail.repositories.mongo import DuplicateKeyError, Mongo
from inmail.repositories.outbox import OutboxStore
from inmail.services.webhooks import WebhookConfig, WebhookWorker


async def main(uri, db, now, url, secret):
    mongo = Mongo.connect(uri, db)
    config = WebhookConfig(url, secret, timeout=60, poll_interval=1.0, lease=timedelta(seconds=3))
    worker = WebhookWorker(OutboxStore(mongo), ManualClock(datetime.fromisoformat(now)), config,
                           owner="doomed")
    print("ready", flush=True)
    await worker.drain()


asyncio.run(main(*sys.argv[1:]))
"""


async def delivered_once_the_lease_lapses(
    mongo: Mongo, clock: ManualClock, receiver: Receiver, event: OutboxEvent
) -> None:
    """The receiver answers again, and another worker delivers `event` once the lease of the
    one that held it (3 s) has lapsed."""
    receiver.hang = False
    survivor = worker(mongo, clock, receiver.url, owner="survivor")

    async def delivered() -> bool:
        await survivor.drain()
        doc = await outbox_event(mongo, event.id)
        return doc is not None and doc["status"] == DELIVERED

    await eventually(delivered)


async def test_a_worker_killed_mid_delivery_leaves_the_event_to_be_delivered_by_another(
    mongodb_uri: str, mongo: Mongo, receiver: Receiver
) -> None:
    clock = ManualClock(START)
    [event] = events(1)
    await enqueue(mongo, [event])
    receiver.hang = True
    await receiver.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        mongodb_uri,
        mongo.db.name,
        START.isoformat(),
        receiver.url,
        SECRET,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(receiver.arrived.wait(), 60)
        held = await outbox_event(mongo, event.id)
        assert held is not None
        assert held["leaseOwner"] == "doomed"
        child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()

    await delivered_once_the_lease_lapses(mongo, clock, receiver, event)
    assert [r.event_id for r in receiver.requests] == [event.id, event.id]
    assert [r.answered for r in receiver.requests] == [None, 200]
    # The killed attempt could not record itself: the claim that took its lapsed lease did.
    assert await attempts_of(mongo, event.id) == [(None, CUT_SHORT, START), (200, None, START)]
    assert json.loads(receiver.requests[1].body)["id"] == event.id


async def stopped_mid_delivery(
    mongo: Mongo, receiver: Receiver, outbox: OutboxStore
) -> tuple[ManualClock, OutboxEvent]:
    """A worker on `outbox` stopped while its delivery of an event hangs, its lease a minute."""
    clock = ManualClock(START)
    [event] = events(1)
    await enqueue(mongo, [event])
    receiver.hang = True
    await receiver.start()
    config = WebhookConfig(receiver.url, SECRET, timeout=600, poll_interval=0.05, lease=MINUTE)
    stopping = WebhookWorker(outbox, clock, config, owner="stopping", stop_grace=0.5)
    await stopping.start()
    await asyncio.wait_for(receiver.arrived.wait(), 60)
    # A bound, not a speed: without the grace the stop waits out the delivery's 600 s, and an
    # unbounded give-back, a database that never answers.
    stop = asyncio.create_task(stopping.stop())
    done, _ = await asyncio.wait({stop}, timeout=30)
    assert stop in done, "the stop was held"
    await stop
    return clock, event


async def test_a_stopping_worker_cuts_a_hanging_delivery_short_and_gives_the_event_back(
    mongo: Mongo, receiver: Receiver
) -> None:
    """A shutdown is not held for a receiver's whole timeout: the delivery in flight is cut
    short after the stop's grace, recorded, and the event is due again at once, not when its
    lease (a minute) lapses."""
    clock, event = await stopped_mid_delivery(mongo, receiver, OutboxStore(mongo))

    held = await outbox_event(mongo, event.id)
    assert held is not None
    assert (held["status"], held["leaseOwner"], held["dueAt"]) == (PENDING, None, START)
    receiver.hang = False
    assert await worker(mongo, clock, receiver.url, owner="successor").drain() == 1
    assert [r.answered for r in receiver.requests] == [None, 200]
    assert await attempts_of(mongo, event.id) == [(None, STOPPED, START), (200, None, START)]


class Unanswered(OutboxStore):
    """An outbox whose database stops answering records once a delivery has begun."""

    async def finish(
        self, claimed: Claimed, attempt: Attempt, *, retry_at: datetime | None, keep: int
    ) -> bool:
        await asyncio.Event().wait()
        raise AssertionError("never answered")


async def test_a_stop_that_cannot_give_the_event_back_leaves_it_to_its_lease(
    mongo: Mongo, receiver: Receiver
) -> None:
    _, event = await stopped_mid_delivery(mongo, receiver, Unanswered(mongo))

    held = await outbox_event(mongo, event.id)
    assert held is not None
    assert (held["status"], held["leaseOwner"], held["attemptCount"]) == (PENDING, "stopping", 0)


async def test_an_attempt_cut_short_is_dated_when_its_lease_was_taken_and_counted_as_tried(
    mongo: Mongo,
) -> None:
    store, event = await one_enqueued(mongo)
    first = await taken_over(store, START)
    assert await store.finish(first, Attempt(START, 503, None, 40), retry_at=START, keep=10)
    await taken_over(store, START + MINUTE)  # its worker dies: nothing recorded

    third = await taken_over(store, START + 2 * MINUTE)

    assert await attempts_of(mongo, event.id) == [
        (503, None, START),
        (None, CUT_SHORT, START + MINUTE),
    ]
    assert (third.attempt_count, third.first_attempt_at) == (2, START)


async def test_an_attempt_finished_after_its_lease_was_taken_over_replaces_its_cut_short_entry(
    mongo: Mongo,
) -> None:
    store, event = await one_enqueued(mongo)
    slow = await taken_over(store, START)
    fast = await taken_over(store, START + MINUTE)
    assert (fast.attempt_count, fast.first_attempt_at) == (1, START)

    late = Attempt(START, 200, None, 950)
    assert not await store.finish(slow, late, retry_at=None, keep=10)
    # The one that took over fails, past its last retry: the event stays delivered.
    assert await store.finish(fast, Attempt(START + MINUTE, 503, None, 12), retry_at=None, keep=10)

    assert await attempts_of(mongo, event.id) == [(200, None, START), (503, None, START + MINUTE)]
    doc = await outbox_event(mongo, event.id)
    assert doc is not None
    assert (doc["status"], doc["deliveredAt"], doc["leaseToken"]) == (DELIVERED, START, None)
    assert "failedAt" not in doc


async def test_only_the_latest_attempts_are_kept_and_a_late_one_whose_entry_went_comes_last(
    mongo: Mongo,
) -> None:
    store, event = await one_enqueued(mongo)
    slow = await taken_over(store, START, keep=2)
    for n in range(1, 4):  # each lease lapses in turn: three attempts cut short
        latest = await taken_over(store, START + n * MINUTE, keep=2)

    late = Attempt(START, 503, None, 900)
    assert not await store.finish(slow, late, retry_at=START, keep=2)

    doc = await outbox_event(mongo, event.id)
    assert doc is not None
    kept = [(a["statusCode"], a["at"]) for a in doc["attempts"]]
    assert kept == [(None, START + 2 * MINUTE), (503, START)]
    assert (doc["attemptCount"], doc["firstAttemptAt"]) == (3, START)
    assert doc["leaseToken"] == latest.token


async def test_the_app_delivers_in_the_background_when_a_webhook_url_is_set(
    mongodb_uri: str, db_name: str, receiver: Receiver
) -> None:
    await receiver.start()
    settings = service_settings(
        webhook_url=receiver.url, webhook_secret=SECRET, webhook_poll_interval=0.05
    )
    async with open_api(mongodb_uri, db_name, settings) as api:
        webhooks = api.container.webhooks
        assert webhooks is not None
        sent = events(3)
        await enqueue(api.container.mongo, sent)
        await eventually(lambda: _all_in(api.container.mongo, sent, DELIVERED), within=60)
    assert set(receiver.delivered_ids()) == {e.id for e in sent}


@pytest.mark.parametrize("in_flight", [False, True], ids=["at-rest", "attempt-in-flight"])
async def test_advance_clock_makes_every_retry_at_its_own_time_however_far_it_jumps(
    mongodb_uri: str, db_name: str, receiver: Receiver, in_flight: bool
) -> None:
    """SPEC 7: advanceClock runs every job due before it returns, webhook retries and their
    backoff included. One jump of 25 hours gives the attempts of a day, each at its time.

    `in_flight`: the background worker's first attempt is still waiting for its answer when
    the clock moves. It records its retry from the time it began: the walk waits for it, rather
    than jumping past every retry and giving the event up."""
    receiver.status = 503
    receiver.delay = 1.0 if in_flight else 0.0
    await receiver.start()
    settings = service_settings(
        webhook_url=receiver.url,
        webhook_secret=SECRET,
        webhook_poll_interval=0.05 if in_flight else 60.0,
    )
    async with open_api(mongodb_uri, db_name, settings) as api:
        [event] = events(1)
        await enqueue(api.container.mongo, [event])
        if in_flight:
            await asyncio.wait_for(receiver.arrived.wait(), timeout=30)
            receiver.delay = 0.0  # the attempts the walk makes are answered at once
        moved = await api.gql(
            "mutation { advanceClock(input: {hours: 25}) { now errors { code } } }",
            token=api.admin,
        )
        assert moved["advanceClock"]["errors"] == []
        doc = await outbox_event(api.container.mongo, event.id)

    assert doc is not None
    assert doc["status"] == FAILED
    assert doc["attemptCount"] == len(receiver.requests) > 15  # 10 s, 20 s, ... an hour apart
    times = [a["at"].astimezone(START.tzinfo) for a in doc["attempts"]]
    assert times == sorted(times)
    assert timedelta(hours=24) <= times[-1] - START < timedelta(hours=25)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert max(gaps) <= timedelta(hours=1)


async def test_without_a_webhook_url_no_worker_is_started(mongo: Mongo) -> None:
    container = build_container(service_settings(), mongo)
    assert container.webhooks is None
    assert not any(isinstance(task, WebhookWorker) for task in container.background)


async def test_the_workers_claim_walks_the_pending_due_index_not_the_collection(
    mongo: Mongo,
) -> None:
    sent = events(60)
    await enqueue(mongo, sent)
    await mongo.c.webhook_outbox.update_many(
        {"_id": {"$in": [e.id for e in sent[:50]]}}, {"$set": {"status": DELIVERED}}
    )
    plan = await mongo.db.command(
        "explain",
        {
            "findAndModify": "webhook_outbox",
            "query": {
                "status": PENDING,
                "dueAt": {"$lte": START},
                "$expr": {"$lte": ["$leaseUntil", "$$NOW"]},
            },
            "sort": {"dueAt": 1},
            "update": [{"$set": {"leaseOwner": "explain"}}],
        },
    )
    winning = str(plan["queryPlanner"]["winningPlan"])
    assert "pending_due" in winning
    assert "COLLSCAN" not in winning
