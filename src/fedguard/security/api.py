"""HTTP routes for enrollment and for the operator's credential administration.

Mount :data:`router` on the orchestrator app after :func:`install_security`::

    app.include_router(router)            # or with the API's prefix

``POST /enroll`` is the only route open without a credential; it needs a valid
enrollment token instead. Everything under ``/admin`` needs the admin token.
"""

import datetime
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from fedguard.errors import AuthenticationError
from fedguard.security.credentials import (
    MAX_TOKEN_LIFETIME,
    MIN_TOKEN_LIFETIME,
    ClientRecord,
    EnrollmentTokenRecord,
)
from fedguard.security.deps import (
    ADMIN_AUTH_RESPONSES,
    ERROR_RESPONSE,
    PUBLIC_RESPONSES,
    refuse,
    remote_address,
    require_admin,
    security_context,
)
from fedguard.security.tokens import (
    CLIENT_ID_PATTERN,
    ENROLLMENT_TOKEN_PATTERN,
    NAME_PATTERN,
)

logger = logging.getLogger(__name__)

ENROLL_PATH = "/enroll"

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]


class EnrollRequest(BaseModel):
    """An agent's request to exchange an enrollment token for a credential."""

    model_config = ConfigDict(extra="forbid", strict=True)

    enrollment_token: str = Field(
        pattern=ENROLLMENT_TOKEN_PATTERN,
        max_length=60,
        description="The single-use token printed by `fedguard clients enroll`.",
    )
    name: Name | None = Field(
        default=None, description="Label for the client if the token has none."
    )


class EnrolledClient(BaseModel):
    """The agent's new credential. The secret is shown once and never stored."""

    client_id: str
    secret: str
    name: str | None


class IssueTokenRequest(BaseModel):
    """The operator's request for a new enrollment token."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name | None = Field(default=None, description="Label for the client.")
    expires_in_seconds: int = Field(
        default=3600,
        ge=int(MIN_TOKEN_LIFETIME.total_seconds()),
        le=int(MAX_TOKEN_LIFETIME.total_seconds()),
    )


class IssuedToken(BaseModel):
    """A new enrollment token. The token is shown once and never stored."""

    token: str
    token_id: str
    name: str | None
    expires_at: datetime.datetime


class ClientInfo(BaseModel):
    """An enrolled client, without its secret."""

    client_id: str
    name: str | None
    created_at: datetime.datetime
    revoked_at: datetime.datetime | None

    @classmethod
    def of(cls, record: ClientRecord) -> "ClientInfo":
        return cls(
            client_id=record.client_id,
            name=record.name,
            created_at=record.created_at,
            revoked_at=record.revoked_at,
        )


class TokenInfo(BaseModel):
    """An enrollment token, without its secret."""

    token_id: str
    name: str | None
    created_at: datetime.datetime
    expires_at: datetime.datetime
    used_at: datetime.datetime | None
    client_id: str | None

    @classmethod
    def of(cls, record: EnrollmentTokenRecord) -> "TokenInfo":
        return cls(
            token_id=record.token_id,
            name=record.name,
            created_at=record.created_at,
            expires_at=record.expires_at,
            used_at=record.used_at,
            client_id=record.client_id,
        )


ClientIdPath = Annotated[str, Path(pattern=CLIENT_ID_PATTERN)]

enroll_router = APIRouter(tags=["enrollment"])
admin_router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=ADMIN_AUTH_RESPONSES,
)


@enroll_router.post(
    ENROLL_PATH,
    status_code=201,
    responses={
        401: {**ERROR_RESPONSE, "description": "Invalid token."},
        **PUBLIC_RESPONSES,
    },
)
def enroll(body: EnrollRequest, request: Request) -> EnrolledClient:
    """Exchange a single-use enrollment token for a client credential."""
    context = security_context(request)

    try:
        credential = context.store.redeem_enrollment_token(
            body.enrollment_token, name=body.name
        )
    except AuthenticationError as error:
        refuse(context, remote_address(request), error)

    if context.on_enroll is not None:
        context.on_enroll(credential.client_id, credential.name)
    return EnrolledClient(
        client_id=credential.client_id,
        secret=credential.secret,
        name=credential.name,
    )


@admin_router.post("/enrollment-tokens", status_code=201)
def issue_enrollment_token(body: IssueTokenRequest, request: Request) -> IssuedToken:
    """Issue a single-use enrollment token for one new agent."""
    issued = security_context(request).store.issue_enrollment_token(
        name=body.name,
        expires_in=datetime.timedelta(seconds=body.expires_in_seconds),
    )
    return IssuedToken(
        token=issued.token,
        token_id=issued.token_id,
        name=issued.name,
        expires_at=issued.expires_at,
    )


@admin_router.get("/enrollment-tokens")
def list_enrollment_tokens(request: Request) -> list[TokenInfo]:
    """Every enrollment token issued, used or not (never the token itself)."""
    records = security_context(request).store.list_enrollment_tokens()
    return [TokenInfo.of(record) for record in records]


@admin_router.get("/clients")
def list_clients(request: Request) -> list[ClientInfo]:
    """Every enrolled client, revoked ones included."""
    records = security_context(request).store.list_clients()
    return [ClientInfo.of(record) for record in records]


@admin_router.get("/clients/{client_id}", responses={404: ERROR_RESPONSE})
def get_client(client_id: ClientIdPath, request: Request) -> ClientInfo:
    """One enrolled client."""
    return ClientInfo.of(security_context(request).store.get_client(client_id))


@admin_router.post("/clients/{client_id}/revoke", responses={404: ERROR_RESPONSE})
def revoke_client(client_id: ClientIdPath, request: Request) -> ClientInfo:
    """Revoke a client's credential; its requests fail from now on."""
    return ClientInfo.of(security_context(request).store.revoke(client_id))


router = APIRouter()
router.include_router(enroll_router)
router.include_router(admin_router)
