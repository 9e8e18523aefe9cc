"""``fedguard clients`` as an operator runs it: real subprocesses, one database."""

import subprocess
import sys
from pathlib import Path

import pytest

from fedguard.security.credentials import CredentialStore
from fedguard.server.storage import open_engine, sqlite_url

FEDGUARD = [sys.executable, "-m", "fedguard"]


def fedguard(state_dir: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDGUARD, "clients", *arguments, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def redeem(state_dir: Path, token: str) -> str:
    """What the server does when an agent presents ``token``."""
    store = CredentialStore(open_engine(sqlite_url(state_dir)))
    try:
        return store.redeem_enrollment_token(token).client_id
    finally:
        store.close()


def test_enroll_prints_only_the_token_on_stdout(tmp_path: Path) -> None:
    result = fedguard(tmp_path, "enroll", "--name", "cloud-a", "--expires-in", "2h")

    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert len(token.splitlines()) == 1
    assert "single use" in result.stderr and "cloud-a" in result.stderr
    assert token not in result.stderr
    assert redeem(tmp_path, token).startswith("c-")


def test_list_shows_clients_and_tokens_without_secrets(tmp_path: Path) -> None:
    token = fedguard(tmp_path, "enroll", "--name", "cloud-b").stdout.strip()
    client_id = redeem(tmp_path, token)

    clients = fedguard(tmp_path, "list")
    tokens = fedguard(tmp_path, "list", "--tokens")

    assert client_id in clients.stdout and "cloud-b" in clients.stdout
    assert token.split(".")[0] in tokens.stdout and client_id in tokens.stdout
    for output in (clients.stdout, tokens.stdout, clients.stderr, tokens.stderr):
        assert token.split(".")[1] not in output


def test_revoke_takes_effect_for_the_server(tmp_path: Path) -> None:
    store = CredentialStore(open_engine(sqlite_url(tmp_path)))
    store.create_tables()
    credential = store.redeem_enrollment_token(store.issue_enrollment_token().token)

    result = fedguard(tmp_path, "revoke", credential.client_id)

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
    tmp_path: Path, arguments: tuple[str, ...], message: str
) -> None:
    result = fedguard(tmp_path, *arguments)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")


def test_state_dir_comes_from_the_environment(tmp_path: Path) -> None:
    result = subprocess.run(
        [*FEDGUARD, "clients", "enroll"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"FEDGUARD_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fedguard.db").exists()
