"""A bounded load test of the secured server on loopback.

200 agents enroll and then upload real encrypted setup-round frames at the same
time, over TLS, each with its own credential, while a watcher keeps asking for
``/health``. Every accepted frame must be in the decrypted aggregate (the published
feature means), none may be lost, and the health endpoint must answer throughout.
Every loop below is bounded in count and time.
"""

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedguard.client.agent import read_federation
from fedguard.crypto.frames import FrameKind, encode_frame
from fedguard.crypto.vectors import EncryptionPool, encrypt_update
from fedguard.security.agent import AgentCredential, enroll_agent
from fedguard.security.tls import client_ssl_context, init_certificates

pytestmark = pytest.mark.slow

AGENTS = 200
MAX_EXAMPLES = 10_000


@dataclass
class Server:
    url: str
    context: ssl.SSLContext
    admin_token: str


def wait_for_url(process: subprocess.Popen[bytes], state_dir: Path) -> str:
    for _ in range(1200):
        endpoint = state_dir / "endpoint.json"
        if endpoint.exists():
            return str(json.loads(endpoint.read_text())["url"])
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError("fedguard server did not start")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("load")
    certs = init_certificates(root / "certs")
    config = root / "fedguard.toml"
    config.write_text(
        "[server]\nport = 0\nstate_dir = 'state'\n"
        f"[federation]\nrounds = 1\nmin_clients = {AGENTS}\n"
        f"wait_for_clients = {AGENTS}\nround_deadline = 900\n"
        f"max_examples = {MAX_EXAMPLES}\n"
        f"[packing]\nmax_contributors = {AGENTS}\n"
        f"[tls]\ncert_file = '{certs.server_cert}'\nkey_file = '{certs.server_key}'\n"
    )
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fedguard", "server", "--config", str(config)],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = wait_for_url(process, root / "state")
        admin_token = (root / "state" / "admin-token").read_text().strip()
        yield Server(url, client_ssl_context(certs.ca_cert), admin_token)
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        log.close()


def enroll_all(server: Server) -> list[AgentCredential]:
    """Issue one token per agent, then let every agent enroll at once."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=server.url, verify=server.context) as admin:
        tokens = [
            admin.post(
                "/admin/enrollment-tokens", json={"name": f"load-{i}"}, headers=headers
            ).json()["token"]
            for i in range(AGENTS)
        ]

    def enroll(token: str) -> AgentCredential:
        with httpx.Client(
            base_url=server.url, verify=server.context, timeout=120
        ) as agent:
            return enroll_agent(agent, "/enroll", token)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=50) as pool:
        return list(pool.map(enroll, tokens))


def wait_for_round(server: Server, credential: AgentCredential, state: str) -> Any:
    """Round 0 once it reaches ``state``; a bounded wait."""
    with httpx.Client(
        base_url=server.url, verify=server.context, headers=credential.headers()
    ) as client:
        for _ in range(1800):
            status = client.get("/rounds/0")
            if status.status_code == 200 and status.json()["state"] == state:
                return status.json()
            time.sleep(0.5)
    raise AssertionError(f"round 0 never reached state {state!r}")


def statistics_frames(
    info: dict[str, Any], count: int
) -> tuple[list[bytes], np.ndarray[Any, Any], int]:
    """Real encrypted setup frames, the weighted mean they should produce and the
    number of examples behind them."""
    federation = read_federation(info, None)
    assert federation.public_key is not None
    k = len(federation.schema.numeric)
    rng = np.random.default_rng(20240607)

    # One encryptor for all frames: its fixed-base table is built once.
    pool = EncryptionPool(federation.public_key, workers=1)
    frames, vectors, weights = [], [], []
    for _ in range(count):
        mean = rng.uniform(-50.0, 50.0, k)
        vector = np.concatenate([mean, mean**2 + rng.uniform(0.5, 20.0, k)])
        weight = int(rng.integers(50, 500)) / MAX_EXAMPLES  # num_examples / max
        encrypted = encrypt_update(
            federation.public_key,
            federation.packings["statistics"],
            weight * vector,
            weight,
            pool=pool,
        )
        frames.append(
            encode_frame(
                encrypted,
                federation.public_key,
                kind=FrameKind.STATISTICS,
                round_id=0,
                model_version=int(info.get("model_version", 0)),
            )
        )
        vectors.append(vector)
        weights.append(weight)

    pool.close()
    expected = np.average(np.array(vectors), axis=0, weights=np.array(weights))
    return frames, expected, round(sum(weights) * MAX_EXAMPLES)


async def upload_all(
    server: Server, credentials: list[AgentCredential], frames: list[bytes]
) -> tuple[list[int], list[int]]:
    """Every agent uploads at once while a watcher polls /health."""
    done = asyncio.Event()
    health: list[int] = []

    async def watch() -> None:
        async with httpx.AsyncClient(
            base_url=server.url, verify=server.context, timeout=120
        ) as watcher:
            for _ in range(6000):
                health.append((await watcher.get("/health")).status_code)
                if done.is_set():
                    return
                await asyncio.sleep(0.05)

    async def upload(credential: AgentCredential, frame: bytes) -> int:
        async with httpx.AsyncClient(
            base_url=server.url,
            verify=server.context,
            headers=credential.headers(),
            timeout=300,
        ) as agent:
            response = await agent.put("/rounds/0/frames/statistics", content=frame)
            return response.status_code

    watcher = asyncio.create_task(watch())
    statuses = await asyncio.gather(
        *(upload(c, f) for c, f in zip(credentials, frames, strict=True))
    )
    done.set()
    await watcher
    return list(statuses), health


def test_200_agents_upload_at_once_and_none_is_lost(server: Server) -> None:
    credentials = enroll_all(server)
    assert len({c.client_id for c in credentials}) == AGENTS

    opened = wait_for_round(server, credentials[0], "open")
    assert opened["kind"] == "setup"
    with httpx.Client(base_url=server.url, verify=server.context) as anyone:
        info = anyone.get("/federation").json()
    frames, expected, examples = statistics_frames(info, AGENTS)

    statuses, health = asyncio.run(upload_all(server, credentials, frames))

    assert statuses == [200] * AGENTS
    assert health and set(health) == {200}
    closed = wait_for_round(server, credentials[0], "closed")
    assert closed["contributors"] == AGENTS
    assert set(closed["client_ids"]) == {c.client_id for c in credentials}
    assert closed["bytes_uploaded"] == sum(len(frame) for frame in frames)

    with httpx.Client(base_url=server.url, verify=server.context) as anyone:
        fitted = anyone.get("/federation").json()["fitted_schema"]
    k = len(fitted["numeric"])
    published = np.array([feature["mean"] for feature in fitted["numeric"]])
    np.testing.assert_allclose(published, expected[:k], rtol=1e-6, atol=1e-4)
    assert fitted["num_examples"] == examples
