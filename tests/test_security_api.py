"""Authentication, authorization, limits and the enrollment/admin routes over real
HTTPS on loopback (fedguard.security.deps and fedguard.security.api).

:func:`build_app` is a small orchestrator stand-in that mounts the security layer
the way the server does and stores what it accepts in a real SQLite table, so every
refusal can be checked to have stored nothing. The fuzzing harness serves it too.
"""

import datetime
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from fedguard.errors import ConfigError
from fedguard.security.agent import AgentCredential, enroll_agent
from fedguard.security.api import router
from fedguard.security.credentials import (
    ClientCredentialRow,
    CredentialStore,
    ensure_admin_token,
)
from fedguard.security.deps import (
    CLIENT_AUTH_RESPONSES,
    AuthSettings,
    ClientId,
    ensure_same_client,
    install_security,
    require_path_client,
)
from fedguard.security.limits import DEFAULT_MAX_BODY_BYTES
from fedguard.security.ratelimit import RateLimiter
from fedguard.security.tls import (
    CertificatePaths,
    client_ssl_context,
    init_certificates,
    server_ssl_kwargs,
)
from fedguard.security.tokens import CLIENT_ID_PATTERN
from fedguard.server.storage import open_engine, sqlite_url

FRAME_CAP = 4096
START = datetime.datetime(2030, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)

received_metadata = MetaData()
received = Table(
    "received",
    received_metadata,
    Column("id", Integer, primary_key=True),
    Column("client_id", String(40), nullable=False),
    Column("round", Integer, nullable=False),
    Column("size", Integer, nullable=False),
)


class Report(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(pattern=CLIENT_ID_PATTERN)
    value: int = Field(ge=0, le=1000)


class Stored(BaseModel):
    client_id: str
    round: int
    size: int


def body_cap(method: str, path: str) -> int:
    return FRAME_CAP if path.startswith("/rounds/") else DEFAULT_MAX_BODY_BYTES


def build_app(
    store: CredentialStore,
    *,
    client_limiter: RateLimiter | None = None,
    failure_limiter: RateLimiter | None = None,
    enrolled: list[tuple[str, str | None]] | None = None,
) -> FastAPI:
    """Security routes plus three protected routes that store what they accept."""
    app = FastAPI(title="fedguard security test app")
    install_security(
        app,
        store,
        client_limiter=client_limiter,
        failure_limiter=failure_limiter,
        max_body_bytes=body_cap,
        on_enroll=(lambda *item: enrolled.append(item))
        if enrolled is not None
        else None,
    )
    app.include_router(router)
    engine = store._engine
    received_metadata.create_all(engine)

    def keep(client_id: str, round_id: int, size: int) -> Stored:
        with engine.begin() as connection:
            connection.execute(
                insert(received).values(client_id=client_id, round=round_id, size=size)
            )
        return Stored(client_id=client_id, round=round_id, size=size)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.put(
        "/rounds/{round_id}/frames/update",
        responses=CLIENT_AUTH_RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"}
                    }
                },
            }
        },
    )
    async def upload(
        round_id: Annotated[int, Field(ge=0, le=2**31 - 1)],
        request: Request,
        client_id: ClientId,
    ) -> Stored:
        data = await request.body()
        return keep(client_id, round_id, len(data))

    @app.post("/clients/{client_id}/heartbeat", responses=CLIENT_AUTH_RESPONSES)
    def heartbeat(
        client_id: Annotated[str, Depends(require_path_client)],
    ) -> Stored:
        return keep(client_id, -1, 0)

    @app.post("/reports", responses=CLIENT_AUTH_RESPONSES)
    def report(body: Report, client_id: ClientId) -> Stored:
        ensure_same_client(client_id, body.client_id)
        return keep(client_id, -2, body.value)

    return app


class Clock:
    def __init__(self) -> None:
        self.now = START
        self.seconds = 0.0

    def __call__(self) -> datetime.datetime:
        return self.now

    def monotonic(self) -> float:
        return self.seconds


@dataclass
class Service:
    url: str
    store: CredentialStore
    admin_token: str
    clock: Clock
    ca_file: Path
    enrolled: list[tuple[str, str | None]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, verify=client_ssl_context(self.ca_file), headers=headers
        )

    def admin(self) -> httpx.Client:
        return self.client(Authorization=f"Bearer {self.admin_token}")

    def enroll(self, name: str | None = None) -> AgentCredential:
        with self.admin() as admin:
            token = admin.post("/admin/enrollment-tokens", json={"name": name}).json()
        self.tokens.append(token["token"])
        with self.client() as agent:
            return enroll_agent(agent, "/enroll", token["token"])

    def stored(self) -> list[tuple[str, int]]:
        with self.store._engine.connect() as connection:
            rows = connection.execute(select(received.c.client_id, received.c.round))
            return [(row.client_id, row.round) for row in rows]

    def credentials(self) -> int:
        with self.store._sessions() as session:
            query = select(func.count()).select_from(ClientCredentialRow)
            return int(session.scalar(query) or 0)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertificatePaths:
    return init_certificates(tmp_path_factory.mktemp("api-tls") / "certs")


@pytest.fixture
def service(
    tmp_path: Path, certs: CertificatePaths, loopback_server: Callable[..., str]
) -> Iterator[Service]:
    clock = Clock()
    store = CredentialStore(open_engine(sqlite_url(tmp_path)), now=clock)
    store.create_tables()
    admin_token = ensure_admin_token(tmp_path, store)
    enrolled: list[tuple[str, str | None]] = []
    app = build_app(
        store,
        client_limiter=RateLimiter(5, 1.0, now=clock.monotonic),
        failure_limiter=RateLimiter(12, 1.0, now=clock.monotonic),
        enrolled=enrolled,
    )
    url = loopback_server(app, **server_ssl_kwargs(certs.tls_config()))
    yield Service(url, store, admin_token, clock, certs.ca_cert, enrolled)
    store.close()


def assert_invalid_credentials(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.json() == {"error": "invalid credentials"}
    assert response.headers["www-authenticate"] == "Bearer"


# --- the happy path -------------------------------------------------------------------


def test_enrolled_agent_uploads_as_itself(service: Service) -> None:
    credential = service.enroll(name="cloud-a")

    with service.client(**credential.headers()) as agent:
        response = agent.put("/rounds/3/frames/update", content=b"f" * 100)

    assert response.status_code == 200
    assert response.json() == {
        "client_id": credential.client_id,
        "round": 3,
        "size": 100,
    }
    assert service.stored() == [(credential.client_id, 3)]
    assert service.enrolled == [(credential.client_id, "cloud-a")]


def test_path_and_body_naming_the_client_itself_pass(service: Service) -> None:
    credential = service.enroll()

    with service.client(**credential.headers()) as agent:
        beat = agent.post(f"/clients/{credential.client_id}/heartbeat")
        report = agent.post(
            "/reports", json={"client_id": credential.client_id, "value": 7}
        )

    assert (beat.status_code, report.status_code) == (200, 200)
    assert service.stored() == [(credential.client_id, -1), (credential.client_id, -2)]


# --- refusals: nothing stored ---------------------------------------------------------


def test_requests_without_valid_credentials_store_nothing(service: Service) -> None:
    mine = service.enroll()
    theirs = service.enroll()
    revoked = service.enroll()
    with service.admin() as admin:
        admin.post(f"/admin/clients/{revoked.client_id}/revoke").raise_for_status()

    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer garbage"},
        {"Authorization": f"Basic {mine.bearer_token}"},
        {"Authorization": f"Bearer {mine.client_id}.{theirs.secret}"},
        {"Authorization": f"Bearer {mine.bearer_token}x"},
        {"Authorization": f"Bearer {service.admin_token}"},
        revoked.headers(),
    ]
    for headers in attempts:
        service.clock.seconds += 2.0  # stay within the failed-authentication budget
        with service.client(**headers) as agent:
            assert_invalid_credentials(
                agent.put("/rounds/1/frames/update", content=b"f")
            )
            assert_invalid_credentials(
                agent.post("/reports", json={"client_id": mine.client_id, "value": 1})
            )

    assert service.stored() == []


def test_a_client_cannot_act_as_another(service: Service) -> None:
    mine = service.enroll()
    theirs = service.enroll()

    with service.client(**mine.headers()) as agent:
        by_path = agent.post(f"/clients/{theirs.client_id}/heartbeat")
        by_body = agent.post(
            "/reports", json={"client_id": theirs.client_id, "value": 1}
        )

    for response in (by_path, by_body):
        assert response.status_code == 403
        assert "may act only as itself" in response.json()["error"]
    assert service.stored() == []


def test_revocation_by_another_process_is_immediate(
    service: Service, tmp_path: Path
) -> None:
    credential = service.enroll()
    with service.client(**credential.headers()) as agent:
        assert agent.put("/rounds/1/frames/update", content=b"f").status_code == 200

        # What `fedguard clients revoke` does: its own connection to the database.
        operator = CredentialStore(open_engine(sqlite_url(tmp_path)))
        operator.revoke(credential.client_id)
        operator.close()

        assert_invalid_credentials(agent.put("/rounds/2/frames/update", content=b"f"))
    assert service.stored() == [(credential.client_id, 1)]


def test_expired_and_reused_tokens_enroll_nobody(service: Service) -> None:
    with service.admin() as admin:
        short = admin.post(
            "/admin/enrollment-tokens", json={"expires_in_seconds": 60}
        ).json()
        used = admin.post("/admin/enrollment-tokens", json={}).json()
    with service.client() as agent:
        enroll_agent(agent, "/enroll", used["token"])
        before = service.credentials()
        service.clock.now += datetime.timedelta(seconds=60)

        for token in (short["token"], used["token"]):
            response = agent.post("/enroll", json={"enrollment_token": token})
            assert_invalid_credentials(response)

    assert service.credentials() == before == 1


def test_oversized_upload_is_refused_unstored(service: Service) -> None:
    credential = service.enroll()

    with service.client(**credential.headers()) as agent:
        response = agent.put("/rounds/1/frames/update", content=b"f" * (FRAME_CAP + 1))

    assert response.status_code == 413
    assert f"at most {FRAME_CAP} bytes" in response.json()["error"]
    assert service.stored() == []


# --- rate limits ----------------------------------------------------------------------


def test_each_client_has_its_own_request_budget(service: Service) -> None:
    busy = service.enroll()
    quiet = service.enroll()

    with service.client(**busy.headers()) as agent:
        codes = [agent.put("/rounds/1/frames/update", content=b"f").status_code]
        codes += [agent.get("/health").status_code]  # public: costs nothing
        codes += [
            agent.put("/rounds/1/frames/update", content=b"f").status_code
            for _ in range(5)
        ]
        refused = agent.put("/rounds/1/frames/update", content=b"f")
    with service.client(**quiet.headers()) as other:
        unaffected = other.put("/rounds/1/frames/update", content=b"f")

    assert codes == [200, 200, 200, 200, 200, 200, 429]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert unaffected.status_code == 200

    service.clock.seconds += 1.0
    with service.client(**busy.headers()) as agent:
        assert agent.put("/rounds/1/frames/update", content=b"f").status_code == 200
    assert len(service.stored()) == 5 + 1 + 1


def test_repeated_failures_from_an_address_are_slowed(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    credential = service.enroll()

    with service.client(Authorization="Bearer wrong") as attacker:
        codes = [attacker.get("/admin/clients").status_code for _ in range(13)]
        retry_after = attacker.get("/admin/clients").headers["retry-after"]
    with service.client(**credential.headers()) as agent:
        # The budget slows failures only: a valid credential from the same
        # address is still served.
        meanwhile = agent.put("/rounds/1/frames/update", content=b"f")
    service.clock.seconds += 2.0
    with service.client(Authorization="Bearer wrong") as attacker:
        later = attacker.get("/admin/clients")

    assert codes == [401] * 12 + [429]
    assert retry_after == "1"
    assert meanwhile.status_code == 200
    assert later.status_code == 401
    assert caplog.text.count("too many failed authentications from 127.0.0.1") == 1


# --- admin routes ---------------------------------------------------------------------


def test_admin_routes_need_the_admin_token(service: Service) -> None:
    credential = service.enroll()

    for headers in ({}, credential.headers(), {"Authorization": "Bearer x" * 3}):
        with service.client(**headers) as someone:
            assert_invalid_credentials(someone.get("/admin/clients"))
            assert_invalid_credentials(
                someone.post("/admin/enrollment-tokens", json={})
            )
            assert_invalid_credentials(
                someone.post(f"/admin/clients/{credential.client_id}/revoke")
            )

    assert service.store.authenticate(credential.bearer_token) == credential.client_id


def test_admin_lists_and_revokes_clients(service: Service) -> None:
    credential = service.enroll(name="cloud-z")

    with service.admin() as admin:
        listed = admin.get("/admin/clients").json()
        tokens = admin.get("/admin/enrollment-tokens").json()
        revoked = admin.post(f"/admin/clients/{credential.client_id}/revoke").json()
        shown = admin.get(f"/admin/clients/{credential.client_id}").json()
        unknown = admin.post(f"/admin/clients/c-{'0' * 16}/revoke")
        malformed = admin.post("/admin/clients/not-an-id/revoke")

    assert [(c["client_id"], c["name"]) for c in listed] == [
        (credential.client_id, "cloud-z")
    ]
    assert tokens[0]["client_id"] == credential.client_id
    assert "token" not in tokens[0]
    assert revoked["revoked_at"] is not None
    assert shown == revoked
    assert unknown.status_code == 404
    assert unknown.json() == {"error": f"client_id 'c-{'0' * 16}' is not enrolled"}
    assert malformed.status_code == 422


def test_no_secret_reaches_the_logs(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fedguard")

    credential = service.enroll(name="cloud-log")
    with service.client(**credential.headers()) as agent:
        agent.put("/rounds/1/frames/update", content=b"f")
    with service.client(Authorization=f"Bearer {credential.bearer_token}x") as bad:
        bad.put("/rounds/1/frames/update", content=b"f")

    assert f"enrolled {credential.client_id}" in caplog.text
    for secret in (*service.tokens, credential.secret, service.admin_token):
        assert secret not in caplog.text


def test_openapi_declares_both_bearer_schemes(service: Service) -> None:
    with service.client() as anyone:
        schema: dict[str, Any] = anyone.get("/openapi.json").json()

    schemes = schema["components"]["securitySchemes"]
    assert schemes["ClientCredential"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <client_id>.<secret>` from enrollment.",
    }
    upload = schema["paths"]["/rounds/{round_id}/frames/update"]["put"]
    assert upload["security"] == [{"ClientCredential": []}]
    assert {"401", "403", "413", "429"} <= set(upload["responses"])
    revoke = schema["paths"]["/admin/clients/{client_id}/revoke"]["post"]
    assert revoke["security"] == [{"AdminToken": []}]


# --- [auth] settings ---------------------------------------------------------------


def test_auth_settings_from_the_config_section() -> None:
    settings = AuthSettings.from_mapping(
        {"client_burst": 500, "client_requests_per_second": 50}
    )

    assert settings.client_burst == 500
    assert settings.client_requests_per_second == 50.0
    assert settings.failure_burst == AuthSettings().failure_burst
    assert settings.client_limiter().capacity == 500


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"burst": 1}, r"unknown setting \[auth\] burst; accepted: client_burst"),
        ({"client_burst": 0}, r"auth.client_burst must be an integer in \[1, 1e\+06\]"),
        ({"client_burst": 2.5}, r"auth.client_burst must be an integer .* got 2.5"),
        ({"failures_per_second": "fast"}, r"must be a number .* got 'fast'"),
        ({"failure_burst": True}, r"auth.failure_burst must be an integer"),
    ],
)
def test_auth_settings_refuse_bad_values(
    section: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        AuthSettings.from_mapping(section)
