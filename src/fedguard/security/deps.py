"""FastAPI wiring: authentication dependencies, error responses, limits.

The server calls :func:`install_security` once while building its app, then
protects routes with the dependencies::

    @app.post("/rounds/{round}/update", responses=CLIENT_AUTH_RESPONSES)
    def upload(round: int, client_id: ClientId) -> ...: ...

``client_id`` comes from the credential, never from the request; a route whose path
or body also names a client_id checks it with :func:`ensure_same_client` (or uses
:func:`require_path_client`). Every authentication failure answers 401 "invalid
credentials"; an address that keeps failing is answered 429 before any lookup;
an authenticated client over its request budget gets 429 with ``Retry-After``.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from fedguard.errors import (
    AuthenticationError,
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


@dataclass
class SecurityContext:
    """What the dependencies need, kept on ``app.state``."""

    store: CredentialStore
    client_limiter: RateLimiter
    failure_limiter: RateLimiter
    on_enroll: EnrollHook | None = None


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
_TOO_LARGE = {**ERROR_RESPONSE, "description": "Request body over the limit."}
_RATE_LIMITED = {
    **ERROR_RESPONSE,
    "description": "Too many requests or failed authentications.",
    "headers": _RETRY_AFTER,
}

#: ``responses=`` for routes protected by :func:`require_client`.
CLIENT_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
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
    401: _UNAUTHORIZED,
    413: _TOO_LARGE,
    429: _RATE_LIMITED,
}
#: ``responses=`` for unauthenticated routes that read a body.
PUBLIC_RESPONSES: dict[int | str, dict[str, Any]] = {
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
    client_limiter: RateLimiter | None = None,
    failure_limiter: RateLimiter | None = None,
    max_body_bytes: BodyLimit = DEFAULT_MAX_BODY_BYTES,
    on_enroll: EnrollHook | None = None,
) -> SecurityContext:
    """Attach credentials, rate limits, body caps and error handlers to ``app``.

    Call before the app starts. ``max_body_bytes`` is one cap or a callable
    ``(method, path) -> cap`` (see :class:`BodySizeLimitMiddleware`); ``on_enroll``
    is called with ``(client_id, name)`` after an agent enrolls.
    """
    if client_limiter is None:
        client_limiter = RateLimiter(CLIENT_BURST, CLIENT_REQUESTS_PER_SECOND)
    if failure_limiter is None:
        failure_limiter = RateLimiter(FAILURE_BURST, FAILURES_PER_SECOND)
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


def check_failure_budget(context: SecurityContext, address: str) -> None:
    """429 for an address that spent its failed-authentication budget."""
    wait = context.failure_limiter.retry_after(address)
    if wait > 0:
        raise RateLimitExceededError(wait)


def record_failure(context: SecurityContext, address: str) -> None:
    """Spend one unit of ``address``'s failed-authentication budget."""
    try:
        context.failure_limiter.acquire(address)
    except RateLimitExceededError:
        logger.warning("too many failed authentications from %s", address)


def require_client(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(client_bearer)],
) -> str:
    """The client_id of the request's valid credential (FastAPI dependency)."""
    context = security_context(request)
    address = remote_address(request)
    check_failure_budget(context, address)

    try:
        client_id = context.store.authenticate(
            credentials.credentials if credentials else ""
        )
    except AuthenticationError:
        logger.debug("refused client credential from %s", address)
        record_failure(context, address)
        raise

    context.client_limiter.acquire(client_id)
    return client_id


def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
) -> None:
    """Refuse any request that does not carry the admin token (FastAPI dependency)."""
    context = security_context(request)
    address = remote_address(request)
    check_failure_budget(context, address)

    try:
        context.store.check_admin_token(credentials.credentials if credentials else "")
    except AuthenticationError:
        logger.debug("refused admin token from %s", address)
        record_failure(context, address)
        raise


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
