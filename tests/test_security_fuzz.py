"""Schemathesis against a real ``fedguard server`` over TLS on 127.0.0.1.

Every operation of the served OpenAPI schema is fuzzed three times: with the admin
token, with an enrolled client's credential and with no credential. No response may
be a server error, every response must match the schema (status code, content type,
body and headers, ``Allow`` on a 405), invalid input must be refused with a 4xx,
and an operation that declares a security scheme must refuse a request without
it. The runs are bounded by example count and time.

Two things keep the runs meaningful. The server's ``[auth]`` budgets are raised:
with the defaults most requests would be answered 429 and the logic behind them
would go untested (the limits have their own tests); a run that schemathesis
reports as mostly rate-limited fails. And the client run uses a credential enrolled
just before it, because the admin run revokes every client it finds. Schemathesis
lists the operations that answered only 401/403; each must be one that the run's
credential may not use. The number of cases of each run is recorded as a test
suite property (``--junitxml``) and logged.
"""

import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
        "ignored_auth",
    ]
)
# The security schemes each run's credential satisfies.
ACCEPTED_SCHEMES = {
    "admin": {"AdminToken", "MemberCredential"},
    "client": {"ClientCredential", "MemberCredential"},
    "anonymous": set(),
}
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

logger = logging.getLogger(__name__)


@dataclass
class Served:
    url: str
    ca_file: Path
    admin_token: str
    credentials: list[AgentCredential]
    process: subprocess.Popen[bytes]
    log: Path
    root: Path

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, verify=client_ssl_context(self.ca_file), headers=headers
        )

    def enroll(self, name: str) -> AgentCredential:
        """A new client, enrolled through the admin and enrollment routes."""
        credential = enroll_clients(self.url, self.ca_file, self.admin_token, [name])
        self.credentials += credential
        return credential[0]


def write_config(root: Path) -> Path:
    config = root / "fedguard.toml"
    config.write_text(
        "[server]\n"
        "port = 0\n"
        'state_dir = "state"\n'
        "[federation]\n"
        "rounds = 1\n"
        "[auth]\n"
        "client_burst = 1000000\n"
        "client_requests_per_second = 1000000\n"
        "failure_burst = 1000000\n"
        "failures_per_second = 1000000\n"
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


def enroll_clients(
    url: str, ca_file: Path, admin_token: str, names: list[str]
) -> list[AgentCredential]:
    """Enroll one client per name through the admin and enrollment routes."""
    verify = client_ssl_context(ca_file)
    admin_headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=url, verify=verify, headers=admin_headers) as admin:
        tokens = [
            admin.post("/admin/enrollment-tokens", json={"name": name}).json()["token"]
            for name in names
        ]
    with httpx.Client(base_url=url, verify=verify) as agent:
        return [enroll_agent(agent, "/enroll", token) for token in tokens]


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
        # Two clients make min_clients, so the setup round opens and the long poll
        # of GET /rounds/current answers at once instead of holding requests.
        credentials = enroll_clients(url, certs.ca_cert, admin_token, ["fuzz", "other"])
        yield Served(url, certs.ca_cert, admin_token, credentials, process, log, root)
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
        credential = served.enroll("fuzz-client")
        return ["-H", f"Authorization: Bearer {credential.bearer_token}"]
    return []


def refused_operations(served: Served, who: str) -> set[str]:
    """The operations the run's credential may not use (``METHOD /path``)."""
    with served.client() as anyone:
        schema = anyone.get("/openapi.json").json()
    refused = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            schemes = {name for need in operation.get("security", []) for name in need}
            if schemes and not schemes & ACCEPTED_SCHEMES[who]:
                refused.add(f"{method.upper()} {path}")
    return refused


def only_unauthorized(output: str) -> set[str]:
    """Operations schemathesis saw answer nothing but 401/403."""
    start = output.find("Authentication failed:")
    if start < 0:
        return set()
    # The warning's list ends at its hint line; other warnings follow.
    block = output[start : output.find("💡", start)]
    return set(re.findall(r"^\s+- ([A-Z]+ /\S*)$", block, flags=re.MULTILINE))


@pytest.mark.parametrize("who", ["admin", "client", "anonymous"])
def test_every_response_matches_the_schema(
    served: Served, who: str, record_testsuite_property: Callable[[str, object], None]
) -> None:
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
        "60",
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
    assert "Rate limited" not in result.stdout, result.stdout[-3000:]
    assert only_unauthorized(result.stdout) <= refused_operations(served, who)
    cases = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert cases is not None, result.stdout[-3000:]
    record_testsuite_property(f"fuzz_cases_{who}", int(cases.group(1)))
    logger.info("schemathesis with %s credentials: %s", who, cases.group(0))
    with served.client() as anyone:
        assert anyone.get("/health").status_code == 200


def test_server_log_holds_no_secret(served: Served) -> None:
    credential = served.enroll("log-check")
    with served.client(**credential.headers()) as agent:
        agent.get("/rounds/current")
    with served.client(Authorization="Bearer wrong") as stranger:
        stranger.get("/admin/clients")

    log = served.log.read_text()
    assert "listening on https://127.0.0.1:" in log
    for secret in (served.admin_token, *(c.secret for c in served.credentials)):
        assert secret not in log
