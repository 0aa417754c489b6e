"""Cross-origin requests from browser pages (INMAIL_ALLOWED_ORIGINS): the headers of an answer
and of a preflight. Bearer tokens travel in a header, never in cookies: credentials are never
allowed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response

# What a browser page on an allowed origin may send and read (bearer tokens, never cookies).
_CORS_METHODS: Final = ("GET", "POST")
_CORS_REQUEST_HEADERS: Final = ("authorization", "content-type", "accept", "x-request-id")
# A header name (RFC 9110 token); a preflight may name at most this many.
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_CORS_MOST_REQUEST_HEADERS: Final = 50
_CORS_EXPOSED_HEADERS: Final = "x-request-id, retry-after"
CORS_MAX_AGE: Final = 600  # seconds a browser may keep a preflight's answer


def cross_origin_headers(origin: str | None, allowed: Sequence[str]) -> dict[str, str] | None:
    """The CORS headers of an answer to a page on `origin`; None when there is no Origin or
    INMAIL_ALLOWED_ORIGINS does not list it (the browser then keeps the answer from the page).
    Credentials are never allowed: tokens travel in the Authorization header, not cookies."""
    if origin is None:
        return None
    if "*" in allowed:
        granted = "*"
    elif origin.rstrip("/") in allowed:
        granted = origin
    else:
        return None
    return {
        "access-control-allow-origin": granted,
        "access-control-expose-headers": _CORS_EXPOSED_HEADERS,
    }


def cors_request_headers(asked: str | None) -> str:
    """The request headers a page on an allowed origin may send: the service's own and every
    other header name its preflight asks for (tracing headers such as `traceparent` and
    `sentry-trace`, a client's own such as `apollographql-client-name`), since no request
    carries credentials a header could add to; names that are not header names, and names
    past the first fifty, are not granted."""
    granted = list(_CORS_REQUEST_HEADERS)
    for name in (asked or "").lower().split(",")[:_CORS_MOST_REQUEST_HEADERS]:
        name = name.strip()
        if name not in granted and _HEADER_NAME.fullmatch(name):
            granted.append(name)
    return ", ".join(granted)


def preflight(request: Request, cors: dict[str, str] | None) -> Response:
    """A browser asking whether a page on its origin may send this request: yes (204) for an
    allowed origin and GET or POST, else a 403 with no CORS headers (the browser then sends
    nothing)."""
    method = request.headers["access-control-request-method"].strip().upper()
    if cors is None or method not in _CORS_METHODS:
        raise HTTPException(
            403, "This origin may not call the API from a browser page (INMAIL_ALLOWED_ORIGINS)."
        )
    asked = request.headers.get("access-control-request-headers")
    return Response(
        status_code=204,
        headers={
            "access-control-allow-methods": ", ".join(_CORS_METHODS),
            "access-control-allow-headers": cors_request_headers(asked),
            "access-control-max-age": str(CORS_MAX_AGE),
            "vary": "Access-Control-Request-Method, Access-Control-Request-Headers",
        },
    )
