"""A websocket that goes away while an operation's answer is sent is one INFO line, not a
logged traceback (SPEC 8): a thousand subscriptions closing at once logged a thousand."""

from __future__ import annotations

import logging

import pytest
from strawberry.http.exceptions import WebSocketDisconnected

from inmail.graphql_app import TransportWSHandler


def _handler() -> TransportWSHandler:
    return object.__new__(TransportWSHandler)  # only its task-error hook is used here


async def test_a_socket_gone_mid_answer_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await _handler().handle_task_exception(WebSocketDisconnected())
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.INFO, None)]


async def test_any_other_failure_of_an_operation_is_still_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _handler().handle_task_exception(RuntimeError("a bug"))
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
