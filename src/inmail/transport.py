"""HTTP connections as `inmail serve` accepts them: bounded headers, timely clients, a cap.

uvicorn's httptools protocol (llhttp, the parser of Node.js), with what a server facing the
internet directly needs:

- request line and headers over `INMAIL_MAX_HEADER_BYTES` get **431** and are read no further
  (llhttp itself would keep reading them);
- a connection whose request headers are not all in within `INMAIL_HEADER_TIMEOUT` of its
  opening (or of its first byte after a keep-alive pause) is closed;
- a request whose body is not all in within `INMAIL_BODY_TIMEOUT` of its headers gets **408**
  and is closed;
- a client that takes nothing of its answer for `INMAIL_BODY_TIMEOUT` (once the socket buffers
  are full) is disconnected, and the rest of the answer dropped; so is a websocket client that
  takes nothing of what it is sent;
- past `INMAIL_MAX_CONNECTIONS` open connections (HTTP and websocket) in the process, a new one
  gets **503** at once, before it can hold anything;
- a request llhttp cannot parse (no request line, a bad length or chunk size, a control byte in
  a header) gets **400**, in JSON like every refusal here;
- a websocket client may send a burst of `WS_FRAME_BURST` frames, then `WS_FRAMES_PER_SECOND`
  (each frame counted, a ping or an empty piece of a message too); past them the socket is
  closed with 1008;
- a request offering an upgrade to anything but a websocket (`h2c`, which `curl --http2` offers
  on plain http) is served as an ordinary one, its body included: RFC 9110 7.8 lets a server
  ignore the offer (llhttp would take the body for the new protocol's bytes);
- requests pipelined behind one being answered (HTTP/1.1 lets a client send them without
  waiting) are read no further while any wait their turn, and past `MAX_PIPELINED` waiting the
  rest of the input is not read: those waiting are answered, and the connection then closed.

A refused connection is closed the way browsers and proxies expect (a "lingering close"): the
answer is written, the sending side shut, and whatever the client still sends is discarded for
at most `LINGER_SECONDS`, so that it reads the answer instead of a connection reset. Nothing it
sends after the refusal is kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Final, cast

import httptools
from starlette.types import ASGIApp
from uvicorn import Config, Server
from uvicorn._types import ASGISendEvent
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess
from websockets.datastructures import Headers
from websockets.exceptions import ProtocolError
from websockets.frames import CloseCode, Frame
from websockets.http11 import Response as HandshakeResponse
from websockets.server import ServerProtocol
from websockets.typing import StatusLike

from inmail.logs import Occasional
from inmail.pace import Pace
from inmail.settings import Settings

log = logging.getLogger("inmail.transport")

LINGER_SECONDS = 2.0
MAX_PIPELINED = 32
"""Requests a connection may have waiting behind the one being answered (HTTP/1.1 pipelining);
each holds its parsed head and body. Browsers do not pipeline; a client that sends more before
reading its answers has the connection closed once those waiting are answered."""


class ServerConfig(Config):
    """uvicorn's configuration, with the read timeouts the protocol below enforces."""

    def __init__(
        self,
        app: ASGIApp | Callable[[], ASGIApp],
        *,
        max_header_bytes: int,
        header_timeout: float,
        body_timeout: float,
        max_connections: int,
        **options: Any,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.refused_connections = refused_connections_log()
        # No permessage-deflate, whoever builds the configuration: a compressed message is small
        # on the wire and large once inflated, and one read of the socket inflates every message
        # it holds, so the pace that holds a socket's reading back (by what it costs unpacked)
        # would come too late.
        options["ws_per_message_deflate"] = False
        super().__init__(app, http=LimitedHttpToolsProtocol, ws=ReaderBoundWebSocket, **options)


def limits_of(config: Config) -> ServerConfig:
    """The limits a connection enforces, from the configuration uvicorn hands its protocol:
    always a ServerConfig, which names them (the defaults are the settings')."""
    if not isinstance(config, ServerConfig):
        raise TypeError("the service's protocols run under ServerConfig")
    return config


def refused_connections_log() -> Occasional:
    """The line a refused connection logs: a flood of them says so every few seconds."""
    return Occasional(log, logging.WARNING, "connection refused: %d connections open")


def _codings(values: list[bytes]) -> list[bytes]:
    """The transfer codings Transfer-Encoding headers name, in order (RFC 9112 6.1)."""
    return [c.strip().lower() for value in values for c in value.split(b",") if c.strip()]


def _answer(status: int, reason: str, message: str, code: str, *, to_head: bool = False) -> bytes:
    """A refusal as the HTTP layer writes it: JSON, closing the connection. To a HEAD request
    the head alone (RFC 9110 9.3.2), with the length the body would have had."""
    body = json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + (b"" if to_head else body)


class CoalescingTransport(asyncio.Transport):
    """A connection's transport whose writes made in one turn of the event loop leave in one
    send: a response's status line and headers go with its body in one segment, not two
    (uvicorn writes them apart), which spares a system call and a packet per response.

    Whatever is pending leaves before the transport closes, shuts its sending side or is handed
    to another protocol (a websocket), so the order of bytes never changes.

    A close waits for the client to take what is still unsent, for as long as the client likes:
    one that takes nothing of it for `reader_timeout` seconds is cut off instead, and those
    bytes are dropped. Whoever closes (a keep-alive timeout, `Connection: close`, a shutdown, a
    refusal, a websocket's end), the answer is not held for a client that never reads it.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        reader_timeout: float,
    ) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self.bytes_written = 0  # handed to this transport, sent or not
        self._closing_watch = ReaderWatch(loop, reader_timeout, self._never_taken)
        self._reader_timeout = reader_timeout

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))
        self.bytes_written += len(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()
        if self._transport.get_write_buffer_size() > 0:
            self._closing_watch.start(self._transport)

    def abort(self) -> None:
        self._pending.clear()
        self._closing_watch.stop()
        self._transport.abort()

    def _never_taken(self) -> None:
        log.info(
            "connection closed: the client took nothing of what was left to send for %ss",
            self._reader_timeout,
        )
        self._transport.abort()  # what was not sent is dropped with the connection

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def get_extra_info(self, name: str, default: object = None) -> Any:
        return self._transport.get_extra_info(name, default)


class ReaderWatch:
    """Whether a client takes what it is sent: once started (bytes wait for it), it must take
    some of them every `timeout` seconds, or `give_up` is called. A slow reader may go on; the
    watch ends when it is stopped or nothing is left unsent."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, timeout: float, give_up: Callable[[], None]
    ) -> None:
        self._loop = loop
        self._timeout = timeout
        self._give_up = give_up
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._taken = 0  # what the client had taken when last looked at (see `_taken_by`)

    def start(self, transport: asyncio.WriteTransport) -> None:
        if self._timer is not None:
            return
        self._transport = transport
        self._taken = _taken_by(transport)
        self._timer = self._loop.call_later(self._timeout, self._look)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _look(self) -> None:
        self._timer = None
        assert self._transport is not None
        if self._transport.get_write_buffer_size() == 0:
            return  # all taken since
        if _taken_by(self._transport) > self._taken:
            self.start(self._transport)  # it took some since: it may go on
            return
        self._give_up()


def _taken_by(transport: asyncio.WriteTransport) -> int:
    """A measure of what the client has taken, that grows as it takes: the bytes sent, where
    the transport counts what it was given (a `CoalescingTransport`: more may be written while
    earlier bytes wait, pongs to a flood of pings); else less and less left unsent (a transport
    that is closing, given nothing more)."""
    written = getattr(transport, "bytes_written", None)
    unsent = transport.get_write_buffer_size()
    return -unsent if written is None else written - unsent


class _HeadTooLarge(Exception):
    """Raised from a parser callback: llhttp stops, and uvicorn asks for a 400 (sent as 431)."""


class _UnknownCoding(Exception):
    """Raised from a parser callback: a Transfer-Encoding other than `chunked` (sent as 501)."""


class _TooManyPipelined(Exception):
    """Raised from a parser callback: a request past `MAX_PIPELINED` waiting; llhttp stops."""


class _QueueFirstFlow(FlowControl):
    """uvicorn's flow control, but reading on only once no request waits its turn.

    uvicorn stops reading when a pipelined request is queued, then reads on whenever an answer
    ends or an app asks for its body: each time one read more (up to 64 KiB, hundreds of small
    requests) is parsed and queued, so a client that writes requests without end and reads
    nothing makes the queue grow without end. Here reading waits until every queued request
    has started (its body is read then, when its app asks for it)."""

    def __init__(self, transport: asyncio.Transport, waiting: Callable[[], bool]) -> None:
        super().__init__(transport)
        self._waiting = waiting

    def resume_reading(self) -> None:
        if not self._waiting():
            super().resume_reading()


def _request_parser(protocol: HttpToolsProtocol) -> httptools.HttpRequestParser:
    """A parser as uvicorn makes one (it answers the first of requests pipelined after a
    `Connection: close`, and reads no further)."""
    parser = httptools.HttpRequestParser(protocol)
    parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools (llhttp) protocol with the limits above.

    A request's head (and a chunked body's trailers) is counted twice, since llhttp sets no
    bound of its own: exactly, from the URL and headers its callbacks hand over (a head over
    the limit is refused however it was split into reads), and by the bytes read that are not
    body (llhttp holds a header in memory until it ends): one that never ends is refused at the
    first read that finds the count over the limit, so at most one read more is held, and the
    read timeouts end a request whose bytes stop coming.

    A refusal is written only where it stands alone: when a response is being made on the
    connection (other than to the request being read, not yet begun), the connection is closed
    instead, so that no answer is cut into another.

    What the connection waits for comes from the parser's callbacks (a request's head, then its
    body) and from uvicorn's own state (a response being made, requests queued behind it).
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, object],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = limits_of(config)
        self.max_header_bytes = limits.max_header_bytes
        self.header_timeout = limits.header_timeout
        self.body_timeout = limits.body_timeout
        self.max_connections = limits.max_connections
        self._refusals = limits.refused_connections
        self._reading_head = False
        self._reading_body = False
        self._head_bytes = 0  # the current head's (or trailers') URL and headers, as handed over
        self._unparsed_bytes = 0  # bytes read and not body since a head, chunk or message ended
        self._head_too_large = False
        self._codings: list[bytes] = []  # the current head's Transfer-Encoding values
        self._unknown_coding = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._reader = ReaderWatch(self.loop, self.body_timeout, self._reader_too_slow)
        self._lingering = False  # refused: the answer is out, the input is discarded
        self._read_no_more = False  # too many pipelined: those waiting answered, then closed
        # The bytes of body still to come of a request whose upgrade offer was ignored, which
        # llhttp does not read (None when none is being read).
        self._body_left: int | None = None
        self._body_parsed = False  # whether llhttp handed over body bytes of this request

    # --- connection life -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop, self.body_timeout))
        self.flow = _QueueFirstFlow(self.transport, self._requests_wait)
        if len(self.connections) > self.max_connections:
            self._refusals.happened(len(self.connections) - 1)
            self._refuse(
                _answer(
                    503,
                    "Service Unavailable",
                    "Too many connections to this server; try again shortly.",
                    "SERVICE_UNAVAILABLE",
                )
            )
            return
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self._lingering:
            self.connections.discard(self)
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._read_no_more:
            return  # after a refusal, or past the pipelined requests' bound, nothing is kept
        self._unparsed_bytes += len(data)
        if self._body_left is None:
            self._parse(data)
        else:
            self._unset_keepalive_if_required()
            self._read_body_past_upgrade(data)
        if self._lingering or self.transport.is_closing():
            return
        if (self._reading_head or self._reading_body) and (
            self._unparsed_bytes > self.max_header_bytes
        ):
            self._refuse_head()
            return
        self._track_request_progress()

    def _parse(self, data: bytes) -> None:
        """uvicorn's `data_received`, but for an upgrade offer it does not take up."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade as upgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._ignore_upgrade(data[upgrade.args[0] :])

    def _ignore_upgrade(self, rest: bytes) -> None:
        """Serve a request whose upgrade offer is not taken up as an ordinary request.

        llhttp ended the request with its head and stopped at what follows (`rest`), as the new
        protocol's; it parses nothing more once it has. The body, as long as Content-Length
        says, is read here, and a new parser takes what follows it. (Should llhttp read the body
        itself, as its issues ask, it has ended the request: a new parser takes the rest.)
        """
        self.parser = _request_parser(self)
        if not self._reading_body:
            if rest:
                self._parse(rest)
            return
        lengths = [value for name, value in self.headers if name == b"content-length"]
        if self._codings or len(lengths) > 1 or not all(v.isdigit() for v in lengths):
            if self._clear_for_refusal():
                message = "A request offering an upgrade must give its body's length, once."
                self._refuse(_answer(400, "Bad Request", message, "BAD_REQUEST"))
            return
        self._body_left = int(lengths[0]) if lengths else 0
        self._read_body_past_upgrade(rest)

    def _read_body_past_upgrade(self, data: bytes) -> None:
        assert self._body_left is not None
        body, rest = data[: self._body_left], data[self._body_left :]
        self._body_left -= len(body)
        if body:
            self.on_body(body)
        if self._body_left == 0:
            self._body_left = None
            self.on_message_complete()
            if rest:
                self._parse(rest)

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timers()  # the websocket protocol takes over the transport
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        if self._read_no_more:
            self._answer_those_waiting_then_close()
        elif self._head_too_large:
            self._refuse_head()
        elif self._unknown_coding:
            if self._clear_for_refusal():
                message = "A request body's Transfer-Encoding may only be chunked."
                answer = _answer(
                    501, "Not Implemented", message, "NOT_IMPLEMENTED", to_head=self._to_head()
                )
                self._refuse(answer)
        elif self._clear_for_refusal():
            self._refuse(_answer(400, "Bad Request", msg, "BAD_REQUEST", to_head=self._to_head()))

    # --- the parser's progress -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._body_parsed = False
        self._reading_head = True
        self._head_bytes = 0
        self._codings = []
        self._unknown_coding = False
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # "name: value\r\n"
        if name.lower() == b"transfer-encoding":
            self._codings.append(value)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if len(self.pipeline) >= MAX_PIPELINED:
            self._read_no_more = True
            raise _TooManyPipelined
        if self._codings and _codings(self._codings) != [b"chunked"]:
            # llhttp reads `gzip, chunked` as chunked and hands the body on still coded: a
            # proxy in front may read it otherwise (a request smuggled past it). RFC 9112
            # 6.1: a coding the server does not understand is a 501.
            self._unknown_coding = True
            raise _UnknownCoding
        self._head_bytes = self._unparsed_bytes = 0
        super().on_headers_complete()
        # Only now: a head uvicorn refuses (a bad URL) raises above, and the cycle at hand is
        # then still an earlier request's, not this one's.
        self._reading_head, self._reading_body = False, True

    def on_body(self, body: bytes) -> None:
        self._unparsed_bytes -= len(body)
        self._body_parsed = True
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._unparsed_bytes = 0

    def on_message_complete(self) -> None:
        if self.parser.should_upgrade() and not self._should_upgrade() and not self._body_parsed:
            return  # the end of an upgrade offer's head only: its body is read on (_parse)
        self._body_parsed = False
        self._reading_body = False
        self._unparsed_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track_request_progress()

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_header_bytes:
            self._head_too_large = True
            raise _HeadTooLarge

    def _requests_wait(self) -> bool:
        """Whether requests wait their turn behind the one being answered, or no more are read."""
        return bool(self.pipeline) or self._read_no_more

    def _answer_those_waiting_then_close(self) -> None:
        """Past `MAX_PIPELINED` waiting: nothing more is read (what llhttp had not parsed yet is
        dropped, a request's head cut short with it); the requests waiting are answered in turn,
        the last of them with `Connection: close`, and the connection closed after it."""
        log.info("connection to close: over %d pipelined requests waiting", MAX_PIPELINED)
        self._reading_head = self._reading_body = False
        self.flow.pause_reading()
        self.cycle.keep_alive = False  # the last request queued: its answer ends the connection

    def _answering(self) -> bool:
        """Whether the app is making a response, or requests wait their turn behind one."""
        cycle = self.cycle
        return bool(self.pipeline) or (cycle is not None and not cycle.response_complete)

    def _clear_for_refusal(self) -> bool:
        """Make way for a refusal; False if it would not stand alone, and the connection was
        closed instead.

        It stands alone when no response is being made, or when the only one is to the request
        being read and has not begun (its app is then told the client is gone, and answers no
        one).
        """
        cycle = self.cycle
        reading_this = self._reading_body and cycle is not None and not self.pipeline
        if reading_this and not cycle.response_started:
            cycle.disconnected = True
            cycle.message_event.set()
            return True
        if not self._answering():
            return True
        log.info("connection closed: a refusal would cut into a response being made")
        self._cancel_timers()
        self.transport.close()
        return False

    # --- timeouts ------------------------------------------------------------------------------

    def _track_request_progress(self) -> None:
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            self._cancel_timers()
            return
        if self.pipeline:
            # Requests wait behind a response being made, and uvicorn stops reading meanwhile:
            # nothing is expected of the client until that response is out.
            self._cancel_timers()
            return
        if self._reading_body:
            self._cancel(self._header_timer)
            self._header_timer = None
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.body_timeout, self._body_too_slow)
            return
        self._cancel(self._body_timer)
        self._body_timer = None
        if self._answering():
            self._cancel(self._header_timer)
            self._header_timer = None
            return
        # Waiting for a request's head, or bytes of one arrived (keep-alive's own timer covers
        # the silence before them).
        if self._header_timer is None and self.timeout_keep_alive_task is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._reading_body or self._answering():
            return
        log.info("connection closed: request headers not received within %ss", self.header_timeout)
        self.transport.close()

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self._reading_body or self.pipeline:
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:
            # Answered already, without its body (a 413 by Content-Length, a 404): a second
            # answer to the same request would be read as the next request's. Close instead.
            log.info(
                "connection closed: an answered request's body did not come within %ss",
                self.body_timeout,
            )
            self._cancel_timers()
            self.transport.close()
            return
        log.info("request refused: body not received within %ss", self.body_timeout)
        if self._clear_for_refusal():
            self._refuse(
                _answer(
                    408,
                    "Request Timeout",
                    f"Request body not received within {self.body_timeout:g} s.",
                    "REQUEST_TIMEOUT",
                )
            )

    def _cancel_timers(self) -> None:
        self._cancel(self._header_timer)
        self._cancel(self._body_timer)
        self._reader.stop()
        self._header_timer = self._body_timer = None

    # --- a client that does not take its answer ------------------------------------------------

    def pause_writing(self) -> None:
        """The answer waits on the client to read it: from now it must take some of it every
        INMAIL_BODY_TIMEOUT, or the connection is closed. An answer a client never reads is
        not kept in memory for as long as it likes; a slow reader still gets all of it."""
        super().pause_writing()
        if not self.transport.is_closing():
            self._reader.start(self.transport)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._reader.stop()

    def _reader_too_slow(self) -> None:
        # Closing or not: a close waits on the client taking what is left, so it ends nothing.
        log.info(
            "connection closed: the client took nothing of its answer for %ss", self.body_timeout
        )
        self._cancel_timers()
        self.transport.abort()  # what was not sent is dropped with the connection

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()

    # --- refusing ------------------------------------------------------------------------------

    def _refuse_head(self) -> None:
        log.info("request refused: headers over %d bytes", self.max_header_bytes)
        if not self._clear_for_refusal():
            return
        self._refuse(
            _answer(
                431,
                "Request Header Fields Too Large",
                f"Request line and headers over {self.max_header_bytes} bytes.",
                "HEADERS_TOO_LARGE",
                to_head=self._to_head(),
            )
        )

    def _to_head(self) -> bool:
        """Whether the request being refused is a HEAD (llhttp knows once it read the method;
        before that it names another)."""
        return bool(self.parser.get_method() == b"HEAD")

    def _refuse(self, answer: bytes) -> None:
        """Write the answer, stop sending, discard the rest of the input, close soon."""
        self._cancel_timers()
        self._unset_keepalive_if_required()
        self._lingering = True
        self.connections.discard(self)  # a refused connection counts against no one
        transport = self.transport
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
        transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, transport.close)


# The codes of a refused handshake, as the HTTP layer's refusals have them (a 426 "Upgrade
# Required" is no UPGRADE_REQUIRED: that code is the API's, for a plan that cannot send).
_REFUSAL_CODES: Final = {
    403: "FORBIDDEN",
    405: "METHOD_NOT_ALLOWED",
    431: "HEADERS_TOO_LARGE",  # a handshake's header line over 8 KiB, or over 128 of them
    500: "INTERNAL_SERVER_ERROR",
}


WS_FRAME_BURST: Final = 16_000
WS_FRAMES_PER_SECOND: Final = 4_000.0
"""Frames one websocket may send: a burst, then a steady rate. The pace of messages
(`endpoint/websockets.py`) holds back what the app reads; this holds back what the parser reads,
every frame counted: pings and the pieces of a message, however small, cost the process to parse
(about 3 µs each) and were counted nowhere. One anonymous socket sending empty pieces of one message
took a whole core and held `{ now }` up for 11 s. A client's message is one frame, or a few for a
large one; the burst lets through three messages of the largest size (1 MiB) sent in pieces of 256
bytes, and the rate costs a core about a hundredth of its time."""


WS_MESSAGE_BEFORE_ACK: Final = 64 * 1024
"""The largest message a socket may send before the server acknowledged its `connection_init`
(the init itself, with a token of at most 4 KiB, is a few): messages up to INMAIL_MAX_BODY_BYTES
only once it is known whose socket it is. A stranger's socket would otherwise hold a message of
that size while it is being sent, 1 GiB over a thousand sockets that each send all but a byte."""


def _is_ack(text: str | None) -> bool:
    if text is None or len(text) > 4096:
        return False
    try:
        message = json.loads(text)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "connection_ack"


class _TooManyFrames(ProtocolError):
    """Raised from the parser: a frame past the pace; the socket is closed with 1008."""


class JsonRefusals(ServerProtocol):
    """websockets' protocol: its handshake's refusals (a bad Sec-WebSocket-Version, a missing
    key, a handshake the app refused) answered in JSON like every other answer, not in plain
    text, and the frames a client sends held to `frames`, a pace: past it the socket fails
    with 1008 (policy violation), and nothing more it sends is parsed."""

    frames: Pace
    over_pace = False

    def recv_frame(self, frame: Frame) -> None:
        if self.frames.wait() > 0:
            self.over_pace = True
            raise _TooManyFrames(
                f"More than {WS_FRAME_BURST} frames at once, or {WS_FRAMES_PER_SECOND:g} a second"
            )
        super().recv_frame(frame)

    def fail(self, code: CloseCode | int, reason: str = "") -> None:
        # The parser fails every ProtocolError with 1002: this one is a policy's.
        super().fail(CloseCode.POLICY_VIOLATION if self.over_pace else code, reason)

    def reject(self, status: StatusLike, text: str) -> HandshakeResponse:
        plain = super().reject(status, text)
        code = _REFUSAL_CODES.get(plain.status_code, "BAD_REQUEST")
        message = text.strip() or f"The websocket was refused: {plain.reason_phrase}."
        body = json.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})
        headers = Headers(
            (name, value)
            for name, value in plain.headers.raw_items()
            if name.lower() not in ("content-type", "content-length")
        )
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(body.encode()))
        return HandshakeResponse(plain.status_code, plain.reason_phrase, headers, body.encode())


class ReaderBoundWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol (websockets-sansio), with a client that stops reading
    dropped as an HTTP one is: once what is sent to it passes the transport's high-water mark,
    it must take some of it every INMAIL_BODY_TIMEOUT, or the connection is aborted and what was
    not sent is dropped.

    uvicorn alone would keep such a connection as long as the client likes: its keepalive
    timeout queues a close frame behind the unsent bytes and closes the transport, which waits
    for them to leave first. The connection would hold its slot under INMAIL_MAX_CONNECTIONS,
    and megabytes of socket buffers, until the client read again. So after a keepalive timeout
    with bytes still unsent, the same watch runs until the connection is gone.

    Nor is such a client read while it takes nothing: each ping frame it sends is answered by a
    pong (RFC 6455 asks for one), which would wait in memory behind the rest, a flood of pings
    growing the process by megabytes a second. A ping met while what was sent waits stops the
    reading, until the client takes some of it (uvicorn already reads a text message only once
    the app took the one before).

    Until the app acknowledges the socket's `connection_init`, its messages are held to
    WS_MESSAGE_BEFORE_ACK; and a socket that is gone lets go of a message it was part way
    through at once, not when the garbage collector next finds the parser's cycle.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, object],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn.__class__ = JsonRefusals  # uvicorn's handshake as it set it up, JSON refusals
        cast(JsonRefusals, self.conn).frames = Pace(WS_FRAMES_PER_SECOND, WS_FRAME_BURST)
        self.body_timeout = limits_of(config).body_timeout
        self._reader = ReaderWatch(self.loop, self.body_timeout, self._reader_too_slow)
        self._paused_for_pongs = False
        self._largest_once_acknowledged = self.conn.max_message_size
        if self.conn.max_message_size is not None:
            self.conn.max_message_size = min(self.conn.max_message_size, WS_MESSAGE_BEFORE_ACK)

    async def send(self, message: ASGISendEvent) -> None:
        if (
            self._largest_once_acknowledged is not None
            and message["type"] == "websocket.send"
            and _is_ack(message.get("text"))
        ):
            self.conn.max_message_size = self._largest_once_acknowledged
            self._largest_once_acknowledged = None
        await super().send(message)

    def pause_writing(self) -> None:
        super().pause_writing()
        if not self.disconnected:
            self._reader.start(self.transport)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._reader.stop()
        if self._paused_for_pongs:
            self._paused_for_pongs = False
            if not self.read_paused and not self.transport.is_closing():
                self.transport.resume_reading()  # unless uvicorn holds it for the app

    def handle_ping(self) -> None:
        super().handle_ping()
        if not self.writable.is_set() and not self.transport.is_closing():
            self._paused_for_pongs = True
            self.transport.pause_reading()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        if not self.disconnected and self.transport.get_write_buffer_size() > 0:
            self._reader.start(self.transport)  # the close waits on the client taking these

    def connection_lost(self, exc: Exception | None) -> None:
        self._reader.stop()
        # A message part way in: its frames so far, and the bytes of the one being read.
        self.frames = []
        with contextlib.suppress(BufferError):
            self.conn.reader.buffer.clear()
        super().connection_lost(exc)

    def _reader_too_slow(self) -> None:
        if self.disconnected:
            return
        log.info(
            "websocket closed: the client took nothing of what it was sent for %ss",
            self.body_timeout,
        )
        self.transport.abort()  # what was not sent is dropped with the connection


WS_PING_TIMEOUT_LEAST = 20.0  # seconds: uvicorn's own default


def server_config(settings: Settings) -> ServerConfig:
    """How `inmail serve` runs uvicorn: the service's app and every transport limit.

    The app is a factory given the settings themselves: uvicorn pickles it with the configuration
    into each worker it spawns, so a worker runs with exactly what serve resolved.
    """
    from inmail.app import worker_app

    return ServerConfig(
        partial(worker_app, settings),
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers if settings.workers > 1 else None,
        log_config=None,
        timeout_graceful_shutdown=10,
        lifespan="on",
        # Websocket messages are bounded like request bodies (close code 1009 past it).
        ws_max_size=settings.max_body_bytes,
        # A ping frame every INMAIL_WS_KEEPALIVE seconds on every socket, whatever its
        # subprotocol (browsers answer by themselves); one unanswered for 20 s (or the
        # interval, if longer) is closed, so a short interval does not drop slow links.
        ws_ping_interval=settings.ws_keepalive,
        ws_ping_timeout=max(settings.ws_keepalive, WS_PING_TIMEOUT_LEAST),
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_connections=settings.max_connections,
    )


class Supervisor(Multiprocess):
    """uvicorn's supervisor of several workers, that lets go of the listening socket when it
    stops them: once they have closed theirs (the first thing a stopping worker does), a new
    connection is refused at once, as by one worker, instead of waiting in the kernel's queue
    for as long as a worker drains its requests."""

    def terminate_all(self) -> None:
        for listening in self.sockets:
            listening.close()
        super().terminate_all()


def run_server(settings: Settings) -> bool:
    """Serve until stopped (uvicorn.run's work, with ServerConfig); False if it never started."""
    config = server_config(settings)
    server = Server(config=config)
    try:
        if config.workers > 1:
            supervisor = Supervisor(config, sockets=[config.bind_socket()])
            supervisor.run()
            # A worker that failed to start stops them all: that is a failed start, not a stop.
            return not any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
        server.run()
    except KeyboardInterrupt:
        pass
    return server.started or config.workers > 1
