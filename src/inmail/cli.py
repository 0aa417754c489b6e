"""The `inmail` command: serve, token, schema, settings."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import logging
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from inmail.settings import Settings, SettingsError, settings_table_markdown

T = TypeVar("T")

log = logging.getLogger("inmail.serve")


def _settings(environ: Mapping[str, str] = os.environ) -> Settings:
    return _configured(functools.partial(Settings.from_env, environ))


def _configured(read: Callable[[], T]) -> T:
    """What `read` reads of the settings; a bad setting ends the command, named, with exit 2."""
    try:
        return read()
    except SettingsError as exc:
        print(f"inmail: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until stopped: the database (the embedded mongod when no URI is set), the signing
    secret, the metrics listener, then the workers. Whatever was started is stopped on the way
    out, in the reverse order, however the serve ends."""
    settings = _settings(_serve_variables(args))
    from inmail import logs

    logs.configure_logging(settings.log_level, settings.log_format)
    _warn_of_older_data(settings)
    with contextlib.ExitStack() as started:
        try:
            _check_listening(settings.host, settings.port)
            settings = _with_database(settings, started)
            settings = _with_signing_secret(settings)
        except _CannotServe as exc:
            log.error("%s", exc)
            return exc.status
        except KeyboardInterrupt:  # Ctrl-C while mongod starts: what started is stopped
            log.warning("interrupted while starting")
            return 130
        _warn_if_files_run_short(settings.max_connections)
        # uvicorn drains requests on SIGTERM, then raises the signal again: exit cleanly on it so
        # that what was started here is stopped by us, not left to the kernel.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        if settings.workers == 1:
            # uvicorn restarts several workers on SIGHUP, and leaves one to the signal's
            # default, a death without a drain (and an orphaned data folder): a drained stop.
            signal.signal(signal.SIGHUP, _stop_on_sighup)
        _prometheus_multiprocess_dir(settings.workers, started)
        _metrics_listener(settings, started)
        if settings.graphiql:
            log.info("GraphiQL at http://%s:%s/graphql", settings.host, settings.port)
        from inmail.transport import run_server

        return 0 if run_server(settings) else 3


def _check_listening(host: str, port: int) -> None:
    """That the serve can listen where it is told to, before anything starts: a port in use is
    one line naming it, not a database started, a GraphiQL address announced that is another
    process's, and uvicorn's error after. (A process may still take it in the meantime.)"""
    from inmail.processes import bind_problem

    problem = bind_problem(host, port)
    if problem is not None:
        in_use = problem.errno == errno.EADDRINUSE
        reason = "another process listens there" if in_use else (problem.strerror or str(problem))
        raise _CannotServe(
            f"cannot listen on {host}:{port}: {reason}; choose another with INMAIL_PORT "
            "(or --port) and INMAIL_HOST"
        ) from None


OLDER_DATA_DIR = ".inmail"
"""Where versions before `$XDG_DATA_HOME/inmail` kept the embedded mongod's data."""


def _warn_of_older_data(settings: Settings) -> None:
    """An older version's data in this folder, while the serve keeps its own elsewhere: said
    at start, or its members would seem lost."""
    older = Path(OLDER_DATA_DIR)
    if "INMAIL_DATA_DIR" in os.environ or not (older / "mongod").is_dir():
        return
    if older.resolve() != settings.data_dir.resolve():
        log.warning(
            "found data of an older version in ./%s; this serve keeps its data in %s. To go "
            "on with the older data, set INMAIL_DATA_DIR=%s",
            OLDER_DATA_DIR,
            settings.data_dir,
            OLDER_DATA_DIR,
        )


def _serve_variables(args: argparse.Namespace) -> dict[str, str]:
    """The settings the workers are given: the environment's, then the options'. An option
    given is used as given (0 too, which the settings then refuse by name)."""
    variables = {k: v for k, v in os.environ.items() if k.startswith("INMAIL_")}
    for option, name in (("host", "HOST"), ("port", "PORT"), ("workers", "WORKERS")):
        value = getattr(args, option)
        if value is not None:
            variables[f"INMAIL_{name}"] = str(value)
    return variables


class _CannotServe(Exception):
    """A reason to exit before serving, said in one line, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _with_database(settings: Settings, started: contextlib.ExitStack) -> Settings:
    """The settings with the database to serve on: INMAIL_MONGODB_URI, checked before any
    worker starts, or the embedded mongod, started here (and kept running while the serve
    lasts: one that exits is started again, on the same port)."""
    from inmail.embedded_mongod import EmbeddedMongodError
    from inmail.repositories.database import NoDatabase, choose_database
    from inmail.repositories.mongo import mongodb_problem

    try:
        database = choose_database(settings, may_start_mongod=True)
    except NoDatabase as exc:
        raise _CannotServe(str(exc), status=2) from None
    except EmbeddedMongodError as exc:  # INMAIL_MONGOD_BIN names no executable file
        raise _CannotServe(str(exc)) from None
    embedded = database.mongod
    if embedded is None:
        problem = None if database.uri is None else mongodb_problem(database.uri, settings.db_name)
        if problem is not None:
            raise _CannotServe(problem)
        return settings
    log.info("starting the embedded mongod (data in %s)", embedded.data_dir)
    try:
        uri = embedded.start()
    except EmbeddedMongodError as exc:
        raise _CannotServe(str(exc)) from None

    @started.callback
    def stop() -> None:
        log.info("stopping the embedded mongod")
        embedded.stop()

    log.info("mongod %s (pid %s) is primary", embedded.uri, embedded.pid)
    stopping = threading.Event()
    keeper = threading.Thread(
        target=embedded.keep_running, args=(stopping,), name="embedded-mongod", daemon=True
    )
    keeper.start()
    started.callback(keeper.join)  # a start under way ends first (within its timeout)
    started.callback(stopping.set)
    return settings.with_changes(mongodb_uri=uri)


def _with_signing_secret(settings: Settings) -> Settings:
    """The settings with a secret to sign tokens with: INMAIL_JWT_SECRET, or the development
    secret kept in the data folder (made on the first start)."""
    if settings.jwt_secret is not None:
        return settings
    from inmail.auth import DEV_SECRET_FILE, UnusableSecret, development_secret

    where = (settings.data_dir / DEV_SECRET_FILE).absolute()
    try:
        secret = development_secret(settings.data_dir)
    except UnusableSecret as exc:
        raise _CannotServe(
            f"cannot use the development secret: {exc}; set INMAIL_JWT_SECRET, or mend or "
            "remove that file (a new secret is then made, and tokens signed with the old one "
            "are refused)"
        ) from None
    except OSError as exc:
        raise _CannotServe(
            f"cannot keep the development secret in {where}: {exc.strerror or exc}; set "
            "INMAIL_JWT_SECRET, or INMAIL_DATA_DIR to a folder this user may write"
        ) from None
    log.info("tokens are signed with the development secret in %s (`inmail token` reads it)", where)
    return settings.with_changes(jwt_secret=secret)


def _metrics_listener(settings: Settings, started: contextlib.ExitStack) -> None:
    """The /metrics listener on its own port, when one is set, stopped when the serve ends."""
    if settings.metrics_port is None:
        return
    from inmail.metrics_server import MetricsListener

    metrics = MetricsListener(settings.metrics_host, settings.metrics_port, settings.metrics_token)
    started.callback(metrics.stop)
    if metrics.start():
        log.info("metrics at http://%s:%s/metrics", settings.metrics_host, metrics.port)


# What a worker keeps open besides its clients' sockets: its MongoDB pool (100 at most), the
# driver's monitors, change streams, webhook connections, logs.
FILES_BESIDES_CONNECTIONS = 200


def _warn_if_files_run_short(max_connections: int) -> None:
    """Past the open-file limit a new connection is dropped before uvicorn sees it (no 503):
    say so at start when the limit is below INMAIL_MAX_CONNECTIONS and what a worker keeps."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + FILES_BESIDES_CONNECTIONS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "the open-file limit (%d) is below INMAIL_MAX_CONNECTIONS (%d) plus the %d files a "
            "worker keeps besides: past it, new connections are dropped without an answer. "
            "Raise it (ulimit -n %d) or lower INMAIL_MAX_CONNECTIONS.",
            soft,
            max_connections,
            FILES_BESIDES_CONNECTIONS,
            wanted,
        )


def _prometheus_multiprocess_dir(workers: int, started: contextlib.ExitStack) -> None:
    """With several workers, a fresh folder where each writes its metrics (read by /metrics),
    removed when the serve ends.

    The workers inherit it from the environment. One set by the operator is used as it is.
    """
    if workers < 2 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    path = tempfile.mkdtemp(prefix="inmail-metrics-")
    started.callback(shutil.rmtree, path, ignore_errors=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _stop_on_sighup(signum: int, frame: object) -> None:
    os.kill(os.getpid(), signal.SIGTERM)


# A member id as the service makes them (an ObjectId's hex form).
_MEMBER_ID = re.compile(r"[0-9a-f]{24}")


def cmd_token(args: argparse.Namespace) -> int:
    from inmail.auth import Role, TokenService

    settings = _settings()
    hours: float = args.hours
    if not 0 < hours <= settings.token_max_lifetime_hours:  # NaN fails this too
        print(
            f"inmail token: --hours must be above 0 and at most "
            f"{settings.token_max_lifetime_hours:g} (INMAIL_TOKEN_MAX_LIFETIME)",
            file=sys.stderr,
        )
        return 2
    if not args.admin and not _MEMBER_ID.fullmatch(args.member):
        print(
            f"inmail token: {args.member!r} is not a member id (24 lowercase hex digits, "
            "as createMember answers in member { id })",
            file=sys.stderr,
        )
        return 2
    signing = _signing_secret(settings)
    if signing is None:
        return 2
    if not args.admin and not _member_known(settings, args.member):
        return 2
    secret, signed_with = signing
    print(f"inmail token: signed with {signed_with}", file=sys.stderr)
    longest = timedelta(hours=settings.token_max_lifetime_hours)
    ttl = timedelta(hours=hours)
    tokens = TokenService(secret, longest)
    if args.admin:
        print(tokens.mint("admin", Role.ADMIN, ttl))
    else:
        print(tokens.mint(args.member, Role.MEMBER, ttl))
    return 0


def _signing_secret(settings: Settings) -> tuple[str, str] | None:
    """The secret `inmail serve` signs with under these settings, and where it is kept; never a
    new one: a token signed with a secret the server does not hold would be refused. None when
    there is none (said on stderr)."""
    from inmail.auth import DEV_SECRET_FILE, UnusableSecret, existing_development_secret

    if settings.jwt_secret is not None:
        return settings.jwt_secret, "INMAIL_JWT_SECRET"
    path = (settings.data_dir / DEV_SECRET_FILE).absolute()
    try:
        secret = existing_development_secret(settings.data_dir)
    except UnusableSecret as exc:
        print(f"inmail token: no secret to sign with: {exc}", file=sys.stderr)
        return None
    if secret is None:
        print(
            f"inmail token: no secret to sign with: INMAIL_JWT_SECRET is unset and there is no "
            f"development secret at {path}.\n"
            "  `inmail serve` creates that file when it first starts with this data folder "
            "(INMAIL_DATA_DIR); a token signed with any other secret would be refused.\n"
            "  Start the server first, or give this command the INMAIL_DATA_DIR or "
            "INMAIL_JWT_SECRET the server runs with.",
            file=sys.stderr,
        )
        return None
    return secret, f"the development secret in {path}"


def _member_known(settings: Settings, member_id: str) -> bool:
    """False (said on stderr) when the database the server uses has no such member.

    That is INMAIL_MONGODB_URI, else the embedded mongod while `inmail serve` runs it over the
    data folder. Where neither can be reached the token is minted with a note: the server
    refuses it if the member does not exist.
    """
    from inmail.embedded_mongod import EmbeddedMongod

    folder = (settings.data_dir / "mongod").absolute()
    uri, where = settings.mongodb_uri, "the database of INMAIL_MONGODB_URI"
    if uri is None:
        uri, where = EmbeddedMongod(folder).running_uri(), f"the embedded mongod over {folder}"
    if uri is None:
        print(
            f"inmail token: member {member_id} not checked: INMAIL_MONGODB_URI is unset and no "
            f"embedded mongod runs over {folder}; the server refuses the token if there is no "
            "such member",
            file=sys.stderr,
        )
        return True
    try:
        found = asyncio.run(_find_member(uri, settings.db_name, member_id))
    except Exception as exc:
        print(
            f"inmail token: member {member_id} not checked: {where} did not answer "
            f"({type(exc).__name__}); the server refuses the token if there is no such member",
            file=sys.stderr,
        )
        return True
    if not found:
        print(
            f"inmail token: no member {member_id} in {where} (database {settings.db_name!r}); "
            "create the member first (createMember, as an admin) and use the id it answers",
            file=sys.stderr,
        )
        return False
    print(f"inmail token: member {member_id} found in {where}", file=sys.stderr)
    return True


async def _find_member(uri: str, db_name: str, member_id: str) -> bool:
    from inmail.repositories.members import MemberReader
    from inmail.repositories.mongo import NO_TRANSACTION, Mongo

    mongo = Mongo.connect(uri, db_name, app_name="inmail-token")
    try:
        reader = MemberReader(mongo, NO_TRANSACTION)
        member = await asyncio.wait_for(reader.get(member_id), _LOOKUP_TIMEOUT)
        return member is not None
    finally:
        await mongo.close()


# How long `inmail token` waits for the database before minting without the member check.
_LOOKUP_TIMEOUT = 10.0


def cmd_schema(args: argparse.Namespace) -> int:
    from inmail.resolvers.root import build_schema

    # The schema of the environment asked for: production's has no advanceClock (SPEC 7).
    production = args.production or (
        _configured(functools.partial(Settings.one_from_env, os.environ, "env")) == "production"
    )
    print(build_schema(Settings(env="production") if production else Settings()).as_str())
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    print(settings_table_markdown())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inmail", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (GraphiQL at /graphql)")
    serve.add_argument("--host", help="interface to listen on (INMAIL_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (INMAIL_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (INMAIL_WORKERS)")
    serve.set_defaults(run=cmd_serve)

    token = sub.add_parser("token", help="print a bearer token for development")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--member", help="the member id the token speaks for (it must exist where checkable)"
    )
    who.add_argument("--admin", action="store_true", help="an admin token")
    token.add_argument("--hours", type=float, default=12.0, help="lifetime (default 12)")
    token.set_defaults(run=cmd_token)

    schema = sub.add_parser(
        "schema", help="print the GraphQL schema (SDL), as INMAIL_ENV's environment serves it"
    )
    schema.add_argument(
        "--production",
        action="store_true",
        help="production's (no advanceClock), whatever INMAIL_ENV",
    )
    schema.set_defaults(run=cmd_schema)

    table = sub.add_parser("settings", help="print the settings table (Markdown)")
    table.set_defaults(run=cmd_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result
