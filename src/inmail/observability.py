"""What operators watch: metrics per GraphQL operation, ledger counters, and the /metrics page.

With several worker processes (`inmail serve --workers N`) each process writes its samples to
PROMETHEUS_MULTIPROC_DIR and /metrics, whichever worker answers, adds them all up.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from inmail.domain.credits import LedgerKind
from inmail.domain.model import LedgerEntry
from inmail.metrics import CREDITS, INMAILS_SENT, REQUEST_SECONDS, REQUESTS
from inmail.processes import pid_alive

# The Prometheus text format 0.0.4, which every scraper reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Operation names come from clients: cap how many distinct ones become label values, so that
# a client inventing names cannot grow the metrics without bound.
MAX_OPERATION_NAMES = 200
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,63}")
_seen_names: set[str] = set()


def operation_label(name: object) -> str:
    """The label value for an operation name: itself, `anonymous`, or `other` past the cap."""
    if not name or not isinstance(name, str):
        return "anonymous"
    if not _NAME.fullmatch(name):
        return "other"
    if name not in _seen_names:
        if len(_seen_names) >= MAX_OPERATION_NAMES:
            return "other"
        _seen_names.add(name)
    return name


class OperationMetrics(SchemaExtension):
    """Counts every operation by name and outcome (ok | error) and times queries and mutations.

    A subscription is counted when it ends; its lifetime is not a latency, so it is not timed.
    A cancellation (a client that went away, a subscription it ended) is no error.
    """

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
        operation = operation_label(context.operation_name)
        outcome = "error" if failed or context.pre_execution_errors else "ok"
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


def exposition() -> bytes:
    """Every metric of this process, or of all worker processes in multiprocess mode."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(REGISTRY)
    _forget_dead_processes(Path(directory))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


async def metrics_endpoint(request: Request) -> Response:
    body = await run_in_threadpool(exposition)
    return Response(body, media_type=CONTENT_TYPE)


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db")


def _forget_dead_processes(directory: Path) -> None:
    # A worker that died (and was replaced) must no longer count in the `live*` gauges, such as
    # subscribers connected; its counters stay, as Prometheus expects of counters.
    for path in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match and not pid_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                pid = int(match.group(1))
                multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
