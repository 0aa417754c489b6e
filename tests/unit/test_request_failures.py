"""A failure nothing expected is still answered as every answer is: JSON, with the request's id,
and logged under that id; once its answer has begun, it is left to the server to cut off."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.types import Message, Receive, Scope, Send

from inmail import logs
from inmail.app import RequestLimits


class Failures(logging.Handler):
    """The failures logged, each with the request id its line is written under."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[tuple[str | None, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.seen.append((logs.request_id.get(), str(record.exc_info[1])))


async def fails(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("a bug")


async def fails_mid_answer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("a bug")


def request() -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": [(b"x-request-id", b"trace-42"), (b"content-length", b"0")],
    }


async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_a_failure_before_its_answer_is_a_json_500_logged_under_the_request_id() -> None:
    answer: list[Message] = []

    async def send(message: Message) -> None:
        answer.append(message)

    failures = Failures()
    logging.getLogger().addHandler(failures)
    try:
        await RequestLimits(fails, max_body_bytes=1024)(request(), no_body, send)
    finally:
        logging.getLogger().removeHandler(failures)

    start, body = answer
    assert start["status"] == 500
    assert (b"x-request-id", b"trace-42") in start["headers"]
    error = json.loads(body["body"])["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "a bug" not in body["body"].decode()  # nothing of the failure is told
    assert failures.seen == [("trace-42", "a bug")]


async def test_a_failure_once_the_answer_has_begun_is_raised_to_the_server() -> None:
    answer: list[Message] = []

    async def send(message: Message) -> None:
        answer.append(message)

    with pytest.raises(RuntimeError, match="a bug"):
        await RequestLimits(fails_mid_answer, max_body_bytes=1024)(request(), no_body, send)
    assert [m["type"] for m in answer] == ["http.response.start"]
