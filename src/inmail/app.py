"""The Starlette application: lifespan, /graphql (HTTP, GraphiQL, websockets), health checks,
the browser files under /static and the reference web client at /app."""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import mimetypes
import re
import uuid
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from inmail import logs
from inmail.bootstrap import Background, Container, build_container
from inmail.endpoint.cors import cross_origin_headers
from inmail.endpoint.view import GraphQLApp
from inmail.graphiql import STATIC_PREFIX, security_headers
from inmail.heap import tuned_gc
from inmail.observability import metrics_endpoint
from inmail.processes import StopAsked, end_with_parent, note_stop_signals
from inmail.repositories.database import choose_database
from inmail.repositories.mongo import Mongo, unanswered
from inmail.resolvers.root import build_schema
from inmail.services.background import stop_together
from inmail.settings import Settings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
# The vendored graphql-ws client is ES modules: browsers run them only as JavaScript.
mimetypes.add_type("text/javascript", ".mjs")

_NOSNIFF: Final = (b"x-content-type-options", b"nosniff")

# The web client at /app: its own scripts, its own styles, the API on this origin.
WEB_CLIENT_HEADERS = security_headers()


_STATIC_POLICY = WEB_CLIENT_HEADERS["Content-Security-Policy"].encode()


class StaticHeaders:
    """Static files served to this origin only (as what their names say: see RequestLimits), under
    the web client's policy (a page opened from /static runs as strictly as /app). Their names
    carry no version, so a browser asks again each time (`no-cache`: a 304 from the ETag when
    nothing changed) and never runs old scripts after an upgrade."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"cross-origin-resource-policy", b"same-origin"),
                    (b"content-security-policy", _STATIC_POLICY),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-cache"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def web_client(request: Request) -> Response:
    """The reference web client: static files that speak only the public API."""
    return FileResponse(STATIC_DIR / "app" / "index.html", headers=WEB_CLIENT_HEADERS)


def error_response(
    status: int, message: str, code: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A refusal or failure outside GraphQL, as the one error of a GraphQL-shaped answer."""
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]},
        status_code=status,
        headers=headers,
    )


async def json_refusal(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (a path nothing serves, a method a route does not take) as
    JSON, like every other answer of the service."""
    assert isinstance(exc, HTTPException)
    code = http.HTTPStatus(exc.status_code).name
    return error_response(exc.status_code, exc.detail, code, exc.headers)


async def json_failure(request: Request, exc: Exception) -> Response:
    """A failure no handler expected, as JSON too (and nothing of it told): what RequestLimits,
    which answers most of them itself, lets through."""
    return json_failure_response()


def json_failure_response() -> Response:
    return error_response(500, "Internal server error.", "INTERNAL_SERVER_ERROR")


# Request bodies the process holds at once, in all, as a number of the largest allowed: each
# body is bounded, and so is their sum (700 slow uploads of a megabyte each held 577 MB).
BODIES_IN_FLIGHT: Final = 64

SMALL_BODY: Final = 64 * 1024
"""The first bytes of every body, which count against no budget: a GraphQL request (a document
of at most INMAIL_MAX_QUERY_LENGTH, 32 KiB by default, and its variables) is never refused
because strangers' large bodies, stalled, fill BODIES_IN_FLIGHT. What they may hold so is
bounded by the connections: INMAIL_MAX_CONNECTIONS times this (64 MiB by default)."""


_REQUEST_ID: Final = re.compile(rb"[!-~]+")


def _request_id(given: bytes) -> str:
    """The request's id: the client's `X-Request-Id` (its first 64 characters) when it is
    visible ASCII, echoed and logged exactly as sent; else one of our own."""
    given = given[:64]
    return given.decode("ascii") if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


LEFT_TO_THE_DRAINS_CANCEL: Final = 1.0
"""Seconds a request cut off by the end of the shutdown's drain is given to end on that cancel
(a rollback on a database that answers is quick) before it is cancelled once more."""

CUT_OFF_WITHIN: Final = 1.0
"""Seconds a request cancelled once more is given to answer (its 503 is written at once)."""


class RunningRequests:
    """The HTTP requests the app is answering (`RequestLimits` notes each while it runs).

    uvicorn cancels the requests still running when the shutdown's drain is over, and goes on
    with the app's shutdown without waiting for them. The driver aborts a transaction before it
    lets a cancellation go on, and on a database that no longer answers that abort takes the
    cancel and waits: until the MongoDB client is closed under it (the request then fails, and
    is answered "Unexpected error." with a logged traceback), or until the process ends (a
    worker of several ends on its signal, and its client gets no answer at all). `cut_off`, in
    the app's shutdown, before the client is closed, cancels them once more: each is answered
    as one the shutdown cut off (503, may or may not have taken effect).
    """

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[object]] = set()

    async def cut_off(
        self, grace: float = LEFT_TO_THE_DRAINS_CANCEL, within: float = CUT_OFF_WITHIN
    ) -> None:
        """Those still running `grace` seconds from now, cancelled once more, and awaited for
        at most `within` seconds; at once when none runs."""
        running = {task for task in self.tasks if not task.done()}
        if running:
            _, running = await asyncio.wait(running, timeout=grace)
        if running:
            log.warning("%d request(s) still running at the shutdown: cut off", len(running))
            for task in running:
                task.cancel()
            await asyncio.wait(running, timeout=within)


class RequestLimits:
    """Request ids on every request, 413 for a body over the configured size, 503 when the
    bodies being received would pass BODIES_IN_FLIGHT times that size in all (beyond the first
    SMALL_BODY bytes of each), and calm about bodies that never arrive (a client gone, or cut
    off by the body timeout of inmail.transport).
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        running: RunningRequests | None = None,
        *,
        small_body: int = SMALL_BODY,
        origins: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.origins = origins  # INMAIL_ALLOWED_ORIGINS: a refusal here is readable there too
        self.max_body_bytes = max_body_bytes
        self.small_body = small_body
        self.running = RunningRequests() if running is None else running
        self.max_in_flight = BODIES_IN_FLIGHT * max_body_bytes
        self.in_flight = 0  # bytes of the request bodies being received, counted as they come

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = _request_id(headers.get(b"x-request-id", b""))
        token = logs.request_id.set(rid)
        try:
            if scope["type"] == "http":
                await self._http(scope, receive, send, headers, rid)
            else:
                await self.app(scope, receive, _handshake_with_id(scope, receive, send, rid))
        finally:
            logs.request_id.reset(token)

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[bytes, bytes], rid: str
    ) -> None:
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            stamped = [*_stamp(rid), *self._readable(headers)]
            await self._too_large(scope, receive, _with_headers(send, stamped))
            return
        received = 0  # of this body
        counted = 0  # of `received`, in self.in_flight: until the answer begins (or the end)

        async def limited_receive() -> Message:
            nonlocal received, counted
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if received + size > self.max_body_bytes:
                    raise _BodyTooLarge
                small = self.small_body
                large = max(0, received + size - small) - max(0, received - small)
                if large and self.in_flight + large > self.max_in_flight:
                    raise _TooManyBodies
                received += size
                counted += large
                self.in_flight += large
            return message

        started = False
        task = asyncio.current_task()
        if task is not None:
            self.running.tasks.add(task)

        with_id = _with_headers(send, _stamp(rid))

        async def send_with_id(message: Message) -> None:
            nonlocal started, counted
            if message["type"] == "http.response.start":
                started = True
                # The body is in: it no longer counts among those being received, however long
                # the answer takes its client to read.
                self.in_flight -= counted
                counted = 0
            await with_id(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except asyncio.CancelledError:
            if started or task is None or task.cancelling() == 0:
                raise  # the answer has begun, or the request's task was not cancelled
            # Cut off by the server's shutdown, its drain over (uvicorn cancels what still
            # runs): answered as a service that is going away, in JSON with the request's id,
            # rather than as uvicorn's plain-text 500 and a logged traceback. A transaction cut
            # off before its commit was sent is rolled back; one cut off while its commit was
            # on its way may have been applied: the answer says so, and asks for no retry.
            # That cancel may have been taken by a rollback waiting on a database that no longer
            # answers (the driver aborts a transaction before it lets a cancellation go on):
            # then the app's shutdown cancels the request once more (`RunningRequests`), and it
            # is answered then.
            log.warning("a request still running at the end of the shutdown's drain was cut off")
            while task.uncancel():  # the cancellation is answered here, and ends with the request
                pass
            await self._stopping(scope, receive, send_with_id)
        except _BodyTooLarge:
            readable = self._readable(headers)
            await self._too_large(scope, receive, _with_headers(send_with_id, readable))
        except _TooManyBodies:
            log.warning("a request body refused: %d bytes of bodies in flight", self.in_flight)
            readable = self._readable(headers)
            await self._busy(scope, receive, _with_headers(send_with_id, readable))
        except ClientDisconnect:
            # The client went away (or was cut off for being too slow) before its body was in:
            # nobody is left to answer, and nothing went wrong on our side.
            log.info("request abandoned before its body arrived")
        except Exception:
            if started:
                raise  # the answer has begun: the server cuts the connection, and logs it
            # A failure nothing expected: logged here, under the request's id, and answered with
            # that id (Starlette's own 500 would go out around this stamp, and be logged again).
            log.exception("the request failed")
            await json_failure_response()(scope, receive, send_with_id)
        finally:
            self.in_flight -= counted
            if task is not None:
                self.running.tasks.discard(task)

    def _readable(self, headers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        """The CORS headers that let a page on the request's origin read a refusal made here
        (the app adds its own to every other answer)."""
        origin = headers.get(b"origin")
        cors = cross_origin_headers(
            None if origin is None else origin.decode("latin-1"), self.origins
        )
        return [(name.encode(), value.encode()) for name, value in (cors or {}).items()]

    async def _stopping(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = (
            "The service shut down while this request ran: it may or may not have taken "
            "effect. Read before sending it again, or send it again under the same "
            "idempotency key."
        )
        await error_response(503, message, "SERVICE_UNAVAILABLE")(scope, receive, send)

    async def _busy(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = "The server is receiving too many request bodies at once; try again shortly."
        response = error_response(503, message, "SERVICE_UNAVAILABLE", {"Retry-After": "1"})
        await response(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"Request body over {self.max_body_bytes} bytes."
        await error_response(413, message, "PAYLOAD_TOO_LARGE")(scope, receive, send)


def _stamp(rid: str) -> list[tuple[bytes, bytes]]:
    """The headers every answer carries, set here alone: its request id, and nosniff (every
    answer is what its type says)."""
    return [(b"x-request-id", rid.encode()), _NOSNIFF]


def _with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    """`send`, its answer's head carrying `headers` too."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *headers]}
        await send(message)

    return send_with_headers


def _handshake_with_id(scope: Scope, receive: Receive, send: Send, rid: str) -> Send:
    """A websocket's `send`, whose handshake answer carries the request's id: the 101 that
    accepts the socket, and a refusal before it. The app's refusal (a close before the accept)
    is answered as the service's JSON 403 where the server takes an answer of the app's own
    (ASGI's denial response); elsewhere the server answers it by itself."""
    denial = "websocket.http.response" in (scope.get("extensions") or {})
    answered = False

    async def send_with_id(message: Message) -> None:
        nonlocal answered
        kind = message["type"]
        if not answered and kind in ("websocket.accept", "websocket.http.response.start"):
            answered = True
            message = {**message, "headers": [*message.get("headers", []), *_stamp(rid)]}
        elif not answered and kind == "websocket.close" and denial:
            reason = message.get("reason") or "The websocket was refused: Forbidden."
            await error_response(403, reason, "FORBIDDEN")(scope, receive, send_with_id)
            return
        await send(message)

    return send_with_id


def _serving_no_websocket(app: ASGIApp) -> ASGIApp:
    """`app`, which serves no websocket: a handshake is a 404 in JSON where the server takes the
    app's own answer to one (a close would read as a 403), and closed elsewhere."""

    async def answer(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await app(scope, receive, send)
        elif "websocket.http.response" in (scope.get("extensions") or {}):
            await error_response(404, "Not Found", "NOT_FOUND")(scope, receive, send)
        else:
            await WebSocketClose()(scope, receive, send)

    return answer


class _BodyTooLarge(Exception):
    pass


class _TooManyBodies(Exception):
    pass


def create_app(
    settings: Settings,
    *,
    mongo: Mongo | None = None,
    container: Container | None = None,
    serving: bool = False,
    patient: StopAsked | None = None,
) -> Starlette:
    """The app; `mongo` defaults to a client for settings.mongodb_uri, opened in the lifespan.
    `serving`: the app is the process's only one (a worker of `inmail serve`), whose garbage
    collector is tuned for serving once it has started (`heap.tuned_gc`). `patient`: its
    start-up waits for a database out of reach instead of failing, until a stop is asked
    (`start_on_the_database`)."""
    if container is None:
        if mongo is None:
            if settings.mongodb_uri is None:
                raise ValueError("create_app needs INMAIL_MONGODB_URI or a Mongo instance")
            mongo = Mongo.connect(settings.mongodb_uri, settings.db_name)
        container = build_container(settings, mongo)
    schema = build_schema(settings)
    graphql_app = GraphQLApp(schema, container)
    requests = RunningRequests()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started: list[Background] = []
        try:
            if await start_on_the_database(container, patient=patient):
                for task in container.background:
                    await task.start()
                    started.append(task)
            with tuned_gc() if serving else contextlib.nullcontext():
                yield
        finally:
            await stop_together(
                [
                    ("requests cut off by the shutdown", requests.cut_off),
                    *((type(task).__name__, task.stop) for task in started),
                ]
            )
            await container.mongo.close()

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        try:
            # A probe answers in time even while the driver waits out an election.
            await asyncio.wait_for(container.mongo.ping(), timeout=3)
        except Exception:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True})

    app = Starlette(
        routes=[
            # Every method: GraphQLApp answers those it does not serve (405, in JSON).
            Route("/graphql", graphql_app),
            WebSocketRoute("/graphql", graphql_app),
            Route("/healthz", healthz),
            # Harmless in production too: files only, and the client has no rights of its own.
            Route("/app", web_client),
            Route("/app/", web_client),
            Mount(
                STATIC_PREFIX,
                _serving_no_websocket(StaticHeaders(StaticFiles(directory=STATIC_DIR))),
                name="static",
            ),
            Route("/readyz", readyz),
            # Metrics have their own listener (inmail.metrics_server); here only with a token.
            *(
                [Route("/metrics", metrics_endpoint(settings.metrics_token))]
                if settings.metrics_token
                else []
            ),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: json_refusal, Exception: json_failure},
    )
    # `/graphql/` is no route of ours: a 404 in JSON, not a redirect whose Location would be
    # built from the client's own Host header (and whose body is empty).
    app.router.redirect_slashes = False
    app.router.default = _serving_no_websocket(app.router.default)
    app.state.container = container
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        running=requests,
        origins=settings.allowed_origins,
    )
    return app


START_RETRY_MOST = 30.0  # seconds between two attempts of a patient start-up, at most


async def start_on_the_database(container: Container, *, patient: StopAsked | None) -> bool:
    """What start-up does on the database: refuse a standalone server, create the indexes and
    migrate, warn of a manual clock behind the data. Each step may run again.

    A database out of reach fails start-up, unless `patient`: a worker of several, which `serve`
    started once the database answered, and which replaces one that died. uvicorn stops every
    worker when a replacement fails to start, so one that died during an outage would take the
    healthy ones with it. A patient worker tries again, and again, until the database answers;
    any other failure (a standalone server, a migration that cannot be done) fails it at once.
    Asked to stop meanwhile (`patient.asked`), it gives up at once: False, nothing started."""
    if patient is None:
        await _database_steps(container)
        return True
    wait = 1.0
    while True:
        try:
            if not await _unless(patient, _database_steps(container)):
                break
            return True
        except Exception as exc:
            if not unanswered(exc):
                raise
            log.warning("start-up waits for MongoDB (%s); trying again in %.0f s", exc, wait)
        if not await _unless(patient, asyncio.sleep(wait)):
            break
        wait = min(wait * 2, START_RETRY_MOST)
    log.info("asked to stop while waiting for MongoDB: start-up given up")
    return False


async def _database_steps(container: Container) -> None:
    await container.mongo.require_replica_set()
    await container.mongo.create_indexes(plans=container.deps.plans)
    await warn_if_the_clock_is_behind_the_data(container)


async def _unless(stop: StopAsked, step: Coroutine[object, object, None]) -> bool:
    """Run `step` unless a stop is asked first (then cancel it): whether it ran to its end."""
    running = asyncio.ensure_future(step)
    while not running.done() and not stop.asked:
        await asyncio.wait({running}, timeout=STOP_LOOKED_FOR)
    if not running.done():
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        return False
    running.result()  # its failure, if it failed
    return True


STOP_LOOKED_FOR = 0.2  # seconds between two looks at whether a stop was asked


async def warn_if_the_clock_is_behind_the_data(container: Container) -> None:
    """A manual clock that starts before what the database already holds would compute
    balances, renewals and expiries as if that had not happened yet: say so, once, at start."""
    if not container.clock.is_manual:
        return
    now = container.clock.now()
    newest = await container.mongo.newest_recorded_time()
    if newest is None or now >= newest:
        return
    whole = newest.replace(microsecond=0)
    start_from = whole if whole == newest else whole + timedelta(seconds=1)
    log.warning(
        "the manual clock starts at %s, before data already written up to %s (ledger entries "
        "or InMails in database %r): balances, renewals and expiries would be computed as if it "
        "had not happened yet. Start the clock after it (INMAIL_CLOCK_START=%s or later), or "
        "use a fresh data folder (INMAIL_DATA_DIR) or database (INMAIL_DB_NAME).",
        now.isoformat(),
        newest.isoformat(),
        container.mongo.db.name,
        start_from.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def worker_app(settings: Settings) -> Starlette:
    """The app as each uvicorn worker of `inmail serve` builds it, from the settings serve
    resolved and gave it (`transport.server_config`)."""
    if settings.workers == 1:
        return _serving_app(settings)
    end_with_parent()  # a worker of `inmail serve`'s supervisor: it ends with it
    # Built while uvicorn's server loads it, with the server's signal handlers in place.
    return _serving_app(settings, patient=note_stop_signals())


def app_from_env() -> Starlette:
    """The app as `uvicorn inmail.app:app_from_env --factory` builds it: from the INMAIL_*
    environment."""
    import os

    return _serving_app(Settings.from_env(os.environ))


def _serving_app(settings: Settings, *, patient: StopAsked | None = None) -> Starlette:
    logs.configure_logging(settings.log_level, settings.log_format)
    return create_app(
        settings, mongo=choose_database(settings).open(), serving=True, patient=patient
    )
