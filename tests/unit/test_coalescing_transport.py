"""A connection's writes in one turn of the event loop leave in one send, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from inmail.transport import CoalescingTransport

READER_TIMEOUT = 30.0


class RecordingTransport(asyncio.Transport):
    """What reaches the socket: each write as one send, and what happened around them."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.events: list[str] = []
        self.closing = False
        self.unsent = 0  # bytes the client has not taken yet

    def write(self, data: Any) -> None:
        self.sent.append(bytes(data))
        self.events.append(f"send {bytes(data)!r}")

    def write_eof(self) -> None:
        self.events.append("eof")

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.events.append("set_protocol")

    def get_write_buffer_size(self) -> int:
        return self.unsent


async def test_a_status_line_headers_and_body_written_in_one_turn_leave_in_one_send() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop(), READER_TIMEOUT)
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    transport.write(b"")
    assert socket.sent == []
    assert transport.get_write_buffer_size() == 40
    await asyncio.sleep(0)
    assert socket.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_writes_in_later_turns_leave_as_later_sends_in_their_order() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop(), READER_TIMEOUT)
    transport.writelines([b"first ", b"response"])
    await asyncio.sleep(0)
    transport.write(b"second")
    await asyncio.sleep(0)
    assert socket.sent == [b"first response", b"second"]


@pytest.mark.parametrize(
    ("ending", "expected"),
    [
        ("close", ["send b'answer'", "close"]),
        ("write_eof", ["send b'answer'", "eof"]),
        ("set_protocol", ["send b'answer'", "set_protocol"]),
    ],
)
async def test_what_is_pending_leaves_before_the_connection_closes_or_changes_hands(
    ending: str, expected: list[str]
) -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop(), READER_TIMEOUT)
    transport.write(b"answer")
    if ending == "set_protocol":
        transport.set_protocol(asyncio.Protocol())
    else:
        getattr(transport, ending)()
    assert socket.events == expected
    await asyncio.sleep(0)
    assert socket.events == expected


async def test_an_aborted_connection_sends_nothing_it_still_held() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop(), READER_TIMEOUT)
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert socket.events == ["abort"]


class Handle:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """The loop's timers, fired by hand: a timeout passes when the test says so."""

    def __init__(self) -> None:
        self.due: list[Handle] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Handle:
        handle = Handle(callback)
        self.due.append(handle)
        return handle

    def pass_the_timeout(self) -> None:
        due, self.due = self.due, []
        for handle in due:
            if not handle.cancelled:
                handle.callback()


def closed_with_unsent(unsent: int) -> tuple[RecordingTransport, CoalescingTransport, Timers]:
    socket, timers = RecordingTransport(), Timers()
    transport = CoalescingTransport(socket, timers, READER_TIMEOUT)  # type: ignore[arg-type]
    socket.unsent = unsent
    transport.close()
    return socket, transport, timers


def test_a_close_waiting_on_a_client_that_takes_nothing_is_cut_off() -> None:
    socket, _, timers = closed_with_unsent(1_000_000)
    timers.pass_the_timeout()
    assert socket.events == ["close", "abort"]
    assert timers.due == []


def test_a_close_waiting_on_a_client_that_takes_some_goes_on_until_all_is_taken() -> None:
    socket, _, timers = closed_with_unsent(1_000_000)
    for _ in range(3):
        socket.unsent -= 100_000  # a slow reader, but a reader
        timers.pass_the_timeout()
    socket.unsent = 0
    timers.pass_the_timeout()
    assert socket.events == ["close"]
    assert timers.due == []


def test_a_close_with_nothing_left_to_send_is_not_watched() -> None:
    _, _, timers = closed_with_unsent(0)
    assert timers.due == []
