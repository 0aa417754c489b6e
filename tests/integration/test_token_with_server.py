"""`inmail token` against a running service: the server accepts what it mints, from any folder,
and it refuses a member the database does not hold."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.servers import INMAIL, ServiceProcess, service_env
from inmail.auth import DEV_SECRET_FILE
from support import TEST_SECRET, Api, Person, post_graphql, run_to_end

NOBODY = "0123456789abcdef01234567"


def _token(
    env: dict[str, str], cwd: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = run_to_end([*INMAIL, "token", *args], env, cwd=cwd, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _post(port: int, query: str, token: str) -> dict[str, Any]:
    return post_graphql(f"http://127.0.0.1:{port}", query, token)[0]


def test_tokens_minted_in_a_frontend_folder_are_accepted_by_the_server_started_elsewhere(
    tmp_path: Path,
) -> None:
    # No INMAIL_DATA_DIR: both commands find the data folder in the user's data home, though
    # the server runs in the checkout and the token is asked for from a frontend's folder.
    env = service_env(XDG_DATA_HOME=str(tmp_path / "share"), INMAIL_METRICS_PORT="off")
    frontend = tmp_path / "projects" / "inbox-frontend"
    frontend.mkdir(parents=True)
    server = ServiceProcess.serve(env, tmp_path / "serve.log")
    server.start()
    try:
        server.wait_ready()
        admin = _token(env, frontend, "--admin")
        secret_file = tmp_path / "share" / "inmail" / DEV_SECRET_FILE
        assert f"signed with the development secret in {secret_file}" in admin.stderr
        assert f"signed with the development secret in {secret_file}" in server.log()
        created = _post(
            server.port,
            'mutation { createMember(input: {name: "Ada Lovelace", plan: PREMIUM_CAREER}) '
            "{ member { id } errors { code } } }",
            admin.stdout.strip(),
        )["data"]["createMember"]
        assert created["errors"] == []
        ada = created["member"]["id"]

        member = _token(env, frontend, "--member", ada)
        assert f"member {ada} found in the embedded mongod" in member.stderr
        viewer = _post(server.port, "{ viewer { id name } }", member.stdout.strip())
        assert viewer["data"]["viewer"] == {"id": ada, "name": "Ada Lovelace"}

        unknown = _token(env, frontend, "--member", NOBODY, check=False)
        assert unknown.returncode == 2
        assert unknown.stdout == ""
        assert f"no member {NOBODY} in the embedded mongod" in unknown.stderr

        malformed = _token(env, frontend, "--member", "not-an-id", check=False)
        assert malformed.returncode == 2
        assert malformed.stdout == ""
        assert "'not-an-id' is not a member id" in malformed.stderr
    finally:
        assert server.stop() == 0
    assert not (frontend / ".inmail").exists()
    assert list(frontend.iterdir()) == []


@pytest.fixture
def token_env(mongodb_uri: str, db_name: str) -> dict[str, str]:
    return service_env(
        INMAIL_MONGODB_URI=mongodb_uri, INMAIL_DB_NAME=db_name, INMAIL_JWT_SECRET=TEST_SECRET
    )


async def test_a_token_for_a_member_of_the_servers_database_is_accepted(
    api: Api, token_env: dict[str, str], tmp_path: Path
) -> None:
    grace = await api.create_member("Grace Hopper")
    done = await asyncio.to_thread(_token, token_env, tmp_path, "--member", grace.id)
    assert f"member {grace.id} found in the database of INMAIL_MONGODB_URI" in done.stderr
    assert "signed with INMAIL_JWT_SECRET" in done.stderr
    as_grace = Person(grace.id, done.stdout.strip())
    data = await api.gql("{ viewer { name } }", token=as_grace.token)
    assert data["viewer"] == {"name": "Grace Hopper"}


async def test_a_token_for_a_member_the_database_does_not_hold_is_refused(
    api: Api, token_env: dict[str, str], db_name: str, tmp_path: Path
) -> None:
    await api.create_member("Grace Hopper")
    done = await asyncio.to_thread(_token, token_env, tmp_path, "--member", NOBODY, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"no member {NOBODY} in the database of INMAIL_MONGODB_URI" in done.stderr
    assert repr(db_name) in done.stderr
    assert "signed with" not in done.stderr  # nothing was signed


async def test_an_admin_token_needs_no_member_and_is_accepted(
    api: Api, token_env: dict[str, str], tmp_path: Path
) -> None:
    done = await asyncio.to_thread(_token, token_env, tmp_path, "--admin")
    admin = done.stdout.strip()
    created = await api.gql(
        'mutation { createMember(input: {name: "Alan Turing", plan: BASIC}) '
        "{ member { name } errors { code } } }",
        token=admin,
    )
    assert created["createMember"] == {"member": {"name": "Alan Turing"}, "errors": []}
