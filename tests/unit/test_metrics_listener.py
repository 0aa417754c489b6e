"""The metrics listener serves on the address it is given, IPv4 or IPv6."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest

from inmail.metrics_server import CONTENT_TYPE, MetricsListener


@pytest.fixture
def listeners() -> Iterator[list[MetricsListener]]:
    started: list[MetricsListener] = []
    yield started
    for listener in started:
        listener.stop()


def _scrape(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("host", "url_host"),
    [("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1"), ("::1", "[::1]")],
)
def test_the_listener_serves_metrics_on_an_ipv4_or_ipv6_address(
    listeners: list[MetricsListener], host: str, url_host: str
) -> None:
    if ":" in host and not _ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    listener = MetricsListener(host, 0)
    listeners.append(listener)
    assert listener.start(), f"listening on {host}"
    status, content_type, body = _scrape(f"http://{url_host}:{listener.port}/metrics")
    assert (status, content_type) == (200, CONTENT_TYPE)
    assert b"# TYPE " in body, "the Prometheus text format"


def test_an_address_that_cannot_be_had_is_logged_and_the_listener_stays_off(
    listeners: list[MetricsListener], caplog: pytest.LogCaptureFixture
) -> None:
    listener = MetricsListener("192.0.2.1", 0)  # TEST-NET-1: no interface here has it
    listeners.append(listener)
    assert not listener.start()
    assert "metrics are not served: cannot listen on 192.0.2.1" in caplog.text
