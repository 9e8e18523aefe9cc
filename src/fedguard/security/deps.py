"""FastAPI wiring: authentication dependencies, error responses, limits.

The server calls :func:`install_security` once while building its app, then
protects routes with the dependencies::

    @app.post("/rounds/{round}/update", responses=CLIENT_AUTH_RESPONSES)
    def upload(round: int, client_id: ClientId) -> ...: ...

``client_id`` comes from the credential, never from the request; a route whose path
or body also names a client_id checks it with :func:`ensure_same_client` (or uses
:func:`require_path_client`). Every authentication failure answers 401 "invalid
credentials"; an address that keeps failing gets 429 instead, while valid
credentials from it still pass; an authenticated client over its request budget
gets 429 with ``Retry-After``.
"""

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, NoReturn

from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from fedguard.errors import (
    AuthenticationError,
    ConfigError,
    FedguardError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
)
from fedguard.security.credentials import CredentialStore
from fedguard.security.limits import (
    DEFAULT_MAX_BODY_BYTES,
    BodyLimit,
    BodySizeLimitMiddleware,
)
from fedguard.security.ratelimit import RateLimiter, RateLimitExceededError
from fedguard.security.tokens import CLIENT_ID_PATTERN

logger = logging.getLogger(__name__)

# An agent makes a handful of requests per round plus polling; 120 at once and 20 per
# second sustained leave it ample room and still stop a runaway loop.
CLIENT_BURST = 120
CLIENT_REQUESTS_PER_SECOND = 20.0
# Failed authentications per remote address: legitimate clients almost never fail,
# so a small budget costs them nothing and turns guessing into a trickle.
FAILURE_BURST = 30
FAILURES_PER_SECOND = 1.0

EnrollHook = Callable[[str, str | None], None]

_AUTH_RANGES: dict[str, tuple[type, float, float]] = {
    "client_burst": (int, 1, 1_000_000),
    "client_requests_per_second": (float, 0.001, 1_000_000),
    "failure_burst": (int, 1, 1_000_000),
    "failures_per_second": (float, 0.001, 1_000_000),
}


@dataclass(frozen=True)
class AuthSettings:
    """The ``[auth]`` section: request budgets per client and per address."""

    client_burst: int = CLIENT_BURST
    client_requests_per_second: float = CLIENT_REQUESTS_PER_SECOND
    failure_burst: int = FAILURE_BURST
    failures_per_second: float = FAILURES_PER_SECOND

    @classmethod
    def from_mapping(cls, section: Mapping[str, object]) -> "AuthSettings":
        """Validate a parsed ``[auth]`` table; missing keys keep their defaults."""
        values: dict[str, Any] = {}
        for key, value in section.items():
            if key not in _AUTH_RANGES:
                accepted = ", ".join(_AUTH_RANGES)
                raise ConfigError(f"unknown setting [auth] {key}; accepted: {accepted}")
            values[key] = _auth_value(key, value)
        return cls(**values)

    def client_limiter(self) -> RateLimiter:
        return RateLimiter(self.client_burst, self.client_requests_per_second)

    def failure_limiter(self) -> RateLimiter:
        return RateLimiter(self.failure_burst, self.failures_per_second)


def _auth_value(key: str, value: object) -> int | float:
    kind, low, high = _AUTH_RANGES[key]
    noun = "an integer" if kind is int else "a number"
    problem = ConfigError(
        f"auth.{key} must be {noun} in [{low:g}, {high:g}]; got {value!r}"
    )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise problem
    if (kind is int and isinstance(value, float)) or not low <= value <= high:
        raise problem
    return int(value) if kind is int else float(value)


@dataclass
class SecurityContext:
    """What the dependencies need, kept on ``app.state``."""

    store: CredentialStore
    client_limiter: RateLimiter
    failure_limiter: RateLimiter
    on_enroll: EnrollHook | None = None
    warned: dict[str, float] = field(default_factory=dict)

    def warn_once(self, address: str) -> None:
        """Log an address over its failure budget at most once a minute."""
        now = time.monotonic()
        if now - self.warned.get(address, -math.inf) < 60.0:
            return
        if len(self.warned) > 10_000:
            self.warned.clear()
        self.warned[address] = now
        logger.warning("too many failed authentications from %s", address)


class ErrorResponse(BaseModel):
    """Body of every fedguard error response."""

    error: str


#: ``responses=`` entry for any other documented fedguard error status.
ERROR_RESPONSE: dict[str, Any] = {"model": ErrorResponse}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_UNAUTHORIZED = {**ERROR_RESPONSE, "description": "Missing or invalid credentials."}
# FastAPI answers 400 to a body it cannot decode (invalid UTF-8, for one).
_MALFORMED = {**ERROR_RESPONSE, "description": "Malformed request body."}
_TOO_LARGE = {**ERROR_RESPONSE, "description": "Request body over the limit."}
_RATE_LIMITED = {
    **ERROR_RESPONSE,
    "description": "Too many requests or failed authentications.",
    "headers": _RETRY_AFTER,
}

#: ``responses=`` for routes protected by :func:`require_client`.
CLIENT_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _MALFORMED,
    401: _UNAUTHORIZED,
    403: {
        **ERROR_RESPONSE,
        "description": "The credential may not act on this client.",
    },
    413: _TOO_LARGE,
    429: _RATE_LIMITED,
}
#: ``responses=`` for routes protected by :func:`require_admin`.
ADMIN_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _MALFORMED,
    401: _UNAUTHORIZED,
    413: _TOO_LARGE,
    429: _RATE_LIMITED,
}
#: ``responses=`` for unauthenticated routes that read a body.
PUBLIC_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _MALFORMED,
    413: _TOO_LARGE,
    429: _RATE_LIMITED,
}

client_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ClientCredential",
    description="`Authorization: Bearer <client_id>.<secret>` from enrollment.",
)
admin_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="`Authorization: Bearer <admin token>` from the state directory.",
)


def install_security(
    app: FastAPI,
    store: CredentialStore,
    *,
    settings: AuthSettings | None = None,
    client_limiter: RateLimiter | None = None,
    failure_limiter: RateLimiter | None = None,
    max_body_bytes: BodyLimit = DEFAULT_MAX_BODY_BYTES,
    on_enroll: EnrollHook | None = None,
) -> SecurityContext:
    """Attach credentials, rate limits, body caps and error handlers to ``app``.

    Call before the app starts. Request budgets come from ``settings`` (the
    ``[auth]`` section) unless limiters are given. ``max_body_bytes`` is one cap or a
    callable
    ``(method, path) -> cap`` (see :class:`BodySizeLimitMiddleware`); ``on_enroll``
    is called with ``(client_id, name)`` after an agent enrolls.
    """
    settings = settings or AuthSettings()
    if client_limiter is None:
        client_limiter = settings.client_limiter()
    if failure_limiter is None:
        failure_limiter = settings.failure_limiter()
    context = SecurityContext(store, client_limiter, failure_limiter, on_enroll)
    app.state.fedguard_security = context

    for error in (
        AuthenticationError,
        PermissionDeniedError,
        RateLimitedError,
        PayloadTooLargeError,
    ):
        app.add_exception_handler(error, fedguard_error_handler)
    # Other fedguard errors (404 on an unknown client, ...) map by their status too,
    # unless the application already installed its own handler for them.
    app.exception_handlers.setdefault(FedguardError, fedguard_error_handler)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_body_bytes)
    return context


async def fedguard_error_handler(request: Request, error: Exception) -> JSONResponse:
    """Answer a :class:`FedguardError` with its status and ``{"error": message}``."""
    assert isinstance(error, FedguardError)
    headers: dict[str, str] = {}
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, RateLimitExceededError):
        headers["Retry-After"] = str(error.retry_after_seconds)
    elif isinstance(error, RateLimitedError):
        headers["Retry-After"] = "1"

    return JSONResponse(
        {"error": str(error)}, status_code=error.http_status, headers=headers
    )


def security_context(request: Request) -> SecurityContext:
    """The context :func:`install_security` stored on the app."""
    context: SecurityContext | None = getattr(
        request.app.state, "fedguard_security", None
    )
    if context is None:
        raise RuntimeError("call install_security(app, store) before serving")
    return context


def remote_address(request: Request) -> str:
    """The peer address the failure budget is kept for."""
    return request.client.host if request.client else "unknown"


def refuse(context: SecurityContext, address: str, error: FedguardError) -> NoReturn:
    """Raise ``error`` for a failed authentication, or 429 once ``address`` has
    failed more often than its budget allows.

    Only failures are slowed: a valid credential sent from the same address is
    still accepted, so one misconfigured agent cannot lock out its neighbours
    behind the same NAT or on the same loopback.
    """
    try:
        context.failure_limiter.acquire(address)
    except RateLimitExceededError as limited:
        context.warn_once(address)
        raise limited from None
    raise error


def require_client(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(client_bearer)],
) -> str:
    """The client_id of the request's valid credential (FastAPI dependency)."""
    context = security_context(request)

    try:
        client_id = context.store.authenticate(
            credentials.credentials if credentials else ""
        )
    except AuthenticationError as error:
        logger.debug("refused client credential from %s", remote_address(request))
        refuse(context, remote_address(request), error)

    context.client_limiter.acquire(client_id)
    return client_id


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    """Refuse any request that does not carry the admin token (FastAPI dependency)."""
    context = security_context(request)

    try:
        context.store.check_admin_token(credentials.credentials if credentials else "")
    except AuthenticationError as error:
        logger.debug("refused admin token from %s", remote_address(request))
        refuse(context, remote_address(request), error)


ClientId = Annotated[str, Depends(require_client)]
AdminAccess = Annotated[None, Depends(require_admin)]


def ensure_same_client(authenticated: str, claimed: str) -> None:
    """403 unless the client_id named in a request is the authenticated one."""
    if claimed != authenticated:
        raise PermissionDeniedError(
            "a client may act only as itself: the request names another client_id"
        )


def require_path_client(
    client_id: Annotated[str, Path(pattern=CLIENT_ID_PATTERN)],
    authenticated: ClientId,
) -> str:
    """For routes with ``{client_id}`` in the path: the authenticated client_id,
    after checking the path names the same client (FastAPI dependency)."""
    ensure_same_client(authenticated, client_id)
    return authenticated
