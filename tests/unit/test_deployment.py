"""The deployment files agree with the code and with each other.

No Docker engine runs in CI, so these read docker-compose.yml, the Dockerfile, .env.example,
.dockerignore and deploy/nginx.conf as text and check what `docker compose up` depends on.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from inmail.processes import free_port
from inmail.settings import SETTINGS, Settings, SettingsError
from inmail.transport import server_config

ROOT = Path(__file__).resolve().parents[2]
SETTING_NAMES = {s.name for s in SETTINGS}


# --- reading the files -------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    env: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [args for kw, args in self.instructions if kw == keyword]
        return found[-1] if found else None


def dockerfile_stages() -> list[Stage]:
    text = (ROOT / "Dockerfile").read_text()
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
            continue
        assert stages, f"{keyword} before FROM"
        stages[-1].instructions.append((keyword, args))
        if keyword == "ENV":
            stages[-1].env.update(_env_instruction(args))
    return stages


def _env_instruction(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # the old `ENV NAME value` form
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def final_stage() -> Stage:
    return dockerfile_stages()[-1]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def api_services() -> dict[str, dict[str, Any]]:
    """The services that run the image built from this repository's Dockerfile."""
    return {name: s for name, s in services().items() if "build" in s}


def service_environment(
    service: dict[str, Any], dotenv: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A service's `environment`, each `${NAME:-default}` as Compose reads it with the project's
    .env (`dotenv`; none given: the defaults)."""
    env = service.get("environment") or {}
    pairs = [item.split("=", 1) for item in env] if isinstance(env, list) else env.items()
    return {str(k): interpolated(str(v), dotenv or {}) for k, v in pairs}


def interpolated(value: str, dotenv: Mapping[str, str]) -> str:
    found = re.fullmatch(r"\$\{([A-Z_][A-Z0-9_]*):-([^}]*)\}", value)
    if found is None:
        assert "$" not in value, f"{value}: only ${{NAME:-default}} is read here"
        return value
    return dotenv.get(found[1]) or found[2]


def service_env_files(service: dict[str, Any]) -> list[str]:
    files = service.get("env_file") or []
    if isinstance(files, str | dict):
        files = [files]
    return [f if isinstance(f, str) else f["path"] for f in files]


def env_example(*, with_commented_examples: bool = False) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in (ROOT / ".env.example").read_text().splitlines():
        line = raw.strip()
        if with_commented_examples and line.startswith("#"):
            line = line.lstrip("#").strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            values[name] = value
    return values


def container_environment(service: dict[str, Any]) -> dict[str, str]:
    """What the container sees: the image's ENV, then the env files, then `environment`."""
    env = dict(final_stage().env)
    for name in service_env_files(service):
        # .env is the operator's copy of .env.example, which stands in for it here, with
        # their own secret in place of the published one (as the README has them do).
        assert name == ".env", f"env_file {name}: the documented file is .env"
        env.update(operators_env())
    env.update(service_environment(service, operators_env()))
    return env


OPERATORS_SECRET = "3f1c" * 16  # what `openssl rand -hex 32` makes


def operators_env() -> dict[str, str]:
    """.env as the README has the operator make it: .env.example, its secret their own."""
    return {**env_example(), "INMAIL_JWT_SECRET": OPERATORS_SECRET}


def inmail_variables(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("INMAIL_")}


def healthcheck_command(test: list[str] | str) -> str:
    if isinstance(test, str):
        return test
    assert test[0] in ("CMD", "CMD-SHELL"), test
    return " ".join(test[1:])


def url_port(text: str, path: str) -> int:
    match = re.search(r"http://[^/:'\"\s]+:(\d+)" + re.escape(path), text)
    assert match, f"no http://host:port{path} in {text!r}"
    return int(match.group(1))


def nginx_conf() -> str:
    return (ROOT / "deploy" / "nginx.conf").read_text()


def nginx_upstream_servers() -> list[tuple[str, int]]:
    servers = []
    for block in re.findall(r"upstream\s+\w+\s*\{(.*?)\}", nginx_conf(), re.S):
        for host, port in re.findall(r"^\s*server\s+([\w.-]+):(\d+)", block, re.M):
            servers.append((host, int(port)))
    return servers


# --- settings ----------------------------------------------------------------------------------


def test_every_inmail_variable_in_compose_the_dockerfile_and_env_example_is_a_real_setting() -> (
    None
):
    named: dict[str, set[str]] = {}
    for stage in dockerfile_stages():
        for name in inmail_variables(stage.env):
            named.setdefault(name, set()).add("Dockerfile")
    for service_name, service in services().items():
        for name in inmail_variables(service_environment(service)):
            named.setdefault(name, set()).add(f"docker-compose.yml:{service_name}")
    for name in inmail_variables(env_example(with_commented_examples=True)):
        named.setdefault(name, set()).add(".env.example")
    assert named, "the deployment files set no INMAIL_* variable at all"
    unknown = {name: where for name, where in named.items() if name not in SETTING_NAMES}
    assert unknown == {}, f"not settings of the service: {unknown}"


@pytest.mark.parametrize("service_name", sorted(api_services()))
def test_the_api_containers_environment_passes_settings_validation(service_name: str) -> None:
    env = container_environment(api_services()[service_name])
    settings = Settings.from_env(inmail_variables(env))
    assert settings.is_production
    assert settings.host == "0.0.0.0"
    assert settings.jwt_secret is not None
    assert settings.mongodb_uri is not None


def test_the_published_example_secret_is_refused_in_production_and_fine_in_a_demo() -> None:
    published = env_example()["INMAIL_JWT_SECRET"]
    image = inmail_variables(final_stage().env)
    with pytest.raises(SettingsError, match="INMAIL_JWT_SECRET: the example value"):
        Settings.from_env({**image, "INMAIL_JWT_SECRET": published})
    assert Settings.from_env({"INMAIL_JWT_SECRET": published}).jwt_secret == published


def test_each_commented_example_in_env_example_is_a_valid_value() -> None:
    base = inmail_variables(container_environment(api_services()["api"]))
    examples = inmail_variables(env_example(with_commented_examples=True))
    examples.pop("INMAIL_JWT_SECRET")  # the published one: to be replaced (test above)
    assert len(examples) >= 5, examples  # the file shows the settings an operator sets first
    for name, value in examples.items():
        Settings.from_env({**base, name: value})


def test_the_jwt_secret_comes_from_the_env_file_not_from_the_compose_file_or_the_image() -> None:
    assert "INMAIL_JWT_SECRET" in env_example()
    assert "INMAIL_JWT_SECRET" not in final_stage().env
    for name, service in api_services().items():
        assert service_env_files(service) == [".env"], name
        assert "INMAIL_JWT_SECRET" not in service_environment(service), name


def test_an_operators_mongodb_uri_in_env_takes_the_place_of_the_compose_files() -> None:
    own = "mongodb://inmail:pw@db1.internal,db2.internal/?replicaSet=prod&tls=true"
    for name, service in api_services().items():
        assert service_environment(service, {"INMAIL_MONGODB_URI": own}) == {
            **service_environment(service),
            "INMAIL_MONGODB_URI": own,
        }, name


def test_the_api_points_at_the_compose_replica_set() -> None:
    mongo = services()["mongo"]
    command = mongo["command"]
    replica_set = command[command.index("--replSet") + 1]
    assert "--bind_ip_all" in command
    assert str(mongo["image"]).startswith("mongo:8")
    for name, service in api_services().items():
        uri = urlsplit(service_environment(service)["INMAIL_MONGODB_URI"])
        assert uri.hostname == "mongo", name
        assert parse_qs(uri.query)["replicaSet"] == [replica_set], name
    initiate = healthcheck_command(mongo["healthcheck"]["test"])
    assert f"_id: '{replica_set}'" in initiate
    assert "host: 'mongo:27017'" in initiate


# --- ports ---------------------------------------------------------------------------------------


def test_the_port_agrees_everywhere() -> None:
    image_port = int(final_stage().env["INMAIL_PORT"])
    expose = final_stage().last("EXPOSE")
    assert expose is not None
    assert [int(p.split("/")[0]) for p in expose.split()] == [image_port]

    dockerfile_check = final_stage().last("HEALTHCHECK")
    assert dockerfile_check is not None
    assert url_port(dockerfile_check, "/readyz") == image_port

    for name, service in api_services().items():
        port = Settings.from_env(inmail_variables(container_environment(service))).port
        assert port == image_port, name
        assert url_port(healthcheck_command(service["healthcheck"]["test"]), "/readyz") == port
        for mapping in service.get("ports", []):
            assert int(str(mapping).rsplit(":", 1)[-1]) == port, (name, mapping)
        for exposed in service.get("expose", []):
            assert int(str(exposed)) == port, (name, exposed)

    upstream = nginx_upstream_servers()
    assert upstream, "nginx.conf has no upstream servers"
    for host, port in upstream:
        assert host in api_services(), f"upstream {host} is not an API service"
        assert port == image_port


def test_the_proxy_lets_an_idle_upstream_connection_go_before_the_api_closes_it() -> None:
    """A connection nginx reuses just as the API closes it for idleness fails the request in
    flight, and nginx does not retry a POST: its idle limit must be the shorter."""
    (upstream,) = re.findall(r"upstream\s+\w+\s*\{(.*?)\}", nginx_conf(), re.S)
    (timeout,) = re.findall(r"^\s*keepalive_timeout\s+(\d+)s;", upstream, re.M)
    assert int(timeout) < server_config(Settings()).timeout_keep_alive


def test_the_proxy_serves_the_nginx_conf_and_proxies_websockets_on_graphql() -> None:
    proxy = services()["proxy"]
    assert str(proxy["image"]).startswith("nginx:")
    assert any(
        str(v).startswith("./deploy/nginx.conf:/etc/nginx/conf.d/") for v in proxy["volumes"]
    )
    conf = nginx_conf()
    graphql = re.search(r"location\s+/graphql\s*\{(.*?)\}", conf, re.S)
    assert graphql, "no location /graphql"
    assert "proxy_pass http://" in graphql.group(1)
    # Upgrade headers set where /graphql inherits them (it sets no proxy_set_header of its own).
    assert "proxy_set_header" not in graphql.group(1)
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", conf)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade;", conf)
    assert re.search(r"proxy_http_version\s+1\.1;", conf)


# --- health, start order, the image -------------------------------------------------------------


def test_mongo_and_the_api_have_healthchecks() -> None:
    mongo_check = healthcheck_command(services()["mongo"]["healthcheck"]["test"])
    assert "mongosh" in mongo_check
    assert "rs.initiate(" in mongo_check
    assert "isWritablePrimary" in mongo_check
    for name, service in api_services().items():
        assert "/readyz" in healthcheck_command(service["healthcheck"]["test"]), name
    dockerfile_check = final_stage().last("HEALTHCHECK")
    assert dockerfile_check is not None
    assert "/readyz" in dockerfile_check
    assert "urllib" in dockerfile_check  # the slim image has no curl


def test_the_api_waits_for_a_healthy_mongo_and_the_proxy_for_healthy_replicas() -> None:
    for name, service in api_services().items():
        assert service["depends_on"]["mongo"]["condition"] == "service_healthy", name
    proxy_waits_for = services()["proxy"]["depends_on"]
    upstream_hosts = {host for host, _ in nginx_upstream_servers()}
    for host in upstream_hosts:
        assert proxy_waits_for[host]["condition"] == "service_healthy"


def test_the_image_runs_inmail_serve() -> None:
    cmd = final_stage().last("CMD")
    assert cmd is not None
    assert json.loads(cmd) == ["inmail", "serve"]
    assert final_stage().last("ENTRYPOINT") is None
    for name, service in api_services().items():
        assert service.get("command") in (None, ["inmail", "serve"], "inmail serve"), name


def test_the_final_stage_runs_as_a_non_root_user() -> None:
    stage = final_stage()
    user = stage.last("USER")
    assert user is not None, "the final stage sets no USER: it would run as root"
    name = user.split(":")[0]
    assert name not in ("root", "0")


def test_the_image_is_multi_stage_on_slim_python_with_production_dependencies_only() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert all(stage.base == "python:3.11-slim" for stage in stages)
    installs = [
        args for stage in stages for kw, args in stage.instructions if kw == "RUN" and "pip" in args
    ]
    assert any(re.search(r"pip install \.(\s|$)", args) for args in installs)
    assert not any("[" in args or " -e " in args for args in installs), installs
    assert "pip" not in " ".join(args for _, args in final_stage().instructions if _ == "RUN")
    assert final_stage().env["INMAIL_ENV"] == "production"


def test_the_data_volume_is_named() -> None:
    volumes = compose()["volumes"]
    mounts = services()["mongo"]["volumes"]
    data = [m for m in mounts if str(m).endswith(":/data/db")]
    assert data, "mongo keeps its data in the container"
    assert str(data[0]).split(":")[0] in volumes


# --- the build context ---------------------------------------------------------------------------


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents wins."""
    parts = path.split("/")
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern_parts = pattern.lstrip("!").strip("/").split("/")
        if any(_segments_match(pattern_parts, parts[:n]) for n in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def _segments_match(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_segments_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], pattern[0])
        and _segments_match(pattern[1:], parts[1:])
    )


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        (".env", True),
        (".git/HEAD", True),
        (".venv/bin/python", True),
        (".inmail/mongod/mongod.lock", True),
        ("tests/conftest.py", True),
        ("src/inmail.egg-info/PKG-INFO", True),
        ("src/inmail/__pycache__/app.cpython-311.pyc", True),
        ("pyproject.toml", False),
        ("README.md", False),
        ("src/inmail/app.py", False),
        ("src/inmail/py.typed", False),
    ],
)
def test_the_build_context_holds_the_package_and_no_secrets(path: str, excluded: bool) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert _dockerignore_excludes(path, patterns) is excluded


# --- the command the image runs ------------------------------------------------------------------


def test_serve_in_production_without_a_database_uri_or_a_mongod_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from inmail import cli, logs
    from inmail import embedded_mongod as embedded

    for name in [k for k in os.environ if k.startswith("INMAIL_")]:
        monkeypatch.delenv(name)
    for name, value in inmail_variables(final_stage().env).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INMAIL_JWT_SECRET", OPERATORS_SECRET)
    monkeypatch.setattr(embedded, "find_mongod_binary", lambda explicit=None: None)  # the image
    monkeypatch.setattr(logs, "configure_logging", lambda level, fmt: None)

    assert cli.main(["serve"]) == 2
    assert "production needs a real MongoDB: set INMAIL_MONGODB_URI" in caplog.text


def test_ctrl_c_while_serve_starts_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from inmail import cli, logs

    for name in [k for k in os.environ if k.startswith("INMAIL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("INMAIL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("INMAIL_PORT", str(free_port()))
    monkeypatch.setattr(logs, "configure_logging", lambda level, fmt: None)

    def interrupted(settings: object, started: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_with_database", interrupted)

    assert cli.main(["serve"]) == 130
    assert "interrupted while starting" in caplog.text


def test_inmail_schema_prints_what_the_environment_serves(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The contract check reads `inmail schema`: production's has no advanceClock (SPEC 7)."""
    from inmail import cli

    monkeypatch.delenv("INMAIL_ENV", raising=False)
    assert cli.main(["schema"]) == 0
    development = capsys.readouterr().out
    assert cli.main(["schema", "--production"]) == 0
    production = capsys.readouterr().out
    monkeypatch.setenv("INMAIL_ENV", "production")
    assert cli.main(["schema"]) == 0

    assert "advanceClock" in development
    assert "advanceClock" not in production
    assert capsys.readouterr().out == production
    assert "sendInMail" in production  # the rest is served


def test_inmail_schema_names_a_bad_inmail_env_rather_than_guess(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from inmail import cli

    monkeypatch.setenv("INMAIL_ENV", "prod")
    with pytest.raises(SystemExit) as ended:
        cli.main(["schema"])

    assert ended.value.code == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert "INMAIL_ENV='prod'" in printed.err
    assert cli.main(["schema", "--production"]) == 0  # whatever INMAIL_ENV says
    assert "advanceClock" not in capsys.readouterr().out
