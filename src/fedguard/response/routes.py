"""The operator's HTTP view of the response engine's audit log.

``GET /admin/actions`` lists the policies that fired, newest first, each with the
actions it asked for and their outcomes, and the directives queued for agents with
the agents' acknowledgements: the same listing as ``fedguard actions``. Like every
``/admin`` route it needs the admin token. Mount it on the orchestrator's app::

    app.include_router(audit_router(orchestrator.response.audit))
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from fedguard.response.audit import AuditListing, AuditStore
from fedguard.security.deps import ADMIN_AUTH_RESPONSES, ERROR_RESPONSE, require_admin

MAX_PAGE = 1000
MAX_OFFSET = 1_000_000
POLICY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

Limit = Annotated[
    int,
    Query(ge=1, le=MAX_PAGE, description="newest decisions and directives returned"),
]
Offset = Annotated[
    int,
    Query(ge=0, le=MAX_OFFSET, description="how many of the newest to skip"),
]
PolicyName = Annotated[
    str | None,
    Query(pattern=POLICY_NAME_PATTERN, description="only decisions of this policy"),
]


def audit_router(audit: AuditStore) -> APIRouter:
    """The ``/admin/actions`` route reading ``audit``."""
    router = APIRouter(
        prefix="/admin",
        tags=["admin"],
        dependencies=[Depends(require_admin)],
        responses={
            **ADMIN_AUTH_RESPONSES,
            422: {**ERROR_RESPONSE, "description": "Malformed parameters"},
            500: {**ERROR_RESPONSE, "description": "Internal error"},
        },
    )

    @router.get("/actions", response_model=AuditListing)
    def list_actions(
        limit: Limit = 100, offset: Offset = 0, policy: PolicyName = None
    ) -> AuditListing:
        """Policy decisions with their actions' outcomes, and agent directives."""
        return audit.listing(limit=limit, offset=offset, policy=policy)

    return router
