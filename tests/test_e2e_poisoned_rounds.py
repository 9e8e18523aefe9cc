"""End to end: a malicious member poisons the sum of a round.

A frame whose ciphertexts are all 2 passes every upload check (2 is a unit modulo
n²) but decrypts, summed with the honest ones, to a plaintext no honest
contributions produce. The round fails, a new attempt opens and the honest agents
(real ``fedguard client`` processes) finish the federation; a member that poisons
every attempt stops the server, which the operator restarts after revoking it.
"""

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from gmpy2 import mpz

from e2e_support import WAIT, finished, wait_until
from fedguard.crypto.frames import FrameKind, encode_frame
from fedguard.crypto.keys import PublicKey
from fedguard.crypto.packing import PackingParams
from fedguard.crypto.vectors import encrypt_update
from fedguard.simulate import (
    Process,
    ServerHandle,
    SimulationSettings,
    launch_server,
    start_agent,
    start_server,
    wait_for_agents,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


@pytest.fixture
def members() -> Iterator[list["Member"]]:
    enrolled: list[Member] = []
    yield enrolled
    for member in enrolled:
        member.http.close()


class Member:
    """An enrolled client driven by the test over HTTP instead of an agent."""

    def __init__(self, server: ServerHandle, name: str) -> None:
        token = server.enrollment_token(name)
        enrolled = httpx.post(f"{server.url}/enroll", json={"enrollment_token": token})
        enrolled.raise_for_status()
        body = enrolled.json()
        self.client_id = str(body["client_id"])
        self.http = httpx.Client(
            base_url=server.url,
            timeout=60.0,
            headers={"Authorization": f"Bearer {body['client_id']}.{body['secret']}"},
        )

    def open_round(self, round_id: int) -> dict[str, Any]:
        def current() -> dict[str, Any] | None:
            info = dict(self.http.get("/rounds/current", params={"wait": 2}).json())
            ready = info["round"] == round_id and info["state"] == "open"
            return info if ready else None

        return dict(wait_until(current, f"round {round_id} to open"))

    def statistics(self, round_id: int, *, poisoned: bool) -> httpx.Response:
        """Upload feature statistics to the setup round ``round_id``."""
        info = self.http.get("/federation").json()
        public_key = PublicKey.from_dict(info["public_key"])
        packing = info["packing"]["statistics"]
        values = np.full(packing["length"], 0.25)
        vector = encrypt_update(
            public_key, PackingParams.from_dict(packing), values, 0.5
        )
        if poisoned:
            twos = tuple(mpz(2) for _ in vector.ciphertexts)
            vector = dataclasses.replace(vector, ciphertexts=twos)
        frame = encode_frame(
            vector,
            public_key,
            kind=FrameKind.STATISTICS,
            round_id=round_id,
            model_version=0,
        )
        return self.http.put(
            f"/rounds/{round_id}/frames/statistics",
            content=frame,
            headers={"Content-Type": "application/octet-stream"},
        )


def rounds(server: ServerHandle) -> list[dict[str, Any]]:
    with server.http() as http:
        return list(http.get("/rounds").json()["rounds"])


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ERROR " in line]


def test_honest_agents_finish_after_a_poisoned_round_fails(
    tmp_path: Path, key_file: Path, processes: list[Process], members: list[Member]
) -> None:
    settings = SimulationSettings(
        clients=3,
        rounds=2,
        min_clients=2,
        round_deadline=10.0,
        rows_per_cloud=3000,
        out_dir=tmp_path / "run",
        key_file=key_file,
    )
    server = launch_server(settings, tls=False)
    processes.append(server.process)
    agents = [start_agent(server, settings, i, settings.out_dir) for i in (0, 1)]
    processes.extend(agents)
    attacker = Member(server, "cloud-2")
    members.append(attacker)

    attacker.open_round(0)
    assert attacker.statistics(0, poisoned=True).status_code == 200
    wait_until(lambda: rounds(server)[0]["state"] == "failed", "round 0 to fail")
    wait_until(lambda: finished(server), "the federation to finish")
    wait_for_agents(agents, timeout=WAIT)

    history = rounds(server)
    assert [(r["round"], r["kind"], r["model_version"]) for r in history] == [
        (0, "setup", 0),
        (1, "setup", 0),
        (2, "training", 0),
        (3, "training", 1),
        (4, "evaluation", 2),
    ]
    assert [r["state"] for r in history] == ["failed"] + ["closed"] * 4
    assert "malformed or malicious" in history[0]["failure"]
    assert history[1]["contributors"] == 2
    assert attacker.client_id not in history[1]["client_ids"]
    assert [agent.popen.returncode for agent in agents] == [0, 0]
    log = server.process.log_path.read_text()
    errors = error_lines(log)
    assert len(errors) == 1 and "round 0 (setup, model version 0) failed" in errors[0]
    assert "No individual update was decrypted" in errors[0]
    assert "Traceback" not in log


def test_a_member_poisoning_every_attempt_stops_the_server_until_revoked(
    tmp_path: Path, key_file: Path, processes: list[Process], members: list[Member]
) -> None:
    settings = SimulationSettings(
        clients=2,
        rounds=1,
        min_clients=2,
        round_deadline=60.0,
        out_dir=tmp_path / "run",
        key_file=key_file,
        extra_config={"federation": {"max_failed_attempts": 2}},
    )
    server = launch_server(settings, tls=False)
    processes.append(server.process)
    honest, attacker = Member(server, "honest"), Member(server, "attacker")
    members.extend([honest, attacker])

    for round_id in (0, 1):
        honest.open_round(round_id)
        assert honest.statistics(round_id, poisoned=False).status_code == 200
        assert attacker.statistics(round_id, poisoned=True).status_code == 200

    assert server.process.popen.wait(WAIT) == 2
    log = server.process.log_path.read_text()
    assert "fedguard clients revoke" in error_lines(log)[-1]
    assert "error: the federation stopped" in log and "Traceback" not in log
    assert not (server.state_dir / "endpoint.json").exists()

    revoke = [sys.executable, "-m", "fedguard", "clients", "revoke"]
    revoke += [attacker.client_id, "--state-dir", str(server.state_dir)]
    subprocess.run(revoke, check=True, capture_output=True, timeout=60)
    out_dir = settings.out_dir.resolve()
    restarted = start_server(
        out_dir / "server.toml",
        server.state_dir,
        out_dir / "logs" / "server-restarted.log",
        ca_file=None,
        insecure_http=True,
    )
    processes.append(restarted.process)
    honest.http.base_url = httpx.URL(restarted.url)
    attacker.http.base_url = httpx.URL(restarted.url)

    attempt = honest.open_round(2)
    assert (attempt["kind"], attempt["model_version"]) == ("setup", 0)
    assert attacker.http.get("/rounds/current").status_code == 401
    states = [(r["round"], r["state"]) for r in rounds(restarted)]
    assert states == [(0, "failed"), (1, "failed"), (2, "open")]
    failures = json.dumps([r["failure"] for r in rounds(restarted)[:2]])
    assert failures.count("malformed or malicious") == 2
