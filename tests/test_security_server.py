"""The security layer inside the real ``fedguard server`` and ``fedguard client``:
transport rules and refusals, each a real subprocess on 127.0.0.1."""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fedguard.security.tls import (
    CertificatePaths,
    client_ssl_context,
    init_certificates,
)

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
