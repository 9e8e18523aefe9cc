"""The agent's side of client authentication.

An agent starts with a single-use enrollment token from the operator, exchanges it
once for its own credential (client_id and secret) and keeps that credential in its
state directory (created 0700), mode 0600. Every later request carries it as
``Authorization: Bearer <client_id>.<secret>``.

This module needs no database and imports nothing from the server.
"""

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fedguard.errors import (
    AuthenticationError,
    ConfigError,
    FedguardError,
    RateLimitedError,
)
from fedguard.files import read_secret_file, write_secret_file
from fedguard.security.tokens import is_client_id, is_secret, split_enrollment_token

logger = logging.getLogger(__name__)

CREDENTIAL_FILE = "credential.json"


@dataclass(frozen=True)
class AgentCredential:
    """A client's identity and secret. The secret never appears in ``repr``."""

    client_id: str
    secret: str = field(repr=False)
    name: str | None = None

    def __post_init__(self) -> None:
        if not is_client_id(self.client_id) or not is_secret(self.secret):
            raise ConfigError("credential is malformed; enroll the agent again")

    @property
    def bearer_token(self) -> str:
        """The value after ``Bearer`` in the Authorization header."""
        return f"{self.client_id}.{self.secret}"

    def headers(self) -> dict[str, str]:
        """Headers that authenticate a request, e.g. ``httpx.Client(headers=...)``."""
        return {"Authorization": f"Bearer {self.bearer_token}"}


def prepare_state_dir(state_dir: Path) -> None:
    """Create the agent's state directory 0700, or check an existing one.

    The directory holds the credential and the quarantined events; it must be
    writable before a single-use token is spent on a credential that could not be
    saved. An existing directory that other users can enter is used as it is, with
    a warning: it may be shared on purpose, and the files in it are 0600 anyway.
    """
    if state_dir.exists() and not state_dir.is_dir():
        raise ConfigError(f"the agent's state directory {state_dir} is not a directory")
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the agent's state directory {state_dir}: {error.strerror}"
        ) from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"the agent's state directory {state_dir} is not writable")
    mode = state_dir.stat().st_mode & 0o777
    if mode & 0o077:
        logger.warning(
            "state directory %s is accessible to other users (mode %04o); "
            "`chmod 700 %s` keeps its listing private",
            state_dir,
            mode,
            state_dir,
        )


def credential_path(state_dir: Path) -> Path:
    """Where the agent keeps its credential."""
    return state_dir / CREDENTIAL_FILE


def save_agent_credential(state_dir: Path, credential: AgentCredential) -> Path:
    """Write ``credential`` to the agent's state directory, mode 0600."""
    payload = {
        "client_id": credential.client_id,
        "secret": credential.secret,
        "name": credential.name,
    }
    path = credential_path(state_dir)
    prepare_state_dir(state_dir)
    write_secret_file(path, json.dumps(payload, indent=2).encode() + b"\n")
    logger.info("saved credential of %s to %s", credential.client_id, path)
    return path


def load_agent_credential(state_dir: Path) -> AgentCredential | None:
    """The credential saved in ``state_dir``, or None if the agent has not enrolled.

    Refuses a file that other users can read or write.
    """
    path = credential_path(state_dir)
    if not path.exists():
        return None

    try:
        payload = json.loads(read_secret_file(path))
        return AgentCredential(
            client_id=payload["client_id"],
            secret=payload["secret"],
            name=payload.get("name"),
        )
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"credential file {path} is malformed; delete it and enroll again"
        ) from None


def enroll_agent(
    http: httpx.Client,
    enroll_url: str,
    enrollment_token: str,
    *,
    name: str | None = None,
) -> AgentCredential:
    """Exchange a single-use enrollment token for this agent's credential.

    ``enroll_url`` is the server's enrollment route (``POST``), absolute or relative
    to ``http.base_url``.
    """
    if split_enrollment_token(enrollment_token) is None:
        raise ConfigError(
            "enrollment token is malformed; copy it exactly as "
            "`fedguard clients enroll` printed it"
        )
    body: dict[str, Any] = {"enrollment_token": enrollment_token}
    if name is not None:
        body["name"] = name

    response = http.post(enroll_url, json=body)
    if response.status_code == 401:
        raise AuthenticationError(
            "enrollment token refused: it is unknown, expired or already used; "
            "ask the operator for a new one (`fedguard clients enroll`)"
        )
    if response.status_code == 429:
        raise RateLimitedError(
            "enrollment refused for now: too many attempts; retry after "
            f"{response.headers.get('Retry-After', '?')} s"
        )
    if response.status_code != 201:
        raise FedguardError(
            f"enrollment failed: server answered HTTP {response.status_code}"
        )

    credential = _credential_from_response(response)
    logger.info("enrolled as %s", credential.client_id)
    return credential


def _credential_from_response(response: httpx.Response) -> AgentCredential:
    try:
        payload = response.json()
        return AgentCredential(
            client_id=payload["client_id"],
            secret=payload["secret"],
            name=payload.get("name"),
        )
    except (ValueError, KeyError, TypeError, ConfigError):
        raise FedguardError("enrollment failed: malformed answer from server") from None


def ensure_agent_credential(
    state_dir: Path,
    http: httpx.Client,
    enroll_url: str,
    enrollment_token: str | None,
    *,
    name: str | None = None,
) -> AgentCredential:
    """The saved credential, or a new one from ``enrollment_token`` (then saved).

    A saved credential wins: the token is single use and was spent the first time.
    """
    saved = load_agent_credential(state_dir)
    if saved is not None:
        return saved
    if enrollment_token is None:
        raise ConfigError(
            f"no credential in {state_dir}; pass an enrollment token from "
            "`fedguard clients enroll` on the server"
        )

    prepare_state_dir(state_dir)  # before the single-use token is spent
    credential = enroll_agent(http, enroll_url, enrollment_token, name=name)
    save_agent_credential(state_dir, credential)
    return credential
