"""Media types: which one an answer takes by the client's Accept (GraphQL over HTTP), and how a
POST's Content-Type is read, each header bounded before it is read."""

from __future__ import annotations

from email.message import Message as HeaderFields
from typing import Final

from cross_web import AsyncHTTPRequestAdapter

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
GRAPHQL_RESPONSE_UTF8 = f"{GRAPHQL_RESPONSE}; charset=utf-8"


MAX_CONTENT_TYPE_LENGTH: Final = 256
"""The longest Content-Type read: the email module's parser that reads it (Strawberry's and this
view's) takes time in the square of its length (60 KB: two seconds), and a real one is short."""

MAX_ACCEPT_RANGES: Final = 32
"""Media ranges of an Accept header that are read, and parameters of each (clients send a
handful): the rest are left unread, so a header of 60 KB costs what a short one does."""


def accepted_quality(accept: str, media_type: str) -> tuple[float, bool]:
    """The quality Accept gives `media_type` (by its most specific matching range among the
    first MAX_ACCEPT_RANGES), and whether a range names the type itself (not only `*/*` or
    `application/*`)."""
    kind = media_type.split("/", 1)[0]
    best: tuple[int, float] = (-1, 0.0)  # (specificity, quality)
    for entry in accept.split(",", MAX_ACCEPT_RANGES)[:MAX_ACCEPT_RANGES]:
        parts = entry.split(";", MAX_ACCEPT_RANGES)[:MAX_ACCEPT_RANGES]
        media_range, *parameters = (part.strip().lower() for part in parts)
        specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(media_range)
        if specificity is None or specificity < best[0]:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    quality = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        if specificity > best[0] or quality > best[1]:
            best = (specificity, quality)
    return best[1], best[0] == 2


def response_media_type(accept: str | None) -> str:
    """How /graphql answers a client sending this Accept header.

    `application/graphql-response+json` when the client names it with a quality above zero and
    at least that of `application/json`; otherwise `application/json`: for a missing Accept,
    for `*/*`, and for an Accept naming neither (legacy clients keep working).
    """
    if not accept:
        return JSON
    wanted, named = accepted_quality(accept, GRAPHQL_RESPONSE)
    legacy, _ = accepted_quality(accept, JSON)
    return GRAPHQL_RESPONSE if named and wanted > 0 and wanted >= legacy else JSON


class JsonRequest:
    """A POST's request, its Content-Type (found to be JSON, in any case) said in lower case."""

    def __init__(self, inner: AsyncHTTPRequestAdapter) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    @property
    def content_type(self) -> str:
        return JSON


# How a Content-Type may name UTF-8, the one charset a POST's body is read in.
UTF_8: Final = frozenset({"utf-8", "utf8"})


def media_type_and_charsets(content_type: str) -> tuple[str, list[str]]:
    """A Content-Type's media type, and every `charset` parameter it names, each as given
    (unquoted), in order: a parameter named twice is kept twice, not the last one alone."""
    header = HeaderFields()
    header["content-type"] = content_type
    media_type, *parameters = header.get_params(failobj=[("", "")])
    return media_type[0], [value for name, value in parameters if name.lower() == "charset"]
