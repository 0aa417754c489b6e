"""A page on another origin calling the API from Chromium, as a frontend deployed apart does:
with the headers real client libraries and tracing SDKs add to every request."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from browser.conftest import Browsers, RunningService

pytestmark = pytest.mark.browser

PAGE = b"<!doctype html><title>another origin</title><p>a frontend served apart</p>"

# What the page sends: the token and JSON every client sends, then what Apollo Client names
# itself with, and what OpenTelemetry and Sentry's browser SDKs add for tracing.
CALL = """
const [url, token, done] = arguments;
fetch(url + "/graphql", {
  method: "POST",
  headers: {
    "Content-Type": "application/json",
    "Authorization": "Bearer " + token,
    "apollographql-client-name": "web",
    "apollographql-client-version": "1.0",
    "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "sentry-trace": "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    "baggage": "sentry-environment=test",
  },
  body: JSON.stringify({ query: "{ viewer { name inmailBalance } }" }),
})
  .then(async (response) => done({ status: response.status, body: await response.json() }))
  .catch((error) => done({ error: String(error) }));
"""


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other_origin() -> Iterator[str]:
    """A page served from another port of the loopback: another origin than the service's."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_page_elsewhere_calls_the_api_with_its_clients_and_tracing_headers(
    service: RunningService, browsers: Browsers, other_origin: str
) -> None:
    ada = service.create_member("Ada Lovelace")
    driver = browsers.open("elsewhere")
    driver.get(other_origin)
    driver.set_script_timeout(30)

    answer = driver.execute_async_script(CALL, service.url, ada.token)

    assert answer.get("error") is None, answer  # a refused preflight: "Failed to fetch"
    assert answer["status"] == 200
    assert answer["body"]["data"]["viewer"] == {"name": "Ada Lovelace", "inmailBalance": 5}
