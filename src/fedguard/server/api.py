"""The orchestrator's HTTP API (FastAPI).

Routes, in the order an agent uses them::

    GET  /federation/key                   public key and schema columns (anonymous)
    POST /enroll                           enrollment token -> client credential
    GET  /federation                       public key, schema, packing, settings
    GET  /rounds/current                   the round to work on
    GET  /model, /model/{version}          global model (binary, see wire.py)
    PUT  /rounds/{round}/frames/{kind}     upload one frame (binary, idempotent)
    POST /rounds/{round}/timings           the agent's costs for the round
    GET  /rounds, /rounds/{round}          round status
    GET  /metrics                          per-round history
    GET  /directives                       actions of fired policies for this agent
    POST /directives/{id}/ack              how the agent handled one
    GET  /health

Agents authenticate with their credential (``Authorization: Bearer
<client_id>.<secret>``, see :mod:`fedguard.security`); the operator's routes live
under ``/admin``. Only ``/health``, ``/federation/key`` and ``/enroll`` answer
without a credential.
Deliberate errors (:class:`~fedguard.errors.FedguardError`) become their
``http_status`` with a body ``{"error": "..."}``; anything else becomes a 500 with
a generic message and is logged with its traceback, never sent to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fedguard import __version__
from fedguard.errors import (
    AuthenticationError,
    FedguardError,
    InputError,
    PayloadTooLargeError,
)
from fedguard.response.audit import Directive, DirectiveAck
from fedguard.response.routes import audit_router
from fedguard.security.api import router as security_router
from fedguard.security.deps import (
    CLIENT_AUTH_RESPONSES,
    AuthSettings,
    ClientId,
    install_security,
    refuse,
    remote_address,
    security_context,
)
from fedguard.server.orchestrator import Orchestrator
from fedguard.server.schemas import (
    ClientTimings,
    DirectiveReceipt,
    ErrorBody,
    FederationInfo,
    FrameKindName,
    Health,
    MetricsHistory,
    RoundInfo,
    RoundList,
    RoundStatus,
    TimingsReceipt,
    UploadReceipt,
)
from fedguard.server.wire import MODEL_MEDIA_TYPE

logger = logging.getLogger(__name__)

MODEL_VERSION_HEADER = "X-Fedguard-Model-Version"
MAX_WAIT_SECONDS = 9.0
_WAIT_STEP_SECONDS = 0.01

_STATUS_TEXT = {
    400: "Invalid request or frame",
    404: "No such round or model version",
    409: "Conflicts with stored state",
    422: "Malformed parameters or body",
    500: "Internal error",
}


member_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="MemberCredential",
    description="A client credential (`<client_id>.<secret>`) or the admin token.",
)


def require_member(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(member_bearer)],
) -> None:
    """Refuse anyone but an enrolled agent or the operator (FastAPI dependency).

    Everything the federation produces belongs to its members: the fitted schema
    (fleet feature statistics), the global model, round details (which clients
    contributed) and fleet metrics. Only ``/health``, ``/federation/key`` (the
    public key and the schema's column names) and ``/enroll`` (which needs an
    enrollment token instead) answer without a credential.
    """
    context = security_context(request)
    presented = credentials.credentials if credentials else ""
    try:
        # Client credentials are "<client_id>.<secret>"; the admin token has no dot.
        if "." in presented:
            client_id = context.store.authenticate(presented)
        else:
            context.store.check_admin_token(presented)
            return
    except AuthenticationError as error:
        refuse(context, remote_address(request), error)
    context.client_limiter.acquire(client_id)


MEMBERS_ONLY = [Depends(require_member)]


class FederationKey(BaseModel):
    """What an agent checks before it spends its single-use enrollment token.

    Public on purpose: a public key is public by definition, and an agent must pin
    it (``--fingerprint``) and check that its data has the schema's columns before
    it enrolls. Nothing here is derived from members' data or names a member.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    dataset: str
    plaintext: bool
    fingerprint: str
    public_key: dict[str, Any] | None = Field(
        description="n and hs in hexadecimal; null in a plaintext federation"
    )
    numeric_columns: list[str] = Field(description="of the unfitted feature schema")
    categorical_columns: list[str] = Field(description="of the unfitted feature schema")


def _errors(*codes: int, client: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": _STATUS_TEXT[code]}
        for code in (*codes, 422, 500)
    }
    if client:
        responses.update(CLIENT_AUTH_RESPONSES)
    return responses


_BINARY_SCHEMA = {"type": "string", "format": "binary"}
_BINARY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": _BINARY_SCHEMA}},
    }
}
_MODEL_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The global model: see the binary layout in the docs",
        "content": {MODEL_MEDIA_TYPE: {"schema": _BINARY_SCHEMA}},
        "headers": {
            MODEL_VERSION_HEADER: {
                "description": "model version",
                "schema": {"type": "integer"},
            }
        },
    },
}

RoundPath = Annotated[int, Path(ge=0, le=2**31 - 1, description="round number")]
DirectivePath = Annotated[
    str, Path(pattern=r"^[0-9a-f]{32}$", description="directive id")
]
WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="seconds to hold the answer until this client has work to do",
    ),
]


def create_app(orchestrator: Orchestrator) -> FastAPI:
    """The FastAPI application serving one orchestrator."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        orchestrator.start()
        try:
            yield
        finally:
            await run_in_threadpool(orchestrator.stop)

    # No Swagger UI or ReDoc pages: they load scripts from a CDN, which offline
    # deployments cannot reach and which should not run next to the admin token.
    # The schema itself stays at /openapi.json.
    app = FastAPI(
        title="fedguard orchestrator",
        version=__version__,
        summary="Encrypted federated rounds for threat detection",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _install_error_handlers(app)
    install_security(
        app,
        orchestrator.credentials,
        settings=AuthSettings.from_mapping(orchestrator.config.auth),
        max_body_bytes=orchestrator.body_limit,
        on_enroll=orchestrator.on_enroll,
    )
    app.include_router(security_router)
    app.include_router(audit_router(orchestrator.response.audit))
    _add_routes(app, orchestrator)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FedguardError)
    async def deliberate(_request: Request, error: FedguardError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=error.http_status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(error)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(
        request: Request, error: StarletteHTTPException
    ) -> JSONResponse:
        # Keep the headers Starlette set, such as Allow on a 405.
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = _allowed_methods(request, headers.get("Allow", ""))
        return JSONResponse(
            {"error": str(error.detail)},
            status_code=error.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.error(
            "unexpected error serving %s %s",
            request.method,
            request.url.path,
            exc_info=error,
        )
        return JSONResponse({"error": "internal server error"}, status_code=500)


def _allowed_methods(request: Request, starlette_allow: str) -> str:
    """Every method the API documents for the request's path, for ``Allow``.

    Starlette names only the methods of the first route whose path matches, but a
    path such as ``/admin/enrollment-tokens`` has one route per method. Paths that
    are not in the schema (the schema itself, the docs) keep Starlette's answer.
    """
    path = request.scope["path"]
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if _path_pattern(template).fullmatch(path):
            methods.update(method.upper() for method in operations)
    return ", ".join(sorted(methods)) if methods else starlette_allow


def _path_pattern(template: str) -> re.Pattern[str]:
    """A regular expression for an OpenAPI path template: ``{name}`` is a segment."""
    return re.compile(re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(template)))


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for problem in error.errors()[:5]:
        where = ".".join(str(item) for item in problem.get("loc", ()))
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _add_routes(app: FastAPI, orchestrator: Orchestrator) -> None:
    @app.get("/health", response_model=Health, responses=_errors())
    async def health() -> Health:
        # On the event loop and from memory: it answers even while every worker
        # thread is busy committing uploads.
        return orchestrator.health()

    @app.get("/federation/key", response_model=FederationKey, responses=_errors())
    def federation_key() -> FederationKey:
        schema = orchestrator.federation.schema
        private_key = orchestrator.private_key
        public_key = None if private_key is None else private_key.public_key
        return FederationKey(
            name=orchestrator.config.federation.name,
            dataset=orchestrator.config.federation.dataset,
            plaintext=public_key is None,
            fingerprint=orchestrator.fingerprint,
            public_key=None if public_key is None else public_key.to_dict(),
            numeric_columns=list(schema.numeric_columns),
            categorical_columns=list(schema.categorical_columns),
        )

    @app.get(
        "/federation",
        response_model=FederationInfo,
        responses=_errors(client=True),
        dependencies=MEMBERS_ONLY,
    )
    def federation() -> FederationInfo:
        return orchestrator.federation_info()

    @app.get(
        "/rounds/current",
        response_model=RoundInfo,
        responses=_errors(client=True),
    )
    async def current_round(client_id: ClientId, wait: WaitQuery = 0.0) -> RoundInfo:
        return await _wait_for_work(orchestrator, client_id, wait)

    @app.get(
        "/rounds",
        response_model=RoundList,
        responses=_errors(client=True),
        dependencies=MEMBERS_ONLY,
    )
    def rounds() -> RoundList:
        return RoundList(rounds=orchestrator.round_statuses())

    @app.get(
        "/rounds/{round_id}",
        response_model=RoundStatus,
        responses=_errors(404, client=True),
        dependencies=MEMBERS_ONLY,
    )
    def round_status(round_id: RoundPath) -> RoundStatus:
        return orchestrator.round_status(round_id)

    @app.put(
        "/rounds/{round_id}/frames/{kind}",
        response_model=UploadReceipt,
        responses=_errors(400, 404, 409, client=True),
        openapi_extra=_BINARY_BODY,
    )
    async def upload(
        round_id: RoundPath,
        kind: FrameKindName,
        request: Request,
        client_id: ClientId,
    ) -> UploadReceipt:
        limit = orchestrator.max_frame_bytes(kind)
        data = await _read_body(request, limit)
        return await run_in_threadpool(
            orchestrator.upload, client_id, round_id, kind, data
        )

    @app.post(
        "/rounds/{round_id}/timings",
        response_model=TimingsReceipt,
        responses=_errors(404, client=True),
    )
    def timings(
        round_id: RoundPath, body: ClientTimings, client_id: ClientId
    ) -> TimingsReceipt:
        orchestrator.record_timings(client_id, round_id, body)
        return TimingsReceipt(round=round_id, client_id=client_id)

    @app.get(
        "/model",
        response_class=Response,
        responses={**_MODEL_RESPONSE, **_errors(404, client=True)},
        dependencies=MEMBERS_ONLY,
    )
    def latest_model() -> Response:
        return _model_response(orchestrator.model(None))

    @app.get(
        "/model/{version}",
        response_class=Response,
        responses={**_MODEL_RESPONSE, **_errors(404, client=True)},
        dependencies=MEMBERS_ONLY,
    )
    def model_version(
        version: Annotated[int, Path(ge=0, le=2**31 - 1)],
    ) -> Response:
        return _model_response(orchestrator.model(version))

    @app.get(
        "/directives",
        response_model=list[Directive],
        responses=_errors(client=True),
    )
    def directives(client_id: ClientId) -> list[Directive]:
        return orchestrator.directives(client_id)

    @app.post(
        "/directives/{directive_id}/ack",
        response_model=DirectiveReceipt,
        responses=_errors(404, 409, client=True),
    )
    def acknowledge(
        directive_id: DirectivePath, body: DirectiveAck, client_id: ClientId
    ) -> DirectiveReceipt:
        orchestrator.acknowledge(client_id, directive_id, body)
        return DirectiveReceipt(directive_id=directive_id, status=body.status)

    @app.get(
        "/metrics",
        response_model=MetricsHistory,
        responses=_errors(client=True),
        dependencies=MEMBERS_ONLY,
    )
    def metrics() -> MetricsHistory:
        return orchestrator.metrics_history()


async def _wait_for_work(
    orchestrator: Orchestrator, client_id: str, wait: float
) -> RoundInfo:
    """The current round, answered as soon as it asks something of this client.

    A long poll: agents learn of a new round at once instead of after their next
    poll, without asking the database more often than the state changes.
    """
    give_up = time.monotonic() + wait
    while True:
        seen = orchestrator.driver.changes
        info = await run_in_threadpool(orchestrator.current_round, client_id)
        missing = set(info.required) - set(info.delivered)
        if info.finished or (info.state == "open" and missing):
            return info
        while orchestrator.driver.changes == seen:
            if time.monotonic() >= give_up:
                return info
            await asyncio.sleep(_WAIT_STEP_SECONDS)


def _model_response(found: tuple[int, bytes]) -> Response:
    version, data = found
    return Response(
        content=data,
        media_type=MODEL_MEDIA_TYPE,
        headers={MODEL_VERSION_HEADER: str(version)},
    )


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing it as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"frame must be at most {limit} bytes for this round; got {declared}"
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(
                    f"frame must be at most {limit} bytes for this round; got more"
                )
            chunks.append(chunk)
    except ClientDisconnect:
        # Nothing was stored; the agent retries the whole upload.
        logger.info(
            "client disconnected during %s %s after %d bytes; nothing stored",
            request.method,
            request.url.path,
            size,
        )
        raise InputError("the client disconnected before the whole frame") from None
    if size == 0:
        raise InputError("the request body is empty; expected a binary frame")
    return b"".join(chunks)


__all__ = ["MODEL_VERSION_HEADER", "create_app"]
