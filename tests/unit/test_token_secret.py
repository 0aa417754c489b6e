"""`inmail token` signs with the secret `inmail serve` uses, or refuses; never with a new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inmail.auth import DEV_SECRET_FILE, Role, TokenService
from inmail.cli import main
from inmail.settings import Settings

SERVER_SECRET = "the-secret-the-server-signs-with-0123456789"
MAX_LIFETIME = Settings().token_max_lifetime


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment: no INMAIL_* variable, a user data folder under tmp_path, and the
    command run from a frontend's folder far from where the server was started."""
    for name in [k for k in os.environ if k.startswith("INMAIL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))
    frontend = tmp_path / "projects" / "inbox-frontend"
    frontend.mkdir(parents=True)
    monkeypatch.chdir(frontend)
    return tmp_path


def _verify(token: str, secret: str) -> tuple[str, Role]:
    viewer = TokenService(secret, MAX_LIFETIME).verify(token)
    return viewer.subject, viewer.role


def test_the_default_data_folder_is_the_same_from_any_folder(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = Settings.from_env({}).data_dir
    monkeypatch.chdir(home)
    assert Settings.from_env({}).data_dir == here == home / "share" / "inmail"
    assert here.is_absolute()


def test_without_xdg_data_home_the_data_folder_is_under_the_home_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "grace"))
    for value in (None, "relative/share"):  # unset, or not absolute: ignored as the spec says
        if value is None:
            monkeypatch.delenv("XDG_DATA_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_DATA_HOME", value)
        data_dir = Settings.from_env({}).data_dir
        assert data_dir == tmp_path / "grace" / ".local" / "share" / "inmail"


def test_an_explicit_data_folder_expands_the_home_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "ada"))
    settings = Settings.from_env({"INMAIL_DATA_DIR": "~/inmail-demo"})
    assert settings.data_dir == tmp_path / "ada" / "inmail-demo"


def test_without_a_secret_where_the_server_looks_no_token_is_minted_and_none_is_created(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "--admin"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    expected = home / "share" / "inmail" / DEV_SECRET_FILE
    assert f"no development secret at {expected}" in err
    assert "INMAIL_DATA_DIR" in err
    assert "INMAIL_JWT_SECRET" in err
    assert not (home / "share").exists(), "inmail token must not create a secret"
    assert not Path(".inmail").exists()


def test_a_secret_too_short_for_the_server_is_not_used_either(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `inmail serve` replaces a secret under 32 characters with a new one.
    folder = home / "share" / "inmail"
    folder.mkdir(parents=True)
    (folder / DEV_SECRET_FILE).write_text("short")
    assert main(["token", "--admin"]) == 2
    assert capsys.readouterr().out == ""
    assert (folder / DEV_SECRET_FILE).read_text() == "short"


def test_a_token_from_any_folder_is_signed_with_the_servers_development_secret(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = home / "share" / "inmail"
    folder.mkdir(parents=True)
    (folder / DEV_SECRET_FILE).write_text(SERVER_SECRET + "\n")

    assert main(["token", "--admin", "--hours", "1"]) == 0
    out, err = capsys.readouterr()
    assert _verify(out.strip(), SERVER_SECRET) == ("admin", Role.ADMIN)
    assert f"signed with the development secret in {folder / DEV_SECRET_FILE}" in err


def test_inmail_jwt_secret_wins_and_stderr_says_so(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INMAIL_JWT_SECRET", SERVER_SECRET)
    assert main(["token", "--admin"]) == 0
    out, err = capsys.readouterr()
    assert _verify(out.strip(), SERVER_SECRET) == ("admin", Role.ADMIN)
    assert "signed with INMAIL_JWT_SECRET" in err
    assert SERVER_SECRET not in err


@pytest.mark.parametrize(
    "member",
    [
        "not-an-id",
        "",
        "6650A1C2E4B0F1A2B3C4D5E6",  # upper case: the service's ids are lower case
        "6650a1c2e4b0f1a2b3c4d5e",  # 23 digits
        "6650a1c2e4b0f1a2b3c4d5e6f",  # 25 digits
        "6650a1c2e4b0f1a2b3c4d5eg",
        " 6650a1c2e4b0f1a2b3c4d5e6",
    ],
)
def test_a_malformed_member_id_is_refused_before_anything_is_signed(
    member: str, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INMAIL_JWT_SECRET", SERVER_SECRET)
    assert main(["token", "--member", member]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{member!r} is not a member id" in err


def test_a_member_token_is_minted_with_a_note_when_no_database_can_be_reached(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("INMAIL_JWT_SECRET", SERVER_SECRET)
    member = "6650a1c2e4b0f1a2b3c4d5e6"
    assert main(["token", "--member", member]) == 0
    out, err = capsys.readouterr()
    assert _verify(out.strip(), SERVER_SECRET) == (member, Role.MEMBER)
    assert f"member {member} not checked" in err
    assert "no embedded mongod runs over" in err
