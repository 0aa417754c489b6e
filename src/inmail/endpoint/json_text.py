"""JSON in and out, for request bodies, GET parameters and websocket messages: read in UTF-8 alone,
bounded in nesting and brackets before it is parsed, refusing a key named twice and numbers JSON
has not; written compactly by orjson, or by the standard library where orjson refuses."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import accumulate
from typing import Final, NoReturn

import orjson


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A websocket message that is not JSON at all (or nested too deep to read), and why."""

    reason: str


MAX_JSON_DEPTH: Final = 64
"""Deepest nesting of arrays and objects in a request body or websocket message: far more than
any operation's variables need. It is checked before the JSON is parsed, so the refusal does not
rest on the interpreter's recursion limit (which the process, or a library in it, may raise)."""

MAX_JSON_BRACKETS: Final = 10_000
"""Most opening brackets (`[` and `{`, in strings too) in a request body or websocket message.
Reading one costs a list or dict each: a mebibyte of `[],` took 140 ms to read and held 350,000
lists. A document's braces are bounded by its tokens, and variables' lists by 1,000 values:
no request the API serves comes near it."""

# A JSON string, matched from its opening quote in one pass: to its closing quote, or, where it
# never closes (no JSON then), to the end, a last lone backslash included. So it matches at every
# quote it starts from, and the text is read once, whatever it holds.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP: Final = {"[": 1, "{": 1, "]": -1, "}": -1}


def nested_deeper_than(text: str, limit: int) -> bool:
    """Whether JSON text nests arrays and objects more than `limit` deep, read in linear time
    without parsing it (for text that is no JSON, an answer of no consequence)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))  # the brackets outside strings
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def json_kind(value: object) -> str:
    """What a decoded JSON value is, in JSON's words: "a string", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a string" if isinstance(value, str) else "a number"


def load_json(text: str) -> object:
    """`json.loads`, refusing text nested more than MAX_JSON_DEPTH deep, and an object that
    names a key twice, as malformed."""
    if text.count("[") + text.count("{") > MAX_JSON_BRACKETS:
        raise json.JSONDecodeError(
            f"the JSON holds more than {MAX_JSON_BRACKETS} opening brackets ('[' or '{{', in "
            "strings too)",
            "",
            0,
        )
    if nested_deeper_than(text, MAX_JSON_DEPTH):
        raise json.JSONDecodeError(f"the JSON is nested more than {MAX_JSON_DEPTH} deep", "", 0)
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise json.JSONDecodeError("the JSON is nested too deeply", "", 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer of more digits than Python converts (4,300)
        raise json.JSONDecodeError("a number in the JSON has too many digits", "", 0) from None


def _keys_once(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object whose keys are each named once. Parsers differ on a repeated key (most keep
    the last, some the first): a request that a proxy in front reads one way and the service
    another is refused rather than guessed at."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:  # the first repeated, in one pass
            if key in seen:
                break
            seen.add(key)
        name = json.dumps(key[:40])
        raise json.JSONDecodeError(f"an object in the JSON names the key {name} twice", "", 0)
    return found


def _no_constant(name: str) -> NoReturn:
    """Python's reader takes NaN, Infinity and -Infinity; RFC 8259 has no such numbers."""
    raise json.JSONDecodeError(f"{name} is no JSON number", "", 0)


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent, refused where a double cannot hold it (1e999
    would be read as infinity)."""
    value = float(text)
    if not math.isfinite(value):
        raise json.JSONDecodeError(f"the number {text[:40]} is too large", "", 0)
    return value


# One decoder for every request: `json.loads` given a hook builds a new one each call.
_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_keys_once, parse_constant=_no_constant, parse_float=_finite
)


# orjson would encode a dataclass or a datetime the standard library refuses: one leaked into a
# reply by mistake is refused by both instead, as before.
_REFUSE_WHAT_JSON_DUMPS_REFUSES: Final = (
    orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)


def compact_json(data: object) -> bytes:
    """Compact JSON: orjson's, or the standard library's for what orjson refuses."""
    try:
        return orjson.dumps(data, option=_REFUSE_WHAT_JSON_DUMPS_REFUSES)
    except orjson.JSONEncodeError:
        return json.dumps(data, separators=(",", ":")).encode()


def load_request_json(data: str | bytes) -> object:
    """A request's body or GET parameter: `load_json` of UTF-8 text with no byte order mark."""
    if isinstance(data, bytes):
        try:
            # UTF-8 alone (RFC 8259 8.1), not json.loads's guess at UTF-16 or UTF-32 from the
            # first bytes: a proxy in front that reads the body as UTF-8 reads what the service
            # reads.
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            # As malformed as bad JSON: 400, not 500.
            raise json.JSONDecodeError("the body is not UTF-8 text", "", 0) from None
    if data.startswith("\ufeff"):
        raise json.JSONDecodeError("the body starts with a byte order mark; send none", "", 0)
    return load_json(data)
