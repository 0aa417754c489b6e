"""Hostile clients against `inmail serve`: huge headers, silent sockets, slow bodies, floods.

Each test starts a real server process (uvicorn with the service's transport limits) on the test
mongod and stops it by its pid. Time bounds are generous: they separate "answered at once" from
"held for minutes", never measure speed.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from harness.servers import ServiceProcess
from inmail.auth import Role, TokenService
from inmail.endpoint.answers import HELD_ANSWER_BYTES
from inmail.processes import free_port
from inmail.settings import Settings
from inmail.transport import MAX_PIPELINED
from support import TEST_SECRET, serving, session_service_env

MIB = 1024 * 1024


class Served:
    def __init__(self, server: ServiceProcess, metrics_port: int) -> None:
        self.server = server
        self.port = server.port
        self.metrics_port = metrics_port

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        return sock

    def get(
        self, path: str, port: int | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port or self.port}{path}", headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def post(self, query: str, token: str | None = None) -> dict[str, Any]:
        """The JSON answer to `query`, whatever its status."""
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        return body

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.server.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@contextmanager
def serve(mongodb_uri: str, tmp_path: Path, **settings: str) -> Iterator[Served]:
    """`inmail serve` on the test mongod, with these settings; stopped by its pid afterwards,
    when its log must hold no traceback."""
    metrics_port = free_port()
    env = session_service_env(
        mongodb_uri,
        tmp_path / "data",
        INMAIL_METRICS_PORT=str(metrics_port),
        INMAIL_LOG_LEVEL="INFO",
        **settings,
    )
    with serving(ServiceProcess.serve(env, tmp_path / "serve.log")) as server:
        yield Served(server, metrics_port)


def read_response(sock: socket.socket, timeout: float = 15) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout` passes)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return received


# The module's server drops a connection whose head (or body) has not come within this.
TIMEOUT = 2.0


def still_serves(served: Served) -> None:
    assert served.get("/healthz") == (200, b"ok")


def healthz_not_held(served: Served, since: float) -> None:
    """/healthz answers before the timeout could have freed the server from what holds it up
    (the connections opened at `since`, a time.monotonic()): a server that waited on them would
    answer only once they were dropped."""
    still_serves(served)
    waited = time.monotonic() - since
    assert waited < TIMEOUT, f"/healthz answered {waited:.1f} s after the other connections came"


@pytest.fixture(scope="module")
def server(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(
        mongodb_uri,
        tmp_path_factory.mktemp("limits"),
        INMAIL_HEADER_TIMEOUT=str(TIMEOUT),
        INMAIL_BODY_TIMEOUT=str(TIMEOUT),
    ) as served:
        yield served


def test_a_64_mb_header_is_refused_with_431_at_once_while_healthz_keeps_answering(
    server: Served,
) -> None:
    rss_before = server.rss_bytes()
    sock = server.connect()
    header = b"GET /healthz HTTP/1.1\r\nHost: inmail\r\nX-Huge: " + b"a" * (64 * MIB)
    sent: list[int] = []

    def flood() -> None:
        try:
            sock.sendall(header)
            sent.append(len(header))
        except OSError:
            sent.append(-1)  # the server closed while we were still sending: also a refusal

    started = time.monotonic()
    sender = threading.Thread(target=flood)
    sender.start()
    healthz_not_held(server, since=started)
    answer = read_response(sock)
    sender.join(timeout=30)
    elapsed = time.monotonic() - started
    sock.close()

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"HEADERS_TOO_LARGE"' in answer
    assert elapsed < 10, f"refusing a 64 MB header took {elapsed:.1f} s"
    grown = server.rss_bytes() - rss_before
    assert grown < 16 * MIB, f"the server grew by {grown / MIB:.0f} MiB reading the header"
    still_serves(server)


def test_a_header_just_under_the_limit_is_served(server: Served) -> None:
    status, body = server.get("/healthz", headers={"X-Padding": "p" * 60_000})
    assert (status, body) == (200, b"ok")


def test_headers_trickled_in_small_pieces_are_counted_together_and_refused_past_the_limit(
    server: Served,
) -> None:
    sock = server.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: inmail\r\n")
    refused_early = False
    for n in range(80):  # 80 headers of 1 KiB each, one write apiece: 80 KiB in all
        try:
            sock.sendall(b"X-Piece-%d: " % n + b"p" * 1000 + b"\r\n")
        except OSError:
            refused_early = True  # the server closed after answering: also a refusal
            break
        time.sleep(0.002)
    answer = read_response(sock)
    sock.close()

    assert answer.startswith(b"HTTP/1.1 431 "), (refused_early, answer[:200])


def test_a_whole_head_over_the_limit_in_one_write_is_refused_too(server: Served) -> None:
    sock = server.connect()
    head = b"GET /healthz HTTP/1.1\r\nHost: inmail\r\nX-Padding: " + b"p" * 70_000
    sock.sendall(head + b"\r\n\r\n")
    answer = read_response(sock)
    sock.close()

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


@pytest.mark.parametrize("ended", [True, False], ids=["whole", "never-ending"])
def test_trailers_over_the_limit_after_a_chunked_body_are_refused(
    server: Served, ended: bool
) -> None:
    """Trailer headers are held in memory like a head's, until each ends: they are held to the
    same limit, and the app waiting for the body hears the client is gone. A trailer that never
    ends is refused at the first read that finds it over the limit, or, when its bytes came in
    the same read as the chunk before it and nothing follows, by the body timeout (2 s here):
    either way within one read of the limit in memory, and in bounded time."""
    sock = server.connect()
    sock.sendall(
        b"POST /graphql HTTP/1.1\r\nHost: inmail\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: "
    )
    refused_early = False
    try:
        for _ in range(100):  # 100 KiB of one trailer's value, in 1 KiB writes
            sock.sendall(b"t" * 1024)
        if ended:
            sock.sendall(b"\r\n\r\n")
    except OSError:
        refused_early = True  # the server closed after answering: also a refusal
    started = time.monotonic()
    answer = read_response(sock)
    waited = time.monotonic() - started
    sock.close()

    refusals = (b"HTTP/1.1 431 ",) if ended else (b"HTTP/1.1 431 ", b"HTTP/1.1 408 ")
    assert answer.startswith(refusals), (refused_early, answer[:200])
    assert waited < 10, f"the refusal came after {waited:.1f} s"


def test_a_body_sent_after_its_request_was_answered_leaves_the_connection_on_a_timer(
    server: Served,
) -> None:
    """The app may answer before it reads a body (here a 404); the body arriving after that
    ends the request, and the connection then waits for the next one under the header timeout
    (2 s here), instead of being held open with no timer at all."""
    sock = server.connect()
    sock.sendall(b"POST /no-such-path HTTP/1.1\r\nHost: inmail\r\nContent-Length: 10\r\n\r\n")
    sock.settimeout(15)
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 404 "), first[:200]
    sock.sendall(b"0123456789")  # the body, after its answer
    started = time.monotonic()
    rest = read_response(sock, timeout=20)
    waited = time.monotonic() - started
    sock.close()

    assert rest == b"", rest[:200]
    assert waited < 15, f"the connection stayed open {waited:.1f} s after its request ended"


def test_a_bad_request_behind_one_not_yet_answered_never_takes_its_answer(server: Served) -> None:
    """A request uvicorn refuses (a port over 65535) behind one still to be answered: a 400
    written now would read as the first request's answer, so the connection is closed."""
    sock = server.connect()
    sock.sendall(
        b"GET /healthz HTTP/1.1\r\nHost: inmail\r\n\r\n"
        b"GET http://inmail:99999/ HTTP/1.1\r\nHost: inmail\r\n\r\n"
    )
    answer = read_response(sock)
    sock.close()

    assert not answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert answer == b"" or answer.startswith(b"HTTP/1.1 200 "), answer[:200]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"POST /graphql HTTP/1.1\r\nHost: inmail\r\nContent-Length: abc\r\n\r\n",
        b"POST /graphql HTTP/1.1\r\nHost: inmail\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: inmail\r\nX-Bell: ding\x07dong\r\n\r\n",
    ],
    ids=["no request line", "a length that is no number", "a bad chunk size", "a control byte"],
)
def test_a_malformed_request_is_answered_400_in_json(server: Served, request_bytes: bytes) -> None:
    sock = server.connect()
    sock.sendall(request_bytes)
    answer = read_response(sock)
    sock.close()

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"\r\ncontent-type: application/json\r\n" in head + b"\r\n", head
    errors = json.loads(body)["errors"]
    assert [error["extensions"]["code"] for error in errors] == ["BAD_REQUEST"]
    still_serves(server)


def test_pipelined_requests_on_one_connection_are_each_answered_in_order(
    server: Served,
) -> None:
    sock = server.connect()
    one = b"GET /healthz HTTP/1.1\r\nHost: inmail\r\n\r\n"
    last = b"GET /readyz HTTP/1.1\r\nHost: inmail\r\nConnection: close\r\n\r\n"
    sock.sendall(one * 3 + last)
    answer = read_response(sock)
    sock.close()

    assert answer.count(b"HTTP/1.1 200 ") == 4, answer
    assert answer.index(b"ok") < answer.rindex(b"HTTP/1.1 200 ")


def test_past_the_pipelined_bound_those_waiting_are_answered_then_the_connection_closes(
    server: Served,
) -> None:
    """One write of many more pipelined requests than may wait: the first ones are each
    answered, the last of those with `Connection: close`, and the rest are never read."""
    sock = server.connect()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: inmail\r\n\r\n" * 10 * MAX_PIPELINED)
    answer = read_response(sock)
    sock.close()

    answers = answer.split(b"HTTP/1.1 ")[1:]
    assert MAX_PIPELINED < len(answers) < 10 * MAX_PIPELINED, answer[-300:]
    assert all(one.startswith(b"200 ") for one in answers)
    assert b"\r\nconnection: close\r\n" in answers[-1].lower()
    assert not any(b"connection: close" in one.lower() for one in answers[:-1])
    still_serves(server)


def test_a_client_pipelining_without_end_and_reading_nothing_holds_little_memory(
    server: Served,
) -> None:
    """Requests written without pause on one connection, no answer read: the server reads no
    more once some wait their turn (the client's writes then block), instead of queueing
    every request the client can write."""
    body = b'{"query": "{ plans { type monthlyAllotment } }"}'
    one = (
        b"POST /graphql HTTP/1.1\r\nHost: inmail\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    rss_before = server.rss_bytes()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(1.0)
    written, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < 4:
            sock.sendall(one * 100)
            written += 100
    except (TimeoutError, ConnectionError):
        pass  # the server stopped reading (or closed): the socket buffers are full
    grown = server.rss_bytes() - rss_before
    sock.close()

    assert grown < 64 * MIB, f"{grown / MIB:.0f} MiB more after {written} pipelined requests"
    still_serves(server)


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"deflate,chunked", b"identity"])
def test_a_transfer_coding_other_than_chunked_is_refused_501_in_json(
    server: Served, coding: bytes
) -> None:
    """llhttp would read `gzip, chunked` as chunked and hand the body on still gzipped; a proxy
    in front reading it otherwise is how a request is smuggled past it."""
    sock = server.connect()
    body = b'{"query": "{ now }"}'
    sock.sendall(
        b"POST /graphql HTTP/1.1\r\nHost: inmail\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: "
        + coding
        + b"\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    answer = read_response(sock)
    sock.close()

    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501 "), answer
    assert b"content-type: application/json" in head.lower()
    assert "chunked" in json.loads(payload)["errors"][0]["message"]


@pytest.mark.parametrize(
    ("header", "status"),
    [(b"Transfer-Encoding: gzip", b"501"), (b"X-Big: " + b"x" * 70_000, b"431")],
    ids=["unknown-coding", "head-too-large"],
)
def test_a_refused_head_request_is_answered_with_the_head_alone(
    server: Served, header: bytes, status: bytes
) -> None:
    """RFC 9110 9.3.2: the answer to a HEAD has no body; its length is the one a GET's would
    have. A body here would be read as the start of the next response."""
    sock = server.connect()
    sock.sendall(b"HEAD /graphql HTTP/1.1\r\nHost: inmail\r\n" + header + b"\r\n\r\n")
    answer = read_response(sock)
    sock.close()

    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status + b" "), answer
    assert payload == b"", answer
    length = re.search(rb"content-length: (\d+)", head.lower())
    assert length is not None, head
    assert int(length[1]) > 0, head


def answer_to(served: Served, request: bytes) -> bytes:
    """All the server answers `request`, sent on a connection of its own, until it closes."""
    sock = served.connect()
    sock.sendall(request)
    answer = read_response(sock)
    sock.close()
    return answer


JSON_POST_HEAD = b"POST /graphql HTTP/1.1\r\nHost: inmail\r\nContent-Type: application/json\r\n"


def test_a_chunked_body_is_read_as_ever(server: Served) -> None:
    body = b'{"query": "{ now }"}'
    answer = answer_to(
        server,
        JSON_POST_HEAD
        + b"Transfer-Encoding: Chunked\r\nConnection: close\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n",
    )

    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b'"now"' in answer


H2C_OFFER = (
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
)


def post_offering_h2c(body: bytes) -> bytes:
    """A POST of `body` offering an upgrade to HTTP/2 over plain http, as `curl --http2` does."""
    return JSON_POST_HEAD + H2C_OFFER + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def test_an_offer_to_upgrade_to_http2_is_ignored_and_the_request_served_with_its_body(
    server: Served,
) -> None:
    sock = server.connect()
    request = post_offering_h2c(b'{"query": "{ now }"}')
    head_end = request.index(b"\r\n\r\n") + 4
    sock.sendall(request[: head_end + 5])  # the body comes in two reads
    time.sleep(0.2)
    sock.sendall(request[head_end + 5 :])
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: inmail\r\nConnection: close\r\n\r\n")
    answer = read_response(sock)
    sock.close()

    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b'{"data":{"now":' in answer
    assert b"101 Switching" not in answer
    # Behind it on the same connection, a request is read and answered as ever.
    assert answer.count(b"HTTP/1.1 200 ") == answer.count(b"HTTP/1.1 ") == 2
    assert answer.endswith(b"ok")


def test_an_upgrade_offer_whose_body_has_no_length_is_refused_400_in_json(server: Served) -> None:
    answer = answer_to(
        server,
        JSON_POST_HEAD + H2C_OFFER + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )

    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"must give its body's length" in answer
    still_serves(server)


def test_two_hundred_silent_connections_are_dropped_after_the_header_timeout(
    server: Served,
) -> None:
    connected = time.monotonic()
    sockets = [server.connect() for _ in range(200)]
    for sock in sockets:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: inmail\r\nX-Slow: ")  # and nothing more
    try:
        healthz_not_held(server, since=connected)
        deadline = time.monotonic() + 30  # the timeout is 2 s; 30 s is only a bound
        for sock in sockets:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert sock.recv(1024) == b"", "the server closed the silent connection"
        still_serves(server)
    finally:
        for sock in sockets:
            sock.close()


def test_a_connection_that_never_sends_a_byte_is_dropped_too(server: Served) -> None:
    sock = server.connect()
    try:
        sock.settimeout(30)
        assert sock.recv(1024) == b""
    finally:
        sock.close()


def json_post_head(length: int) -> bytes:
    """A JSON POST to /graphql up to its body, which it says is `length` bytes long."""
    return (
        b"POST /graphql HTTP/1.1\r\nHost: inmail\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
    )


def answer_to_a_body_cut_short(server: Served, length: int, sent: bytes) -> bytes:
    """What the server answers a JSON POST of a `length`-byte body of which only `sent` comes."""
    sock = server.connect()
    try:
        sock.sendall(json_post_head(length) + sent)
        return read_response(sock, timeout=30)
    finally:
        sock.close()


def test_a_body_that_never_arrives_is_answered_408_and_the_connection_closed(
    server: Served,
) -> None:
    answer = answer_to_a_body_cut_short(server, 1000, b'{"query": "{ now')
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"REQUEST_TIMEOUT"' in answer
    still_serves(server)


def test_a_request_answered_before_its_body_never_gets_a_second_answer(server: Served) -> None:
    """A body over the limit is refused by its Content-Length (413) before it is read; a client
    that goes on sending it slowly gets the connection closed, never an unrequested 408."""
    answer = answer_to_a_body_cut_short(server, 2_000_000, b'{"query": "')
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:400]


INTROSPECT = (
    "__schema { types { name kind description fields { name description isDeprecated "
    "args { name description type { name kind } } type { name kind ofType { name kind } } } "
    "inputFields { name description type { name kind } } enumValues { name description } } }"
)

# One query asking for some 8 MB (140 introspections), and the limits raised so that it may.
LARGE_ANSWER = "{ " + " ".join(f"a{i}: {INTROSPECT}" for i in range(140)) + " }"
LARGE_ANSWER_LIMITS = {
    "INMAIL_MAX_ALIASES": "1000",
    "INMAIL_MAX_TOKENS": "100000",
    "INMAIL_MAX_QUERY_LENGTH": "65536",
    "INMAIL_MAX_QUERY_COST": "1000000",
}


@pytest.mark.parametrize(
    ("body_timeout", "connection"),
    [
        ("2", b""),  # the watch gives up before the connection's keep-alive ends
        ("6", b""),  # keep-alive (5 s) closes the connection first: the close waits on the client
        ("2", b"Connection: close\r\n"),  # closed as soon as the answer is written
    ],
    ids=["open", "closed-by-keep-alive", "connection-close"],
)
def test_a_client_that_takes_nothing_of_its_answer_is_dropped(
    mongodb_uri: str, tmp_path: Path, body_timeout: str, connection: bytes
) -> None:
    """An answer of some 8 MB (limits raised so that one query asks for it) to a client that
    reads none of it: once the socket buffers are full, the connection is cut off after the
    body timeout, instead of the answer being held for as long as the client keeps the
    connection open. A connection the server has closed meanwhile (its keep-alive over, or the
    client's `Connection: close`) holds the unsent answer until the client takes it: it is cut
    off all the same."""
    body = json.dumps({"query": LARGE_ANSWER}).encode()
    limits = {"INMAIL_BODY_TIMEOUT": body_timeout, **LARGE_ANSWER_LIMITS}
    with serve(mongodb_uri, tmp_path, **limits) as served:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes little unread
        sock.connect(("127.0.0.1", served.port))
        head = json_post_head(len(body))
        try:
            sock.sendall(head[:-2] + connection + b"\r\n" + body)
            # The answer's first byte (it is built whole before it is sent, in however long a
            # loaded machine takes), then nothing, well past the keep-alive and body timeouts.
            sock.settimeout(60)
            first = sock.recv(1)
            time.sleep(15)
            received = first + read_response(sock, timeout=20)
        finally:
            sock.close()
        head, _, answer = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head[:200]
        found = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
        assert found is not None, head[:300]
        length = int(found.group(1))
        assert length > 6_000_000, answer[:300]  # more than the socket buffers hold
        assert len(answer) < length, "the answer was kept for a client that read none of it"
        still_serves(served)


def test_a_client_that_reads_its_answer_slowly_is_not_cut_off(
    mongodb_uri: str, tmp_path: Path
) -> None:
    """A slow reader is a reader: one that takes some of its answer every body timeout (here at
    most 32 KiB every half second, against a 2 s timeout) is not cut off."""
    body = json.dumps({"query": LARGE_ANSWER}).encode()
    limits = {"INMAIL_BODY_TIMEOUT": "2", **LARGE_ANSWER_LIMITS}
    with serve(mongodb_uri, tmp_path, **limits) as served:
        sock = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        try:
            sock.sendall(json_post_head(len(body)) + body)
            received = 0
            reading_until = time.monotonic() + 10  # five body timeouts
            while time.monotonic() < reading_until:
                chunk = sock.recv(32 * 1024)
                assert chunk, f"cut off after {received} bytes, though it read all along"
                received += len(chunk)
                time.sleep(0.5)
        except ConnectionResetError as exc:
            raise AssertionError(f"cut off after {received} bytes") from exc
        finally:
            sock.close()
        assert received > 64 * 1024


def stalled_request(served: Served, request: bytes) -> tuple[socket.socket, bytes]:
    """A connection that sends `request` and reads nothing of its answer, once the answer's
    status line has come: the connection, and that line."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes little unread
    sock.connect(("127.0.0.1", served.port))
    sock.sendall(request)
    sock.settimeout(30)
    return sock, sock.recv(12, socket.MSG_PEEK)


def stall_until_refused(served: Served, request: bytes) -> list[socket.socket]:
    """Requests whose answers are left unread, one after another, until one is refused: their
    connections (the refused one's last)."""
    stalled: list[socket.socket] = []
    while len(stalled) < 20:
        sock, status = stalled_request(served, request)
        stalled.append(sock)
        if status != b"HTTP/1.1 200":
            assert status == b"HTTP/1.1 503", status
            return stalled
    raise AssertionError("20 unread answers held, and none refused")


def test_a_callers_unread_answers_are_held_to_a_budget_past_which_they_are_refused(
    mongodb_uri: str, tmp_path: Path
) -> None:
    """Answers a client does not read wait in the server until the body timeout: a caller (here,
    the callers without a token, who share one budget) whose unread answers pass the largest
    answer's size is refused, 503, before their next request runs, whatever it asks. An admin is
    not held to it, and once the unread answers' clients let go, the caller is answered again."""
    body = json.dumps({"query": LARGE_ANSWER}).encode()
    max_response = 12_000_000
    limits = {"INMAIL_MAX_RESPONSE_BYTES": str(max_response), **LARGE_ANSWER_LIMITS}
    with serve(mongodb_uri, tmp_path, **limits) as served:
        size = len(json.dumps(served.post(LARGE_ANSWER), separators=(",", ":")))
        assert 4 * HELD_ANSWER_BYTES < size <= max_response
        stalled = stall_until_refused(served, json_post_head(len(body)) + body)
        try:
            assert len(stalled) - 1 == max_response // size + 1  # held until past one answer
            for query in (LARGE_ANSWER, "{ now }"):
                assert served.post(query)["errors"] == [
                    {
                        "message": "Your earlier answers are still being sent: read them (or "
                        "close their connections), then ask again.",
                        "extensions": {"code": "SERVICE_UNAVAILABLE"},
                    }
                ]
            admin = TokenService(TEST_SECRET, Settings().token_max_lifetime).mint("ops", Role.ADMIN)
            status, answer = served.get(
                "/graphql?query=" + urllib.parse.quote(LARGE_ANSWER),
                headers={"Authorization": f"Bearer {admin}", "Accept": "application/json"},
            )
            assert status == 200, "an admin is not held to it"
            assert len(answer) > size // 2
        finally:
            for sock in stalled:
                sock.close()
        deadline = time.monotonic() + 20
        while "errors" in (again := served.post(LARGE_ANSWER)) and time.monotonic() < deadline:
            time.sleep(0.2)  # the server sees the closed connections, and lets their share go
        assert "errors" not in again, str(again)[:300]


def test_a_mutation_past_its_callers_budget_is_refused_before_it_runs(
    mongodb_uri: str, tmp_path: Path
) -> None:
    """The budget is checked before a request runs: a member holding too many unread answers
    gets a 503 for a mutation too, and nothing of it is written."""
    limits = {"INMAIL_MAX_RESPONSE_BYTES": "12000000", **LARGE_ANSWER_LIMITS}
    tokens = TokenService(TEST_SECRET, Settings().token_max_lifetime)
    admin = tokens.mint("ops", Role.ADMIN)
    with serve(mongodb_uri, tmp_path, **limits) as served:
        ids = [
            served.post(
                f'mutation {{ createMember(input: {{name: "{name}", plan: BASIC}}) '
                "{ member { id } } }",
                admin,
            )["data"]["createMember"]["member"]["id"]
            for name in ("Ada", "Grace")
        ]
        connected = served.post(
            f'mutation {{ connectMembers(input: {{memberId: "{ids[0]}", '
            f'otherMemberId: "{ids[1]}"}}) {{ ok }} }}',
            admin,
        )
        assert connected["data"]["connectMembers"]["ok"] is True
        ada = tokens.mint(ids[0], Role.MEMBER)
        send = f'mutation {{ sendMessage(input: {{recipientId: "{ids[1]}", body: "Hello"}}) '
        first = served.post(send + "{ conversation { id } errors { code } } }", ada)
        conversation = first["data"]["sendMessage"]["conversation"]["id"]
        body = json.dumps({"query": LARGE_ANSWER}).encode()
        token = f"Authorization: Bearer {ada}\r\n\r\n".encode()
        stalled = stall_until_refused(served, json_post_head(len(body))[:-2] + token + body)
        try:
            refused = served.post(send + "{ errors { code } } }", ada)
        finally:
            for sock in stalled:
                sock.close()
        assert [e["extensions"]["code"] for e in refused["errors"]] == ["SERVICE_UNAVAILABLE"]
        deadline = time.monotonic() + 20
        thread = (
            f'{{ node(id: "{conversation}") {{ ... on Conversation {{ messages {{ body }} }} }} }}'
        )
        while "errors" in (read := served.post(thread, ada)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert read["data"]["node"]["messages"] == [{"body": "Hello"}]


def masked_text_frame(text: str) -> bytes:
    """A client's websocket text frame (RFC 6455: masked, here with a fixed key)."""
    return masked_frame(text.encode(), opcode=0x1)


def masked_frame(payload: bytes, opcode: int, *, final: bool = True) -> bytes:
    """A client's websocket frame of this opcode (0x0 continuation, 0x1 text, 0x9 ping)."""
    key = b"\x01\x02\x03\x04"
    size = len(payload)
    fin = 0x80 if final else 0
    if size < 126:
        head = bytes([fin | opcode, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([fin | opcode, 0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([fin | opcode, 0x80 | 127]) + size.to_bytes(8, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_a_websocket_client_pinging_without_end_and_reading_nothing_holds_little_memory(
    mongodb_uri: str, tmp_path: Path
) -> None:
    """Ping frames written without pause, no pong read: once the pongs wait on the client, the
    server reads no more of it (its writes then block), instead of queueing a pong for each.
    (The client is cut off only after INMAIL_BODY_TIMEOUT of taking nothing: 10 s here.)"""
    with serve(mongodb_uri, tmp_path, INMAIL_BODY_TIMEOUT="10") as server:
        _flood_pings(server)


def _flood_pings(server: Served) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(10)
    sock.sendall(
        b"GET /graphql HTTP/1.1\r\nHost: inmail\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    )
    assert sock.recv(12) == b"HTTP/1.1 101"
    pings = masked_frame(b"x" * 100, opcode=0x9) * 500
    rss_before = server.rss_bytes()
    sock.settimeout(1.0)
    written, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < 4:
            sock.sendall(pings)
            written += 500
    except (TimeoutError, ConnectionError):
        pass  # the server stopped reading: the socket buffers are full
    grown = server.rss_bytes() - rss_before
    sock.close()

    assert grown < 32 * MIB, f"{grown / MIB:.0f} MiB more after {written} pings"
    still_serves(server)


WEBSOCKET_HANDSHAKE = (
    b"GET /graphql HTTP/1.1\r\nHost: inmail\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
)


def websocket_opened(server: Served) -> socket.socket:
    """A graphql-transport-ws socket past its handshake (the server says nothing until init)."""
    sock = server.connect()
    sock.sendall(WEBSOCKET_HANDSHAKE)
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def server_frames(sock: socket.socket) -> Iterator[tuple[int, bytes]]:
    """The frames the server sends (opcode, payload), until it closes."""
    data = b""
    while True:
        while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        size = data[1] & 0x7F
        assert size < 126, "the server's frames here are small"
        yield data[0] & 0x0F, data[2 : 2 + size]
        data = data[2 + size :]


def closed_with(sock: socket.socket) -> tuple[int, bytes]:
    """The code and reason of the server's close frame."""
    for opcode, payload in server_frames(sock):
        if opcode == 0x8:
            return int.from_bytes(payload[:2], "big"), payload[2:]
    raise AssertionError("the connection ended without a close frame")


@pytest.mark.parametrize(
    "frames",
    [
        # One message's first piece, then empty pieces of it without end: each under any size.
        masked_frame(b"{", 0x1, final=False) + masked_frame(b"", 0x0, final=False) * 40_000,
        masked_frame(b"", 0x9) * 40_000,  # pings, whose pongs a client may well read
    ],
    ids=["empty-pieces", "pings"],
)
def test_a_websocket_client_sending_frames_past_the_pace_is_closed(
    server: Served, frames: bytes
) -> None:
    """Every frame is parsed, at about 3 µs each, and the pace of messages counts none that does
    not end a message: one anonymous socket sending empty pieces took a whole core and held
    other requests up for seconds. Past WS_FRAME_BURST frames the socket is closed (1008) and
    nothing more it sends is parsed."""
    sock = websocket_opened(server)
    with contextlib.suppress(ConnectionError):
        sock.sendall(frames)  # 240 KB: the server stops reading part way

    code, reason = closed_with(sock)
    sock.close()

    assert code == 1008
    assert b"frames" in reason
    still_serves(server)


def test_large_messages_sent_in_small_pieces_are_read_whole(server: Served) -> None:
    """RFC 6455 lets a client cut a message into pieces of any size: two pings of 600 KB (each
    under the largest message, 1 MiB) in pieces of 256 bytes, 4,700 frames, are answered."""
    tokens = TokenService(TEST_SECRET, Settings().token_max_lifetime)
    sock = websocket_opened(server)
    token = tokens.mint("ops", Role.ADMIN)
    init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
    sock.sendall(masked_text_frame(json.dumps(init)))
    frames = server_frames(sock)
    assert json.loads(next(frames)[1])["type"] == "connection_ack"
    ping = json.dumps({"type": "ping", "payload": {"pad": "p" * 600_000}}).encode()
    pieces = [ping[start : start + 256] for start in range(0, len(ping), 256)]
    message = masked_frame(pieces[0], 0x1, final=False) + b"".join(
        masked_frame(piece, 0x0, final=piece is pieces[-1]) for piece in pieces[1:]
    )
    assert 2 * len(pieces) > 4_000
    sock.sendall(message * 2)

    answers = [next(frames), next(frames)]
    sock.close()

    assert [(opcode, json.loads(text)["type"]) for opcode, text in answers] == [(0x1, "pong")] * 2


def test_before_its_init_is_acknowledged_a_socket_sends_no_message_over_64_kib(
    server: Served,
) -> None:
    """A stranger's socket announcing a message of the largest size (1 MiB), then sending all
    but a byte of it, would hold it in memory as long as the socket lives: a thousand such
    sockets, a gigabyte. Until the server acknowledges its `connection_init` (whose token is
    at most 4 KiB), a message over 64 KiB closes the socket with 1009, on its length alone;
    after, messages up to the body limit are read (`test_large_messages_...`)."""
    sock = websocket_opened(server)
    announced = 1_048_560
    key = b"\x01\x02\x03\x04"
    sock.sendall(bytes([0x81, 0x80 | 127]) + announced.to_bytes(8, "big") + key + b"a" * 70_000)
    code, _ = closed_with(sock)
    sock.close()
    assert code == 1009

    sock = websocket_opened(server)
    padded = {"type": "connection_init", "payload": {"pad": "p" * 70_000}}
    sock.sendall(masked_text_frame(json.dumps(padded)))
    code, _ = closed_with(sock)
    sock.close()
    assert code == 1009
    still_serves(server)


def close_of(ws: ClientConnection) -> Close:
    """The server's close of `ws`, whatever it sent before."""
    with pytest.raises(ConnectionClosed) as closed:
        _read_on(ws)
    assert closed.value.rcvd is not None, closed.value
    return closed.value.rcvd


def _read_on(ws: ClientConnection) -> None:
    while True:
        ws.recv(timeout=10)


def test_a_close_quoting_a_long_client_text_is_cut_to_what_a_close_frame_holds(
    mongodb_uri: str, tmp_path: Path
) -> None:
    """Strawberry's closes quote a client's text: an unknown message type (4400), an operation
    id used twice (4409). Over 123 bytes, or holding a lone surrogate, the close failed in the
    transport: a traceback was logged and the socket dropped (1006). `serve` checks the log
    holds no traceback."""
    with serve(mongodb_uri, tmp_path) as served:
        url = f"ws://127.0.0.1:{served.port}/graphql"
        for protocol in ("graphql-transport-ws", "graphql-ws"):
            for kind in ("x" * 5000, "\U0001f600" * 200, "\ud800"):
                with connect(url, subprotocols=[Subprotocol(protocol)]) as ws:
                    ws.send(json.dumps({"type": kind}))
                    close = close_of(ws)
                assert close.code == 4400, (protocol, kind[:3])
                assert len(close.reason.encode()) <= 123
                if len(kind) > 1:
                    assert len(close.reason.encode()) >= 100, close.reason  # cut, not dropped


def test_a_websocket_handshake_offering_compression_is_answered_without_it(
    server: Served,
) -> None:
    """A compressed message inflates far past its size on the wire, and a read of the socket
    inflates all it holds: the service never agrees to permessage-deflate."""
    sock = server.connect()
    sock.sendall(
        b"GET /graphql HTTP/1.1\r\nHost: inmail\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        b"X-Request-Id: accepted-7\r\n\r\n"
    )
    sock.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    sock.close()

    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"sec-websocket-extensions" not in head.lower(), head
    assert b"\r\nx-request-id: accepted-7\r\n" in head.lower(), head


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (b"Sec-WebSocket-Version: 99\r\n", 400),
        (b"", 400),  # no Sec-WebSocket-Key
    ],
    ids=["unknown-version", "no-key"],
)
def test_a_websocket_handshake_refused_is_answered_in_json(
    server: Served, header: bytes, status: int
) -> None:
    key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" if header else b""
    version = header or b"Sec-WebSocket-Version: 13\r\n"
    sock = server.connect()
    sock.sendall(
        b"GET /graphql HTTP/1.1\r\nHost: inmail\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n" + key + version + b"\r\n"
    )
    answer = read_response(sock)
    sock.close()

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer
    assert b"content-type: application/json" in head.lower()
    (error,) = json.loads(body)["errors"]
    assert error["message"].startswith("Failed to open a WebSocket connection")
    assert error["extensions"]["code"]


def handshake_answer(
    served: Served, path: bytes = b"/graphql", more_headers: bytes = b""
) -> tuple[bytes, bytes]:
    """The head and the body of the answer to a websocket handshake to `path`."""
    sock = served.connect()
    sock.sendall(
        b"GET " + path + b" HTTP/1.1\r\nHost: inmail\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n" + more_headers + b"\r\n"
    )
    answer = read_response(sock)
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("path", [b"/nope", b"/graphql/", b"/healthz", b"/static/app/api.js"])
def test_a_websocket_handshake_to_a_path_served_no_websocket_is_a_404_in_json(
    server: Served, path: bytes
) -> None:
    head, body = handshake_answer(server, path)

    assert head.startswith(b"HTTP/1.1 404 "), head
    assert b"x-request-id: " in head.lower()
    (error,) = json.loads(body)["errors"]
    assert error["extensions"]["code"] == "NOT_FOUND"


def test_a_websocket_handshake_with_a_header_too_long_is_a_431_coded_as_over_http(
    server: Served,
) -> None:
    head, body = handshake_answer(server, more_headers=b"X-Pad: " + b"p" * 10_000 + b"\r\n")

    assert head.startswith(b"HTTP/1.1 431 "), head
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "HEADERS_TOO_LARGE"


def test_a_websocket_from_an_origin_not_allowed_is_refused_403_in_json(
    mongodb_uri: str, tmp_path: Path
) -> None:
    with serve(mongodb_uri, tmp_path, INMAIL_ALLOWED_ORIGINS="https://app.example") as served:
        head, body = handshake_answer(
            served,
            more_headers=b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n"
            b"Origin: https://evil.example\r\nX-Request-Id: refused-7\r\n",
        )

    assert head.startswith(b"HTTP/1.1 403 "), head
    assert b"content-type: application/json" in head.lower()
    assert b"\r\nx-request-id: refused-7\r\n" in head.lower(), head
    assert b"\r\nx-content-type-options: nosniff\r\n" in head.lower(), head
    assert json.loads(body)["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_a_websocket_client_that_takes_nothing_of_what_it_is_sent_is_dropped(
    mongodb_uri: str, tmp_path: Path
) -> None:
    """A query of some 8 MB over graphql-transport-ws to a client that reads none of it: once
    the socket buffers are full, the connection is aborted after the body timeout (2 s here).
    Before, the answer waited in the server for as long as the client kept the socket open."""
    with serve(mongodb_uri, tmp_path, INMAIL_BODY_TIMEOUT="2", **LARGE_ANSWER_LIMITS) as served:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes little unread
        sock.connect(("127.0.0.1", served.port))
        try:
            sock.sendall(
                b"GET /graphql HTTP/1.1\r\nHost: inmail\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            )
            sock.settimeout(10)
            opening = b""
            admin = TokenService(TEST_SECRET, Settings().token_max_lifetime).mint("ops", Role.ADMIN)
            init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {admin}"}}
            for awaited, message in ((b"\r\n\r\n", init), (b"ack", None)):
                while awaited not in opening:
                    chunk = sock.recv(4096)
                    assert chunk, opening
                    opening += chunk
                if message is not None:  # sent once the handshake is answered, as clients do
                    sock.sendall(masked_text_frame(json.dumps(message)))
            assert opening.startswith(b"HTTP/1.1 101 "), opening[:200]
            subscribe = {"id": "1", "type": "subscribe", "payload": {"query": LARGE_ANSWER}}
            sock.sendall(masked_text_frame(json.dumps(subscribe)))
            time.sleep(10)  # reading nothing, well past the body timeout
            received = read_response(sock, timeout=20)
        finally:
            sock.close()
        assert len(received) > 100_000, "the answer was being sent"
        assert b'"complete"' not in received, "it was kept for a client that read none of it"
        still_serves(served)
    assert "the client took nothing of what it was sent" in (tmp_path / "serve.log").read_text()


def test_a_keep_alive_connection_serves_requests_then_times_out_quietly(server: Served) -> None:
    sock = server.connect()
    try:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: inmail\r\n\r\n")
            sock.settimeout(10)
            answer = b""
            while not answer.endswith(b"\r\n\r\nok"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
        sock.settimeout(30)
        assert sock.recv(1024) == b"", "an idle keep-alive connection is closed in the end"
    finally:
        sock.close()


def test_a_websocket_message_over_the_body_limit_closes_the_socket_with_1009(
    server: Served, protocol: str
) -> None:
    url = f"ws://127.0.0.1:{server.port}/graphql"
    with connect(url, subprotocols=[Subprotocol(protocol)], max_size=None) as ws:
        message = json.dumps({"type": "connection_init", "payload": {"x": "y" * (2 * MIB)}})

        # Sent uncompressed (the server agrees to no compression), the message may still be
        # leaving when the server, having read its length, closes: on the send, then.
        def send_then_receive() -> None:
            ws.send(message)
            ws.recv(timeout=30)

        with pytest.raises(ConnectionClosed) as closed:
            send_then_receive()
    # The server read the frame's length and closed with 1009. When it closes with the rest of
    # the message unread, TCP may reset the connection before the client reads that frame.
    received = closed.value.rcvd
    assert received is None or received.code == 1009, received
    still_serves(server)


def test_connections_past_the_cap_are_refused_with_503_and_served_again_once_freed(
    mongodb_uri: str, tmp_path: Path
) -> None:
    with serve(mongodb_uri, tmp_path, INMAIL_MAX_CONNECTIONS="20") as served:
        held = [served.connect() for _ in range(20)]
        try:
            refused = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # until the server has accepted the 20
                extra = served.connect()
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: inmail\r\n\r\n")
                answer = read_response(extra)
                extra.close()
                if answer.startswith(b"HTTP/1.1 503 "):
                    refused = answer
                    break
                time.sleep(0.2)
            assert refused is not None, "a connection past the cap was served"
            assert b'"SERVICE_UNAVAILABLE"' in refused
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 30
        while served.get("/healthz")[0] != 200:
            assert time.monotonic() < deadline, "the server stays refusing after the flood"
            time.sleep(0.2)


def test_production_serves_no_graphiql_no_introspection_no_suggestions_and_no_public_metrics(
    mongodb_uri: str, tmp_path: Path
) -> None:
    with serve(mongodb_uri, tmp_path, INMAIL_ENV="production") as served:
        status, page = served.get("/graphql", headers={"Accept": "text/html"})
        assert b"<html" not in page.lower(), "GraphiQL is served in production"
        assert b"graphiql.min.js" not in page, "GraphiQL is served in production"
        assert status == 400
        assert "GraphiQL is off on this server" in json.loads(page)["errors"][0]["message"]

        schema = served.post("{ __schema { queryType { name } } }")
        assert schema.get("data") is None
        assert "introspection" in json.dumps(schema["errors"]).lower()

        typo = served.post("{ plan { type } }")
        message = json.dumps(typo["errors"])
        assert "Cannot query field 'plan' on type 'Query'." in message
        assert "Did you mean" not in message
        assert "plans" not in message

        enum_typo = served.post(
            'mutation { createMember(input: {name: "Ada", plan: BASIK}) { member { id } } }'
        )
        assert "Did you mean" not in json.dumps(enum_typo["errors"])
        assert "BASIC" not in json.dumps(enum_typo["errors"])

        assert served.get("/metrics")[0] == 404
        status, scraped = served.get("/metrics", port=served.metrics_port)
        assert status == 200
        assert b"inmail_graphql_requests_total" in scraped
        assert served.post("{ now }").get("errors") is None, "the API itself answers"


def test_development_keeps_suggestions_and_introspection_for_the_people_building_it(
    mongodb_uri: str, tmp_path: Path
) -> None:
    with serve(mongodb_uri, tmp_path) as served:
        typo = served.post("{ plan { type } }")
        assert "Did you mean 'plans'?" in json.dumps(typo["errors"])
        schema = served.post("{ __schema { queryType { name } } }")
        assert schema["data"] == {"__schema": {"queryType": {"name": "Query"}}}
        assert served.get("/metrics")[0] == 404, "metrics are on their own listener here too"


def test_the_metrics_listener_asks_for_the_token_when_one_is_set(
    mongodb_uri: str, tmp_path: Path
) -> None:
    token = "scraper-token-0123456789-0123456789"
    with serve(mongodb_uri, tmp_path, INMAIL_METRICS_TOKEN=token) as served:
        bearer = {"Authorization": f"Bearer {token}"}
        assert served.get("/metrics", port=served.metrics_port)[0] == 401
        assert served.get("/metrics", port=served.metrics_port, headers=bearer)[0] == 200
        assert served.get("/metrics")[0] == 401
        status, scraped = served.get("/metrics", headers=bearer)
        assert status == 200
        assert b"inmail_" in scraped
