"""``fedguard clients`` as an operator runs it: real subprocesses, one database.

The database is the one a real orchestrator creates in its state directory.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedguard.crypto.keys import PrivateKey, save_private_key
from fedguard.security.credentials import CredentialStore
from fedguard.server.config import load_config
from fedguard.server.orchestrator import PRIVATE_KEY_FILE, Orchestrator
from fedguard.server.storage import open_engine, sqlite_url

FEDGUARD = [sys.executable, "-m", "fedguard"]
# The environment of each run: no FEDGUARD_* variable of the shell running the tests.
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("FEDGUARD_")}


def start_once(state_dir: Path, private_key: PrivateKey) -> None:
    """Leave in ``state_dir`` what a real orchestrator's first start leaves."""
    save_private_key(private_key, state_dir / PRIVATE_KEY_FILE)
    Orchestrator(load_config(overrides={"server.state_dir": state_dir})).stop()


@pytest.fixture
def state_dir(tmp_path: Path, private_key_2048: PrivateKey) -> Path:
    start_once(tmp_path / "state", private_key_2048)
    return tmp_path / "state"


def run(
    *arguments: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDGUARD, "clients", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**CLEAN_ENV, **env},
    )


def fedguard(state_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return run(*arguments, "--state-dir", str(state_dir))


def redeem(state_dir: Path, token: str) -> str:
    """What the server does when an agent presents ``token``."""
    store = CredentialStore(open_engine(sqlite_url(state_dir)))
    try:
        return store.redeem_enrollment_token(token).client_id
    finally:
        store.close()


def test_enroll_prints_only_the_token_on_stdout(state_dir: Path) -> None:
    result = fedguard(state_dir, "enroll", "--name", "cloud-a", "--expires-in", "2h")

    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert len(token.splitlines()) == 1
    assert "single use" in result.stderr and "cloud-a" in result.stderr
    assert token not in result.stderr
    assert redeem(state_dir, token).startswith("c-")


def test_list_shows_clients_and_tokens_without_secrets(state_dir: Path) -> None:
    token = fedguard(state_dir, "enroll", "--name", "cloud-b").stdout.strip()
    client_id = redeem(state_dir, token)

    clients = fedguard(state_dir, "list")
    tokens = fedguard(state_dir, "list", "--tokens")

    assert client_id in clients.stdout and "cloud-b" in clients.stdout
    assert token.split(".")[0] in tokens.stdout and client_id in tokens.stdout
    for output in (clients.stdout, tokens.stdout, clients.stderr, tokens.stderr):
        assert token.split(".")[1] not in output


def test_revoke_takes_effect_for_the_server(state_dir: Path) -> None:
    store = CredentialStore(open_engine(sqlite_url(state_dir)))
    credential = store.redeem_enrollment_token(store.issue_enrollment_token().token)

    result = fedguard(state_dir, "revoke", credential.client_id)

    assert result.returncode == 0, result.stderr
    assert f"revoked {credential.client_id}" in result.stdout
    assert store.list_clients()[0].revoked
    store.close()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("revoke", "c-0000000000000000"), "client_id 'c-0000000000000000' is not"),
        (("enroll", "--expires-in", "soon"), "expires-in must be a number followed"),
        (("enroll", "--expires-in", "31d"), "expires-in must be between"),
        (("enroll", "--name", "no spaces"), "name must be 1 to 64"),
    ],
)
def test_mistakes_are_one_line_errors(
    state_dir: Path, arguments: tuple[str, ...], message: str
) -> None:
    result = fedguard(state_dir, *arguments)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")


def test_a_state_dir_without_a_database_is_refused_and_left_alone(
    state_dir: Path,
) -> None:
    typo = state_dir.parent / "stat"
    results = [
        fedguard(typo, "enroll", "--name", "cloud-a"),
        fedguard(typo, "list"),
        fedguard(typo, "revoke", "c-0000000000000000"),
    ]

    expected = (
        f"error: no orchestrator database at {typo}/fedguard.db; pass the "
        "server's --state-dir or --database-url"
    )
    assert [r.returncode for r in results] == [2, 2, 2]
    assert [r.stderr.strip() for r in results] == [expected] * 3
    assert [r.stdout for r in results] == ["", "", ""]
    assert not typo.exists()


def test_a_database_url_needs_no_state_dir(state_dir: Path) -> None:
    url = sqlite_url(state_dir)

    here = state_dir.parent
    enrolled = run("enroll", "--name", "cloud-u", "--database-url", url, cwd=here)
    listed = run("list", "--tokens", "--database-url", url, cwd=here)

    assert enrolled.returncode == 0, enrolled.stderr
    assert listed.returncode == 0 and "cloud-u" in listed.stdout
    assert not (here / "fedguard-state").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuch://x", "cannot open database nosuch://x: Can't load plugin"),
        ("not a url", "cannot open database 'not a url': Could not parse"),
        ("sqlite:////nonexistent/fg.db", "no orchestrator database at /nonexist"),
        (
            "postgresql+psycopg://fg:hunter2@127.0.0.1:1/fg",
            "cannot open database postgresql+psycopg://fg:***@127.0.0.1:1/fg: ",
        ),
    ],
)
def test_bad_database_urls_are_one_line_errors(
    state_dir: Path, url: str, message: str
) -> None:
    result = run("list", "--database-url", url, cwd=state_dir)

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "hunter2" not in result.stderr


def test_defaults_find_a_default_server_next_to_them(
    tmp_path: Path, private_key_2048: PrivateKey
) -> None:
    # fedguard-state is the state directory of `fedguard server` by default.
    start_once(tmp_path / "fedguard-state", private_key_2048)

    enrolled = run("enroll", "--name", "cloud-d", cwd=tmp_path)
    listed = run("list", "--tokens", cwd=tmp_path)

    assert enrolled.returncode == 0, enrolled.stderr
    assert listed.returncode == 0 and "cloud-d" in listed.stdout


@pytest.mark.parametrize(
    "variable", ["FEDGUARD_SERVER_STATE_DIR", "FEDGUARD_STATE_DIR"]
)
def test_state_dir_comes_from_the_environment(state_dir: Path, variable: str) -> None:
    result = run("enroll", "--name", "cloud-e", **{variable: str(state_dir)})

    assert result.returncode == 0, result.stderr
    assert "cloud-e" in fedguard(state_dir, "list", "--tokens").stdout


def test_the_server_variables_win_like_they_do_for_the_server(
    state_dir: Path,
) -> None:
    elsewhere = state_dir / "elsewhere"

    result = run(
        "list",
        FEDGUARD_SERVER_STATE_DIR=str(state_dir),
        FEDGUARD_STATE_DIR=str(elsewhere),
        FEDGUARD_DATABASE_URL="nosuch://x",
        FEDGUARD_SERVER_DATABASE_URL=sqlite_url(state_dir),
    )

    assert result.returncode == 0, result.stderr
    assert "client_id" in result.stdout
