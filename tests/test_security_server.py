"""The security layer inside the real ``fedguard server`` and ``fedguard client``:
transport rules and refusals, each a real subprocess on 127.0.0.1.

The federation tests upload real encrypted frames and then read the server's own
database: every refusal (no credential, a wrong one, another client's id, a revoked
credential, an oversized body, a client that does not trust the CA, a frame replayed
from an earlier round, other bytes for a round already delivered, a request over
the ``[auth]`` budget) must leave nothing stored. ``fedguard simulate`` must run
over TLS with enrolled credentials and write each secret only to its own 0600 file.
"""

import datetime
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedguard.client.agent import read_federation
from fedguard.crypto.frames import FrameKind, encode_frame
from fedguard.crypto.vectors import encrypt_update
from fedguard.security.agent import AgentCredential, enroll_agent
from fedguard.security.credentials import CredentialStore
from fedguard.security.tls import (
    CertificatePaths,
    client_ssl_context,
    init_certificates,
)
from fedguard.server.storage import open_engine, sqlite_url

pytestmark = pytest.mark.slow

FEDGUARD = [sys.executable, "-m", "fedguard"]


@dataclass
class Server:
    url: str
    certs: CertificatePaths
    state_dir: Path
    admin_token: str

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=client_ssl_context(self.certs.ca_cert),
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )


def start_server(root: Path, *arguments: str) -> subprocess.Popen[bytes]:
    state_dir = str(root / "state")
    return subprocess.Popen(
        [*FEDGUARD, "server", "--state-dir", state_dir, "--port", "0", *arguments],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for_url(process: subprocess.Popen[bytes], state_dir: Path) -> str:
    """The URL the server wrote once listening; a bounded wait."""
    for _ in range(1200):
        endpoint = state_dir / "endpoint.json"
        if endpoint.exists():
            return str(json.loads(endpoint.read_text())["url"])
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError("fedguard server did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("server")
    certs = init_certificates(root / "certs")
    config = root / "fedguard.toml"
    config.write_text(
        "[tls]\n"
        f'cert_file = "{certs.server_cert}"\n'
        f'key_file = "{certs.server_key}"\n'
        f'ca_file = "{certs.ca_cert}"\n'
    )
    process = start_server(root, "--config", str(config))
    try:
        url = wait_for_url(process, root / "state")
        admin_token = (root / "state" / "admin-token").read_text().strip()
        yield Server(url, certs, root / "state", admin_token)
    finally:
        stop(process)


def run_agent(server_url: str, state_dir: Path, *arguments: str) -> str:
    """Run ``fedguard client`` until it stops; its standard error."""
    result = subprocess.run(
        [
            *FEDGUARD,
            "client",
            "--server",
            server_url,
            "--state-dir",
            str(state_dir),
            "--retry-for",
            "0",
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    return result.stderr


def test_server_without_tls_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [*FEDGUARD, "server", "--state-dir", str(tmp_path / "state"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no TLS certificate configured")
    assert "fedguard certs init" in last and "--insecure-http" in last
    assert not (tmp_path / "state" / "endpoint.json").exists()


def test_server_serves_plain_http_only_when_asked(tmp_path: Path) -> None:
    process = start_server(tmp_path, "--insecure-http")
    try:
        url = wait_for_url(process, tmp_path / "state")
        health = httpx.get(f"{url}/health")
    finally:
        stop(process)

    assert url.startswith("http://127.0.0.1:")
    assert health.status_code == 200


def test_server_answers_tls_only_with_its_certificate(server: Server) -> None:
    with httpx.Client(verify=client_ssl_context(server.certs.ca_cert)) as trusting:
        assert trusting.get(f"{server.url}/health").status_code == 200
    with (
        httpx.Client(verify=client_ssl_context(None)) as system_store,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        system_store.get(f"{server.url}/health")


def test_agent_refuses_a_server_signed_by_another_ca(
    server: Server, tmp_path: Path
) -> None:
    other = init_certificates(tmp_path / "other-certs")
    with server.admin() as admin:
        token = admin.post("/admin/enrollment-tokens", json={}).json()

    stderr = run_agent(
        server.url,
        tmp_path / "agent",
        "--enrollment-token",
        token["token"],
        "--ca-file",
        str(other.ca_cert),
    )

    # The agent never sent its token: it is still unused on the server.
    with server.admin() as admin:
        tokens = admin.get("/admin/enrollment-tokens").json()
    [record] = [t for t in tokens if t["token_id"] == token["token_id"]]
    assert record["used_at"] is None
    assert not (tmp_path / "agent" / "credential.json").exists()
    assert "error:" in stderr


def test_agent_refuses_plain_http_without_the_flag(
    server: Server, tmp_path: Path
) -> None:
    plain = server.url.replace("https://", "http://")

    stderr = run_agent(plain, tmp_path / "agent", "--enrollment-token", "x.y")

    assert "is plain HTTP; use https://" in stderr.strip().splitlines()[-1]


def test_agent_with_a_spent_token_is_refused_and_stores_nothing(
    server: Server, tmp_path: Path
) -> None:
    with server.admin() as admin:
        token = admin.post("/admin/enrollment-tokens", json={}).json()
        enrolled = admin.post("/enroll", json={"enrollment_token": token["token"]})
        before = admin.get("/admin/clients").json()

    stderr = run_agent(
        server.url,
        tmp_path / "agent",
        "--enrollment-token",
        token["token"],
        "--ca-file",
        str(server.certs.ca_cert),
    )

    assert enrolled.status_code == 201
    assert "enrollment token refused" in stderr
    assert not (tmp_path / "agent" / "credential.json").exists()
    with server.admin() as admin:
        assert admin.get("/admin/clients").json() == before


def test_revoked_agent_is_refused(server: Server, tmp_path: Path) -> None:
    with server.admin() as admin:
        token = admin.post("/admin/enrollment-tokens", json={}).json()
        credential = admin.post(
            "/enroll", json={"enrollment_token": token["token"]}
        ).json()
        admin.post(f"/admin/clients/{credential['client_id']}/revoke")
    bearer = f"Bearer {credential['client_id']}.{credential['secret']}"

    with httpx.Client(
        base_url=server.url,
        verify=client_ssl_context(server.certs.ca_cert),
        headers={"Authorization": bearer},
    ) as agent:
        current = agent.get("/rounds/current")
        upload = agent.put("/rounds/0/frames/update", content=b"\x00" * 64)

    for response in (current, upload):
        assert response.status_code == 401
        assert response.json() == {"error": "invalid credentials"}


# --- a federation on a real server: refusals store nothing ---------------------------


@dataclass
class Federation:
    """A real ``fedguard server`` over TLS with two enrolled agents."""

    server: Server
    members: list[AgentCredential]

    def agent(self, **headers: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url,
            verify=client_ssl_context(self.server.certs.ca_cert),
            headers=headers,
        )

    def member(self, index: int) -> httpx.Client:
        return self.agent(**self.members[index].headers())

    def enroll(self, name: str) -> AgentCredential:
        with self.server.admin() as admin:
            token = admin.post("/admin/enrollment-tokens", json={"name": name}).json()
        with self.agent() as agent:
            return enroll_agent(agent, "/enroll", token["token"])

    def stored(self) -> list[tuple[int, str, str, bytes]]:
        """Every frame in the server's database: (round, client_id, kind, bytes)."""
        database = self.server.state_dir / "fedguard.db"
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT round_id, client_id, kind, frame FROM fg_updates "
                "ORDER BY round_id, client_id, kind"
            )
            return [(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def credentials(self) -> int:
        with self.server.admin() as admin:
            return len(admin.get("/admin/clients").json())


@contextmanager
def federation_server(root: Path, config: str) -> Iterator[Federation]:
    """A server with ``config`` (plus TLS) and two enrolled agents."""
    certs = init_certificates(root / "certs")
    (root / "fedguard.toml").write_text(
        f"{config}\n[tls]\n"
        f'cert_file = "{certs.server_cert}"\nkey_file = "{certs.server_key}"\n'
    )
    process = start_server(root, "--config", str(root / "fedguard.toml"))
    try:
        url = wait_for_url(process, root / "state")
        admin_token = (root / "state" / "admin-token").read_text().strip()
        federation = Federation(Server(url, certs, root / "state", admin_token), [])
        federation.members = [federation.enroll(f"cloud-{i}") for i in range(2)]
        yield federation
    finally:
        stop(process)


FEDERATION_CONFIG = (
    "[federation]\nrounds = 2\nmin_clients = 2\nwait_for_clients = 2\n"
    "round_deadline = 600\n"
)


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    with federation_server(tmp_path, FEDERATION_CONFIG) as running:
        yield running


def make_frame(
    info: dict[str, Any], kind: str, round_id: int, model_version: int, seed: int
) -> bytes:
    """A real encrypted frame of ``kind`` for ``round_id``, with seeded contents."""
    published = read_federation(info, None)
    assert published.public_key is not None
    packing = published.packings[kind]
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 0.5, info["packing"][kind]["length"])
    weight = 0.25
    encrypted = encrypt_update(published.public_key, packing, weight * values, weight)
    return encode_frame(
        encrypted,
        published.public_key,
        kind=FRAME_KINDS[kind],
        round_id=round_id,
        model_version=model_version,
    )


FRAME_KINDS = {"statistics": FrameKind.STATISTICS, "update": FrameKind.UPDATE}


def put_frame(
    http: httpx.Client, round_id: int, kind: str, frame: bytes
) -> httpx.Response:
    return http.put(
        f"/rounds/{round_id}/frames/{kind}",
        content=frame,
        headers={"Content-Type": "application/octet-stream"},
    )


def wait_for_open_round(http: httpx.Client, round_id: int) -> dict[str, Any]:
    """The current round once it is ``round_id`` and open; a bounded wait."""
    for _ in range(150):
        current = http.get("/rounds/current", params={"wait": 2}).json()
        if current["round"] == round_id and current["state"] == "open":
            return dict(current)
    raise AssertionError(f"round {round_id} did not open")


def assert_invalid_credentials(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == {"error": "invalid credentials"}
    assert response.headers["www-authenticate"] == "Bearer"


def test_refused_uploads_store_nothing(federation: Federation) -> None:
    mine, theirs = federation.members
    revoked = federation.enroll("retired")
    subprocess.run(
        [*FEDGUARD, "clients", "revoke", revoked.client_id,
         "--state-dir", str(federation.server.state_dir)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    with federation.member(0) as agent:
        wait_for_open_round(agent, 0)
        info = agent.get("/federation").json()
    frame = make_frame(info, "statistics", 0, 0, seed=1)

    strangers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer garbage"},
        {"Authorization": f"Bearer {mine.client_id}.{theirs.secret}"},
        {"Authorization": f"Bearer {federation.server.admin_token}"},
        revoked.headers(),
    ]
    for headers in strangers:
        with federation.agent(**headers) as stranger:
            assert_invalid_credentials(put_frame(stranger, 0, "statistics", frame))
    with federation.member(0) as agent:
        oversized = put_frame(agent, 0, "statistics", frame + b"\x00" * 64)

    assert oversized.status_code == 413
    assert "at most" in oversized.json()["error"]
    assert federation.stored() == []
    with federation.member(1) as agent:
        assert agent.get("/rounds/0").json()["client_ids"] == []


def test_a_client_that_does_not_trust_the_server_sends_nothing(
    federation: Federation, tmp_path: Path
) -> None:
    other = init_certificates(tmp_path / "other-certs")
    with federation.member(0) as agent:
        info = agent.get("/federation").json()
    frame = make_frame(info, "statistics", 0, 0, seed=1)
    headers = federation.members[0].headers()

    url = f"{federation.server.url}/rounds/0/frames/statistics"
    with (
        httpx.Client(verify=client_ssl_context(other.ca_cert), headers=headers) as a,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        a.put(url, content=frame)
    # Plain HTTP to the TLS port: the server never reads a request from it.
    with httpx.Client(headers=headers) as b, pytest.raises(httpx.HTTPError):
        b.put(url.replace("https://", "http://"), content=frame)

    assert federation.stored() == []


def test_expired_and_reused_enrollment_tokens_enroll_nobody(
    federation: Federation,
) -> None:
    # The operator issued a one-minute token two hours ago.
    engine = open_engine(sqlite_url(federation.server.state_dir))
    earlier = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    store = CredentialStore(engine, now=lambda: earlier)
    expired = store.issue_enrollment_token(expires_in=datetime.timedelta(minutes=1))
    store.close()
    with federation.server.admin() as admin:
        spent = admin.post("/admin/enrollment-tokens", json={}).json()["token"]
    with federation.agent() as agent:
        enroll_agent(agent, "/enroll", spent)
        before = federation.credentials()

        for token in (expired.token, spent):
            response = agent.post("/enroll", json={"enrollment_token": token})
            assert_invalid_credentials(response)

    assert federation.credentials() == before == 3


def test_one_frame_per_client_and_round_and_no_replay(
    federation: Federation,
) -> None:
    with federation.member(0) as a, federation.member(1) as b:
        wait_for_open_round(a, 0)
        info = a.get("/federation").json()
        statistics = [make_frame(info, "statistics", 0, 0, seed) for seed in (1, 2)]
        first = put_frame(a, 0, "statistics", statistics[0])
        again = put_frame(a, 0, "statistics", statistics[0])
        other = put_frame(a, 0, "statistics", make_frame(info, "statistics", 0, 0, 3))
        assert put_frame(b, 0, "statistics", statistics[1]).status_code == 200

        wait_for_open_round(a, 1)
        info = a.get("/federation").json()
        updates = [make_frame(info, "update", 1, 0, seed) for seed in (4, 5)]
        for http, frame in zip((a, b), updates, strict=True):
            assert put_frame(http, 1, "update", frame).status_code == 200
        wait_for_open_round(a, 2)
        stored_before = federation.stored()

        replayed = put_frame(a, 2, "update", updates[0])
        replayed_by_other = put_frame(b, 2, "update", updates[0])
        old_kind = put_frame(a, 2, "statistics", statistics[0])
        late = put_frame(a, 1, "update", make_frame(info, "update", 1, 0, 6))
        retry = put_frame(a, 1, "update", updates[0])

    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert other.status_code == 409
    assert "already delivered a different statistics" in other.json()["error"]
    for response in (replayed, replayed_by_other):
        assert response.status_code == 400
        assert response.json() == {
            "error": "frame is for round 1; it was sent to round 2"
        }
    assert old_kind.status_code == 400 and "not 'statistics'" in old_kind.text
    assert late.status_code == 409 and "round 1 is closed" in late.json()["error"]
    assert (retry.status_code, retry.json()["duplicate"]) == (200, True)

    stored = federation.stored()
    assert stored == stored_before
    assert [(r, kind) for r, _, kind, _ in stored] == [
        (0, "statistics"), (0, "statistics"), (1, "update"), (1, "update")
    ]  # fmt: skip
    mine = federation.members[0].client_id
    assert (0, mine, "statistics", statistics[0]) in stored


def test_a_revoked_client_does_not_hold_up_a_round(federation: Federation) -> None:
    retired = federation.enroll("retired")
    subprocess.run(
        [*FEDGUARD, "clients", "revoke", retired.client_id,
         "--state-dir", str(federation.server.state_dir)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip

    with federation.member(0) as a, federation.member(1) as b:
        wait_for_open_round(a, 0)
        info = a.get("/federation").json()
        for seed, http in enumerate((a, b)):
            frame = make_frame(info, "statistics", 0, 0, seed)
            assert put_frame(http, 0, "statistics", frame).status_code == 200
        wait_for_open_round(a, 1)
        closed = a.get("/rounds/0").json()

    # Closed on the two deliveries, long before the 600 s deadline.
    assert closed["contributors"] == 2
    assert closed["deadline_extensions"] == 0
    assert retired.client_id not in closed["client_ids"]
    assert closed["closed_at"] < closed["deadline_at"]


RATE_LIMITED_CONFIG = (
    "[federation]\nmin_clients = 2\n"
    "[auth]\nclient_burst = 3\nclient_requests_per_second = 0.001\n"
    "failure_burst = 2\nfailures_per_second = 0.001\n"
)


def test_auth_budgets_from_the_config_file(tmp_path: Path) -> None:
    with federation_server(tmp_path, RATE_LIMITED_CONFIG) as federation:
        with federation.member(0) as a:
            info = a.get("/federation").json()
            served = [a.get("/rounds/current").status_code for _ in range(2)]
            frame = make_frame(info, "statistics", 0, 0, seed=1)
            limited = put_frame(a, 0, "statistics", frame)
        with federation.member(1) as b:
            other = b.get("/rounds/current")
        with federation.agent(Authorization="Bearer wrong") as stranger:
            failures = [stranger.get("/rounds").status_code for _ in range(3)]
            slowed = stranger.get("/rounds")
        stored = federation.stored()

    assert served == [200, 200]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "error" in limited.json()
    assert other.status_code == 200
    assert failures == [401, 401, 429]
    assert int(slowed.headers["retry-after"]) >= 1
    assert stored == []


# --- fedguard simulate: TLS and credentials, no secret in its outputs ---------------

ENROLLMENT_TOKEN_SHAPE = re.compile(rb"[0-9a-f]{16}\.[A-Za-z0-9_-]{43}")


def test_simulate_runs_over_tls_and_writes_secrets_only_to_their_files(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        [*FEDGUARD, "simulate", "--clients", "2", "--rounds", "1", "--rows", "600",
         "--out", str(out)],
        capture_output=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    # The stopped server removed endpoint.json; its log names the URL it served.
    server_log = (out / "logs" / "server.log").read_text()
    assert "orchestrator listening on https://127.0.0.1:" in server_log
    assert not (out / "server" / "endpoint.json").exists()
    admin_token = (out / "server" / "admin-token").read_text().strip()
    secret_files = {out / "server" / "admin-token": admin_token}
    for path in sorted((out / "agents").glob("*/credential.json")):
        secret_files[path] = json.loads(path.read_text())["secret"]
    assert len(secret_files) == 3
    for path in secret_files:
        assert path.stat().st_mode & 0o777 == 0o600

    # Everything else the run wrote, the database and its output included.
    written = {
        str(path): path.read_bytes()
        for path in out.rglob("*")
        if path.is_file() and path not in secret_files
    }
    written.update(stdout=result.stdout, stderr=result.stderr)
    for secret in secret_files.values():
        assert [name for name, text in written.items() if secret.encode() in text] == []
    for text in written.values():
        assert ENROLLMENT_TOKEN_SHAPE.search(text) is None
        assert b"Bearer" not in text
