"""The `inmail` command: serve, token, schema, settings."""

from __future__ import annotations

import argparse
import asyncio
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
    from inmail.embedded_mongod import EmbeddedMongod, EmbeddedMongodError
    from inmail.repositories.database import NoDatabase, choose_database
    from inmail.repositories.mongo import mongodb_problem

    # The settings the workers are given: the environment's, the options', then what serve
    # resolves itself (the embedded mongod's URI, the development secret).
    variables = {k: v for k, v in os.environ.items() if k.startswith("INMAIL_")}
    # An option given is used as given (0 too, which the settings then refuse by name).
    if args.host is not None:
        variables["INMAIL_HOST"] = args.host
    if args.port is not None:
        variables["INMAIL_PORT"] = str(args.port)
    if args.workers is not None:
        variables["INMAIL_WORKERS"] = str(args.workers)
    settings = _settings(variables)
    from inmail import logs

    logs.configure_logging(settings.log_level, settings.log_format)
    embedded: EmbeddedMongod | None = None
    try:
        database = choose_database(settings, may_start_mongod=True)
        embedded = database.mongod
        if embedded is not None:
            log.info("starting the embedded mongod (data in %s)", embedded.data_dir)
            settings = settings.with_changes(mongodb_uri=embedded.start())
            log.info("mongod %s (pid %s) is primary", embedded.uri, embedded.pid)
    except NoDatabase as exc:
        log.error("%s", exc)
        return 2
    except EmbeddedMongodError as exc:
        log.error("%s", exc)
        return 1
    problem = None if database.uri is None else mongodb_problem(database.uri, settings.db_name)
    if problem is not None:
        log.error("%s", problem)
        return 1
    if settings.jwt_secret is None:
        from inmail.auth import DEV_SECRET_FILE, UnusableSecret, development_secret

        try:
            secret = development_secret(settings.data_dir)
        except (OSError, UnusableSecret) as exc:
            reason = (
                f"cannot use the development secret: {exc}"
                if isinstance(exc, UnusableSecret)
                else f"cannot keep the development secret in "
                f"{(settings.data_dir / DEV_SECRET_FILE).absolute()}: {exc.strerror or exc}"
            )
            log.error(
                "%s; set INMAIL_JWT_SECRET, or INMAIL_DATA_DIR to a folder this user may write",
                reason,
            )
            if embedded is not None:
                embedded.stop()
            return 1
        log.info(
            "tokens are signed with the development secret in %s (`inmail token` reads it)",
            (settings.data_dir / DEV_SECRET_FILE).absolute(),
        )
        settings = settings.with_changes(jwt_secret=secret)
    _warn_if_files_run_short(settings.max_connections)
    # uvicorn drains requests on SIGTERM, then raises the signal again: exit cleanly on it so that
    # the embedded mongod below is stopped by us, not left to the kernel.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    metrics_dir = _prometheus_multiprocess_dir(settings.workers)
    from inmail.metrics_server import MetricsListener

    metrics = None
    if settings.metrics_port is not None:
        metrics = MetricsListener(
            settings.metrics_host, settings.metrics_port, settings.metrics_token
        )
        if metrics.start():
            log.info("metrics at http://%s:%s/metrics", settings.metrics_host, metrics.port)
    # A mongod of our own that exits while we serve is started again (on the same port).
    stopping = threading.Event()
    keeper = None
    if embedded is not None:
        keeper = threading.Thread(
            target=embedded.keep_running, args=(stopping,), name="embedded-mongod", daemon=True
        )
        keeper.start()
    try:
        if settings.graphiql:
            log.info("GraphiQL at http://%s:%s/graphql", settings.host, settings.port)
        from inmail.transport import run_server

        started = run_server(settings)
    finally:
        stopping.set()
        if keeper is not None:
            keeper.join()  # a start under way ends first (within its timeout)
        if metrics is not None:
            metrics.stop()
        if embedded is not None:
            log.info("stopping the embedded mongod")
            embedded.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0 if started else 3


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


def _prometheus_multiprocess_dir(workers: int) -> str | None:
    """With several workers, a fresh folder where each writes its metrics (read by /metrics).

    The workers inherit it from the environment. One set by the operator is used as it is.
    """
    if workers < 2 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = tempfile.mkdtemp(prefix="inmail-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


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
    secret = _signing_secret(settings)
    if secret is None:
        return 2
    if not args.admin and not _member_known(settings, args.member):
        return 2
    longest = timedelta(hours=settings.token_max_lifetime_hours)
    ttl = timedelta(hours=hours)
    tokens = TokenService(secret, longest)
    if args.admin:
        print(tokens.mint("admin", Role.ADMIN, ttl))
    else:
        print(tokens.mint(args.member, Role.MEMBER, ttl))
    return 0


def _signing_secret(settings: Settings) -> str | None:
    """The secret `inmail serve` signs with under these settings, said on stderr; never a new
    one: a token signed with a secret the server does not hold would be refused."""
    from inmail.auth import DEV_SECRET_FILE, UnusableSecret, existing_development_secret

    if settings.jwt_secret is not None:
        print("inmail token: signed with INMAIL_JWT_SECRET", file=sys.stderr)
        return settings.jwt_secret
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
    print(f"inmail token: signed with the development secret in {path}", file=sys.stderr)
    return secret


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
