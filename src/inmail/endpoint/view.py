"""Strawberry's ASGI view of /graphql: HTTP (POST, GET, GraphiQL) and the websocket handshake.

What a hostile client can send is answered here, or by the modules beside it, before any
resolver runs: a body that is not a JSON object, JSON nested too deep, a websocket message
that is not a protocol message, a socket that never says connection_init or says it twice, a
socket whose token has expired.

HTTP follows the GraphQL over HTTP specification: a client whose Accept names
`application/graphql-response+json` gets that media type, with 400 for a request that never
ran (a document that does not parse or validate, variables that do not coerce) and no `data`
entry; every other client gets `application/json` with 200 for those, as before. Queries are
served over GET too; a mutation over GET is refused with 405 and `Allow: POST`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import timedelta
from typing import Final, cast

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError, GraphQLSchema
from starlette.datastructures import Headers, ImmutableMultiDict
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.http.base import BaseRequestProtocol
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.http.types import QueryParams
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_WS_PROTOCOL
from strawberry.types.execution import ExecutionResult

from inmail.bootstrap import Container
from inmail.endpoint import LOGGER
from inmail.endpoint.answers import AnswerBudget
from inmail.endpoint.cors import cross_origin_headers, preflight
from inmail.endpoint.documents import (
    MULTIPLE_OPERATIONS,
    defines_several_operations,
    names_two_operation_keywords,
    never_ran,
    unknown_operation,
    without_operation,
)
from inmail.endpoint.json_text import compact_json, json_kind, load_request_json
from inmail.endpoint.media_types import (
    GRAPHQL_RESPONSE,
    GRAPHQL_RESPONSE_UTF8,
    JSON,
    MAX_CONTENT_TYPE_LENGTH,
    UTF_8,
    JsonRequest,
    accepted_quality,
    media_type_and_charsets,
    response_media_type,
)
from inmail.endpoint.refusals import persisted_queries_unsupported, refusal_response
from inmail.endpoint.websockets import (
    TOO_MANY_SOCKETS,
    LegacyWSHandler,
    SocketHolders,
    TransportWSHandler,
    WebSocketMessages,
    close_reasons_cut,
)
from inmail.graphiql import graphiql_page
from inmail.logs import Occasional
from inmail.resolvers.context import RAN_A_MUTATION, Context, refuse_unknown_members_on_failure
from inmail.resolvers.cost import KNOWN_DOCUMENTS
from inmail.resolvers.limits import Remembered, line_count, text_digest
from inmail.resolvers.root import MASKED_MESSAGE, UNANSWERED_MESSAGE, is_unexpected, masked
from inmail.resolvers.text_guard import refuse_unencodable_arguments
from inmail.schema.errors import SEVERAL_AUTHORIZATIONS, ApiError

log = logging.getLogger(LOGGER)


_EXCHANGE = "inmail.graphql_exchange"


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


def _is_failure(error: GraphQLError) -> bool:
    """An unmasked failure of the service itself (not the client's: see is_unexpected)."""
    return error.message != MASKED_MESSAGE and is_unexpected(error)


# What a GET names of the request (GraphQL over HTTP); other parameters are left alone.
_GET_PARAMETERS: Final = ("query", "variables", "operationName", "extensions")

_RESULTS: Final = ("next", "data")  # the websocket messages that carry an operation's result


class GraphQLApp(GraphQL[Context, None]):
    """/graphql: Strawberry's view, each of its hooks answering what a hostile client may send
    before any resolver runs, every refusal in JSON, and each answer in the media type, status
    and size the client may have."""

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
        self.answers = AnswerBudget(settings.max_response_bytes, self.encode_json)
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
        encoded = compact_json(data)
        limit = self.container.settings.max_response_bytes
        message = data if isinstance(data, dict) and "type" in data else None
        if len(encoded) <= limit or (message is not None and message["type"] not in _RESULTS):
            return encoded.decode()
        log.warning("an answer of %d bytes was refused (the limit is %d)", len(encoded), limit)
        too_large = f"would be {len(encoded)} bytes, over the {limit} this service sends at once"
        error: dict[str, object] = {
            "message": f"The answer {too_large}: ask for less (smaller pages, fewer aliases).",
            "extensions": {"code": "RESPONSE_TOO_LARGE"},
        }
        if RAN_A_MUTATION.get():  # in this request's task, or this operation's
            error["message"] = (
                f"The mutation was applied, but its answer {too_large}: read what it changed "
                "with a smaller query."
            )
            error["extensions"] = {"code": "RESPONSE_TOO_LARGE", "applied": True}
        # The operation ran: `data` stays, null (graphql-response+json answers one without
        # `data` with a 4xx or 5xx, as a request that never ran).
        ran = isinstance(data, dict) and ("data" in data or "payload" in data)
        refusal = {"data": None, "errors": [error]} if ran else {"errors": [error]}
        if message is not None:  # a websocket operation's result
            return compact_json({**message, "payload": refusal}).decode()
        return compact_json(refusal).decode()

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
        html, named = accepted_quality(accept, "text/html")
        json_quality = max(
            accepted_quality(accept, JSON)[0], accepted_quality(accept, GRAPHQL_RESPONSE)[0]
        )
        return named and html > 0 and html >= json_quality

    async def render_graphql_ide(self, request: Request) -> Response:
        """GraphiQL from the service's own files (inmail.graphiql), never from a CDN."""
        return graphiql_page()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every HTTP answer is JSON (in the media type the client accepts), including the
        transport's own 4xx; a client that leaves mid-request is noted, not a traceback."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, close_reasons_cut(send))
            return
        request = Request(scope=scope, receive=receive)
        exchange = _Exchange(response_media_type(request.headers.get("accept")))
        scope[_EXCHANGE] = exchange
        response: Response
        cors = cross_origin_headers(request.headers.get("origin"), self._origins)
        try:
            if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
                response = preflight(request, cors)
            else:
                response = await self.run(request)
        except HTTPException as exc:
            response = refusal_response(exc, exchange.media_type, self.encode_json)
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
            response.headers["content-type"] = GRAPHQL_RESPONSE_UTF8
            if response.status_code == 200 and exchange.server_error:
                response.status_code = 503 if exchange.unavailable else 500
                if exchange.retry_after is not None:
                    response.headers["retry-after"] = exchange.retry_after
            elif response.status_code == 200 and exchange.request_error:
                response.status_code = 400
        await self.answers.send(response, holder, wrote, scope, receive, send)

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
                400, f"The request body must be a JSON object, not {json_kind(body)}."
            )
        return body

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """Strawberry's, with 415 for a POST body that is not JSON (or a Content-Type too long
        to read) and 400 for an operationName that is not a string, or a Content-Type given
        twice: which counts would depend on who reads it (a proxy in front may take the other)."""
        if len(request.content_type or "") > MAX_CONTENT_TYPE_LENGTH:
            raise HTTPException(
                415, f"The Content-Type header is longer than {MAX_CONTENT_TYPE_LENGTH} characters."
            )
        if request.method == "POST":
            headers = request.headers
            if isinstance(headers, Headers) and len(headers.getlist("content-type")) > 1:
                raise HTTPException(400, "A POST to /graphql must have one Content-Type header.")
            coding = (request.headers.get("content-encoding") or "identity").strip().lower()
            if coding != "identity":
                # Not decompressed (no bomb to defuse), and not read as JSON either.
                raise HTTPException(
                    415, "A POST to /graphql must not be compressed (Content-Encoding: identity)."
                )
            content_type, charsets = media_type_and_charsets(request.content_type or "")
            if content_type.lower() != JSON:
                raise HTTPException(
                    415, "A POST to /graphql must have Content-Type: application/json."
                )
            if len(charsets) > 1 or any(c.strip().lower() not in UTF_8 for c in charsets):
                # JSON between systems is UTF-8 (RFC 8259 8.1): a body read in another
                # charset here could be read otherwise by a proxy in front, and so could one
                # that names two (which counts would depend on who reads them).
                raise HTTPException(
                    415, "A POST to /graphql is read as UTF-8: give charset=utf-8 once, or none."
                )
            # A media type is case-insensitive (RFC 9110 8.3.1); Strawberry's check is not.
            request = cast(AsyncHTTPRequestAdapter, JsonRequest(request))
        data = await super().parse_http_body(request)
        for operation in data if isinstance(data, list) else [data]:
            if not isinstance(operation.operation_name, str | None):
                raise HTTPException(
                    400, "The GraphQL operation's `operationName` must be a string or null."
                )
            if operation.operation_name == "":
                operation.operation_name = None  # as a GET's empty parameter is none
            extensions = operation.extensions
            if (
                not operation.query
                and isinstance(extensions, dict)
                and "persistedQuery" in extensions
            ):
                raise persisted_queries_unsupported()
        return data

    def holds_several_operations(self, query: str) -> bool:
        """Whether the document defines more than one operation: `defines_several_operations`
        (a parse), remembered by the text's digest, after a cheap look that most texts end at."""
        settings = self.container.settings
        if not names_two_operation_keywords(query) or (
            line_count(query) > settings.max_query_lines  # refused unparsed by the schema
        ):
            return False
        key = text_digest(query)
        known = self._several_operations.get(key)
        if known is None:
            several = defines_several_operations(
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
            browsing = request_adapter.method == "GET" and self.graphql_ide is None
            if browsing and isinstance(cause, MissingQueryError):
                # Most often a browser opening the endpoint: say why no GraphiQL answered.
                raise HTTPException(
                    400,
                    "No GraphQL query found in the request. (GraphiQL is off on this server: "
                    "INMAIL_GRAPHIQL.)",
                ) from cause
            if isinstance(cause, CannotGetOperationTypeError):
                if cause.operation_name:
                    raise HTTPException(400, unknown_operation(cause.operation_name)) from cause
                # Without a name Strawberry takes the first operation: there is none.
                return without_operation()
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
            and never_ran(result)
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
        return load_request_json(data)

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
                self.answers.refuse_before_running(exchange.holder())
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
