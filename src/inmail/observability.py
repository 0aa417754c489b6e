"""What operators watch: metrics per GraphQL operation, ledger counters, and the /metrics page.

With several worker processes (`inmail serve --workers N`) each process writes its samples to
PROMETHEUS_MULTIPROC_DIR and /metrics (`inmail.metrics_server`) adds them all up.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from inmail.domain.credits import LedgerKind
from inmail.domain.model import LedgerEntry
from inmail.metrics import CREDITS, INMAILS_SENT, REQUEST_SECONDS, REQUESTS
from inmail.metrics_server import CONTENT_TYPE, exposition, token_matches

# Operation names come from clients: cap how many distinct ones become label values, so that
# a client inventing names cannot grow the metrics without bound. A name becomes one only from
# a signed-in caller's operation that validated: strangers, and documents that do not validate,
# cannot take the slots of the names a frontend will send.
MAX_OPERATION_NAMES = 200
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")


class OperationLabels:
    """The operation names one schema has turned into label values, up to MAX_OPERATION_NAMES."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def label(self, name: object, *, may_take: bool) -> str:
        """The label value for an operation name: itself, `anonymous`, or `other`: past the
        cap, or for a name not seen yet when this operation `may_take` no new one."""
        if not name or not isinstance(name, str):
            return "anonymous"
        if not _NAME.fullmatch(name):
            return "other"
        if name not in self._seen:
            if not may_take or len(self._seen) >= MAX_OPERATION_NAMES:
                return "other"
            self._seen.add(name)
        return name


class OperationMetrics(SchemaExtension):
    """Counts every operation by name and outcome (ok | error) and times queries and mutations.

    A subscription is counted when it ends; its lifetime is not a latency, so it is not timed.
    A cancellation (a client that went away, a subscription it ended) is no error. One instance
    runs per operation; the names seen so far belong to the schema's `labels`.
    """

    def __init__(
        self, *, labels: OperationLabels, execution_context: ExecutionContext | None = None
    ) -> None:
        super().__init__(execution_context=execution_context)
        self.labels = labels

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        failed = False
        try:
            yield
        except Exception:
            failed = True
            raise
        finally:
            self._record(time.perf_counter() - started, failed)

    def _record(self, seconds: float, failed: bool) -> None:
        context = self.execution_context
        if getattr(context.context, "answer_withheld", False):
            # Its answer was withheld and the request runs again (a token whose member does
            # not exist, resolvers/context.py MemberMustExist): that run is the one counted.
            return
        validated = not failed and not context.pre_execution_errors
        may_take = validated and getattr(context.context, "caller_known", False)
        operation = self.labels.label(context.operation_name, may_take=may_take)
        outcome = "ok" if validated else "error"
        REQUESTS.labels(operation, outcome).inc()
        if not self._is_subscription():
            REQUEST_SECONDS.labels(operation).observe(seconds)

    def _is_subscription(self) -> bool:
        context = self.execution_context
        if context.graphql_document is None:
            return False
        try:
            return context.operation_type is OperationType.SUBSCRIPTION
        except Exception:  # an unknown operation name: it was rejected, not run
            return False


class LedgerMetrics:
    """A listener of committed ledger entries: credits moved by kind, and InMails sent.

    Each DEBIT is one InMail sent (a send spends exactly one credit).
    """

    def __init__(self) -> None:
        for kind in LedgerKind:
            CREDITS.labels(kind.value)  # every kind shows up at 0 before its first entry

    async def publish(self, entries: Sequence[LedgerEntry]) -> None:
        for entry in entries:
            if entry.kind is LedgerKind.DEBIT:
                INMAILS_SENT.inc()
            if entry.delta:
                CREDITS.labels(entry.kind.value).inc(abs(entry.delta))


def metrics_endpoint(token: str) -> Callable[[Request], Awaitable[Response]]:
    """/metrics on the API port, for requests that carry `Authorization: Bearer <token>`."""

    async def endpoint(request: Request) -> Response:
        if not token_matches(request.headers.get("authorization"), token):
            return PlainTextResponse("a bearer token is required", status_code=401)
        body = await run_in_threadpool(exposition)
        return Response(body, media_type=CONTENT_TYPE)

    return endpoint
