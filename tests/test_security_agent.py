"""The agent's credential file and enrollment exchange (fedguard.security.agent)."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fedguard.errors import AuthenticationError, ConfigError
from fedguard.security.agent import (
    AgentCredential,
    credential_path,
    enroll_agent,
    ensure_agent_credential,
    load_agent_credential,
    save_agent_credential,
)
from fedguard.security.api import router
from fedguard.security.credentials import CredentialStore
from fedguard.security.deps import install_security
from fedguard.server.storage import open_engine, sqlite_url

CREDENTIAL = AgentCredential("c-0123456789abcdef", "s" * 43, "cloud-a")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CredentialStore]:
    credential_store = CredentialStore(open_engine(sqlite_url(tmp_path)))
    credential_store.create_tables()
    yield credential_store
    credential_store.close()


@pytest.fixture
def http(
    store: CredentialStore, loopback_server: Callable[..., str]
) -> Iterator[httpx.Client]:
    app = FastAPI()
    install_security(app, store)
    app.include_router(router)
    with httpx.Client(base_url=loopback_server(app)) as client:
        yield client


def test_saved_credential_is_0600_and_loads_back(tmp_path: Path) -> None:
    path = save_agent_credential(tmp_path / "agent", CREDENTIAL)

    assert path == credential_path(tmp_path / "agent")
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_agent_credential(tmp_path / "agent") == CREDENTIAL


def test_missing_credential_loads_as_none(tmp_path: Path) -> None:
    assert load_agent_credential(tmp_path) is None


def test_credential_readable_by_others_is_refused(tmp_path: Path) -> None:
    save_agent_credential(tmp_path, CREDENTIAL).chmod(0o640)

    with pytest.raises(ConfigError, match=r"mode 0640.*chmod 600"):
        load_agent_credential(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"client_id": "c-0123456789abcdef"}),
        json.dumps({"client_id": "someone", "secret": "s" * 43}),
        json.dumps(["c-0123456789abcdef", "s" * 43]),
    ],
)
def test_malformed_credential_file_is_refused(tmp_path: Path, content: str) -> None:
    path = credential_path(tmp_path)
    path.write_text(content)
    path.chmod(0o600)

    with pytest.raises(ConfigError, match=r"malformed"):
        load_agent_credential(tmp_path)


def test_headers_carry_the_bearer_credential() -> None:
    assert CREDENTIAL.headers() == {
        "Authorization": f"Bearer c-0123456789abcdef.{'s' * 43}"
    }
    assert "s" * 43 not in repr(CREDENTIAL)


def test_enrollment_exchanges_a_token_once(
    store: CredentialStore, http: httpx.Client
) -> None:
    issued = store.issue_enrollment_token(name="cloud-b")

    credential = enroll_agent(http, "/enroll", issued.token)

    assert credential.name == "cloud-b"
    assert store.authenticate(credential.bearer_token) == credential.client_id
    with pytest.raises(AuthenticationError, match=r"unknown, expired or already used"):
        enroll_agent(http, "/enroll", issued.token)


def test_malformed_token_is_refused_before_any_request(http: httpx.Client) -> None:
    with pytest.raises(ConfigError, match=r"enrollment token is malformed"):
        enroll_agent(http, "/enroll", "abc")


def test_agent_enrolls_once_then_reuses_its_credential(
    store: CredentialStore, http: httpx.Client, tmp_path: Path
) -> None:
    issued = store.issue_enrollment_token()
    state_dir = tmp_path / "agent"

    first = ensure_agent_credential(state_dir, http, "/enroll", issued.token)
    # The token is spent; a restart must not need it again.
    second = ensure_agent_credential(state_dir, http, "/enroll", issued.token)

    assert first == second
    assert len(store.list_clients()) == 1


def test_agent_without_credential_or_token_says_how_to_fix(
    http: httpx.Client, tmp_path: Path
) -> None:
    with pytest.raises(
        ConfigError, match=r"no credential in .*fedguard clients enroll"
    ):
        ensure_agent_credential(tmp_path, http, "/enroll", None)


def test_the_state_directory_is_created_private(tmp_path: Path) -> None:
    save_agent_credential(tmp_path / "agents" / "cloud-a", CREDENTIAL)

    assert (tmp_path / "agents" / "cloud-a").stat().st_mode & 0o777 == 0o700


def test_an_unusable_state_directory_is_refused_before_the_token_is_spent(
    store: CredentialStore, http: httpx.Client, tmp_path: Path
) -> None:
    issued = store.issue_enrollment_token()
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    with pytest.raises(ConfigError, match=r"cannot create the agent's state dir"):
        ensure_agent_credential(blocker / "agent", http, "/enroll", issued.token)
    with pytest.raises(ConfigError, match=r"state directory .* is not a directory"):
        ensure_agent_credential(blocker, http, "/enroll", issued.token)

    assert store.list_clients() == []
    assert store.list_enrollment_tokens()[0].used_at is None


def test_a_shared_state_directory_is_used_with_a_warning(
    store: CredentialStore,
    http: httpx.Client,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)

    ensure_agent_credential(
        shared, http, "/enroll", store.issue_enrollment_token().token
    )

    assert "is accessible to other users (mode 0755)" in caplog.text
    assert credential_path(shared).stat().st_mode & 0o777 == 0o600
