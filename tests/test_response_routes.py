"""``GET /admin/actions`` over real loopback HTTP, from a real orchestrator."""

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from fedguard.crypto.keys import PrivateKey, save_private_key
from fedguard.response.audit import AuditListing
from fedguard.server.api import create_app
from fedguard.server.app import bind_socket, endpoint_url
from fedguard.server.config import load_config
from fedguard.server.orchestrator import PRIVATE_KEY_FILE, Orchestrator

CONFIG = """
[actions.tighten]
type = "agent"
handler = "lower_threshold"
params = { by = 0.1 }

[[policies]]
name = "surge"
metric = "threat_rate"
comparison = ">"
threshold = 0.5
cooldown = 0
severity = "high"
actions = ["log", "blocklist", "tighten"]

[[policies]]
name = "f1-drop"
metric = "f1"
rise = -0.2
window = 1
cooldown = 0
actions = ["log"]
"""


@dataclass
class Served:
    url: str
    orchestrator: Orchestrator

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    @property
    def admin_token(self) -> str:
        path = self.orchestrator.config.server.state_dir / "admin-token"
        return path.read_text().strip()


@pytest.fixture
def served(tmp_path: Path, private_key_2048: PrivateKey) -> Iterator[Served]:
    save_private_key(private_key_2048, tmp_path / PRIVATE_KEY_FILE)
    config_file = tmp_path / "server.toml"
    config_file.write_text(CONFIG)
    config = load_config(
        config_file,
        overrides={"server.state_dir": tmp_path, "federation.dataset": "synthetic"},
    )
    orchestrator = Orchestrator(config)
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn.Config(create_app(orchestrator), log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.01)
        yield Served(endpoint_url(sock, tls=False), orchestrator)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def fire_three_rounds(served: Served) -> None:
    """Rounds 2, 3 and 4: surge fires in 2 and 4, f1-drop in 3."""
    response = served.orchestrator.response
    history = [{"threat_rate": 0.6, "f1": 0.9}]
    response.after_round(2, 1, history)
    history.append({"threat_rate": 0.2, "f1": 0.6})
    response.after_round(3, 2, history)
    history.append({"threat_rate": 0.7, "f1": 0.6})
    response.after_round(4, 3, history)
    assert response.dispatcher.wait_idle(timeout=60)


def test_the_operator_lists_decisions_actions_and_directives(served: Served) -> None:
    fire_three_rounds(served)

    with served.client(served.admin_token) as http:
        response = http.get("/admin/actions")

    assert response.status_code == 200
    listing = AuditListing.model_validate(response.json())
    assert [(d.round, d.policy) for d in listing.decisions] == [
        (4, "surge"),
        (3, "f1-drop"),
        (2, "surge"),
    ]
    newest = listing.decisions[0]
    assert (newest.value, newest.comparison, newest.limit) == (0.7, ">", 0.5)
    outcomes = {a.action: (a.type, a.status) for a in newest.actions}
    assert outcomes == {
        "log": ("log", "done"),
        "blocklist": ("blocklist", "done"),
        "tighten": ("agent", "queued"),
    }
    log = next(a for a in newest.actions if a.action == "log")
    assert log.detail == (
        "policy surge fired in round 4 (severity high): "
        "threat_rate = 0.7000 > threshold 0.5000"
    )
    assert [(d.round, d.handler, d.acks) for d in listing.directives] == [
        (4, "lower_threshold", []),
        (2, "lower_threshold", []),
    ]


def test_listing_pages_and_filters(served: Served) -> None:
    fire_three_rounds(served)

    with served.client(served.admin_token) as http:
        second = http.get("/admin/actions", params={"limit": 1, "offset": 1}).json()
        surges = http.get("/admin/actions", params={"policy": "surge"}).json()
        beyond = http.get("/admin/actions", params={"offset": 50}).json()

    assert [d["round"] for d in second["decisions"]] == [3]
    assert [d["round"] for d in second["directives"]] == [2]
    assert [d["round"] for d in surges["decisions"]] == [4, 2]
    assert beyond == {"decisions": [], "directives": []}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 1_000_001}, "offset"),
        ({"limit": "ten"}, "limit"),
        ({"policy": "no spaces"}, "policy"),
    ],
)
def test_page_bounds_are_validated(
    served: Served, params: dict[str, object], field: str
) -> None:
    with served.client(served.admin_token) as http:
        response = http.get("/admin/actions", params=params)

    assert response.status_code == 422
    assert f"query.{field}" in response.json()["error"]


def test_only_the_admin_token_may_read_the_audit_log(served: Served) -> None:
    with served.client(served.admin_token) as admin:
        token = admin.post("/admin/enrollment-tokens", json={"name": "cloud-a"})
        enrolled = admin.post(
            "/enroll", json={"enrollment_token": token.json()["token"]}
        ).json()
    credential = f"{enrolled['client_id']}.{enrolled['secret']}"

    with served.client() as anonymous, served.client(credential) as agent:
        refused = [anonymous.get("/admin/actions"), agent.get("/admin/actions")]

    assert [r.status_code for r in refused] == [401, 401]
    assert {r.json()["error"] for r in refused} == {"invalid credentials"}


def test_the_openapi_schema_describes_the_listing(served: Served) -> None:
    with served.client() as http:
        schema = http.get("/openapi.json").json()

    operation = schema["paths"]["/admin/actions"]["get"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/AuditListing"}
    assert {"401", "422", "429"} <= set(operation["responses"])
    bounds = {
        p["name"]: (p["schema"].get("minimum"), p["schema"].get("maximum"))
        for p in operation["parameters"]
    }
    assert bounds["limit"] == (1, 1000) and bounds["offset"] == (0, 1_000_000)
    action = schema["components"]["schemas"]["ActionRecord"]["properties"]
    assert "delivered" in action["status"]["enum"]
    assert operation["security"]
