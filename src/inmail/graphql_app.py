"""/graphql: HTTP, GraphiQL and both websocket subprotocols, on Strawberry's ASGI view.

What a hostile client can send is answered here before any resolver runs: a body that is not
a JSON object, JSON nested too deep, a websocket message that is not a protocol message, a
socket that never says connection_init or says it twice, a socket whose token has expired.

HTTP follows the GraphQL over HTTP specification: a client whose Accept names
`application/graphql-response+json` gets that media type, with 400 for a request that never
ran (a document that does not parse or validate, variables that do not coerce) and no `data`
entry; every other client gets `application/json` with 200 for those, as before. Queries are
served over GET too; a mutation over GET is refused with 405 and `Allow: POST`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from email.message import Message as HeaderFields
from itertools import accumulate
from typing import Any, Final, NoReturn, TypeVar, cast

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError, GraphQLSchema, OperationDefinitionNode, parse
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message as AsgiMessage
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from starlette.websockets import WebSocketDisconnected as StarletteWebSocketDisconnected
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.async_base_view import AsyncWebSocketAdapter
from strawberry.http.base import BaseRequestProtocol
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.http.types import QueryParams
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.schema import StreamResult
from strawberry.subscriptions import GRAPHQL_WS_PROTOCOL
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

from inmail.bootstrap import Container
from inmail.graphiql import graphiql_page
from inmail.logs import Occasional
from inmail.pace import Pace
from inmail.resolvers.context import (
    SEVERAL_AUTHORIZATIONS,
    TOKEN_EXPIRED_MESSAGE,
    Context,
    refuse_unknown_members_on_failure,
)
from inmail.resolvers.cost import KNOWN_DOCUMENTS, CostHolders
from inmail.resolvers.limits import Remembered, line_count, text_digest
from inmail.resolvers.root import MASKED_MESSAGE, UNANSWERED_MESSAGE, is_unexpected, masked
from inmail.resolvers.text_guard import refuse_unencodable_arguments
from inmail.schema.errors import ApiError
from inmail.schema.quoting import briefly

log = logging.getLogger(__name__)

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


_HTTP_CODES = {
    400: "BAD_REQUEST",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    415: "UNSUPPORTED_MEDIA_TYPE",
}

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
_GRAPHQL_RESPONSE_UTF8 = f"{GRAPHQL_RESPONSE}; charset=utf-8"
_EXCHANGE = "inmail.graphql_exchange"


MAX_CONTENT_TYPE_LENGTH: Final = 256
"""The longest Content-Type read: the email module's parser that reads it (Strawberry's and this
view's) takes time in the square of its length (60 KB: two seconds), and a real one is short."""

MAX_ACCEPT_RANGES: Final = 32
"""Media ranges of an Accept header that are read, and parameters of each (clients send a
handful): the rest are left unread, so a header of 60 KB costs what a short one does."""


def _accepted_quality(accept: str, media_type: str) -> tuple[float, bool]:
    """The quality Accept gives `media_type` (by its most specific matching range among the
    first MAX_ACCEPT_RANGES), and whether a range names the type itself (not only `*/*` or
    `application/*`)."""
    kind = media_type.split("/", 1)[0]
    best: tuple[int, float] = (-1, 0.0)  # (specificity, quality)
    for entry in accept.split(",", MAX_ACCEPT_RANGES)[:MAX_ACCEPT_RANGES]:
        parts = entry.split(";", MAX_ACCEPT_RANGES)[:MAX_ACCEPT_RANGES]
        media_range, *parameters = (part.strip().lower() for part in parts)
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(media_range)
        if specificity is None or specificity < best[0]:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    quality = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        if specificity > best[0] or quality > best[1]:
            best = (specificity, quality)
    return best[1], best[0] == 2


def response_media_type(accept: str | None) -> str:
    """How /graphql answers a client sending this Accept header.

    `application/graphql-response+json` when the client names it with a quality above zero and
    at least that of `application/json`; otherwise `application/json`: for a missing Accept,
    for `*/*`, and for an Accept naming neither (legacy clients keep working).
    """
    if not accept:
        return JSON
    wanted, named = _accepted_quality(accept, GRAPHQL_RESPONSE)
    legacy, _ = _accepted_quality(accept, JSON)
    return GRAPHQL_RESPONSE if named and wanted > 0 and wanted >= legacy else JSON


class _Exchange:
    """What one HTTP request to /graphql has settled so far: the media type of the answer and
    whether the operation never ran (a request error), or failed before it could (the
    service's failure, or a database that did not answer: `unavailable`)."""

    def __init__(self, media_type: str) -> None:
        self.media_type = media_type
        self.request_error = False
        self.server_error = False
        self.unavailable = False
        self.retry_after: str | None = None  # seconds, when the refusal says when to try again
        # The operation's context, while it runs (it holds the request, whose scope holds
        # this: `answered` lets it go, so that nothing of the request is left in a cycle).
        self.context: Context | None = None

    def holder(self) -> str | None:
        """Whose answer this is, for the answer budget: the member's id, "" for a caller with
        no good token (all such callers share one budget), None for an admin (not held)."""
        viewer = None if self.context is None else self.context.credentials.checked
        if viewer is None:
            return ""
        return None if viewer.is_admin else viewer.member_id or ""

    def answered(self) -> tuple[str | None, bool]:
        """Once the operation has run: whose answer it is, and whether it was a mutation."""
        holder, wrote = self.holder(), self.context is not None and self.context.wrote
        self.context = None
        return holder, wrote


# An answer this large is held in the process while its client reads it: counted against its
# holder's budget of answers in flight (ANSWERS_IN_FLIGHT answers of the largest size), and
# handed to the connection a piece at a time, each once the client has taken the one before.
# A smaller one goes to the connection whole: its buffer holds this much before it waits. A
# holder with less than one largest answer left of the budget is refused before a request runs.
HELD_ANSWER_BYTES: Final = 64 * 1024
ANSWERS_IN_FLIGHT: Final = 2


def _withheld(size: int) -> dict[str, object]:
    return {
        "message": f"The mutation was applied, but its answer ({size} bytes) is not sent while "
        "your earlier answers are still unread: read them (or close their connections), then "
        "read what it changed.",
        "extensions": {"code": "RESPONSE_TOO_LARGE", "applied": True},
    }


_ANSWERS_UNREAD: Final = {
    "message": "Your earlier answers are still being sent: read them (or close their "
    "connections), then ask again.",
    "extensions": {"code": "SERVICE_UNAVAILABLE"},
}


def _is_failure(error: GraphQLError) -> bool:
    """An unmasked failure of the service itself (not the client's: see is_unexpected)."""
    return error.message != MASKED_MESSAGE and is_unexpected(error)


def _never_ran(result: ExecutionResult) -> bool:
    """No data at all, and no error belongs to a field: the document did not parse or validate,
    the variables did not coerce, or the operation was refused before any resolver ran."""
    if isinstance(result, PreExecutionError):
        return True
    errors = result.errors or []
    return result.data is None and bool(errors) and all(error.path is None for error in errors)


# Every operation but the shorthand `{ ... }` (which must stand alone) begins with one of these.
_OPERATION_KEYWORD: Final = re.compile(r"\b(?:query|mutation|subscription)\b", re.ASCII)


def _names_two_operation_keywords(query: str) -> bool:
    """Whether the text could define more than one operation (a cheap first look)."""
    keywords = _OPERATION_KEYWORD.finditer(query)
    return next(keywords, None) is not None and next(keywords, None) is not None


def _holds_several_operations(query: str, max_tokens: int, max_length: int) -> bool:
    """Whether the document defines more than one operation, parsed within the token and
    length limits; one that does not parse is left to Strawberry to answer."""
    try:
        document = parse(
            query, no_location=True, max_tokens=max_tokens, max_source_length=max_length
        )
    except (GraphQLError, RecursionError):
        return False
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return len(operations) > 1


class _JsonRequest:
    """A POST's request, its Content-Type (found to be JSON, in any case) said in lower case."""

    def __init__(self, inner: AsyncHTTPRequestAdapter) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    @property
    def content_type(self) -> str:
        return JSON


class _Undecodable:
    """A websocket message that is not JSON at all (or nested too deep to read)."""


MAX_JSON_DEPTH: Final = 64
"""Deepest nesting of arrays and objects in a request body or websocket message: far more than
any operation's variables need. It is checked before the JSON is parsed, so the refusal does not
rest on the interpreter's recursion limit (which the process, or a library in it, may raise)."""

MAX_JSON_BRACKETS: Final = 10_000
"""Most opening brackets (`[` and `{`, in strings too) in a request body or websocket message.
Reading one costs a list or dict each: a mebibyte of `[],` took 140 ms to read and held 350,000
lists. A document's braces are bounded by its tokens, and variables' lists by 1,000 values:
no request the API serves comes near it."""

# A JSON string, matched from its opening quote in one pass: to its closing quote, or, where it
# never closes (no JSON then), to the end, a last lone backslash included. So it matches at every
# quote it starts from, and the text is read once, whatever it holds.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether JSON text nests arrays and objects more than `limit` deep, read in linear time
    without parsing it (for text that is no JSON, an answer of no consequence)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))  # the brackets outside strings
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def _json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words: "a string", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a string" if isinstance(value, str) else "a number"


def load_json(text: str) -> object:
    """`json.loads`, refusing text nested more than MAX_JSON_DEPTH deep, and an object that
    names a key twice, as malformed."""
    if text.count("[") + text.count("{") > MAX_JSON_BRACKETS:
        raise json.JSONDecodeError(
            f"the JSON holds more than {MAX_JSON_BRACKETS} opening brackets ('[' or '{{', in "
            "strings too)",
            "",
            0,
        )
    if nested_deeper_than(text, MAX_JSON_DEPTH):
        raise json.JSONDecodeError(f"the JSON is nested more than {MAX_JSON_DEPTH} deep", "", 0)
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise json.JSONDecodeError("the JSON is nested too deeply", "", 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer of more digits than Python converts (4,300)
        raise json.JSONDecodeError("a number in the JSON has too many digits", "", 0) from None


def _keys_once(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object whose keys are each named once. Parsers differ on a repeated key (most keep
    the last, some the first): a request that a proxy in front reads one way and the service
    another is refused rather than guessed at."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:  # the first repeated, in one pass
            if key in seen:
                break
            seen.add(key)
        name = json.dumps(key[:40])
        raise json.JSONDecodeError(f"an object in the JSON names the key {name} twice", "", 0)
    return found


# How a Content-Type may name UTF-8, the one charset a POST's body is read in.
_UTF_8: Final = frozenset({"utf-8", "utf8"})


def _media_type_and_charsets(content_type: str) -> tuple[str, list[str]]:
    """A Content-Type's media type, and every `charset` parameter it names, each as given
    (unquoted), in order: a parameter named twice is kept twice, not the last one alone."""
    header = HeaderFields()
    header["content-type"] = content_type
    media_type, *parameters = header.get_params(failobj=[("", "")])
    return media_type[0], [value for name, value in parameters if name.lower() == "charset"]


# What a GET names of the request (GraphQL over HTTP); other parameters are left alone.
_GET_PARAMETERS: Final = ("query", "variables", "operationName", "extensions")


def _no_constant(name: str) -> NoReturn:
    """Python's reader takes NaN, Infinity and -Infinity; RFC 8259 has no such numbers."""
    raise json.JSONDecodeError(f"{name} is no JSON number", "", 0)


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent, refused where a double cannot hold it (1e999
    would be read as infinity)."""
    value = float(text)
    if not math.isfinite(value):
        raise json.JSONDecodeError(f"the number {text[:40]} is too large", "", 0)
    return value


# One decoder for every request: `json.loads` given a hook builds a new one each call.
_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_keys_once, parse_constant=_no_constant, parse_float=_finite
)


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
                    yield _Undecodable()
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
        if first and isinstance(result, ExecutionResult) and _never_ran(result):
            result = PreExecutionError(data=None, errors=result.errors)
        first = False
        yield result


# An operation's id is echoed in every message about it (each event of a subscription): clients
# use a counter or a UUID, and a longer one only multiplies what each event costs to send.
MAX_OPERATION_ID: Final = 128


def _is_operation_message(message: object) -> str | None:
    """Why a websocket message is not one a protocol defines, or None when it is well formed."""
    if not isinstance(message, dict):
        return "A message must be a JSON object"
    kind = message.get("type")
    if not isinstance(kind, str):
        return "A message must have a string type"
    if isinstance(ident := message.get("id"), str) and len(ident) > MAX_OPERATION_ID:
        return f"An operation id must be at most {MAX_OPERATION_ID} characters"
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


MULTIPLE_OPERATIONS: Final = "Must provide operation name if query contains multiple operations."


def _unnamed_of_several(view: object, message: Mapping[str, object], starts: str) -> bool:
    """Whether `message` (a well-formed protocol message) starts an operation whose document
    holds several and names none: refused as over HTTP, where Strawberry would run the first."""
    if message.get("type") != starts or not isinstance(view, GraphQLApp):
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


def unknown_operation(name: str) -> str:
    """The refusal of an operationName the document does not hold, quoting it `briefly`: the
    name is the client's, as long as its body."""
    return f'Unknown operation named "{briefly(name)}".'


def _no_operation_to_run(error: GraphQLError) -> GraphQLError:
    """A websocket operation whose document has no operation to run, in words a client can act
    on (HTTP answers the same documents with a 400); any other error as it is."""
    original = error.original_error
    if isinstance(original, MissingQueryError):
        message = "The query is empty: send a GraphQL document with an operation."
    elif isinstance(original, CannotGetOperationTypeError):
        message = (
            unknown_operation(original.operation_name)
            if original.operation_name is not None
            else "The document has no operation to run, or several and no operationName to "
            "choose one."
        )
    else:
        return error
    return ApiError(message, "BAD_REQUEST")


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
        ping, and refuses, with this RuntimeError, what the operation sends after that."""
        if isinstance(error, WebSocketDisconnected) or _sent_after_close(error):
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
        first = _no_operation_to_run(result.errors[0])
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
                if first and isinstance(result, ExecutionResult) and _never_ran(result):
                    assert result.errors
                    error = _no_operation_to_run(result.errors[0]).formatted
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


# orjson would encode a dataclass or a datetime the standard library refuses: one leaked into a
# reply by mistake is refused by both instead, as before.
_REFUSE_WHAT_JSON_DUMPS_REFUSES: Final = (
    orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)


def _sent_after_close(error: Exception) -> bool:
    """Whether uvicorn refused a message because the socket was closed already."""
    return isinstance(error, RuntimeError) and "after sending 'websocket.close'" in str(error)


class GraphQLApp(GraphQL[Context, None]):
    websocket_adapter_class = WebSocketMessages
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(self, schema: BaseSchema, container: Container) -> None:
        settings = container.settings
        super().__init__(
            schema,
            graphql_ide="graphiql" if settings.graphiql else None,
            allow_queries_via_get=True,
            keep_alive=True,
            keep_alive_interval=settings.ws_keepalive,
            connection_init_wait_timeout=timedelta(seconds=settings.ws_init_timeout),
            max_subscriptions_per_connection=settings.ws_max_subscriptions,
            allowed_origins=settings.allowed_origins,
        )
        self.container = container
        self._origins = settings.allowed_origins
        self.sockets = SocketHolders(settings.ws_max_per_member)
        # The bytes of each member's large answers not yet taken by their clients.
        self.answers = CostHolders(ANSWERS_IN_FLIGHT * settings.max_response_bytes)
        self._max_response = settings.max_response_bytes
        self._answers_refused = Occasional(
            log, logging.INFO, "an answer refused: its holder has %d bytes of answers unread"
        )
        self._sockets_refused = Occasional(
            log, logging.INFO, "websocket refused: %d open for one member"
        )
        # Whether a document text holds several operations, by its digest: a client sends the
        # same few documents again and again (the member page's names a `subscription` field).
        self._several_operations: Remembered[bytes, bool] = Remembered(KNOWN_DOCUMENTS)
        core = getattr(schema, "_schema", None)
        if isinstance(core, GraphQLSchema):
            refuse_unencodable_arguments(core)
            refuse_unknown_members_on_failure(core)

    def encode_json(self, data: object) -> str:
        """A reply as compact JSON, encoded by orjson: a member page of 100 conversations
        encodes about ten times faster than with the standard library. What orjson refuses,
        such as a lone surrogate a client sent and an error message repeats, is encoded by
        the standard library, escaped as before. A string, so websocket messages stay text.

        An answer over INMAIL_MAX_RESPONSE_BYTES is replaced by a RESPONSE_TOO_LARGE error (a
        websocket message keeps its type and id, its payload replaced): the cost limit counts
        objects, not their text, and an answer waits in memory until its client has read it.
        """
        encoded = _encoded(data)
        limit = self.container.settings.max_response_bytes
        message = data if isinstance(data, dict) and "type" in data else None
        if len(encoded) <= limit or (message is not None and message["type"] not in _RESULTS):
            return encoded.decode()
        log.warning("an answer of %d bytes was refused (the limit is %d)", len(encoded), limit)
        refusal = {
            "errors": [
                {
                    "message": f"The answer would be {len(encoded)} bytes, over the {limit} "
                    "this service sends at once: ask for less (smaller pages, fewer aliases).",
                    "extensions": {"code": "RESPONSE_TOO_LARGE"},
                }
            ]
        }
        if message is not None:  # a websocket operation's result
            return _encoded({**message, "payload": refusal}).decode()
        return _encoded(refusal).decode()

    def should_render_graphql_ide(self, request: BaseRequestProtocol) -> bool:
        """GraphiQL for a browser: a GET without a query whose Accept names `text/html` above
        zero and no lower than the JSON types. Not for `*/*` alone (curl's): that client gets
        JSON. With GraphiQL off, such a GET is a request without a query (400), not a 404."""
        if (
            not self.graphql_ide
            or request.method != "GET"
            or request.query_params.get("query") is not None
        ):
            return False
        accept = request.headers.get("accept", "")
        html, named = _accepted_quality(accept, "text/html")
        json_quality = max(
            _accepted_quality(accept, JSON)[0], _accepted_quality(accept, GRAPHQL_RESPONSE)[0]
        )
        return named and html > 0 and html >= json_quality

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from the service's own files (inmail.graphiql), never from a CDN."""
        return graphiql_page()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every HTTP answer is JSON (in the media type the client accepts), including the
        transport's own 4xx; a client that leaves mid-request is noted, not a traceback."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, _close_reasons_cut(send))
            return
        request = Request(scope=scope, receive=receive)
        exchange = _Exchange(response_media_type(request.headers.get("accept")))
        scope[_EXCHANGE] = exchange
        response: Response
        cors = cross_origin_headers(request.headers.get("origin"), self._origins)
        try:
            if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
                response = _preflight(request, cors)
            else:
                response = await self.run(request)
        except HTTPException as exc:
            response = _refusal(exc, exchange.media_type, self.encode_json)
        except ClientDisconnect:
            log.info("the client went away before its request was read")
            return
        finally:
            holder, wrote = exchange.answered()
        # The same URL answers HTML, JSON or graphql-response+json by Accept (and, with a list
        # of origins, CORS headers by Origin): caches must know.
        vary = "Accept" if "*" in self._origins else "Accept, Origin"
        response.headers["vary"] = ", ".join(filter(None, (response.headers.get("vary"), vary)))
        response.headers.update(cors or {})
        # An answer holds what one caller may see (a member's balance, their inbox): no cache
        # keeps it, a GET's included.
        response.headers.setdefault("cache-control", "no-store")
        if exchange.media_type == GRAPHQL_RESPONSE and response.media_type == JSON:
            response.headers["content-type"] = _GRAPHQL_RESPONSE_UTF8
            if response.status_code == 200 and exchange.server_error:
                response.status_code = 503 if exchange.unavailable else 500
                if exchange.retry_after is not None:
                    response.headers["retry-after"] = exchange.retry_after
            elif response.status_code == 200 and exchange.request_error:
                response.status_code = 400
        await self._answer(response, holder, wrote, scope, receive, send)

    async def _answer(
        self,
        response: Response,
        holder: str | None,
        wrote: bool,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Send `response`, holding a large one against its holder's answers in flight until
        the client has taken nearly all of it. A client that stops reading holds its answers in
        this process (until the body timeout cuts it off): past ANSWERS_IN_FLIGHT of the
        largest size, one holder's next large answer is refused, 503, rather than held too, and
        so is their next request before it runs (`get_context`). A mutation that ran past it
        (mutations sent side by side) is answered with an error that says it ran, and what to
        do: its answer is not held either."""
        size = len(response.body)
        if size <= HELD_ANSWER_BYTES or holder is None:
            await response(scope, receive, send)
            return
        if not self.answers.take(holder, size):
            self._answers_refused.happened(self.answers.held_by(holder))
            headers = {k: v for k, v in response.headers.items() if k != "content-length"}
            if wrote:  # it ran: said so, in place of an answer that is not held
                refusal = Response(
                    self.encode_json({"errors": [_withheld(size)]}),
                    status_code=response.status_code,
                    headers=headers,
                )
            else:
                refusal = Response(
                    self.encode_json({"errors": [_ANSWERS_UNREAD]}),
                    status_code=503,
                    headers={**headers, "retry-after": "1"},
                )
            await refusal(scope, receive, send)
            return
        try:
            await response(scope, receive, _in_pieces(send))
        finally:
            self.answers.release(holder, size)

    def parse_query_params(self, params: QueryParams) -> dict[str, object]:
        """A GET's parameters: `variables` and `extensions` are JSON objects in strings (an
        empty one, or `null` as a POST body may say, is as good as absent; what they hold is
        judged with a POST body's); the URL's length is bounded by the transport (431). A
        parameter of the request named twice is refused, as a JSON key named twice is."""
        if isinstance(params, ImmutableMultiDict):  # Starlette's: every value of a repeated name
            for name in _GET_PARAMETERS:
                if len(params.getlist(name)) > 1:
                    raise HTTPException(400, f"The `{name}` parameter is given more than once.")
        present: dict[str, object] = {
            name: value
            for name, value in params.items()
            if value not in ("", "null") or name == "query"
        }
        for name in ("variables", "extensions"):
            if isinstance(text := present.get(name), str):
                try:
                    present[name] = self.decode_json(text)
                except json.JSONDecodeError as exc:
                    raise HTTPException(
                        400, f"Unable to parse the `{name}` parameter as JSON: {exc.msg}."
                    ) from exc
        return present

    def parse_json(self, data: str | bytes) -> object:
        """A POST's body: a JSON object (a list is a batch, which Strawberry refuses)."""
        try:
            body = self.decode_json(data)
        except json.JSONDecodeError as exc:
            raise HTTPException(400, f"Unable to parse request body as JSON: {exc.msg}.") from exc
        if not isinstance(body, dict | list):
            raise HTTPException(
                400, f"The request body must be a JSON object, not {_json_kind(body)}."
            )
        return body

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """Strawberry's, with 415 for a POST body that is not JSON (or a Content-Type too long
        to read) and 400 for an operationName that is not a string."""
        if len(request.content_type or "") > MAX_CONTENT_TYPE_LENGTH:
            raise HTTPException(
                415, f"The Content-Type header is longer than {MAX_CONTENT_TYPE_LENGTH} characters."
            )
        if request.method == "POST":
            coding = (request.headers.get("content-encoding") or "identity").strip().lower()
            if coding != "identity":
                # Not decompressed (no bomb to defuse), and not read as JSON either.
                raise HTTPException(
                    415, "A POST to /graphql must not be compressed (Content-Encoding: identity)."
                )
            content_type, charsets = _media_type_and_charsets(request.content_type or "")
            if content_type.lower() != JSON:
                raise HTTPException(
                    415, "A POST to /graphql must have Content-Type: application/json."
                )
            if len(charsets) > 1 or any(c.strip().lower() not in _UTF_8 for c in charsets):
                # JSON between systems is UTF-8 (RFC 8259 8.1): a body read in another
                # charset here could be read otherwise by a proxy in front, and so could one
                # that names two (which counts would depend on who reads them).
                raise HTTPException(
                    415, "A POST to /graphql is read as UTF-8: give charset=utf-8 once, or none."
                )
            # A media type is case-insensitive (RFC 9110 8.3.1); Strawberry's check is not.
            request = cast(AsyncHTTPRequestAdapter, _JsonRequest(request))
        data = await super().parse_http_body(request)
        for operation in data if isinstance(data, list) else [data]:
            if not isinstance(operation.operation_name, str | None):
                raise HTTPException(
                    400, "The GraphQL operation's `operationName` must be a string or null."
                )
            extensions = operation.extensions
            if (
                not operation.query
                and isinstance(extensions, dict)
                and "persistedQuery" in extensions
            ):
                raise persisted_queries_unsupported()
        return data

    def holds_several_operations(self, query: str) -> bool:
        """Whether the document defines more than one operation (remembered by its text)."""
        settings = self.container.settings
        if not _names_two_operation_keywords(query) or (
            line_count(query) > settings.max_query_lines  # refused unparsed by the schema
        ):
            return False
        key = text_digest(query)
        known = self._several_operations.get(key)
        if known is None:
            several = _holds_several_operations(
                query, settings.max_tokens, settings.max_query_length
            )
            known = self._several_operations.put(key, several)
        return known

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Strawberry's, answering a mutation over GET with 405 (and `Allow: POST`), and a
        document of several operations without an operationName with 400 before any runs
        (Strawberry would run the first).

        A query whose answer was withheld because its token's member does not exist
        (`MemberMustExist`) runs once more, now under refused credentials: it is answered as
        a query with any other bad token is, with an error on each field that needs the
        member (a 200 with its `data`, not a request that never ran).
        """
        if (
            request_data.operation_name is None
            and isinstance(request_data.query, str)
            and self.holds_several_operations(request_data.query)
        ):
            raise HTTPException(400, MULTIPLE_OPERATIONS)
        try:
            result = await super().execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )
            if context.credentials.withheld:
                context.credentials.withheld = False
                result = await super().execute_single(
                    request, request_adapter, sub_response, context, root_value, request_data
                )
            return result
        except HTTPException as exc:
            cause = exc.__cause__
            if request_adapter.method == "GET" and isinstance(cause, InvalidOperationTypeError):
                raise HTTPException(
                    405, "Only queries are served over GET: send a mutation with POST."
                ) from cause
            if isinstance(cause, CannotGetOperationTypeError) and cause.operation_name:
                raise HTTPException(400, unknown_operation(cause.operation_name)) from cause
            raise

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        """The response body; for a client accepting graphql-response+json, an operation that
        never ran has no `data` entry, and its answer is a 400 (500 when the service failed, 503
        when the database did not answer; see __call__).

        A failure raised by an extension before execution escapes MaskErrors: it is masked
        here (InMailSchema has logged it with the request id).
        """
        failed = [error for error in result.errors or [] if _is_failure(error)]
        if failed:
            result.errors = [
                masked(error) if error in failed else error for error in result.errors or []
            ]
        response = await super().process_result(request, result)
        exchange = request.scope.get(_EXCHANGE)
        if (
            isinstance(exchange, _Exchange)
            and exchange.media_type == GRAPHQL_RESPONSE
            and _never_ran(result)
        ):
            response.pop("data", None)
            exchange.request_error = True
            messages = {error.message for error in result.errors or []}
            # A database that did not answer, or a refusal that says when to try again (a
            # member's requests in flight over their cost).
            retry = next(
                (
                    extensions["retryAfterSeconds"]
                    for error in result.errors or []
                    if "retryAfterSeconds" in (extensions := error.extensions or {})
                ),
                None,
            )
            exchange.unavailable = UNANSWERED_MESSAGE in messages or retry is not None
            exchange.retry_after = None if retry is None else str(retry)
            exchange.server_error = exchange.unavailable or MASKED_MESSAGE in messages
        return response

    def decode_json(self, data: str | bytes) -> object:
        if isinstance(data, bytes):
            try:
                # UTF-8 alone (RFC 8259 8.1), not json.loads's guess at UTF-16 or UTF-32 from
                # the first bytes: a proxy in front that reads the body as UTF-8 reads what
                # the service reads.
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                # As malformed as bad JSON: 400, not 500.
                raise json.JSONDecodeError("the body is not UTF-8 text", "", 0) from None
        if data.startswith("\ufeff"):
            raise json.JSONDecodeError("the body starts with a byte order mark; send none", "", 0)
        return load_json(data)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        headers = request.headers.getlist("authorization")
        context = Context(
            container=self.container,
            request=request,
            response=response,
            auth_header=headers[0] if headers else None,
            several_auth_headers=len(headers) > 1,
        )
        if not isinstance(request, WebSocket):
            # A websocket's credentials arrive with connection_init: see on_ws_connect.
            await context.authenticate()
            exchange = request.scope.get(_EXCHANGE)
            if isinstance(exchange, _Exchange):
                exchange.context = context
                # Less than one largest answer left of the caller's budget: their next
                # request is refused before it runs, not after (see _answer).
                holder = exchange.holder()
                if holder is not None and self.answers.held_by(holder) > self._max_response:
                    self._answers_refused.happened(self.answers.held_by(holder))
                    raise CodedRefusal(
                        503, str(_ANSWERS_UNREAD["message"]), "SERVICE_UNAVAILABLE", retry=True
                    )
            if len(headers) > 1:
                # Which one counts would depend on who reads them (a proxy may take the last).
                context.credentials.refuse(SEVERAL_AUTHORIZATIONS)
        return context

    async def on_ws_connect(self, context: Context) -> None:
        """Refuse a connection without a good token (close 4403 on both subprotocols), and one
        over its holder's INMAIL_WS_MAX_PER_MEMBER open sockets (close 1013)."""
        await context.authenticate()
        await context.confirm_member()
        try:
            viewer = context.viewer()
            refusal = None if viewer is not None else "a token is required"
        except ApiError as exc:
            refusal = exc.message  # which check failed, in the words an HTTP request gets
        if refusal is not None:
            await self._refuse_socket(context, refusal, 4403, f"Forbidden: {refusal}")
        assert viewer is not None
        # An admin (the operators' own tools, one socket per member watched) is not held to it.
        if not viewer.is_admin and not self.sockets.take(context.request, viewer.subject):
            self._sockets_refused.happened(self.sockets.limit)
            await self._refuse_socket(
                context,
                f"too many websockets open for this member (at most {self.sockets.limit}): "
                "close one, or share one socket between subscriptions",
                TOO_MANY_SOCKETS,
                "Too many websockets for this member",
            )
        return None

    async def _refuse_socket(self, context: Context, message: str, code: int, reason: str) -> None:
        """Send the protocol's refusal of connection_init with `message`, close the socket with
        `code`, and end its handler as if the client had gone."""
        websocket = context.request
        assert isinstance(websocket, WebSocket)
        legacy = await self.pick_websocket_subprotocol(websocket) == GRAPHQL_WS_PROTOCOL
        # graphql-ws has connection_error (Strawberry would close it with 1011);
        # graphql-transport-ws has only the close, whose reason says why (at most 123 bytes).
        with contextlib.suppress(Exception):
            if legacy:
                await websocket.send_json(
                    {"type": "connection_error", "payload": {"message": message}}
                )
            await websocket.close(code=code, reason=reason)
        raise WebSocketDisconnected


CLOSE_REASON_BYTES: Final = 123
"""The most bytes of UTF-8 a websocket close frame's reason holds (RFC 6455 5.5)."""


def _close_reasons_cut(send: Send) -> Send:
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


# What a browser page on an allowed origin may send and read (bearer tokens, never cookies).
_CORS_METHODS: Final = ("GET", "POST")
_CORS_REQUEST_HEADERS: Final = ("authorization", "content-type", "accept", "x-request-id")
# A header name (RFC 9110 token); a preflight may name at most this many.
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_CORS_MOST_REQUEST_HEADERS: Final = 50
_CORS_EXPOSED_HEADERS: Final = "x-request-id, retry-after"
CORS_MAX_AGE: Final = 600  # seconds a browser may keep a preflight's answer


def cross_origin_headers(origin: str | None, allowed: Sequence[str]) -> dict[str, str] | None:
    """The CORS headers of an answer to a page on `origin`; None when there is no Origin or
    INMAIL_ALLOWED_ORIGINS does not list it (the browser then keeps the answer from the page).
    Credentials are never allowed: tokens travel in the Authorization header, not cookies."""
    if origin is None:
        return None
    if "*" in allowed:
        granted = "*"
    elif origin.rstrip("/") in allowed:
        granted = origin
    else:
        return None
    return {
        "access-control-allow-origin": granted,
        "access-control-expose-headers": _CORS_EXPOSED_HEADERS,
    }


def cors_request_headers(asked: str | None) -> str:
    """The request headers a page on an allowed origin may send: the service's own and every
    other header name its preflight asks for (tracing headers such as `traceparent` and
    `sentry-trace`, a client's own such as `apollographql-client-name`), since no request
    carries credentials a header could add to; names that are not header names, and names
    past the first fifty, are not granted."""
    granted = list(_CORS_REQUEST_HEADERS)
    for name in (asked or "").lower().split(",")[:_CORS_MOST_REQUEST_HEADERS]:
        name = name.strip()
        if name not in granted and _HEADER_NAME.fullmatch(name):
            granted.append(name)
    return ", ".join(granted)


def _preflight(request: Request, cors: dict[str, str] | None) -> Response:
    """A browser asking whether a page on its origin may send this request: yes (204) for an
    allowed origin and GET or POST, else a 403 with no CORS headers (the browser then sends
    nothing)."""
    method = request.headers["access-control-request-method"].strip().upper()
    if cors is None or method not in _CORS_METHODS:
        raise HTTPException(
            403, "This origin may not call the API from a browser page (INMAIL_ALLOWED_ORIGINS)."
        )
    asked = request.headers.get("access-control-request-headers")
    return Response(
        status_code=204,
        headers={
            "access-control-allow-methods": ", ".join(_CORS_METHODS),
            "access-control-allow-headers": cors_request_headers(asked),
            "access-control-max-age": str(CORS_MAX_AGE),
            "vary": "Access-Control-Request-Method, Access-Control-Request-Headers",
        },
    )


_RESULTS: Final = ("next", "data")  # the websocket messages that carry an operation's result


def _encoded(data: object) -> bytes:
    """Compact JSON: orjson's, or the standard library's for what orjson refuses."""
    try:
        return orjson.dumps(data, option=_REFUSE_WHAT_JSON_DUMPS_REFUSES)
    except orjson.JSONEncodeError:
        return json.dumps(data, separators=(",", ":")).encode()


class CodedRefusal(HTTPException):
    """A request refused before any operation ran, with a code of its own."""

    def __init__(self, status_code: int, reason: str, code: str, *, retry: bool = False) -> None:
        super().__init__(status_code, reason)
        self.code = code
        self.headers = {"Retry-After": "1"} if retry else {}


def persisted_queries_unsupported() -> CodedRefusal:
    """A persisted query's hash without its document (Apollo's automatic persisted queries),
    refused with the code and message that Apollo Client's link reads as "send the document
    itself from now on"."""
    return CodedRefusal(400, "PersistedQueryNotSupported", "PERSISTED_QUERY_NOT_SUPPORTED")


def _in_pieces(send: Send) -> Send:
    """`send`, with a body over HELD_ANSWER_BYTES handed over a piece at a time: each after the
    connection has let its client take the ones before (the server waits while the connection's
    buffer is full), so the answer's end is sent only once the client has read nearly all of it,
    and none of it is copied into the connection's buffer at once."""

    async def paced(message: AsgiMessage) -> None:
        body = message.get("body", b"")
        if message["type"] != "http.response.body" or len(body) <= HELD_ANSWER_BYTES:
            await send(message)
            return
        more = message.get("more_body", False)
        for start in range(0, len(body), HELD_ANSWER_BYTES):
            piece = body[start : start + HELD_ANSWER_BYTES]
            last = start + HELD_ANSWER_BYTES >= len(body)
            await send({"type": "http.response.body", "body": piece, "more_body": more or not last})
            if not last:
                await asyncio.sleep(0)  # the connection writes the piece: its buffer may fill

    return paced


def _refusal(exc: HTTPException, media_type: str, encode: Callable[[object], str]) -> Response:
    """A request refused before any operation ran, as a GraphQL response with one error.

    Encoded like every reply (`encode`, GraphQLApp.encode_json): the reason may repeat what the
    client sent, such as an operation name holding a lone surrogate."""
    if isinstance(exc, CodedRefusal):
        code = exc.code
    else:
        code = _HTTP_CODES.get(exc.status_code, "BAD_REQUEST")
    headers = dict(exc.headers) if isinstance(exc, CodedRefusal) else {}
    if exc.status_code == 405:
        mutation_over_get = isinstance(exc.__cause__, InvalidOperationTypeError)
        headers["Allow"] = "POST" if mutation_over_get else "GET, POST"
    return Response(
        encode({"errors": [{"message": exc.reason, "extensions": {"code": code}}]}),
        status_code=exc.status_code,
        headers=headers,
        media_type=_GRAPHQL_RESPONSE_UTF8 if media_type == GRAPHQL_RESPONSE else JSON,
    )
