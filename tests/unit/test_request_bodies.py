"""The request bodies a process receives at once are bounded in all, not only one by one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inmail.app import BODIES_IN_FLIGHT, SMALL_BODY, RequestLimits, RunningRequests

LIMIT = 1024  # INMAIL_MAX_BODY_BYTES here


async def reads_its_body(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, then answers 200."""
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def request(length: int) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": [(b"content-length", str(length).encode())],
    }


class SlowUpload:
    """A client that sends all but the last byte of its body, then waits to be let go."""

    def __init__(self, length: int = LIMIT) -> None:
        self.length = length
        self.sent_first = False
        self.go_on = asyncio.Event()
        self.answer: list[Message] = []

    async def receive(self) -> Message:
        if not self.sent_first:
            self.sent_first = True
            return {"type": "http.request", "body": b"x" * (self.length - 1), "more_body": True}
        await self.go_on.wait()
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def send(self, message: Message) -> None:
        self.answer.append(message)

    def status(self) -> Any:
        return self.answer[0]["status"] if self.answer else None


async def test_past_the_bodies_in_flight_a_new_body_is_refused_with_503_until_some_end() -> None:
    limits = RequestLimits(reads_its_body, max_body_bytes=LIMIT, small_body=0)
    uploads = [SlowUpload() for _ in range(BODIES_IN_FLIGHT + 2)]
    tasks = [asyncio.create_task(limits(request(LIMIT), u.receive, u.send)) for u in uploads]
    for _ in range(100):
        await asyncio.sleep(0)
    refused = [u for u in uploads if u.status() == 503]
    assert len(refused) == 2  # the first BODIES_IN_FLIGHT fill the budget; the rest wait no more
    stamped = {name for name, _ in refused[0].answer[0]["headers"]}
    assert {b"x-request-id", b"x-content-type-options"} <= stamped  # as every other answer
    assert limits.in_flight == BODIES_IN_FLIGHT * (LIMIT - 1)

    for upload in uploads:
        upload.go_on.set()
    await asyncio.gather(*tasks)
    assert sorted(u.status() for u in uploads) == [200] * BODIES_IN_FLIGHT + [503, 503]
    assert limits.in_flight == 0  # every body's bytes are given back when its request ends

    later = SlowUpload()
    later.go_on.set()
    await limits(request(LIMIT), later.receive, later.send)
    assert later.status() == 200


async def test_a_body_declared_or_found_too_large_is_a_413_with_the_request_s_id() -> None:
    for declared in (LIMIT + 1, 10):  # the second says less than it sends
        upload = SlowUpload(LIMIT + 2)
        upload.go_on.set()
        scope = {
            **request(declared),
            "headers": [(b"content-length", str(declared).encode()), (b"x-request-id", b"big-1")],
        }
        await RequestLimits(reads_its_body, max_body_bytes=LIMIT)(
            scope, upload.receive, upload.send
        )
        assert upload.status() == 413
        assert (b"x-request-id", b"big-1") in upload.answer[0]["headers"]


async def test_a_refusal_here_is_readable_by_a_page_on_an_allowed_origin() -> None:
    """A 413 or 503 a browser page cannot read is a CORS failure to it, not the JSON that says
    what to do (and the 503's Retry-After)."""
    for origin, readable in (("https://app.example", True), ("https://evil.example", False)):
        upload = SlowUpload(LIMIT + 2)
        upload.go_on.set()
        scope = {
            **request(LIMIT + 1),
            "headers": [*request(LIMIT + 1)["headers"], (b"origin", origin.encode())],
        }
        limits = RequestLimits(
            reads_its_body, max_body_bytes=LIMIT, origins=("https://app.example",)
        )
        await limits(scope, upload.receive, upload.send)
        assert upload.status() == 413
        granted = (b"access-control-allow-origin", origin.encode())
        assert (granted in upload.answer[0]["headers"]) is readable, origin


async def test_large_bodies_stalled_by_strangers_never_refuse_a_small_one() -> None:
    """Bodies a client stops sending part way hold their bytes until the body timeout: with
    the budget full of them, a GraphQL request (its body under SMALL_BODY) is still read and
    answered; only what a body holds past its first SMALL_BODY bytes counts."""
    largest = 4 * SMALL_BODY
    limits = RequestLimits(reads_its_body, max_body_bytes=largest)
    stalled = [SlowUpload(largest) for _ in range(BODIES_IN_FLIGHT * 2)]
    tasks = [asyncio.create_task(limits(request(largest), u.receive, u.send)) for u in stalled]
    for _ in range(100):
        await asyncio.sleep(0)
    assert any(u.status() == 503 for u in stalled)  # the budget is full
    full = limits.in_flight
    assert full > limits.max_in_flight - largest

    for length in (1, 1000, SMALL_BODY):
        small = SlowUpload(length)
        small.go_on.set()
        await limits(request(length), small.receive, small.send)
        assert small.status() == 200, length
    assert limits.in_flight == full

    for upload in stalled:
        upload.go_on.set()
    await asyncio.gather(*tasks)
    assert limits.in_flight == 0


async def test_a_body_no_longer_counts_once_its_answer_begins_however_long_that_takes() -> None:
    """An answer its client reads slowly (or not at all) keeps its request running, but not its
    body among those being received: such requests do not refuse everyone else's bodies."""
    answer_waits = asyncio.Event()

    async def slow_answer(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await answer_waits.wait()  # the client takes nothing
        await send({"type": "http.response.body", "body": b"ok"})

    limits = RequestLimits(slow_answer, max_body_bytes=LIMIT, small_body=0)
    uploads = [SlowUpload() for _ in range(BODIES_IN_FLIGHT + 2)]
    for upload in uploads:
        upload.go_on.set()
    tasks = [asyncio.create_task(limits(request(LIMIT), u.receive, u.send)) for u in uploads]
    for _ in range(100):
        await asyncio.sleep(0)
    assert [u.status() for u in uploads] == [200] * len(uploads)
    assert limits.in_flight == 0
    answer_waits.set()
    await asyncio.gather(*tasks)
    assert limits.in_flight == 0


async def test_a_request_cut_off_by_the_shutdown_is_answered_503_in_json_with_its_id() -> None:
    """uvicorn cancels what still runs when the shutdown's drain is over: the client gets a JSON
    answer it can act on (and its request id), not a plain-text 500 and a logged traceback."""
    running = asyncio.Event()

    async def never_ends(scope: Scope, receive: Receive, send: Send) -> None:
        running.set()
        await asyncio.Event().wait()

    client = SlowUpload()
    scope = {**request(0), "headers": [(b"x-request-id", b"cut-off-1")]}
    task = asyncio.create_task(RequestLimits(never_ends, LIMIT)(scope, client.receive, client.send))
    await running.wait()
    task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
    await task  # ends, answered: the cancellation does not escape to the server

    start, body = client.answer
    headers = dict(start["headers"])
    assert start["status"] == 503
    assert headers[b"x-request-id"] == b"cut-off-1"
    assert headers[b"content-type"].startswith(b"application/json")
    (error,) = json.loads(body["body"])["errors"]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert "may or may not have taken effect" in error["message"]  # no blind retry
    assert b"retry-after" not in headers


def rollback_that_waits(waiting: asyncio.Event) -> ASGIApp:
    """A request whose transaction's abort takes the cancel and waits (`waiting` is set then):
    the driver aborts a transaction before a cancellation goes on, and the database does not
    answer."""

    async def rollback_takes_the_cancel(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            waiting.set()
            await asyncio.Event().wait()  # the abort, on a database that does not answer
            raise

    return rollback_takes_the_cancel


async def test_a_request_whose_rollback_took_the_shutdowns_cancel_is_answered_at_the_next() -> None:
    """The driver aborts a transaction before a cancellation goes on; with the database not
    answering, the abort takes uvicorn's cancel and waits. The process's end cancels what still
    runs once more: the request is answered then, as one the shutdown cut off."""
    waiting = asyncio.Event()

    rollback_takes_the_cancel = rollback_that_waits(waiting)
    client = SlowUpload()
    limits = RequestLimits(rollback_takes_the_cancel, LIMIT)
    task = asyncio.create_task(limits(request(0), client.receive, client.send))
    await asyncio.sleep(0)
    task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
    await waiting.wait()
    assert client.answer == []
    task.cancel()  # asyncio.run's end: every task still running is cancelled
    await task

    start, body = client.answer
    assert start["status"] == 503
    assert json.loads(body["body"])["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert task.cancelling() == 0


async def test_the_shutdown_cuts_off_again_a_request_that_took_the_drains_cancel() -> None:
    """A worker of several ends on its signal, without the process's last cancel: the app's
    shutdown cancels once more a request still waiting on its rollback, and it is answered 503.
    One that ends on the drain's cancel within the grace (a rollback that answers) is left to."""
    waiting = asyncio.Event()
    rolled_back = asyncio.Event()

    rollback_takes_the_cancel = rollback_that_waits(waiting)

    async def rollback_answers(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # the abort, answered
            rolled_back.set()
            raise

    running = RunningRequests()
    stuck, quick = SlowUpload(), SlowUpload()
    tasks = [
        asyncio.create_task(RequestLimits(app, LIMIT, running)(request(0), c.receive, c.send))
        for app, c in ((rollback_takes_the_cancel, stuck), (rollback_answers, quick))
    ]
    await asyncio.sleep(0)
    assert running.tasks == set(tasks)
    for task in tasks:
        task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
    await waiting.wait()

    await running.cut_off(grace=0.5, within=5)

    assert all(task.done() for task in tasks)
    assert rolled_back.is_set()  # its rollback was not cut short
    for client in (stuck, quick):
        start, body = client.answer
        assert start["status"] == 503
        assert json.loads(body["body"])["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert running.tasks == set()
    await running.cut_off()  # none left: at once


async def test_a_cancellation_that_is_not_the_requests_own_is_not_taken_for_the_shutdown() -> None:
    """A CancelledError that did not come from cancelling the request's task (a future some
    other code cancelled) goes on up: it is a fault to see, not a shutdown to answer."""

    async def awaits_a_cancelled_future(scope: Scope, receive: Receive, send: Send) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    client = SlowUpload()
    limits = RequestLimits(awaits_a_cancelled_future, LIMIT)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(limits(request(0), client.receive, client.send))
    assert client.answer == []
