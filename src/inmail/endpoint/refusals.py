"""A request refused before any operation ran: a GraphQL response with one coded error, in the
media type the client accepts."""

from __future__ import annotations

from collections.abc import Callable

from cross_web import HTTPException
from starlette.responses import Response
from strawberry.schema.exceptions import InvalidOperationTypeError

from inmail.endpoint.media_types import GRAPHQL_RESPONSE, GRAPHQL_RESPONSE_UTF8, JSON

_HTTP_CODES = {
    400: "BAD_REQUEST",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


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


def refusal_response(
    exc: HTTPException, media_type: str, encode: Callable[[object], str]
) -> Response:
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
        media_type=GRAPHQL_RESPONSE_UTF8 if media_type == GRAPHQL_RESPONSE else JSON,
    )
