"""A websocket client must take some of what it is sent every body timeout once the buffer is
full, or the connection is aborted; a keepalive timeout with bytes unsent starts the same watch.

The protocol is driven by hand here, on a transport that only reports its buffer; the end to end
case (a socket that reads nothing) is in tests/integration/test_transport_limits.py.
"""

from __future__ import annotations

import asyncio

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.server import ServerProtocol

from inmail.transport import ReaderBoundWebSocket, ReaderWatch

TIMEOUT = 0.05  # the body timeout here; each wait below is a timer later on the same loop


class BufferOnly(asyncio.Transport):
    """A transport holding `unsent` bytes for the client, and whether it was aborted."""

    def __init__(self, unsent: int) -> None:
        super().__init__()
        self.unsent = unsent
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


def watched(transport: BufferOnly) -> ReaderBoundWebSocket:
    """The protocol with what the watch reads of it, none of uvicorn's connection state."""
    protocol = object.__new__(ReaderBoundWebSocket)
    protocol.loop = asyncio.get_running_loop()
    protocol.body_timeout = TIMEOUT
    protocol.transport = transport
    protocol.writable = asyncio.Event()
    protocol.disconnected = False
    protocol._reader = ReaderWatch(protocol.loop, TIMEOUT, protocol._reader_too_slow)
    protocol._paused_for_pongs = False
    protocol.conn = ServerProtocol()
    return protocol


async def test_a_client_that_takes_nothing_once_the_buffer_is_full_is_aborted() -> None:
    transport = BufferOnly(unsent=3_000_000)
    watched(transport).pause_writing()
    await asyncio.sleep(2 * TIMEOUT)
    assert transport.aborted


async def test_a_client_that_takes_some_in_every_period_is_kept() -> None:
    transport = BufferOnly(unsent=3_000_000)
    protocol = watched(transport)
    protocol.pause_writing()
    for _ in range(4):
        transport.unsent -= 1000  # a slow reader
        await asyncio.sleep(TIMEOUT)
    assert not transport.aborted
    protocol.resume_writing()  # it caught up: no watch is left running
    transport.unsent = 3_000_000
    await asyncio.sleep(2 * TIMEOUT)
    assert not transport.aborted


class CountingBuffer(BufferOnly):
    """A transport that also counts what it was given, as `CoalescingTransport` does."""

    def __init__(self, unsent: int) -> None:
        super().__init__(unsent)
        self.bytes_written = unsent


async def test_a_client_taking_some_while_more_is_queued_behind_is_kept() -> None:
    """Pongs to pings read before the reading stopped, queued once the watch began: more waits
    than when it began, and the client still took some in every period."""
    transport = CountingBuffer(unsent=100_000)
    protocol = watched(transport)
    protocol.pause_writing()
    for _ in range(4):
        transport.bytes_written += 50_000  # queued after the watch began
        transport.unsent += 50_000 - 1000  # and the client took 1000
        await asyncio.sleep(TIMEOUT)
    assert not transport.aborted
    transport.bytes_written += 50_000  # queued, and nothing taken
    transport.unsent += 50_000
    await asyncio.sleep(2 * TIMEOUT)
    assert transport.aborted


async def test_a_keepalive_timeout_with_bytes_unsent_is_watched_until_the_client_takes_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn's timeout queues a close frame and closes the transport, which waits for the
    unsent bytes: without the watch that wait had no end."""
    monkeypatch.setattr(WebSocketsSansIOProtocol, "keepalive_timeout", lambda self: None)
    stuck, drained = BufferOnly(unsent=20_000), BufferOnly(unsent=0)
    watched(stuck).keepalive_timeout()
    watched(drained).keepalive_timeout()
    await asyncio.sleep(2 * TIMEOUT)
    assert stuck.aborted
    assert not drained.aborted


async def test_a_connection_lost_meanwhile_is_not_aborted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WebSocketsSansIOProtocol, "connection_lost", lambda self, exc: None)
    transport = BufferOnly(unsent=3_000_000)
    protocol = watched(transport)
    protocol.pause_writing()
    protocol.connection_lost(None)
    await asyncio.sleep(2 * TIMEOUT)
    assert not transport.aborted
