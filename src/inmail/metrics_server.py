"""The metrics page, and the listener that serves it apart from the API.

`inmail serve` runs one listener per server (`INMAIL_METRICS_HOST`:`INMAIL_METRICS_PORT`,
loopback by default), in the process that starts the workers: with several workers it adds up
what every worker wrote to PROMETHEUS_MULTIPROC_DIR. The API port does not serve /metrics unless
`INMAIL_METRICS_TOKEN` is set, and then only to requests that carry it.

This module imports no metric definitions, so the supervising process writes no samples itself.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

from inmail.processes import pid_alive

log = logging.getLogger("inmail.metrics")

# The Prometheus text format 0.0.4, which every scraper reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def exposition() -> bytes:
    """Every metric of this process, or of all worker processes in multiprocess mode."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(REGISTRY)
    _forget_dead_processes(Path(directory))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def token_matches(authorization: str | None, token: str | None) -> bool:
    """Whether an Authorization header carries the metrics token (no token set: nothing does)."""
    if token is None or authorization is None:
        return False
    scheme, _, value = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


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


class _Handler(BaseHTTPRequestHandler):
    timeout = 10  # seconds a scraper may take to send its request: a silent one is dropped
    token: str | None = None

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self._plain(404, b"not found: metrics are at /metrics\n")
            return
        if self.token is not None and not token_matches(
            self.headers.get("Authorization"), self.token
        ):
            self._plain(401, b"a bearer token is required\n")
            return
        body = exposition()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _plain(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds is not worth a log line


def _server_for(host: str) -> type[ThreadingHTTPServer]:
    """The HTTP server class for `host`: `http.server` listens on IPv4 alone, so an IPv6
    address (`::`, `::1`) needs a class of its own. The family is told as uvicorn tells it for
    the API's host (an address with a colon is IPv6), so a name such as `localhost` listens on
    IPv4 whichever address the resolver lists first. `::` takes IPv4 connections too where the
    system allows it, as uvicorn's own socket does."""
    if ":" not in host:
        return ThreadingHTTPServer
    return type("MetricsServer", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})


class MetricsListener:
    """/metrics on its own address, served from a thread of the process that runs the server."""

    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.host = host
        self.port = port
        self.token = token
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Listen; False (and an error logged) when the address cannot be had.

        The API runs either way: a busy metrics port is no reason to refuse traffic.
        """
        handler = type("MetricsHandler", (_Handler,), {"token": self.token})
        try:
            server = _server_for(self.host)((self.host, self.port), handler)
        except OSError as exc:
            log.error(
                "metrics are not served: cannot listen on %s:%d (%s); set INMAIL_METRICS_PORT",
                self.host,
                self.port,
                exc.strerror or exc,
            )
            return False
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, name="inmail-metrics", daemon=True
        )
        self._thread.start()
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
