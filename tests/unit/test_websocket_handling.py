"""Websocket handling: a socket gone mid-answer is one INFO line, not a logged traceback
(SPEC 8), and a socket's messages are read at a bounded pace."""

from __future__ import annotations

import logging

import pytest
from starlette.websockets import WebSocketDisconnect
from strawberry.http.exceptions import WebSocketDisconnected

from inmail.endpoint.media_types import GRAPHQL_RESPONSE, MAX_ACCEPT_RANGES, response_media_type
from inmail.endpoint.websockets import TransportWSHandler
from inmail.pace import Pace


def _handler() -> TransportWSHandler:
    return object.__new__(TransportWSHandler)  # only its task-error hook is used here


async def test_a_socket_gone_mid_answer_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await _handler().handle_task_exception(WebSocketDisconnected())
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.INFO, None)]
    assert caplog.records[0].name == "inmail.graphql_app"  # the name log filters know


async def test_a_close_sent_as_the_client_goes_is_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Strawberry closes a socket that sent no init in time straight through Starlette: a
    client that went just then makes Starlette raise its own disconnect."""
    caplog.set_level(logging.INFO)
    await _handler().handle_task_exception(WebSocketDisconnect(1006))
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.INFO, None)]


async def test_a_send_the_server_refused_after_closing_the_socket_is_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uvicorn closes a socket whose client missed its keepalive ping, then refuses what an
    operation still sends with this error: the client's doing, not a bug."""
    caplog.set_level(logging.INFO)
    refused = RuntimeError(
        "Unexpected ASGI message 'websocket.send', after sending 'websocket.close'."
    )
    await _handler().handle_task_exception(refused)
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.INFO, None)]


async def test_any_other_failure_of_an_operation_is_still_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _handler().handle_task_exception(RuntimeError("a bug"))
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None


def test_a_sockets_bytes_are_counted_by_what_each_message_weighs() -> None:
    now = [0.0]
    volume = Pace(rate=1000.0, burst=3000, clock=lambda: now[0])
    assert volume.wait(2000) == 0.0  # within the burst
    assert volume.wait(2000) == pytest.approx(1.0)  # 1000 owed, at 1000 a second
    now[0] += 1.0
    assert volume.wait(0) == 0.0  # paid off


def test_a_long_accept_header_is_read_no_further_than_its_first_ranges() -> None:
    assert response_media_type(f"{GRAPHQL_RESPONSE}, {'x/y, ' * 10_000}") == GRAPHQL_RESPONSE
    past_the_ranges_read = ", " * MAX_ACCEPT_RANGES + GRAPHQL_RESPONSE
    assert response_media_type(past_the_ranges_read) == "application/json"
    many_parameters = f"{GRAPHQL_RESPONSE};{'a=b;' * MAX_ACCEPT_RANGES};q=0"
    assert response_media_type(many_parameters) == GRAPHQL_RESPONSE  # q=0 left unread


def test_a_sockets_messages_are_read_in_a_burst_then_at_a_steady_pace() -> None:
    now = [0.0]
    pace = Pace(rate=50.0, burst=100, clock=lambda: now[0])
    assert [pace.wait() for _ in range(100)] == [0.0] * 100  # the burst, at once
    assert pace.wait() == pytest.approx(1 / 50)  # the next waits its turn
    now[0] += 1.0  # a quiet second: 50 more may come at once (one is owed)
    assert [pace.wait() for _ in range(49)] == [0.0] * 49
    assert pace.wait() > 0
    now[0] += 60.0  # a long pause refills the burst, no more
    assert sum(pace.wait() == 0.0 for _ in range(150)) == 100
