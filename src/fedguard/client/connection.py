"""The agent's HTTP client: typed calls, bounded retries with backoff and jitter.

While the orchestrator is unreachable (connection refused, reset, timed out) or
answers 429, 502, 503 or 504, a call is retried after ``min(cap, base·2^attempt)``
seconds scaled by a random factor in [0.5, 1] ("equal jitter"), so that agents
restarted together do not hammer the server in step. Retries stop after
``retry_for`` seconds in total; then :class:`ServerUnreachableError` says so. A
server certificate the agent does not trust is not retried: it fails at once.
Any other error status becomes the :mod:`fedguard.errors` exception of that status
with the server's message.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from fedguard.errors import (
    AuthenticationError,
    ConflictError,
    FedguardError,
    InputError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
)
from fedguard.security.tls import untrusted_server_error

logger = logging.getLogger(__name__)

CLIENT_HEADER = "X-Fedguard-Client"
MODEL_VERSION_HEADER = "X-Fedguard-Model-Version"

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_STATUS_ERRORS: dict[int, type[FedguardError]] = {
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
}
_jitter = secrets.SystemRandom()

T = TypeVar("T")


class ServerUnreachableError(FedguardError):
    """The orchestrator did not answer within the retry budget."""

    http_status = 503


class StopRequested(FedguardError):  # noqa: N818 - a signal, not a failure
    """The agent was asked to stop (SIGINT or SIGTERM) while waiting."""


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between attempts: base·2^attempt seconds, at most ``cap``."""

    base: float = 0.5
    cap: float = 10.0
    retry_for: float = 120.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.base * 2**attempt)
        return float(ceiling * _jitter.uniform(0.5, 1.0))


class Connection:
    """Calls to one orchestrator on behalf of one agent."""

    def __init__(
        self,
        base_url: str,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        stop: threading.Event | None = None,
        client: httpx.Client | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.ca_file = ca_file
        self.retry = retry or RetryPolicy()
        self.stop = stop or threading.Event()
        self.client_id: str | None = None
        self._http = client or httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- calls -------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/health")

    def register(self, name: str, client_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if client_id is not None:
            body["client_id"] = client_id
        return self._json("POST", "/clients", json=body)

    def federation(self) -> dict[str, Any]:
        return self._json("GET", "/federation")

    def federation_key(self) -> dict[str, Any]:
        """The public key and schema columns, answered without a credential."""
        return self._json("GET", "/federation/key")

    def current_round(self, wait: float = 0.0) -> dict[str, Any]:
        """The current round; with ``wait``, held until there is work for us."""
        return self._json("GET", "/rounds/current", params={"wait": wait})

    def round_status(self, round_id: int) -> dict[str, Any]:
        return self._json("GET", f"/rounds/{round_id}")

    def rounds(self) -> list[dict[str, Any]]:
        rounds: list[dict[str, Any]] = self._json("GET", "/rounds")["rounds"]
        return rounds

    def model(self, version: int | None = None) -> bytes:
        path = "/model" if version is None else f"/model/{version}"
        return self._call("GET", path, lambda response: response.content)

    def upload(self, round_id: int, kind: str, frame: bytes) -> dict[str, Any]:
        return self._json(
            "PUT",
            f"/rounds/{round_id}/frames/{kind}",
            content=frame,
            headers={"Content-Type": "application/octet-stream"},
        )

    def directives(self) -> list[dict[str, Any]]:
        """Directives of fired policies waiting for this agent."""
        found = self._call("GET", "/directives", lambda response: response.json())
        return [item for item in found if isinstance(item, dict)]

    def acknowledge(self, directive_id: str, ack: dict[str, str]) -> None:
        self._json("POST", f"/directives/{directive_id}/ack", json=ack)

    def report_timings(self, round_id: int, timings: dict[str, Any]) -> None:
        self._json("POST", f"/rounds/{round_id}/timings", json=timings)

    # --- plumbing ----------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._call(method, path, _json_object, **kwargs)

    def _call(
        self,
        method: str,
        path: str,
        read: Callable[[httpx.Response], T],
        **kwargs: Any,
    ) -> T:
        headers = dict(kwargs.pop("headers", {}))
        if self.client_id is not None:
            headers[CLIENT_HEADER] = self.client_id

        give_up = time.monotonic() + self.retry.retry_for
        attempt = 0
        while True:
            problem = self._attempt(method, path, headers, kwargs)
            if isinstance(problem, httpx.Response):
                return read(problem)
            if time.monotonic() >= give_up:
                raise ServerUnreachableError(
                    f"the orchestrator at {self.base_url} did not answer {method} "
                    f"{path} for {self.retry.retry_for:.0f} s ({problem}); check "
                    "that it is running and reachable"
                )
            delay = min(self.retry.delay(attempt), max(0.0, give_up - time.monotonic()))
            logger.info("server unreachable (%s); retrying in %.1f s", problem, delay)
            if self.stop.wait(delay):
                raise StopRequested(
                    "stopping: interrupted while waiting for the server"
                )
            attempt += 1

    def _attempt(
        self, method: str, path: str, headers: dict[str, str], kwargs: dict[str, Any]
    ) -> httpx.Response | str:
        """The response, or why this attempt failed in a way worth retrying."""
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except (httpx.TransportError, httpx.TimeoutException) as error:
            # A certificate this agent does not trust will not fix itself.
            untrusted = untrusted_server_error(error, self.ca_file)
            if untrusted is not None:
                raise untrusted from None
            return type(error).__name__
        if response.status_code in _RETRY_STATUSES:
            return f"HTTP {response.status_code}"
        if response.is_success:
            return response
        raise _error_for(response)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict):
        raise InputError(f"server answered with {type(body).__name__}, not an object")
    return body


def _error_for(response: httpx.Response) -> FedguardError:
    try:
        message = str(response.json().get("error", response.text))
    except ValueError:
        message = response.text[:200]
    error_class = _STATUS_ERRORS.get(response.status_code, InputError)
    if response.status_code >= 500:
        error_class = FedguardError
    return error_class(f"server answered {response.status_code}: {message}")
