"""/graphql as the GraphQL over HTTP specification describes it (SPEC 9).

A client accepting `application/graphql-response+json` gets it, with 400 and no `data` for a
request that never ran; everyone else gets `application/json` with 200, as before. Queries
work over GET; a mutation over GET is 405. The graphql-http audit (tests/http_audit) runs
against `inmail serve` and must pass every audit.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from strawberry.extensions import SchemaExtension

from harness.servers import ServiceProcess
from inmail.app import create_app
from inmail.endpoint.media_types import response_media_type
from inmail.endpoint.view import GraphQLApp
from inmail.processes import free_port
from inmail.resolvers.root import build_schema
from support import Api, graphql_error_codes, open_api, serving, session_service_env
from support import test_settings as service_settings

AUDIT_DIR = Path(__file__).resolve().parent.parent / "http_audit"
GRAPHQL_RESPONSE = "application/graphql-response+json"
WANTS_GRAPHQL_RESPONSE = {"Accept": GRAPHQL_RESPONSE}
LEGACY = {"Accept": "application/json"}
COMPOSE = "query Compose($to: ID!) { compose(recipientId: $to) { canSend } }"


@pytest.fixture(params=[WANTS_GRAPHQL_RESPONSE, LEGACY], ids=["modern", "legacy"])
def headers(request: pytest.FixtureRequest) -> dict[str, str]:
    """The Accept header of a client asking for graphql-response+json, then of one that does not."""
    accept: dict[str, str] = request.param
    return accept


async def get_graphql(
    api: Api,
    params: dict[str, str],
    accept: dict[str, str] = WANTS_GRAPHQL_RESPONSE,
    token: str | None = None,
) -> httpx.Response:
    """A GET of /graphql with these query parameters, under this Accept header and token."""
    bearer = {} if token is None else {"Authorization": f"Bearer {token}"}
    return await api.client.get("/graphql", params=params, headers={**accept, **bearer})


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0].strip()


# --- The graphql-http audit against `inmail serve` ---------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not installed: the GraphQL over HTTP audit needs Node.js and npm "
            "(Debian: apt-get install nodejs npm; .ci/run installs them)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def audit_script() -> list[str]:
    """`node audit.mjs`, with graphql-http as the lock file pins it. Installing is not the test's
    job (tests use no network): `make test` runs `npm ci` there first."""
    node = _tool("node")
    lock = AUDIT_DIR / "package-lock.json"
    stamp = AUDIT_DIR / "node_modules" / ".installed-from-lock"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != digest:
        pytest.fail(
            "graphql-http is not installed as tests/http_audit/package-lock.json pins it: run "
            "`make test` (or `make tests/http_audit/node_modules/.installed-from-lock`)",
            pytrace=False,
        )
    return [node, str(AUDIT_DIR / "audit.mjs")]


@pytest.fixture(scope="module")
def served(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """`inmail serve` on the session mongod, in development (introspection on: the audit asks
    for `__type`), stopped by its pid."""
    folder = tmp_path_factory.mktemp("graphql_over_http")
    env = session_service_env(mongodb_uri, folder / "data", INMAIL_METRICS_PORT=str(free_port()))
    with serving(ServiceProcess.serve(env, folder / "serve.log")) as server:
        yield server


def test_the_graphql_http_audit_passes_every_audit_against_inmail_serve(
    served: ServiceProcess, audit_script: list[str]
) -> None:
    run = subprocess.run(
        [*audit_script, f"{served.url}/graphql"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = run.stdout.splitlines()
    results = [line for line in lines if line.split(" ", 1)[0] in ("ok", "notice", "warn", "error")]
    failing = [line for line in results if not line.startswith("ok ")]
    assert len(results) >= 60, f"the audit did not run:\n{run.stdout}\n{run.stderr}"
    assert not [f for f in failing if f.startswith(("warn ", "error "))], "\n".join(failing)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    # The MAY items are the ones this endpoint chose (GET, 400 for bad parameters): held too.
    assert failing == [], "\n".join(failing)


def test_a_get_with_a_megabyte_query_is_refused_with_431_before_the_app_reads_it(
    served: ServiceProcess,
) -> None:
    query = quote("{ " + "now " * 250_000 + "}")
    request = f"GET /graphql?query={query} HTTP/1.1\r\nHost: inmail\r\n\r\n".encode()
    answer = b""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:

        def send() -> None:
            with contextlib.suppress(OSError):  # closed while still sending: also a refusal
                sock.sendall(request)

        sender = threading.Thread(target=send)
        sender.start()
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                answer += chunk
        sender.join(timeout=30)

    assert answer.startswith(b"HTTP/1.1 431 "), answer[:300]
    assert b'"HEADERS_TOO_LARGE"' in answer
    with httpx.Client(base_url=served.url, timeout=30) as client:
        after = client.get("/graphql", params={"query": "{ now }"}, headers=WANTS_GRAPHQL_RESPONSE)
    assert after.status_code == 200, "the server keeps answering GETs of a normal size"
    assert "now" in after.json()["data"]


def test_a_served_get_answers_in_the_accepted_media_type(served: ServiceProcess) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        modern = client.get("/graphql", params={"query": "{ now }"}, headers=WANTS_GRAPHQL_RESPONSE)
        legacy = client.get("/graphql", params={"query": "{ nope }"}, headers=LEGACY)
    assert (modern.status_code, media_type(modern)) == (200, GRAPHQL_RESPONSE)
    assert (legacy.status_code, media_type(legacy)) == (200, "application/json")
    assert legacy.json()["data"] is None


# --- Accept negotiation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("application/json", "application/json"),
        ("text/html", "application/json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "application/json"),
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        ("Application/GraphQL-Response+JSON; charset=utf-8", GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
        (f"application/json;q=1, {GRAPHQL_RESPONSE};q=0.5", "application/json"),
        (f"{GRAPHQL_RESPONSE};q=0, */*", "application/json"),
        (f"{GRAPHQL_RESPONSE};q=0.2, */*;q=0.1", GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE};q=0.2, */*", "application/json"),
        (f"{GRAPHQL_RESPONSE};q=banana", "application/json"),
    ],
)
def test_the_answer_takes_the_media_type_the_accept_header_ranks_highest(
    accept: str | None, expected: str
) -> None:
    assert response_media_type(accept) == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.9", "application/json"),
    ],
)
async def test_a_response_carries_the_negotiated_content_type(
    api: Api, accept: str | None, expected: str
) -> None:
    request = api.client.build_request("POST", "/graphql", json={"query": "{ now }"})
    if accept is None:
        del request.headers["accept"]
    else:
        request.headers["accept"] = accept
    response = await api.client.send(request)

    assert response.status_code == 200
    assert media_type(response) == expected
    assert "now" in response.json()["data"]


# --- Requests that never ran: 400 in graphql-response+json, 200 in application/json ------------


@dataclass(frozen=True)
class NeverRan:
    """A request that never runs, and the code its error carries, if any."""

    body: dict[str, Any]
    code: str | None

    async def post(self, api: Api, accept: dict[str, str]) -> httpx.Response:
        return await api.client.post("/graphql", json=self.body, headers=accept)


NEVER_RAN = {
    "a document that does not parse": NeverRan({"query": "{ now"}, "GRAPHQL_PARSE_FAILED"),
    "a document that does not validate": NeverRan(
        {"query": "{ nowAndForever }"}, "GRAPHQL_VALIDATION_FAILED"
    ),
    "variables that do not coerce": NeverRan(
        {"query": COMPOSE, "variables": {"to": None}}, "BAD_USER_INPUT"
    ),
    "too many aliases": NeverRan(
        {"query": "{ " + " ".join(f"a{i}: now" for i in range(40)) + " }"},
        "TOO_MANY_ALIASES",
    ),
    "a query over the cost limit": NeverRan(
        {
            "query": "{ viewer { conversations(first: 100) { nodes { sender { "
            "conversations(first: 100) { nodes { sender { conversations(first: 100) "
            "{ nodes { id } } } } } } } } } }"
        },
        "QUERY_TOO_COSTLY",
    ),
    "a subscription over HTTP": NeverRan(
        {"query": "subscription { balanceChanged { __typename } }"},
        "BAD_REQUEST",
    ),
    "a document of fragments alone": NeverRan(
        {"query": "fragment Clock on Query { now }"}, "GRAPHQL_VALIDATION_FAILED"
    ),
    "a document of types alone": NeverRan(
        {"query": "type Clock { now: String } extend type Query { clock: Clock }"},
        "GRAPHQL_VALIDATION_FAILED",
    ),
}


@pytest.fixture(params=list(NEVER_RAN.values()), ids=list(NEVER_RAN))
def never_ran(request: pytest.FixtureRequest) -> NeverRan:
    case: NeverRan = request.param
    return case


async def test_a_request_that_never_ran_is_a_400_without_data_for_graphql_response_json(
    api: Api, never_ran: NeverRan
) -> None:
    response = await never_ran.post(api, WANTS_GRAPHQL_RESPONSE)

    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    answer = response.json()
    assert "data" not in answer
    assert answer["errors"]
    assert all(error["message"] for error in answer["errors"])
    assert graphql_error_codes(answer) == [never_ran.code], answer
    assert response.headers["x-request-id"]


async def test_a_request_that_never_ran_stays_a_200_with_null_data_for_application_json(
    api: Api, never_ran: NeverRan
) -> None:
    response = await never_ran.post(api, LEGACY)

    assert response.status_code == 200, response.text
    assert media_type(response) == "application/json"
    answer = response.json()
    assert answer["data"] is None
    assert graphql_error_codes(answer) == [never_ran.code], answer


async def test_a_field_error_keeps_200_and_its_data_for_graphql_response_json(api: Api) -> None:
    response = await api.client.post(
        "/graphql", json={"query": "{ now viewer { id } }"}, headers=WANTS_GRAPHQL_RESPONSE
    )

    assert response.status_code == 200
    answer = response.json()
    assert answer["data"]["viewer"] is None
    assert answer["data"]["now"]
    assert graphql_error_codes(answer) == ["UNAUTHENTICATED"]


async def test_an_unknown_operation_name_is_a_400_naming_it(
    api: Api, headers: dict[str, str]
) -> None:
    response = await api.client.post(
        "/graphql",
        json={
            "query": "query Clock { now } query Plans { plans { type } }",
            "operationName": "Tea",
        },
        headers=headers,
    )

    assert response.status_code == 400
    assert 'Unknown operation named "Tea"' in response.json()["errors"][0]["message"]
    assert graphql_error_codes(response.json()) == ["BAD_REQUEST"]


async def test_an_unknown_operation_name_is_quoted_briefly_however_long(
    api: Api, headers: dict[str, str]
) -> None:
    """The name is the client's, as long as its body: the refusal is not as large again."""
    response = await api.client.post(
        "/graphql", json={"query": "{ now }", "operationName": "N" * 500_000}, headers=headers
    )

    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["message"] == f'Unknown operation named "{"N" * 100}…".'
    assert len(response.content) < 1_000


async def answer_without_logging_an_error(
    api: Api, body: bytes, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> httpx.Response:
    """A raw JSON body POSTed; the answer is JSON in the media type asked for, and nothing was
    logged as an error."""
    with caplog.at_level(logging.WARNING):
        response = await api.client.post(
            "/graphql", content=body, headers={**headers, "Content-Type": "application/json"}
        )
    assert media_type(response) == headers["Accept"]
    errors_logged = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors_logged == [], [record.getMessage() for record in errors_logged]
    return response


async def test_an_unknown_operation_name_holding_a_lone_surrogate_is_a_400_escaping_it(
    api: Api, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"query": "{ now }", "operationName": "\\ud800"}'

    response = await answer_without_logging_an_error(api, body, headers, caplog)

    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["message"] == 'Unknown operation named "\ud800".'
    assert graphql_error_codes(response.json()) == ["BAD_REQUEST"]


async def test_a_lone_surrogate_in_a_document_naming_two_operation_words_is_a_syntax_error(
    api: Api, headers: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"query": "query A { now } query B { now } # \\ud800"}'

    response = await answer_without_logging_an_error(api, body, headers, caplog)

    assert response.status_code in (200, 400), response.text
    assert "Invalid character" in response.json()["errors"][0]["message"]


SEVERAL_OPERATIONS = {
    "two queries": "query Clock { now } query Plans { plans { type } }",
    "a mutation first": 'mutation Enrol { createMember(input: {name: "Mallory", plan: BASIC}) '
    "{ member { id } } } query Clock { now }",
}


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize(
    "document", list(SEVERAL_OPERATIONS.values()), ids=list(SEVERAL_OPERATIONS)
)
async def test_several_operations_without_an_operation_name_are_a_400_and_none_runs(
    api: Api, headers: dict[str, str], method: str, document: str
) -> None:
    members = await api.container.mongo.c.members.count_documents({})
    bearer = {"Authorization": f"Bearer {api.admin}"}
    if method == "POST":
        response = await api.client.post(
            "/graphql", json={"query": document}, headers={**headers, **bearer}
        )
    else:
        response = await get_graphql(api, {"query": document}, headers, token=api.admin)

    assert response.status_code == 400, response.text
    assert media_type(response) == headers["Accept"]
    answer = response.json()
    assert "data" not in answer
    assert answer["errors"][0]["message"] == (
        "Must provide operation name if query contains multiple operations."
    )
    assert graphql_error_codes(answer) == ["BAD_REQUEST"]
    assert await api.container.mongo.c.members.count_documents({}) == members


@pytest.mark.parametrize(
    "document",
    [
        "query Plans { plans { ...Priced } } fragment Priced on Plan { type }",
        "# a query, and another query\nquery Clock { now }",
        'query Clock { now } # mutation Enrol { createMember(input: {name: "query"}) }',
    ],
    ids=["with a fragment", "keywords in a comment", "an operation in a comment"],
)
async def test_one_operation_without_an_operation_name_still_runs(api: Api, document: str) -> None:
    response = await api.client.post(
        "/graphql", json={"query": document}, headers=WANTS_GRAPHQL_RESPONSE
    )
    assert response.status_code == 200, response.text
    assert response.json().get("errors") is None, response.text


async def test_an_empty_operation_name_is_none_over_post_as_over_get(api: Api) -> None:
    posted = await api.client.post(
        "/graphql", json={"query": "{ now }", "operationName": ""}, headers=WANTS_GRAPHQL_RESPONSE
    )
    got = await api.client.get(
        "/graphql", params={"query": "{ now }", "operationName": ""}, headers=WANTS_GRAPHQL_RESPONSE
    )
    for response in (posted, got):
        assert response.status_code == 200, response.text
        assert response.json()["data"]["now"], response.text


async def test_several_operations_with_an_operation_name_run_the_one_named(api: Api) -> None:
    response = await api.client.post(
        "/graphql",
        json={"query": SEVERAL_OPERATIONS["two queries"], "operationName": "Plans"},
        headers=WANTS_GRAPHQL_RESPONSE,
    )
    assert response.status_code == 200, response.text
    assert list(response.json()["data"]) == ["plans"]


# --- Methods and paths -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_a_method_other_than_get_and_post_is_a_json_405_allowing_them(
    api: Api, headers: dict[str, str], method: str
) -> None:
    response = await api.client.request(
        method, "/graphql", content=b'{"query": "{ now }"}', headers=headers
    )

    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "GET, POST"
    assert media_type(response) == headers["Accept"]
    assert graphql_error_codes(response.json()) == ["METHOD_NOT_ALLOWED"]
    assert response.headers["x-request-id"]


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
@pytest.mark.parametrize("path", ["/nope", "/graphql/", "/static"])
async def test_an_unknown_path_is_a_json_404(api: Api, method: str, path: str) -> None:
    """A path with a slash too many is no route either: not a redirect, whose Location would
    be built from the client's own Host header."""
    response = await api.client.request(
        method, path, headers={"Accept": "text/html", "Host": "evil.example"}
    )

    assert response.status_code == 404
    assert media_type(response) == "application/json"
    assert graphql_error_codes(response.json()) == ["NOT_FOUND"]
    assert response.headers["x-request-id"]


async def test_a_failure_no_handler_expected_is_a_json_500_telling_nothing(api: Api) -> None:
    async def fail(request: Request) -> Response:
        raise RuntimeError("a secret detail")

    app = create_app(api.container.settings, container=api.container)
    app.router.routes.insert(0, Route("/fail", fail))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/fail")

    assert response.status_code == 500
    assert media_type(response) == "application/json"
    assert graphql_error_codes(response.json()) == ["INTERNAL_SERVER_ERROR"]
    assert "secret" not in response.text


async def test_a_method_another_route_does_not_serve_is_a_json_405(api: Api) -> None:
    response = await api.client.post("/healthz")

    assert response.status_code == 405
    assert sorted(response.headers["allow"].split(", ")) == ["GET", "HEAD"]
    assert media_type(response) == "application/json"
    assert graphql_error_codes(response.json()) == ["METHOD_NOT_ALLOWED"]


# --- GET ---------------------------------------------------------------------------------------


async def test_a_query_over_get_runs_with_its_variables_as_a_json_string(
    api: Api, headers: dict[str, str]
) -> None:
    ada = await api.create_member("Ada Lovelace")
    grace = await api.create_member("Grace Hopper")

    compose = {
        "query": COMPOSE,
        "operationName": "Compose",
        "variables": json.dumps({"to": grace.id}),
        "extensions": json.dumps({"client": "inbox-widget"}),
    }
    response = await get_graphql(api, compose, headers, token=ada.token)

    assert response.status_code == 200, response.text
    assert media_type(response) == headers["Accept"]
    answer = response.json()
    assert answer.get("errors") is None, answer
    assert isinstance(answer["data"]["compose"]["canSend"], bool)


@pytest.mark.parametrize("empty", ["", "null"])
async def test_a_get_whose_variables_and_extensions_are_null_runs_as_without_them(
    api: Api, headers: dict[str, str], empty: str
) -> None:
    """As a POST body may say `"variables": null`, a GET may say `variables=null`."""
    params = {"query": "{ now }", "variables": empty, "extensions": empty}
    response = await get_graphql(api, params, headers)

    assert response.status_code == 200, response.text
    assert "now" in response.json()["data"]


PERSISTED = {"persistedQuery": {"version": 1, "sha256Hash": "ecf4edb46db40b5132295c0291d62fb6"}}


async def test_a_persisted_query_hash_alone_is_refused_as_apollo_reads_unsupported(
    api: Api, headers: dict[str, str]
) -> None:
    """Apollo Client's persisted-query link sends a document's hash first, and sends the
    document itself from then on once told this code: any other answer fails every request."""
    posted = await api.client.post("/graphql", json={"extensions": PERSISTED}, headers=headers)
    got = await get_graphql(api, {"extensions": json.dumps(PERSISTED)}, headers)
    with_document = await api.client.post(
        "/graphql", json={"query": "{ now }", "extensions": PERSISTED}, headers=headers
    )

    for refused in (posted, got):
        assert refused.status_code == 400
        assert refused.json()["errors"] == [
            {
                "message": "PersistedQueryNotSupported",
                "extensions": {"code": "PERSISTED_QUERY_NOT_SUPPORTED"},
            }
        ]
    assert with_document.status_code == 200
    assert "now" in with_document.json()["data"]


async def test_a_mutation_over_get_is_a_405_allowing_post_and_creates_nothing(
    api: Api, headers: dict[str, str]
) -> None:
    members = await api.container.mongo.c.members.count_documents({})

    create = 'mutation { createMember(input: {name: "Mallory", plan: BASIC}) { member { id } } }'
    response = await get_graphql(api, {"query": create}, headers, token=api.admin)

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert media_type(response) == headers["Accept"]
    assert graphql_error_codes(response.json()) == ["METHOD_NOT_ALLOWED"]
    assert await api.container.mongo.c.members.count_documents({}) == members


async def test_a_mutation_chosen_by_operation_name_over_get_is_a_405_too(api: Api) -> None:
    document = "query Clock { now } mutation Mark { markNotificationsRead { ok } }"
    response = await get_graphql(api, {"query": document, "operationName": "Mark"})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({}, "No GraphQL query"),
        ({"query": ""}, "No GraphQL query"),
        ({"query": "{ now }", "variables": "[1, 2]"}, "`variables` must be an object"),
        ({"query": "{ now }", "variables": "{not json"}, "parse the `variables` parameter"),
        (
            {"query": "{ now }", "variables": '{"v": ' + "[" * 5000 + "]" * 5000 + "}"},
            "parse the `variables` parameter as JSON: the JSON is nested",
        ),
        ({"query": "{ now }", "extensions": '"a string"'}, "`extensions` must be an object"),
        ({"query": "{ now }", "extensions": "{"}, "parse the `extensions` parameter"),
    ],
    ids=[
        "no query",
        "empty query",
        "list variables",
        "broken json",
        "deep json",
        "string ext",
        "broken ext",
    ],
)
async def test_a_get_that_is_no_graphql_request_is_a_400_with_a_graphql_body(
    api: Api, params: dict[str, str], why: str
) -> None:
    response = await get_graphql(api, params)

    assert response.status_code == 400, response.text
    assert media_type(response) == GRAPHQL_RESPONSE
    assert why in response.json()["errors"][0]["message"]
    assert graphql_error_codes(response.json()) == ["BAD_REQUEST"]
    assert response.headers["x-request-id"]


async def test_an_empty_variables_parameter_over_get_counts_as_none(api: Api) -> None:
    response = await get_graphql(api, {"query": "{ now }", "variables": ""})
    assert response.status_code == 200, response.text
    assert "now" in response.json()["data"]


async def test_a_lone_surrogate_in_get_variables_is_refused_as_input_like_over_post(
    api: Api,
) -> None:
    ada = await api.create_member("Ada Lovelace")
    lone_surrogate = '{"to": "\\ud800"}'
    response = await get_graphql(
        api, {"query": COMPOSE, "variables": lone_surrogate}, token=ada.token
    )
    assert "Unexpected error." not in response.text
    assert graphql_error_codes(response.json()) == ["BAD_USER_INPUT"]


async def test_production_closes_introspection_over_get_as_over_post(
    mongodb_uri: str, db_name: str
) -> None:
    settings = service_settings(introspection=False)
    async with open_api(mongodb_uri, db_name, settings) as production:
        response = await production.client.get(
            "/graphql",
            params={"query": "{ __schema { queryType { name } } }"},
            headers=WANTS_GRAPHQL_RESPONSE,
        )
    assert response.status_code == 400
    assert "data" not in response.json()
    assert "introspection" in response.text.lower()


async def test_a_browser_asking_for_the_page_still_gets_graphiql(api: Api) -> None:
    response = await api.browse()
    assert response.status_code == 200
    assert media_type(response) == "text/html"


@pytest.mark.parametrize(
    ("accept", "page"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # a browser
        ("*/*", False),  # curl: JSON, as every API client gets
        ("text/html;q=0.1, application/json", False),
        ("application/json, text/html;q=0", False),
        ("application/json;q=0.5, text/html", True),
    ],
)
async def test_graphiql_is_served_only_where_accept_ranks_html_first(
    api: Api, accept: str, page: bool
) -> None:
    response = await api.client.get("/graphql", headers={"Accept": accept})

    assert media_type(response) == ("text/html" if page else "application/json")
    assert response.status_code == (200 if page else 400)
    assert "Accept" in response.headers["vary"]  # one URL, answers that differ by Accept


async def test_with_graphiql_off_a_browser_get_without_a_query_is_a_400(
    mongodb_uri: str, db_name: str
) -> None:
    async with open_api(mongodb_uri, db_name, service_settings(graphiql=False)) as api:
        response = await api.browse()
    assert response.status_code == 400
    assert graphql_error_codes(response.json()) == ["BAD_REQUEST"]


async def test_a_browser_get_with_a_query_gets_the_json_answer(api: Api) -> None:
    response = await api.browse(params={"query": "{ now }"})
    assert response.status_code == 200
    assert media_type(response) == "application/json"
    assert "now" in response.json()["data"]


# --- browser pages on other origins (CORS) ------------------------------------------------------

APP = "https://app.example"


async def preflight(api: Api, origin: str, method: str = "POST") -> httpx.Response:
    return await api.client.options(
        "/graphql",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


async def test_a_page_on_a_listed_origin_may_call_the_api_and_read_its_answers(
    mongodb_uri: str, db_name: str
) -> None:
    settings = service_settings(allowed_origins=(APP,))
    async with open_api(mongodb_uri, db_name, settings) as api:
        asked = await preflight(api, APP)
        answered = await api.client.post(
            "/graphql", json={"query": "{ now }"}, headers={"Origin": APP}
        )
        refused = await preflight(api, "https://evil.example")
        unread = await api.client.post(
            "/graphql", json={"query": "{ now }"}, headers={"Origin": "https://evil.example"}
        )
        put = await preflight(api, APP, "PUT")

    assert asked.status_code == 204
    assert asked.headers["access-control-allow-origin"] == APP
    assert asked.headers["access-control-allow-methods"] == "GET, POST"
    assert {"authorization", "content-type"} <= {
        h.strip() for h in asked.headers["access-control-allow-headers"].split(",")
    }
    assert "access-control-allow-credentials" not in asked.headers  # tokens, never cookies
    assert answered.status_code == 200
    assert answered.headers["access-control-allow-origin"] == APP
    assert "x-request-id" in answered.headers["access-control-expose-headers"]
    assert "Origin" in answered.headers["vary"]
    # Another origin: no CORS headers, so its page can read nothing (the answer itself is as
    # any client's: a page cannot attach a token it does not have).
    assert refused.status_code == 403
    assert graphql_error_codes(refused.json()) == ["FORBIDDEN"]
    assert "access-control-allow-origin" not in refused.headers
    assert "access-control-allow-origin" not in unread.headers
    assert put.status_code == 403


async def test_a_preflight_grants_the_header_names_it_asks_for_and_only_those(api: Api) -> None:
    asked = await api.client.options(
        "/graphql",
        headers={
            "Origin": APP,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, traceparent,sentry-trace, "
            "not a name, x:y, " + ", ".join(f"x-h{i}" for i in range(60)),
        },
    )

    granted = [h.strip() for h in asked.headers["access-control-allow-headers"].split(",")]
    assert asked.status_code == 204
    assert {"authorization", "content-type", "traceparent", "sentry-trace", "x-h0"} <= set(granted)
    assert "not a name" not in granted
    assert "x:y" not in granted
    assert "x-h59" not in granted  # a preflight names at most fifty
    assert len(granted) == len(set(granted))
    assert "Access-Control-Request-Headers" in asked.headers["vary"]


async def test_with_every_origin_allowed_answers_say_so_to_any_page(api: Api) -> None:
    asked = await preflight(api, "https://anywhere.example")
    answered = await api.client.post(
        "/graphql", json={"query": "{ now }"}, headers={"Origin": "https://anywhere.example"}
    )
    plain = await api.client.options("/graphql")  # not a preflight: a method not served

    assert asked.status_code == 204
    assert asked.headers["access-control-allow-origin"] == "*"
    assert answered.headers["access-control-allow-origin"] == "*"
    assert plain.status_code == 405


# --- answers too large to send ---------------------------------------------------------------

PLANS_TEN_TIMES = (
    "{ "
    + " ".join(
        f"p{i}: plans {{ type monthlyAllotment maxBalance canPurchaseCredits }}" for i in range(10)
    )
    + " }"
)


async def test_an_answer_over_the_response_limit_is_one_error_instead(
    mongodb_uri: str, db_name: str
) -> None:
    """The cost limit counts objects, not their text: a small document may ask for a huge
    answer (one large thread named many times). Past INMAIL_MAX_RESPONSE_BYTES (2,000 bytes
    here) it is replaced by one error; smaller answers are as ever."""
    settings = service_settings(max_response_bytes=2000)
    async with open_api(mongodb_uri, db_name, settings) as api:
        big = await api.raw(PLANS_TEN_TIMES)
        small = await api.raw("{ now plans { type } }")
        strict = await api.client.post(
            "/graphql", json={"query": PLANS_TEN_TIMES}, headers={"Accept": GRAPHQL_RESPONSE}
        )
        ada = await api.create_member("Ada Lovelace", "PREMIUM_BUSINESS")
        grace = await api.create_member("Grace Hopper")
        before = await api.balance(ada)
        sent = await api.raw(
            "mutation($i: SendInMailInput!) { sendInMail(input: $i) "
            "{ conversation { messages { body } subject } again: conversation { subject "
            "messages { body } } errors { code } } }",
            {
                "i": {
                    "recipientId": grace.id,
                    "subject": "Hi",
                    "body": "x" * 1990,
                    "idempotencyKey": "k-1",
                }
            },
            ada.token,
        )
        balance = await api.balance(ada)

    assert graphql_error_codes(big) == ["RESPONSE_TOO_LARGE"]
    assert "over the 2000" in big["errors"][0]["message"]
    assert big["data"] is None  # it ran; `data` says so
    assert "applied" not in big["errors"][0]["extensions"]
    # graphql-response+json answers without `data` only with a 4xx or 5xx: here it has one.
    assert strict.status_code == 200
    assert strict.json()["data"] is None
    assert small["data"]["now"]
    assert len(small["data"]["plans"]) == 6
    # A mutation's answer replaced so says it was applied: a client does not send it again.
    assert sent["data"] is None
    assert sent["errors"][0]["extensions"] == {"code": "RESPONSE_TOO_LARGE", "applied": True}
    assert sent["errors"][0]["message"].startswith("The mutation was applied, but its answer")
    assert balance == before - 1  # it was


# --- POST bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_a_post_that_is_not_json_is_a_415_with_a_graphql_body(
    api: Api, content_type: str | None
) -> None:
    headers = dict(WANTS_GRAPHQL_RESPONSE)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await api.client.post("/graphql", content=b'{"query": "{ now }"}', headers=headers)

    assert response.status_code == 415
    assert media_type(response) == GRAPHQL_RESPONSE
    assert graphql_error_codes(response.json()) == ["UNSUPPORTED_MEDIA_TYPE"]


@pytest.mark.parametrize("second", ["text/plain", "application/json"])
async def test_a_post_giving_its_content_type_twice_is_a_400_and_does_not_run(
    api: Api, second: str
) -> None:
    members = await api.container.mongo.c.members.count_documents({})
    body = json.dumps(
        {
            "query": 'mutation { createMember(input: {name: "Mallory", plan: BASIC}) '
            "{ member { id } } }"
        }
    )
    headers = [
        *WANTS_GRAPHQL_RESPONSE.items(),
        ("Authorization", f"Bearer {api.admin}"),
        ("Content-Type", "application/json"),
        ("Content-Type", second),
    ]
    response = await api.client.post("/graphql", content=body.encode(), headers=headers)

    assert response.status_code == 400, response.text
    assert "one Content-Type header" in response.json()["errors"][0]["message"]
    assert await api.container.mongo.c.members.count_documents({}) == members


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate", "GZIP"])
async def test_a_compressed_post_is_a_415_read_no_further(api: Api, coding: str) -> None:
    body = gzip.compress(b'{"query": "{ now }"}')
    headers = {
        **WANTS_GRAPHQL_RESPONSE,
        "Content-Type": "application/json",
        "Content-Encoding": coding,
    }

    response = await api.client.post("/graphql", content=body, headers=headers)
    plain = await api.client.post(
        "/graphql",
        content=b'{"query": "{ now }"}',
        headers={"Content-Type": "application/json", "Content-Encoding": "identity"},
    )

    assert response.status_code == 415
    assert graphql_error_codes(response.json()) == ["UNSUPPORTED_MEDIA_TYPE"]
    assert "must not be compressed" in response.json()["errors"][0]["message"]
    assert plain.status_code == 200
    assert plain.json()["data"]["now"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "Application/JSON", "APPLICATION/JSON; Charset=UTF-8"],
)
async def test_a_json_post_is_served_whatever_the_case_and_charset_of_its_type(
    api: Api, content_type: str
) -> None:
    """A media type is case-insensitive (RFC 9110 8.3.1)."""
    response = await api.client.post(
        "/graphql",
        content=b'{"query": "{ now }"}',
        headers={**WANTS_GRAPHQL_RESPONSE, "Content-Type": content_type},
    )
    assert response.status_code == 200
    assert "now" in response.json()["data"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'"a string"', "must be a JSON object, not a string"),
        (b"42", "must be a JSON object, not a number"),
        (b"null", "must be a JSON object, not null"),
        (b"true", "must be a JSON object, not a boolean"),
        (b"[]", "Batching is not enabled"),
        (b'[{"query": "{ now }"}]', "Batching is not enabled"),
        (b"", "Unable to parse request body as JSON: Expecting value"),
        (b"{ now", "Unable to parse request body as JSON: Expecting property name"),
        (b"\xff\xfe\xfd", "Unable to parse request body as JSON: the body is not UTF-8 text"),
        (b"[" * 65 + b"]" * 65, "Unable to parse request body as JSON: the JSON is nested"),
    ],
    ids=[
        "string",
        "number",
        "null",
        "boolean",
        "empty batch",
        "batch",
        "no body",
        "not json",
        "not utf-8",
        "too deep",
    ],
)
async def test_a_body_that_is_not_one_request_object_is_a_400_saying_why(
    api: Api, content: bytes, why: str, headers: dict[str, str]
) -> None:
    response = await api.client.post(
        "/graphql", content=content, headers={**headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert media_type(response) == headers["Accept"]
    assert graphql_error_codes(response.json()) == ["BAD_REQUEST"]
    assert "data" not in response.json()
    assert why in response.json()["errors"][0]["message"]


@pytest.mark.parametrize("name", [{"obj": "ect"}, 0, False, ["Clock"]], ids=repr)
async def test_an_operation_name_that_is_not_a_string_is_a_400(api: Api, name: object) -> None:
    response = await api.client.post(
        "/graphql", json={"query": "query Clock { now }", "operationName": name}
    )
    assert response.status_code == 400
    assert "operationName" in response.json()["errors"][0]["message"]


class _BrokenBeforeExecution(SchemaExtension):
    """A failure of the service itself before any resolver runs (a bug, masked)."""

    def on_execute(self) -> Iterator[None]:
        raise RuntimeError("the ledger index vanished")
        yield  # pragma: no cover


@pytest.mark.parametrize(
    ("headers", "status"), [(WANTS_GRAPHQL_RESPONSE, 500), (LEGACY, 200)], ids=["modern", "legacy"]
)
async def test_a_masked_failure_before_execution_is_a_500_not_the_clients_fault(
    api: Api, headers: dict[str, str], status: int, caplog: pytest.LogCaptureFixture
) -> None:
    schema = build_schema(api.container.settings)
    schema.extensions = (*schema.extensions, _BrokenBeforeExecution)
    app = GraphQLApp(schema, api.container)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await client.post("/graphql", json={"query": "{ now }"}, headers=headers)

    assert response.status_code == status
    assert media_type(response) == headers["Accept"]
    assert response.json()["errors"][0]["message"] == "Unexpected error."
    assert "ledger index" not in response.text


async def test_a_reply_is_compact_json_in_utf8_and_a_lone_surrogate_in_it_is_escaped(
    api: Api,
) -> None:
    app = GraphQLApp(build_schema(api.container.settings), api.container)
    reply = {"data": {"viewer": {"name": "Ada Lövelace 漢字", "seen": [1, 2.5, None, True]}}}
    encoded = app.encode_json(reply)
    assert isinstance(encoded, str)  # websocket messages are sent as text frames
    assert json.loads(encoded) == reply
    assert encoded == json.dumps(reply, separators=(",", ":"), ensure_ascii=False)
    echoed = {"errors": [{"message": "Variable '$to' got invalid value '\ud800'."}]}
    assert json.loads(app.encode_json(echoed)) == echoed
