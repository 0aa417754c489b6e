"""Settings are read once from the environment and a bad value names its variable."""

from __future__ import annotations

import logging
import pickle
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import MappingProxyType

import pytest

from inmail.app import worker_app
from inmail.domain.plans import PlanType
from inmail.settings import (
    SETTINGS,
    Settings,
    SettingsError,
    settings_table_markdown,
)
from inmail.transport import server_config


def test_an_empty_environment_gives_the_documented_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    settings = Settings.from_env({})
    assert settings.env == "development"
    assert settings.mongodb_uri is None
    assert settings.data_dir == Path.home() / ".local" / "share" / "inmail"
    assert settings.scheduler_interval == 60.0
    assert settings.reminder_delay_hours == 48.0
    assert settings.max_body_bytes == 1_048_576
    assert settings.max_page_size == 100
    assert settings.max_query_length == 32_768
    assert settings.max_query_lines == 2_000
    assert settings.port == 8000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INMAIL_SCHEDULER_INTERVAL", "soon"),
        ("INMAIL_SCHEDULER_INTERVAL", "-1"),
        ("INMAIL_SCHEDULER_INTERVAL", "301"),
        ("INMAIL_WEBHOOK_URL", "http://hooks\u200b.example.com/inmail"),  # a zero-width space
        ("INMAIL_WEBHOOK_URL", "http://xn--.com/"),
        ("INMAIL_WEBHOOK_URL", "http://hooks.example.com/p\x7fq"),
        ("INMAIL_SCHEDULER_INTERVAL", "0.000001"),  # a scheduler that spins
        ("INMAIL_HEADER_TIMEOUT", "0.5"),  # every connection dropped before it could speak
        ("INMAIL_BODY_TIMEOUT", "inf"),
        ("INMAIL_WS_KEEPALIVE", "nan"),
        ("INMAIL_PORT", "70000"),
        ("INMAIL_CLOCK", "sundial"),
        ("INMAIL_CLOCK_START", "yesterday"),
        ("INMAIL_MONGODB_URI", "postgres://localhost"),
        ("INMAIL_MAX_PAGE_SIZE", "500"),
        ("INMAIL_REMINDER_DELAY_HOURS", "73"),
        ("INMAIL_PLANS", '{"PREMIUM_CAREER": {"monthlyAllotment": -1}}'),
        ("INMAIL_PLANS", "not json"),
        ("INMAIL_PLANS", "[" * 100_000),
        ("INMAIL_PLANS", '{"LEGACY_PREMIUM": {"capMultiplier": 1000000000}}'),
        ("INMAIL_JWT_SECRET", "short"),
        ("INMAIL_INTROSPECTION", "maybe"),
        ("INMAIL_MAX_QUERY_LENGTH", "1023"),
        ("INMAIL_MAX_QUERY_LENGTH", "1048577"),
        ("INMAIL_MAX_QUERY_LINES", "9"),
        ("INMAIL_MAX_QUERY_LINES", "many"),
        ("INMAIL_HOST", "not an ip"),
        ("INMAIL_HOST", "-edge.example"),
        ("INMAIL_METRICS_HOST", "zz zz"),
        ("INMAIL_ALLOWED_ORIGINS", "not-an-origin"),
        ("INMAIL_ALLOWED_ORIGINS", "https://app.example/path"),
        ("INMAIL_ALLOWED_ORIGINS", "https://app.example,ftp://files.example"),
        ("INMAIL_ALLOWED_ORIGINS", "https://app.example:99999"),
    ],
)
def test_a_bad_value_is_refused_with_the_variable_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name}="):  # its value refused, not another
        Settings.from_env({name: value})


def test_hosts_and_origins_take_what_operators_write() -> None:
    settings = Settings.from_env(
        {
            "INMAIL_HOST": "::",
            "INMAIL_METRICS_HOST": "metrics.internal",
            "INMAIL_ALLOWED_ORIGINS": "https://App.Example/, http://127.0.0.1:3000,"
            "http://[::1]:8080, https://b.example:443, http://c.example:80",
        }
    )
    assert (settings.host, settings.metrics_host) == ("::", "metrics.internal")
    assert settings.allowed_origins == (  # as a browser's Origin header names each
        "https://app.example",
        "http://127.0.0.1:3000",
        "http://[::1]:8080",
        "https://b.example",
        "http://c.example",
    )
    assert Settings.from_env({"INMAIL_HOST": "inmail_api"}).host == "inmail_api"  # a service


def test_a_secret_is_never_echoed_in_the_error() -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"INMAIL_JWT_SECRET": "hunter2"})
    assert "hunter2" not in str(error.value)


def test_an_unknown_inmail_variable_is_refused_rather_than_ignored() -> None:
    with pytest.raises(SettingsError, match="INMAIL_SCHEDULER_INTERVALL"):
        Settings.from_env({"INMAIL_SCHEDULER_INTERVALL": "5"})


def test_production_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(SettingsError, match="INMAIL_JWT_SECRET"):
        Settings.from_env({"INMAIL_ENV": "production"})


def test_production_refuses_a_manual_clock() -> None:
    with pytest.raises(SettingsError, match="INMAIL_CLOCK"):
        Settings.from_env(
            {"INMAIL_ENV": "production", "INMAIL_JWT_SECRET": "x" * 40, "INMAIL_CLOCK": "manual"}
        )


def test_a_manual_clock_start_is_read_as_utc() -> None:
    settings = Settings.from_env(
        {"INMAIL_CLOCK": "manual", "INMAIL_CLOCK_START": "2026-01-31T00:00:00Z"}
    )
    assert settings.manual_clock
    assert settings.clock_start == datetime(2026, 1, 31, tzinfo=UTC)


def test_operators_override_the_plan_table_without_a_code_change() -> None:
    settings = Settings.from_env(
        {"INMAIL_PLANS": '{"PREMIUM_CAREER": {"monthlyAllotment": 8, "maxBalance": 24}}'}
    )
    career = settings.plans.policy(PlanType.PREMIUM_CAREER)
    assert (career.monthly_allotment, career.max_balance) == (8, 24)
    assert settings.plans.policy(PlanType.PREMIUM_BUSINESS).monthly_allotment == 15


def test_the_settings_table_lists_every_setting() -> None:
    table = settings_table_markdown()
    for setting in SETTINGS:
        assert f"`{setting.name}`" in table


def test_the_test_harness_variables_are_not_the_services_business() -> None:
    settings = Settings.from_env({"INMAIL_TEST_MONGODB_URI": "mongodb://elsewhere:27017"})
    assert settings.mongodb_uri is None


def test_settings_reach_a_worker_pickled_unchanged() -> None:
    settings = Settings.from_env(
        {
            "INMAIL_PLANS": '{"PREMIUM_CAREER": {"monthlyAllotment": 8, "maxBalance": 24}}',
            "INMAIL_CLOCK": "manual",
            "INMAIL_CLOCK_START": "2024-01-31T12:00:00Z",
            "INMAIL_ALLOWED_ORIGINS": "https://a.example,https://b.example",
            "INMAIL_WORKERS": "2",
        }
    ).with_changes(jwt_secret="s" * 32, mongodb_uri="mongodb://db.internal:27017")
    copied: Settings = pickle.loads(pickle.dumps(settings))
    assert copied == settings
    assert copied.plans.policy(PlanType.PREMIUM_CAREER).monthly_allotment == 8
    assert isinstance(copied.plans.policies, MappingProxyType)  # as read-only as the original


def test_serve_gives_each_worker_its_settings_not_the_environment() -> None:
    settings = Settings.from_env({"INMAIL_WORKERS": "2"}).with_changes(jwt_secret="s" * 32)
    config = server_config(settings)
    # uvicorn pickles the configuration into each worker it spawns.
    app = pickle.loads(pickle.dumps(config)).app
    assert isinstance(app, partial)
    assert (app.func, app.args) == (worker_app, (settings,))


def test_the_websocket_keepalive_pings_every_socket_whatever_its_subprotocol() -> None:
    config = server_config(Settings.from_env({"INMAIL_WS_KEEPALIVE": "7"}))
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (7, 20)
    config = server_config(Settings.from_env({"INMAIL_WS_KEEPALIVE": "45"}))
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (45, 45)


def test_every_default_is_the_documented_value_read_as_the_setting_reads_it() -> None:
    defaults = Settings()
    assert Settings.from_env({}) == defaults
    assert defaults.scheduler_batch == 500
    assert defaults.allowed_origins == ("*",)
    assert defaults.plans.policy(PlanType.PREMIUM_CAREER).monthly_allotment == 5


def test_the_help_of_inmail_env_says_what_production_does() -> None:
    (env,) = [s for s in SETTINGS if s.name == "INMAIL_ENV"]
    for claim in ("GraphiQL, introspection and suggestions are off unless set", "refused without"):
        assert claim in env.help
    secret = {"INMAIL_ENV": "production", "INMAIL_JWT_SECRET": "x" * 40}
    closed = Settings.from_env(secret)
    assert (closed.graphiql, closed.introspection, closed.suggestions) == (False, False, False)
    opened = Settings.from_env(
        secret
        | {"INMAIL_GRAPHIQL": "true", "INMAIL_INTROSPECTION": "true", "INMAIL_SUGGESTIONS": "on"}
    )
    assert (opened.graphiql, opened.introspection, opened.suggestions) == (True, True, True)
    with pytest.raises(SettingsError, match="INMAIL_JWT_SECRET"):
        Settings.from_env({"INMAIL_ENV": "production"})
    with pytest.raises(SettingsError, match="INMAIL_CLOCK"):
        Settings.from_env(secret | {"INMAIL_CLOCK": "manual"})


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        (
            "INMAIL_MONGODB_URI",
            "mongdb://admin:S3cret@db:27017/",
            "'mongdb://<hidden>@db:27017/'",
        ),
        (  # a password with an unencoded @, and a port out of range
            "INMAIL_WEBHOOK_URL",
            "http://u:S3cret@more@hook.example:99999/",
            "'http://<hidden>@hook.example:99999/'",
        ),
        (  # a password with a space
            "INMAIL_MONGODB_URI",
            "mongdb://u:S3cret word@db:27017/",
            "'mongdb://<hidden>@db:27017/'",
        ),
        (  # a password with an unencoded /, which urllib reads as a port
            "INMAIL_WEBHOOK_URL",
            "http://hook:S3cret/x@example.com/",
            "'http://<hidden>@example.com/'",
        ),
        ("INMAIL_WEBHOOK_SECRET", "short", "'<hidden>'"),
        ("INMAIL_PORT", "eighty", "'eighty'"),
    ],
)
def test_a_refused_value_is_quoted_without_its_secret(name: str, value: str, shown: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value).startswith(f"{name}={shown}: accepts")
    assert "S3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("env", "refusal"),
    [
        ({"INMAIL_METRICS_PORT": "8000"}, "INMAIL_METRICS_PORT: 8000 is the API's port"),
        (
            {"INMAIL_HOST": "0.0.0.0", "INMAIL_PORT": "9464"},  # the metrics' default port
            "INMAIL_METRICS_PORT: 9464 is the API's port",
        ),
        (
            {
                "INMAIL_WEBHOOK_URL": "http://127.0.0.1:99999/hook",
                "INMAIL_WEBHOOK_SECRET": "s" * 40,
            },
            "INMAIL_WEBHOOK_URL='http://127.0.0.1:99999/hook': accepts",
        ),
        (
            {"INMAIL_WEBHOOK_URL": "http://127.0.0.1:0/hook", "INMAIL_WEBHOOK_SECRET": "s" * 40},
            "INMAIL_WEBHOOK_URL='http://127.0.0.1:0/hook': accepts",
        ),
        (
            {"INMAIL_HOST": "::", "INMAIL_METRICS_HOST": "127.0.0.1", "INMAIL_PORT": "9464"},
            "INMAIL_METRICS_PORT: 9464 is the API's port",
        ),
        (  # IPv6's every-interface address written out
            {"INMAIL_HOST": "0:0:0:0:0:0:0:0", "INMAIL_PORT": "9464"},
            "INMAIL_METRICS_PORT: 9464 is the API's port",
        ),
        (  # localhost is loopback, which every interface's address takes too
            {"INMAIL_HOST": "0.0.0.0", "INMAIL_METRICS_HOST": "localhost", "INMAIL_PORT": "9464"},
            "INMAIL_METRICS_PORT: 9464 is the API's port",
        ),
        (
            {"INMAIL_HOST": "localhost", "INMAIL_METRICS_HOST": "127.0.0.1", "INMAIL_PORT": "9464"},
            "INMAIL_METRICS_PORT: 9464 is the API's port",
        ),
    ],
)
def test_a_value_that_could_only_fail_later_is_refused_at_start(
    env: dict[str, str], refusal: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env(env)
    assert str(refused.value).startswith(refusal)


@pytest.mark.parametrize(
    ("api", "metrics"),
    [("127.0.0.1", "10.0.0.5"), ("::1", "0.0.0.0"), ("0.0.0.0", "::1"), ("::1", "10.0.0.5")],
)
def test_metrics_may_share_the_apis_port_number_on_another_interface(
    api: str, metrics: str
) -> None:
    settings = Settings.from_env(
        {"INMAIL_HOST": api, "INMAIL_METRICS_HOST": metrics, "INMAIL_METRICS_PORT": "8000"}
    )
    assert (settings.metrics_port, settings.port) == (8000, 8000)


def test_serve_warns_when_the_open_file_limit_is_below_the_connections_it_allows(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import resource

    from inmail import cli

    monkeypatch.setattr(resource, "getrlimit", lambda which: (128, 4096))
    with caplog.at_level(logging.WARNING, logger="inmail.serve"):
        cli._warn_if_files_run_short(1000)
    assert "the open-file limit (128) is below INMAIL_MAX_CONNECTIONS (1000)" in caplog.text
    assert "ulimit -n 1200" in caplog.text
    caplog.clear()
    monkeypatch.setattr(resource, "getrlimit", lambda which: (65536, 65536))
    with caplog.at_level(logging.WARNING, logger="inmail.serve"):
        cli._warn_if_files_run_short(1000)
    assert caplog.text == ""


def test_a_long_refused_value_is_quoted_cut_short() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"INMAIL_PLANS": "[" * 100_000})
    message = str(refused.value)
    assert "(100000 characters)" in message
    assert len(message) < 1000
