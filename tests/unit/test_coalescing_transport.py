"""A connection's writes in one turn of the event loop leave in one send, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inmail.transport import CoalescingTransport


class RecordingTransport(asyncio.Transport):
    """What reaches the socket: each write as one send, and what happened around them."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

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
        return 0


async def test_a_status_line_headers_and_body_written_in_one_turn_leave_in_one_send() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    transport.write(b"")
    assert socket.sent == []
    assert transport.get_write_buffer_size() == 40
    await asyncio.sleep(0)
    assert socket.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_writes_in_later_turns_leave_as_later_sends_in_their_order() -> None:
    socket = RecordingTransport()
    transport = CoalescingTransport(socket, asyncio.get_running_loop())
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
    transport = CoalescingTransport(socket, asyncio.get_running_loop())
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
    transport = CoalescingTransport(socket, asyncio.get_running_loop())
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert socket.events == ["abort"]
