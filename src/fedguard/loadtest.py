"""A bounded load test of the secured orchestrator on loopback.

:func:`run_load_test` starts ``fedguard server`` as a subprocess on 127.0.0.1 over
TLS (a throw-away local CA), issues one enrollment token per agent through the admin
API and lets every agent enroll. Each agent then opens its own TLS connection with
its own credential and asks for the current round, as a real agent does; once all
are connected they upload a real encrypted setup-round frame (feature statistics)
at the same moment, while a watcher keeps asking for ``/health``. When the round
closes, the run reads back what the server aggregated.

The report holds the figures (uploads per second, upload latency percentiles, health
answers during the burst) and the evidence that nothing was lost: the clients in the
decrypted aggregate, its byte count and the published feature means, next to what
the accepted frames should produce. ``benchmarks/bench_load.py`` prints it;
``tests/test_security_load.py`` asserts on it.

Every wait is bounded in time, every loop in count, and the number of agents is
bounded by :data:`MAX_AGENTS`. A run recreates ``server/`` and ``certs/`` under
its ``out_dir`` and writes ``server.toml`` and ``server.log`` there; nothing else
in that directory is touched.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from numpy.typing import NDArray

from fedguard.errors import ConfigError, FedguardError
from fedguard.security.agent import AgentCredential, enroll_agent

if TYPE_CHECKING:
    from fedguard.security.tls import CertificatePaths

logger = logging.getLogger(__name__)

MIN_AGENTS = 2
MAX_AGENTS = 500
MAX_EXAMPLES = 10_000
ROUND = 0

# What a run owns under out_dir and recreates; nothing else there is touched.
RUN_DIRS = ("server", "certs")

_ENROLL_THREADS = 16
_POLL_SECONDS = 0.2
_REQUEST_TIMEOUT = 300.0


class LoadTestError(FedguardError):
    """The load test could not run to the end (the server failed or stalled)."""


@dataclass(frozen=True)
class LoadSettings:
    """What to run: how many agents, where the files go, how long at most."""

    out_dir: Path
    agents: int = 200
    dataset: str = "nsl-kdd"
    seed: int = 20240607
    health_interval: float = 0.05
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if not MIN_AGENTS <= self.agents <= MAX_AGENTS:
            raise ConfigError(
                f"agents must be in [{MIN_AGENTS}, {MAX_AGENTS}]; got {self.agents}"
            )
        if self.dataset not in ("nsl-kdd", "synthetic"):
            raise ConfigError(
                f"dataset must be nsl-kdd or synthetic; got {self.dataset!r}"
            )
        if not 0.01 <= self.health_interval <= 10.0:
            raise ConfigError(
                f"health_interval must be in [0.01, 10] s; got {self.health_interval}"
            )
        if not 10.0 <= self.timeout <= 3600.0:
            raise ConfigError(f"timeout must be in [10, 3600] s; got {self.timeout}")


@dataclass
class LoadReport:
    """What one run measured and what the server aggregated."""

    agents: int
    statuses: list[int]
    latencies: list[float]
    burst_seconds: float
    health_statuses: list[int]
    health_latencies: list[float]
    accepted_ids: set[str]
    aggregated_ids: set[str]
    contributors: int
    bytes_accepted: int
    bytes_aggregated: int
    expected_means: NDArray[np.float64]
    published_means: NDArray[np.float64]
    expected_examples: int
    published_examples: int
    server_log: Path
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return len(self.accepted_ids)

    @property
    def uploads_per_second(self) -> float:
        return self.accepted / self.burst_seconds if self.burst_seconds > 0 else 0.0

    def latency(self, percent: float) -> float:
        """Upload latency percentile in seconds, over the accepted uploads."""
        if not self.latencies:
            return float("nan")
        return float(np.percentile(self.latencies, percent))

    @property
    def health_answered(self) -> int:
        return sum(1 for status in self.health_statuses if status == 200)

    @property
    def lost(self) -> set[str]:
        """Clients whose upload was accepted but are missing from the aggregate."""
        return self.accepted_ids - self.aggregated_ids

    @property
    def max_mean_error(self) -> float:
        """Largest difference between published and expected feature means."""
        return float(np.max(np.abs(self.published_means - self.expected_means)))

    def summary(self) -> dict[str, Any]:
        """The figures, as one flat JSON-ready mapping."""
        return {
            "agents": self.agents,
            "uploads_accepted": self.accepted,
            "uploads_refused": len(self.statuses) - self.statuses.count(200),
            "burst_seconds": round(self.burst_seconds, 4),
            "uploads_per_second": round(self.uploads_per_second, 1),
            "latency_p50_seconds": round(self.latency(50), 4),
            "latency_p95_seconds": round(self.latency(95), 4),
            "latency_p99_seconds": round(self.latency(99), 4),
            "latency_max_seconds": round(max(self.latencies, default=0.0), 4),
            "health_checks": len(self.health_statuses),
            "health_answered": self.health_answered,
            "health_max_seconds": round(max(self.health_latencies, default=0.0), 4),
            "aggregate_contributors": self.contributors,
            "lost_updates": len(self.lost),
            "all_accepted_in_aggregate": not self.lost
            and self.aggregated_ids == self.accepted_ids
            and self.bytes_aggregated == self.bytes_accepted,
            "max_mean_error": self.max_mean_error,
            **self.extra,
        }


@dataclass(frozen=True)
class _Served:
    """The running server and the operator's view of it."""

    url: str
    context: ssl.SSLContext
    admin_token: str

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            verify=self.context,
            timeout=_REQUEST_TIMEOUT,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )


@dataclass
class _Frames:
    """The agents' frames, and the aggregate the server should compute from them."""

    frames: list[bytes]
    vectors: NDArray[np.float64]
    weights: NDArray[np.float64]
    statistics_length: int


def run_load_test(settings: LoadSettings) -> LoadReport:
    """Start a server, enroll ``settings.agents`` agents, upload at once, verify."""
    started = time.monotonic()
    with _server(settings) as (served, log_path):
        credentials = _enroll_all(served, settings.agents)
        _wait_for_round(served, "open", started + settings.timeout)
        frames = _build_frames(served, settings)
        burst = asyncio.run(_burst(served, credentials, frames.frames, settings))
        _wait_for_round(served, "closed", started + settings.timeout)
        return _report(served, settings, credentials, frames, burst, log_path)


@contextmanager
def _server(settings: LoadSettings) -> Iterator[tuple[_Served, Path]]:
    from fedguard.security.tls import client_ssl_context, init_certificates
    from fedguard.simulate import start_server, write_server_config

    out = settings.out_dir
    for name in RUN_DIRS:
        shutil.rmtree(out / name, ignore_errors=True)
    certs = init_certificates(out / "certs")
    config = out / "server.toml"
    state_dir = out / "server"
    write_server_config(config, _server_config(settings, state_dir, certs))
    log_path = out / "server.log"
    handle = start_server(config, state_dir, log_path, ca_file=certs.ca_cert)
    try:
        yield (
            _Served(
                handle.url, client_ssl_context(certs.ca_cert), handle.admin_token()
            ),
            log_path,
        )
    finally:
        handle.process.stop()


def _server_config(
    settings: LoadSettings, state_dir: Path, certs: CertificatePaths
) -> dict[str, dict[str, Any]]:
    # The round opens once every agent enrolled and closes as soon as every one
    # delivered; a refused upload would close it at the deadline instead.
    return {
        "server": {"host": "127.0.0.1", "port": 0, "state_dir": str(state_dir)},
        "federation": {
            "name": "load-test",
            "dataset": settings.dataset,
            "rounds": 1,
            "min_clients": MIN_AGENTS,
            "wait_for_clients": settings.agents,
            "round_deadline": 120.0,
            "max_examples": MAX_EXAMPLES,
        },
        "packing": {"max_contributors": max(settings.agents, 64)},
        "tls": {
            "cert_file": str(certs.server_cert),
            "key_file": str(certs.server_key),
            "ca_file": str(certs.ca_cert),
        },
    }


def _enroll_all(served: _Served, count: int) -> list[AgentCredential]:
    """One enrollment token per agent from the admin API, then every agent enrolls."""
    with served.admin() as admin:
        tokens = []
        for index in range(count):
            response = admin.post(
                "/admin/enrollment-tokens", json={"name": f"load-{index}"}
            )
            if response.status_code != 201:
                raise LoadTestError(f"token refused: HTTP {response.status_code}")
            tokens.append(str(response.json()["token"]))

    def enroll(token: str) -> AgentCredential:
        with httpx.Client(
            base_url=served.url, verify=served.context, timeout=_REQUEST_TIMEOUT
        ) as agent:
            return enroll_agent(agent, "/enroll", token)

    with ThreadPoolExecutor(max_workers=_ENROLL_THREADS) as pool:
        credentials = list(pool.map(enroll, tokens))
    logger.info("%d agents enrolled", len(credentials))
    return credentials


def _wait_for_round(served: _Served, state: str, deadline: float) -> dict[str, Any]:
    """The setup round's status once it reaches ``state``; bounded by ``deadline``."""
    with served.admin() as admin:
        while time.monotonic() < deadline:
            response = admin.get(f"/rounds/{ROUND}")
            if response.status_code == 200 and response.json()["state"] == state:
                return dict(response.json())
            time.sleep(_POLL_SECONDS)
    raise LoadTestError(f"round {ROUND} did not reach state {state!r} in time")


def _build_frames(served: _Served, settings: LoadSettings) -> _Frames:
    """One real encrypted statistics frame per agent, with seeded contents."""
    from fedguard.client.agent import read_federation
    from fedguard.crypto.frames import FrameKind, encode_frame
    from fedguard.crypto.vectors import EncryptionPool, encrypt_update

    with served.admin() as admin:
        federation = read_federation(admin.get("/federation").json(), None)
    public_key = federation.public_key
    assert public_key is not None, "the load test needs an encrypted federation"
    packing = federation.packings["statistics"]
    k = len(federation.schema.numeric)
    rng = np.random.default_rng(settings.seed)
    means = rng.uniform(-50.0, 50.0, (settings.agents, k))
    vectors = np.hstack([means, means**2 + rng.uniform(0.5, 20.0, means.shape)])
    weights = rng.integers(50, 500, settings.agents) / MAX_EXAMPLES

    # One encryptor for every frame: its fixed-base table is built once.
    pool = EncryptionPool(public_key, workers=1)
    try:
        frames = [
            encode_frame(
                encrypt_update(public_key, packing, w * v, w, pool=pool),
                public_key,
                kind=FrameKind.STATISTICS,
                round_id=ROUND,
                model_version=0,
            )
            for v, w in zip(vectors, weights, strict=True)
        ]
    finally:
        pool.close()
    return _Frames(frames, vectors, weights, k)


@dataclass
class _Burst:
    statuses: list[int]
    latencies: list[float]
    seconds: float
    health_statuses: list[int]
    health_latencies: list[float]


async def _burst(
    served: _Served,
    credentials: list[AgentCredential],
    frames: list[bytes],
    settings: LoadSettings,
) -> _Burst:
    """Connect every agent, then release all uploads at once; watch /health."""
    release, done = asyncio.Event(), asyncio.Event()
    connected: list[None] = []
    results: list[tuple[int, float]] = [(0, 0.0)] * len(frames)

    async def agent(index: int) -> None:
        async with httpx.AsyncClient(
            base_url=served.url,
            verify=served.context,
            headers=credentials[index].headers(),
            timeout=_REQUEST_TIMEOUT,
        ) as http:
            (await http.get("/rounds/current")).raise_for_status()
            connected.append(None)
            await release.wait()
            results[index] = await _timed_upload(http, frames[index])

    health: tuple[list[int], list[float]] = ([], [])
    agents = [asyncio.create_task(agent(i)) for i in range(len(frames))]
    await _until_connected(connected, len(frames), agents, settings.timeout)
    watcher = asyncio.create_task(_watch_health(served, done, health, settings))
    start = time.monotonic()
    release.set()
    await asyncio.gather(*agents)
    seconds = time.monotonic() - start
    done.set()
    await watcher

    statuses = [status for status, _ in results]
    latencies = [elapsed for status, elapsed in results if status == 200]
    return _Burst(statuses, latencies, seconds, *health)


async def _until_connected(
    connected: list[None], count: int, agents: list[asyncio.Task[None]], limit: float
) -> None:
    """Wait until every agent holds its connection; bounded by ``limit`` seconds."""
    end = time.monotonic() + limit
    while len(connected) < count:
        failed = [task for task in agents if task.done() and task.exception()]
        if failed or time.monotonic() > end:
            for task in agents:
                task.cancel()
            raise LoadTestError(
                f"only {len(connected)} of {count} agents could connect"
            )
        await asyncio.sleep(0.01)


async def _timed_upload(http: httpx.AsyncClient, frame: bytes) -> tuple[int, float]:
    begin = time.monotonic()
    try:
        response = await http.put(
            f"/rounds/{ROUND}/frames/statistics",
            content=frame,
            headers={"Content-Type": "application/octet-stream"},
        )
    except httpx.HTTPError:
        return 0, time.monotonic() - begin  # 0: no answer at all
    return response.status_code, time.monotonic() - begin


async def _watch_health(
    served: _Served,
    done: asyncio.Event,
    found: tuple[list[int], list[float]],
    settings: LoadSettings,
) -> None:
    """Ask for /health every ``health_interval`` until ``done``; 0 marks a failure."""
    statuses, latencies = found
    checks = int(settings.timeout / settings.health_interval) + 1
    async with httpx.AsyncClient(
        base_url=served.url, verify=served.context, timeout=_REQUEST_TIMEOUT
    ) as watcher:
        for _ in range(checks):
            begin = time.monotonic()
            try:
                status = (await watcher.get("/health")).status_code
            except httpx.HTTPError:
                status = 0
            statuses.append(status)
            latencies.append(time.monotonic() - begin)
            if done.is_set():
                return
            await asyncio.sleep(settings.health_interval)


def _report(
    served: _Served,
    settings: LoadSettings,
    credentials: list[AgentCredential],
    frames: _Frames,
    burst: _Burst,
    log_path: Path,
) -> LoadReport:
    """Compare what the server aggregated with what it accepted."""
    accepted = [i for i, status in enumerate(burst.statuses) if status == 200]
    with served.admin() as admin:
        closed = admin.get(f"/rounds/{ROUND}").json()
        fitted = admin.get("/federation").json()["fitted_schema"]

    weights = frames.weights[accepted]
    expected = np.average(frames.vectors[accepted], axis=0, weights=weights)
    k = frames.statistics_length
    return LoadReport(
        agents=settings.agents,
        statuses=burst.statuses,
        latencies=burst.latencies,
        burst_seconds=burst.seconds,
        health_statuses=burst.health_statuses,
        health_latencies=burst.health_latencies,
        accepted_ids={credentials[i].client_id for i in accepted},
        aggregated_ids=set(closed["client_ids"]),
        contributors=int(closed["contributors"]),
        bytes_accepted=sum(len(frames.frames[i]) for i in accepted),
        bytes_aggregated=int(closed["bytes_uploaded"]),
        expected_means=expected[:k],
        published_means=np.array([c["mean"] for c in fitted["numeric"]]),
        expected_examples=round(float(weights.sum()) * MAX_EXAMPLES),
        published_examples=int(fitted["num_examples"]),
        server_log=log_path,
        extra={"frame_bytes": float(len(frames.frames[0]))},
    )


__all__ = [
    "MAX_AGENTS",
    "MIN_AGENTS",
    "LoadReport",
    "LoadSettings",
    "LoadTestError",
    "run_load_test",
]
