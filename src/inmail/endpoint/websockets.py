"""/graphql over websockets, both subprotocols (graphql-transport-ws and the legacy graphql-ws).

A socket is read at a pace (messages and bytes), each message is checked for the protocol's
shape before a handler reads it, a socket is authenticated until its token's `exp`, a member
holds at most INMAIL_WS_MAX_PER_MEMBER of them, and every close reason fits a close frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, Final, Protocol, TypeVar

from graphql import GraphQLError
from starlette.types import Message as AsgiMessage
from starlette.types import Send
from starlette.websockets import WebSocketDisconnect, WebSocketState
from starlette.websockets import WebSocketDisconnected as StarletteWebSocketDisconnected
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.async_base_view import AsyncWebSocketAdapter
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.schema.schema import StreamResult
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import Message
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    CompleteMessage,
    ConnectionInitMessage,
    ErrorMessage,
    OperationMessage,
)
from strawberry.types.execution import ExecutionResult, PreExecutionError

from inmail.endpoint import LOGGER
from inmail.endpoint.documents import MULTIPLE_OPERATIONS, never_ran, no_operation_to_run
from inmail.endpoint.json_text import Undecodable, load_json
from inmail.pace import Pace
from inmail.resolvers.context import Context
from inmail.resolvers.text_guard import first_unencodable
from inmail.schema.errors import TOKEN_EXPIRED_MESSAGE, ApiError

log = logging.getLogger(LOGGER)

M = TypeVar("M")

TOKEN_EXPIRED = 4403
INIT_TIMEOUT = 4408
BAD_MESSAGE = 4400
# graphql-transport-ws's close for a second connection_init (Strawberry's), on both protocols.
TOO_MANY_INITIALISATIONS = 4429
TOO_MANY_INITIALISATIONS_REASON = "Too many initialisation requests"

# A websocket over INMAIL_WS_MAX_PER_MEMBER: "Try Again Later" (RFC 6455's registry), once the
# holder's other sockets have closed.
TOO_MANY_SOCKETS = 1013


class SocketHolders:
    """How many websockets each member has open in this process, at most `limit` each: one
    member's token cannot take every connection the process serves (INMAIL_MAX_CONNECTIONS)
    and keep them for as long as it lives."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._held: dict[object, str] = {}  # each socket counted, and whose it is

    def take(self, socket: object, holder: str) -> bool:
        """Count `socket` as `holder`'s (once), unless the holder has `limit` open already."""
        if socket in self._held:
            return True
        count = self._open.get(holder, 0)
        if count >= self.limit:
            return False
        self._open[holder] = count + 1
        self._held[socket] = holder
        return True

    def release(self, socket: object) -> None:
        """`socket` has ended: its holder's count goes down (if it was counted)."""
        holder = self._held.pop(socket, None)
        if holder is None:
            return
        left = self._open[holder] - 1
        if left:
            self._open[holder] = left
        else:
            del self._open[holder]


# What one websocket may send: a burst, then a steady rate, of messages and of their bytes (a
# message of a mebibyte costs a hundred milliseconds to read); past either its messages are read
# no faster (TCP holds the rest back at the client), so one socket cannot take a whole core.
WS_MESSAGE_BURST: Final = 100
WS_MESSAGES_PER_SECOND: Final = 50.0
WS_BYTES_BURST: Final = 1 << 20
WS_BYTES_PER_SECOND: Final = 256 * 1024.0


class WebSocketMessages(ASGIWebSocketAdapter):
    """Strawberry's adapter, handing every message to the protocol handler to judge, at most
    at the pace of WS_MESSAGES_PER_SECOND after a burst of WS_MESSAGE_BURST, and of
    WS_BYTES_PER_SECOND after WS_BYTES_BURST.

    A JSON value that is not an object, and on graphql-ws text that is not JSON, reach the
    handler (which closes the socket with 4400) instead of being dropped or failing in it.
    """

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object]:
        messages = Pace(WS_MESSAGES_PER_SECOND, WS_MESSAGE_BURST)
        volume = Pace(WS_BYTES_PER_SECOND, WS_BYTES_BURST)
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                size = len(text) if text.isascii() else len(text.encode(errors="surrogatepass"))
                if (wait := max(messages.wait(), volume.wait(size))) > 0:
                    await asyncio.sleep(wait)
                try:
                    yield load_json(text)
                except json.JSONDecodeError as exc:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from exc
                    yield Undecodable(exc.msg)
        except KeyError as exc:
            raise NonTextMessageReceived from exc
        except WebSocketDisconnect:
            pass

    async def send_json(self, message: Mapping[str, object]) -> None:
        """Strawberry's, with a send after the socket was closed (by the server: its init
        timeout, a keepalive missed, a refusal) raised as the socket gone, which the handlers
        take in their stride, rather than Starlette's or uvicorn's RuntimeError, which they
        would log with its traceback: a client can have answers queued at any close."""
        try:
            await super().send_json(message)
        except RuntimeError as exc:
            gone = self.ws.application_state == WebSocketState.DISCONNECTED
            if (gone and isinstance(exc, StarletteWebSocketDisconnected)) or _sent_after_close(exc):
                raise WebSocketDisconnected from exc
            raise


# Errors Strawberry's protocol handlers write themselves, without a code.
_HANDLER_ERROR_CODES: Final = {"Subscription limit reached": "TOO_MANY_SUBSCRIPTIONS"}


def _coded(message: M) -> M:
    """An `error` message, each of its errors given a code where it has none (as every error
    over HTTP has one)."""
    if not isinstance(message, dict) or message.get("type") != "error":
        return message
    payload = message.get("payload")
    errors = payload if isinstance(payload, list) else [payload]
    for error in errors:
        if isinstance(error, dict) and not (error.get("extensions") or {}).get("code"):
            code = _HANDLER_ERROR_CODES.get(str(error.get("message")), "BAD_REQUEST")
            error["extensions"] = {**(error.get("extensions") or {}), "code": code}
    return message


async def _refusal_first(source: StreamResult) -> StreamResult:
    """`source`, its first result a PreExecutionError when the operation never ran."""
    first = True
    async for result in source:
        if first and isinstance(result, ExecutionResult) and never_ran(result):
            result = PreExecutionError(data=None, errors=result.errors)
        first = False
        yield result


# An operation's id is echoed in every message about it (each event of a subscription): clients
# use a counter or a UUID, and a longer one only multiplies what each event costs to send.
MAX_OPERATION_ID: Final = 128


def _is_operation_message(message: object) -> str | None:
    """Why a websocket message is not one a protocol defines, or None when it is well formed."""
    if isinstance(message, Undecodable):
        return f"A message must be JSON: {message.reason}"
    if not isinstance(message, dict):
        return "A message must be a JSON object"
    kind = message.get("type")
    if not isinstance(kind, str):
        return "A message must have a string type"
    if isinstance(ident := message.get("id"), str):
        if len(ident) > MAX_OPERATION_ID:
            return f"An operation id must be at most {MAX_OPERATION_ID} characters"
        if first_unencodable(ident) is not None:
            # It would be echoed in every message about the operation, as no JSON text is.
            return "An operation id must be text (it holds a lone UTF-16 surrogate)"
    if kind in ("subscribe", "start"):
        payload = message.get("payload")
        if not isinstance(message.get("id"), str) or not isinstance(payload, dict):
            return f"A {kind} message needs a string id and an object payload"
        if not isinstance(payload.get("query"), str):
            return "The payload's query must be a string"
        if not isinstance(payload.get("variables"), dict | None):
            return "The payload's variables must be an object"
        if not isinstance(payload.get("operationName"), str | None):
            return "The payload's operationName must be a string"
        if not isinstance(payload.get("extensions"), dict | None):
            return "The payload's extensions must be an object"
    if kind in ("complete", "stop") and not isinstance(message.get("id"), str):
        return f"A {kind} message needs a string id"
    if kind == "connection_init" and not isinstance(message.get("payload"), dict | None):
        return "The connection_init payload must be an object"
    return None


class Documents(Protocol):
    """The view's judgement of a document (remembered by its text)."""

    def holds_several_operations(self, query: str) -> bool: ...


def _unnamed_of_several(view: Documents, message: Mapping[str, object], starts: str) -> bool:
    """Whether `message` (a well-formed protocol message) starts an operation whose document
    holds several and names none: refused as over HTTP, where Strawberry would run the first."""
    if message.get("type") != starts:
        return False
    payload = message.get("payload")
    if not isinstance(payload, dict) or payload.get("operationName") is not None:
        return False
    query = payload.get("query")
    return isinstance(query, str) and view.holds_several_operations(query)


def _reads_afresh(context: object) -> None:
    """A websocket's operations share its context: each starts with nothing read, so that what
    it shows is as of now (SPEC 3), not as of the socket's first query."""
    if isinstance(context, Context):
        context.reads.clear()


class _TokenLifetime:
    """A socket is authenticated until its token's `exp` (SPEC 8; HTTP's clock skew is not
    added): then it is closed with 4403, and a token already past `exp` is refused at
    connection_init.

    Both protocol handlers mix this in. Nothing is sent for an operation once the token has
    expired, even in the moment between `exp` and the close.
    """

    context: Context
    websocket: AsyncWebSocketAdapter
    view: Any  # the GraphQLApp serving the socket (typed in the handlers' bases)
    connection_acknowledged: bool
    _expiry_task: asyncio.Task[None] | None = None
    _closed_for_expiry = False

    def _expires_at(self) -> float | None:
        return self.context.credentials.ends_at()

    def _has_expired(self) -> bool:
        expires_at = self._expires_at()
        return expires_at is not None and time.time() >= expires_at

    async def _handle_unless_expired(self, handle: Callable[[], Awaitable[None]]) -> None:
        """Handle a message, or close the socket if the token has expired; from the
        acknowledgement on, the socket is closed when the token expires."""
        if self._has_expired():
            await self._close_for_expiry()
            return
        await handle()
        if self.connection_acknowledged:
            self._watch_expiry()

    def _watch_expiry(self) -> None:
        expires_at = self._expires_at()
        if expires_at is not None and self._expiry_task is None:
            self._expiry_task = asyncio.create_task(self._close_at(expires_at))

    async def _close_at(self, expires_at: float) -> None:
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        await self._close_for_expiry()

    async def _close_for_expiry(self) -> None:
        if self._closed_for_expiry:
            return
        self._closed_for_expiry = True
        # Every operation is stopped at once, and the socket closed, before any is waited for
        # (graphql-ws's cleanup waits for each in turn, while the others would run on). One the
        # cancel reaches late commits nothing anyway (DatabaseDeadline: no commit after exp).
        self._cancel_operations()
        with contextlib.suppress(Exception):
            await self.websocket.close(
                code=TOKEN_EXPIRED, reason=f"Forbidden: {TOKEN_EXPIRED_MESSAGE}"
            )
        await self._end_operations()

    def _cancel_operations(self) -> None:
        raise NotImplementedError

    async def _end_operations(self) -> None:
        raise NotImplementedError

    async def _socket_ended(self) -> None:
        """The socket is gone: its holder may open another in its place (at once, before
        anything here can be interrupted), and its expiry is no longer watched."""
        self.view.sockets.release(self.context.request)
        task, self._expiry_task = self._expiry_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class TransportWSHandler(_TokenLifetime, BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, with the token's lifetime and strict message shapes."""

    def forget_id(self, id: str) -> None:
        """Strawberry's, for an operation that ends after it was cleaned up (one still running
        when the socket closed at its token's expiry): its id is gone already, not an error."""
        self.operations.pop(id, None)

    async def handle_message(self, message: Any) -> None:
        problem = _is_operation_message(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        if message.get("type") == "connection_init" and message.get("payload", {}) is None:
            # The protocol allows a null payload; Strawberry refuses all but an object.
            message = {key: value for key, value in message.items() if key != "payload"}
        starts = message.get("type") == "subscribe"
        if starts and self.connection_acknowledged and message["id"] not in self.operations:
            # (A reused id is Strawberry's to refuse first: 4409.)
            _reads_afresh(self.context)
            if _unnamed_of_several(self.view, message, "subscribe"):
                refusal = ApiError(MULTIPLE_OPERATIONS, "BAD_REQUEST")
                await self.send_message(
                    {"id": message["id"], "type": "error", "payload": [refusal.formatted]}
                )
                return
        await self._handle_unless_expired(functools.partial(super().handle_message, message))

    async def send_message(self, message: Message) -> None:
        if self._has_expired():  # from the token's expiry on, nothing more is sent
            return
        await super().send_message(_coded(message))

    def _cancel_operations(self) -> None:
        for operation in list(self.operations.values()):
            if operation.task is not None:
                operation.task.cancel()

    async def _end_operations(self) -> None:
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)

    async def handle_task_exception(self, error: Exception) -> None:
        """Strawberry logs every failed operation task with its traceback; a socket that went
        away while an answer was being sent is the client's doing, worth one line. So is one
        the server closed under it: uvicorn closes a socket whose client missed its keepalive
        ping, and refuses, with this RuntimeError, what the operation sends after that. And so
        is a close sent as the client goes (Strawberry's close at the init timeout is sent
        straight to Starlette, which says the client is gone with its own exception)."""
        gone = (WebSocketDisconnected, WebSocketDisconnect)
        if isinstance(error, gone) or _sent_after_close(error):
            log.info("websocket gone while an operation's answer was sent")
            return
        await super().handle_task_exception(error)

    async def _send_result_stream(
        self, operation: Operation[Context, None], result_source: StreamResult
    ) -> None:
        """Strawberry's, with an operation refused before any resolver ran (by the cost limit,
        which answers with errors and no data) answered with an `error` message, as one that
        failed to validate is, rather than `next` and `complete`."""
        await super()._send_result_stream(operation, _refusal_first(result_source))

    @staticmethod
    def _get_pre_execution_close_reason(error: GraphQLError) -> str | None:
        """None: an operation refused before it ran, its document not parsing included, is
        answered with an `error` message for its id, and the socket serves on. Strawberry
        would close the socket with 4400, which graphql-ws clients take as fatal: one bad
        document would end every other subscription on the socket, for good."""
        return None

    async def _handle_pre_execution_error(
        self, operation: Operation[Context, None], result: PreExecutionError
    ) -> None:
        """Strawberry's, answering a document with no operation to run with an error message
        (Strawberry would close the socket with 4400)."""
        assert result.errors
        first = no_operation_to_run(result.errors[0])
        if first is not result.errors[0]:
            await operation.send_initial_errors([first])
            return
        await super()._handle_pre_execution_error(operation, result)

    async def shutdown(self) -> None:
        await self._socket_ended()
        await super().shutdown()


# What a graphql-ws client may send (graphql-transport-ws's handler refuses others itself).
_LEGACY_CLIENT_MESSAGES: Final = frozenset(
    {"connection_init", "connection_terminate", "start", "stop"}
)


class LegacyWSHandler(_TokenLifetime, BaseGraphQLWSHandler[Context, None]):
    """graphql-ws: its connection_init timeout, any operation (not only subscriptions),
    strict message shapes and the token's lifetime."""

    _init_timeout_task: asyncio.Task[None] | None = None
    _connection_init_received = False

    async def handle(self) -> None:
        self._init_timeout_task = asyncio.create_task(self._close_unless_initialised())
        try:
            await super().handle()
        finally:
            task, self._init_timeout_task = self._init_timeout_task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self._socket_ended()

    async def _close_unless_initialised(self) -> None:
        timeout: timedelta = self.view.connection_init_wait_timeout
        await asyncio.sleep(timeout.total_seconds())
        if not self.connection_acknowledged:
            with contextlib.suppress(Exception):
                await self.websocket.close(
                    code=INIT_TIMEOUT, reason="Connection initialisation timeout"
                )

    async def handle_message(self, message: Any) -> None:
        problem = _is_operation_message(message)
        if problem is None and message["type"] not in _LEGACY_CLIENT_MESSAGES:
            problem = f"Unknown message type: {message['type']}"[:100]
        if problem is not None:
            with contextlib.suppress(WebSocketDisconnected):
                await self.send_message(
                    {"type": "connection_error", "payload": {"message": problem}}
                )
            await self.websocket.close(code=BAD_MESSAGE, reason=problem)
            return
        if message.get("type") == "start" and self.connection_acknowledged:
            _reads_afresh(self.context)
            if _unnamed_of_several(self.view, message, "start"):
                if message["id"] in self.tasks:  # a reused id replaces its operation
                    await self.cleanup_operation(message["id"])
                refusal = ApiError(MULTIPLE_OPERATIONS, "BAD_REQUEST")
                await self.send_message(
                    ErrorMessage(type="error", id=message["id"], payload=refusal.formatted)
                )
                return
        await self._handle_unless_expired(functools.partial(super().handle_message, message))
        if self.connection_acknowledged and self._init_timeout_task is not None:
            self._init_timeout_task.cancel()

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        """Strawberry's, for the first connection_init only: another is refused as on
        graphql-transport-ws (4429), never acknowledged again with one more keep-alive task."""
        if self._connection_init_received:
            await self.websocket.close(
                code=TOO_MANY_INITIALISATIONS, reason=TOO_MANY_INITIALISATIONS_REASON
            )
            return
        self._connection_init_received = True
        await super().handle_connection_init(message)

    async def send_message(self, message: OperationMessage) -> None:
        if self._has_expired():  # from the token's expiry on, nothing more is sent
            return
        await super().send_message(_coded(message))

    def _cancel_operations(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()

    async def _end_operations(self) -> None:
        await self.cleanup()

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        """Strawberry's, streaming any operation: a query or mutation yields one result."""
        try:
            result_source = await self.schema.stream(
                query=query,
                variable_values=variables,
                operation_name=operation_name,
                context_value=self.context,
                root_value=self.root_value,
            )
            self.subscriptions[operation_id] = result_source
            first = True
            async for result in result_source:
                if first and isinstance(result, ExecutionResult) and never_ran(result):
                    assert result.errors
                    error = no_operation_to_run(result.errors[0]).formatted
                    await self.send_message(
                        ErrorMessage(type="error", id=operation_id, payload=error)
                    )
                    return
                if not isinstance(result, ExecutionResult):
                    unsupported = GraphQLError(
                        "Incremental delivery is not supported over graphql-ws"
                    )
                    await self.send_message(
                        ErrorMessage(type="error", id=operation_id, payload=unsupported.formatted)
                    )
                    return
                await self.send_data_message(result, operation_id)
                first = False
            await self.send_message(CompleteMessage(type="complete", id=operation_id))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self.send_message(CompleteMessage(type="complete", id=operation_id))
        except WebSocketDisconnected:
            log.info("websocket gone while an operation's answer was sent")
        finally:
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)


def _sent_after_close(error: Exception) -> bool:
    """Whether uvicorn refused a message because the socket was closed already."""
    return isinstance(error, RuntimeError) and "after sending 'websocket.close'" in str(error)


CLOSE_REASON_BYTES: Final = 123
"""The most bytes of UTF-8 a websocket close frame's reason holds (RFC 6455 5.5)."""


def close_reasons_cut(send: Send) -> Send:
    """`send`, with every websocket close's reason made one a close frame holds: UTF-8, cut to
    CLOSE_REASON_BYTES. Strawberry's closes quote a client's text (a message type it does not
    know, an operation id used twice): a longer reason, or one holding a lone surrogate, failed
    in the transport, which logged a traceback and dropped the socket (1006) instead of
    closing it with the protocol's code."""

    async def cut(message: AsgiMessage) -> None:
        reason = message.get("reason")
        if message["type"] == "websocket.close" and reason:
            # A lone surrogate (a client's text may hold one) becomes "?", as UTF-8 has none;
            # the cut never falls inside a character.
            encoded = reason.encode(errors="replace")[:CLOSE_REASON_BYTES]
            fitting = encoded.decode(errors="ignore")
            if fitting != reason:
                message = {**message, "reason": fitting}
        await send(message)

    return cut
