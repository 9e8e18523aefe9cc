"""Schemathesis against a real ``fedguard server`` over TLS on 127.0.0.1.

Every operation of the served OpenAPI schema is fuzzed three times: with the admin
token, with an enrolled client's credential and with no credential. No response may
be a server error, and every response must match the schema (status code, content
type, body and headers). The runs are bounded by example count and time.
"""

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fedguard.security.agent import AgentCredential, enroll_agent
from fedguard.security.tls import client_ssl_context, init_certificates

pytestmark = pytest.mark.slow

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@dataclass
class Served:
    url: str
    ca_file: Path
    admin_token: str
    credential: AgentCredential
    process: subprocess.Popen[bytes]
    log: Path
    root: Path

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, verify=client_ssl_context(self.ca_file), headers=headers
        )


def write_config(root: Path) -> Path:
    config = root / "fedguard.toml"
    config.write_text(
        "[server]\n"
        "port = 0\n"
        'state_dir = "state"\n'
        "[federation]\n"
        "rounds = 1\n"
        "[tls]\n"
        'cert_file = "certs/server.pem"\n'
        'key_file = "certs/server-key.pem"\n'
        'ca_file = "certs/ca.pem"\n'
    )
    return config


def wait_for_endpoint(process: subprocess.Popen[bytes], state_dir: Path) -> str:
    """The URL the server wrote once listening; a bounded wait."""
    endpoint = state_dir / "endpoint.json"
    for _ in range(1200):
        if endpoint.exists():
            return str(json.loads(endpoint.read_text())["url"])
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError("fedguard server did not start")


def enroll_two_clients(url: str, ca_file: Path, admin_token: str) -> AgentCredential:
    """Enroll two clients and return the first one's credential.

    Two clients make min_clients, so the setup round opens and the long poll of
    ``GET /rounds/current`` answers at once instead of holding requests.
    """
    verify = client_ssl_context(ca_file)
    admin_headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=url, verify=verify, headers=admin_headers) as admin:
        tokens = [
            admin.post("/admin/enrollment-tokens", json={"name": name}).json()["token"]
            for name in ("fuzz", "other")
        ]
    with httpx.Client(base_url=url, verify=verify) as agent:
        first, _second = (enroll_agent(agent, "/enroll", token) for token in tokens)
    return first


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("fuzz")
    certs = init_certificates(root / "certs")
    config = write_config(root)
    log = root / "server.log"

    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "fedguard", "server", "--config", str(config)],
            cwd=root,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = wait_for_endpoint(process, root / "state")
        admin_token = (root / "state" / "admin-token").read_text().strip()
        credential = enroll_two_clients(url, certs.ca_cert, admin_token)
        served = Served(url, certs.ca_cert, admin_token, credential, process, log, root)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def bearer(served: Served, who: str) -> list[str]:
    if who == "admin":
        return ["-H", f"Authorization: Bearer {served.admin_token}"]
    if who == "client":
        return ["-H", f"Authorization: Bearer {served.credential.bearer_token}"]
    return []


@pytest.mark.parametrize("who", ["admin", "client", "anonymous"])
def test_every_response_matches_the_schema(served: Served, who: str) -> None:
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{served.url}/openapi.json",
        "--checks",
        CHECKS,
        "--tls-verify",
        str(served.ca_file),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "15",
        "--seed",
        "20240607",
        "--workers",
        "1",
        "--request-timeout",
        "90",
        "--report-dir",
        str(served.root / f"report-{who}"),
        *bearer(served, who),
    ]

    result = subprocess.run(
        command, cwd=served.root, capture_output=True, text=True, timeout=600
    )

    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    with served.client() as anyone:
        assert anyone.get("/health").status_code == 200


def test_server_log_holds_no_secret(served: Served) -> None:
    with served.client(**served.credential.headers()) as agent:
        agent.get("/rounds/current")
    with served.client(Authorization="Bearer wrong") as stranger:
        stranger.get("/admin/clients")

    log = served.log.read_text()
    assert "listening on https://127.0.0.1:" in log
    for secret in (served.admin_token, served.credential.secret):
        assert secret not in log
