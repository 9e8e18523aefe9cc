"""The whole federation on one machine: a real server and N agent processes.

:func:`run_simulation` starts ``fedguard server`` as a subprocess on a free
loopback port (TLS with a throw-away local CA), enrolls N agents through the admin
API and starts each as a ``fedguard client`` subprocess. The agents talk to the
server over real HTTPS exactly as they would across clouds. The driver plays the
researcher: after every training round it downloads the global model and evaluates
it on a test set no agent sees (KDDTest+ for NSL-KDD, an independent, unbiased
synthetic sample otherwise), and it trains a centralised baseline on the union of
the agents' training rows for comparison.

Timings come from the server: every agent reports what its round cost (training,
encryption, upload); the server records aggregation and decryption and the round's
wall time. Timings are not secret; the agents' own metrics are, which is why they
only ever leave an agent encrypted.

The response engine runs as in production: after every round the server decrypts
the fleet's summed counts and evaluates its policies (the default ones unless the
configuration names others). ``attack_bursts`` make chosen agents add attack events
to the recent events they score in chosen rounds (``fedguard client
--attack-burst``), so that a run shows a threat-rate policy firing. At the end the
driver reads the audit log (``GET /admin/actions``) and the blocklist file and files
every fired policy and action outcome under ``actions`` in ``metrics.json``.

Every file of a run goes under ``out_dir``: ``metrics.json``, ``report.html``, the
server's state and the agents' credentials, certificates and one log per process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import httpx
import numpy as np

from fedguard.errors import ConfigError, FedguardError, InputError

logger = logging.getLogger(__name__)

DATASETS = ("synthetic", "nsl-kdd")
DEFAULT_OUT_DIR = Path("fedguard-run")
NSL_KDD_TRAIN_FILE = "KDDTrain+.txt"
NSL_KDD_TEST_FILE = "KDDTest+.txt"
SYNTHETIC_TEST_ROWS = 5000

# Subdirectories a run owns and recreates; nothing else in out_dir is touched.
RUN_SUBDIRS = ("server", "agents", "certs", "logs")

_START_TIMEOUT = 90.0
_STOP_TIMEOUT = 20.0
_POLL_SECONDS = 0.2
# Webhook retries may still run when the federation finishes; wait this long at most.
_ACTIONS_SETTLE_SECONDS = 60.0
_MAX_LISTED_DECISIONS = 1000


class SimulationError(FedguardError):
    """A process of the simulated federation failed."""


@dataclass(frozen=True)
class AgentBurst:
    """Extra attack events among agent ``agent``'s recent events in ``round``.

    ``count`` None lets the agent choose: three times its ordinary events of that
    round (see :mod:`fedguard.client.events`).
    """

    agent: int
    round: int
    count: int | None = None

    @classmethod
    def parse(cls, text: str) -> AgentBurst:
        """``AGENT:ROUND`` or ``AGENT:ROUND:COUNT``, for example ``2:4``."""
        parts = text.split(":")
        try:
            numbers = [int(part) for part in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3) or len(numbers) != len(parts):
            raise ConfigError(
                "--attack-burst must be AGENT:ROUND or AGENT:ROUND:COUNT with "
                f"integers (e.g. 2:4); got {text!r}"
            )
        return cls(*numbers)

    def client_option(self) -> str:
        """The agent's own ``--attack-burst ROUND[:COUNT]`` value."""
        return str(self.round) if self.count is None else f"{self.round}:{self.count}"

    def check(self, clients: int, rounds: int) -> None:
        """Refuse an agent or round this federation does not have."""
        from fedguard.client.events import FIRST_SCORED_ROUND, MAX_BURST_EVENTS

        if not 0 <= self.agent < clients:
            raise ConfigError(
                f"--attack-burst AGENT must be an agent index in [0, {clients - 1}] "
                f"(--clients {clients}); got {self.agent}"
            )
        last = rounds + 1
        if not FIRST_SCORED_ROUND <= self.round <= last:
            raise ConfigError(
                f"--attack-burst ROUND must be in [{FIRST_SCORED_ROUND}, {last}] "
                f"(round 1 scores no events; round {last} is the evaluation round "
                f"after --rounds {rounds}); got {self.round}"
            )
        if self.count is not None and not 1 <= self.count <= MAX_BURST_EVENTS:
            raise ConfigError(
                f"--attack-burst COUNT must be in [1, {MAX_BURST_EVENTS}]; "
                f"got {self.count}"
            )


@dataclass(frozen=True)
class SimulationSettings:
    """What to simulate. Defaults: synthetic data, 3 clients, 5 rounds."""

    dataset: str = "synthetic"
    data_dir: Path | None = None
    train_file: str = NSL_KDD_TRAIN_FILE
    test_file: str = NSL_KDD_TEST_FILE
    clients: int = 3
    rounds: int = 5
    partition: str = "iid"
    seed: int = 0
    plaintext: bool = False
    out_dir: Path = DEFAULT_OUT_DIR
    rows_per_cloud: int = 20_000
    min_clients: int | None = None
    round_deadline: float = 120.0
    key_bits: int = 2048
    database_url: str | None = None
    encryption_workers: int = 1
    key_file: Path | None = None
    port: int = 0
    attack_bursts: tuple[AgentBurst, ...] = ()
    # Merged into the server's TOML document: tables update sections, other values
    # (such as a list of policies) replace them.
    extra_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(
                f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}"
            )
        if self.dataset == "nsl-kdd" and self.data_dir is None:
            raise ConfigError("--data-dir is required with --dataset nsl-kdd")
        if not 1 <= self.clients <= 64:
            raise ConfigError(f"clients must be in [1, 64]; got {self.clients}")
        if not 1 <= self.rounds <= 1000:
            raise ConfigError(f"rounds must be in [1, 1000]; got {self.rounds}")
        minimum = self.required_clients
        if not 1 <= minimum <= self.clients:
            raise ConfigError(
                f"min_clients must be in [1, {self.clients}] (clients); got {minimum}"
            )
        for burst in self.attack_bursts:
            burst.check(self.clients, self.rounds)

    @property
    def required_clients(self) -> int:
        return self.clients if self.min_clients is None else self.min_clients

    def check_data_files(self) -> None:
        """Refuse a missing data directory or file before anything starts.

        The training file is checked before the test file, as ``fedguard train``
        does.
        """
        if self.dataset != "nsl-kdd":
            return
        from fedguard.data.nsl_kdd import find_nsl_kdd_file

        assert self.data_dir is not None
        if not self.data_dir.is_dir():
            problem = (
                "is not a directory" if self.data_dir.exists() else "does not exist"
            )
            raise InputError(f"--data-dir {self.data_dir} {problem}")
        for name in (self.train_file, self.test_file):
            find_nsl_kdd_file(self.data_dir, name)


@dataclass
class RoundResult:
    """One training round as the researcher sees it.

    The detection metrics (accuracy … fpr) are those of this round's model on the
    test set. ``fleet`` holds what the agents reported, encrypted, in this round:
    their held-out metrics of the model the round started from (version round − 1)
    and the threat rate of the recent events they scored in this round, which is
    also ``threat_rate``; both are None in round 1, whose model is untrained.
    """

    round: int
    clients: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float | None
    fpr: float
    round_seconds: float
    training_seconds: float
    encryption_seconds: float
    upload_seconds: float
    aggregation_seconds: float
    decryption_seconds: float
    bytes_uploaded: int
    fleet: dict[str, float] | None = None
    threat_rate: float | None = None


@dataclass
class SimulationResult:
    """A finished run; ``actions`` lists every fired policy's actions, oldest first.

    ``evaluation`` holds the fleet metrics of the final model, reported in the
    evaluation round after the last training round.
    """

    settings: dict[str, Any]
    rounds: list[RoundResult]
    centralized: dict[str, Any] | None
    fingerprint: str
    wall_seconds: float
    out_dir: Path
    actions: list[dict[str, Any]] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        rounds = [asdict(r) for r in self.rounds]
        return {
            "settings": self.settings,
            "fingerprint": self.fingerprint,
            "wall_seconds": self.wall_seconds,
            "rounds": rounds,
            "final": rounds[-1] if rounds else None,
            "evaluation": self.evaluation,
            "centralized": self.centralized,
            "actions": self.actions,
        }


# --- processes -------------------------------------------------------------------


@dataclass
class Process:
    """A child process this run started, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = _STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "%s did not stop in %.0f s; killing it", self.name, timeout
                )
                self.popen.kill()
                self.popen.wait(timeout)
        self.log.close()
        return self.popen.returncode

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def fedguard_command(*args: str) -> list[str]:
    """``python -m fedguard ARGS`` with this interpreter."""
    return [sys.executable, "-m", "fedguard", *args]


def start_process(
    name: str, command: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    environment = {**os.environ, **(env or {})}
    popen = subprocess.Popen(  # list of arguments, no shell
        list(command), stdout=log, stderr=subprocess.STDOUT, env=environment
    )
    return Process(name, popen, log_path, log)


@dataclass(frozen=True)
class ServerHandle:
    """A running orchestrator subprocess and how to reach it."""

    process: Process
    url: str
    state_dir: Path
    ca_file: Path | None

    def http(self) -> httpx.Client:
        """A client authenticated as the operator (the admin token)."""
        verify: Any = True
        if self.ca_file is not None:
            from fedguard.security.tls import client_ssl_context

            verify = client_ssl_context(self.ca_file)
        return httpx.Client(
            base_url=self.url,
            verify=verify,
            timeout=60.0,
            headers={"Authorization": f"Bearer {self.admin_token()}"},
        )

    def admin_token(self) -> str:
        return (self.state_dir / "admin-token").read_text().strip()

    def enrollment_token(self, name: str) -> str:
        """A single-use enrollment token for one agent, from the admin API."""
        with self.http() as http:
            response = http.post("/admin/enrollment-tokens", json={"name": name})
        if response.status_code != 201:
            raise SimulationError(
                f"the server refused an enrollment token: {response.status_code} "
                f"{response.text[:200]}"
            )
        return str(response.json()["token"])


def write_server_config(path: Path, document: dict[str, Any]) -> None:
    """Write a TOML configuration.

    Each top-level table becomes a ``[section]`` and each list of tables an array
    of tables (``[[policies]]``); nested tables are written inline. Values are
    strings, numbers, booleans and lists or tables of them.
    """
    lines = []
    for section, values in document.items():
        tables = values if isinstance(values, list) else [values]
        header = f"[[{section}]]" if isinstance(values, list) else f"[{section}]"
        for table in tables:
            lines.append(header)
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
            lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(
            f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()
        )
        return "{ " + items + " }"
    return json.dumps(str(value))


def start_server(
    config_path: Path,
    state_dir: Path,
    log_path: Path,
    *,
    ca_file: Path | None,
    insecure_http: bool = False,
    timeout: float = _START_TIMEOUT,
) -> ServerHandle:
    """Start ``fedguard server --config config_path`` and wait until it answers."""
    from fedguard.server.app import ENDPOINT_FILE, read_endpoint

    (state_dir / ENDPOINT_FILE).unlink(missing_ok=True)
    args = ["server", "--config", str(config_path)]
    if insecure_http:
        args.append("--insecure-http")
    process = start_process("server", fedguard_command(*args), log_path)

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        endpoint = read_endpoint(state_dir)
        if endpoint is not None and endpoint.get("pid") == process.popen.pid:
            handle = ServerHandle(process, str(endpoint["url"]), state_dir, ca_file)
            if _answers(handle):
                return handle
        if not process.alive():
            process.stop()  # closes its log file
            raise SimulationError(
                f"the server exited with status {process.popen.returncode}:\n"
                f"{process.tail()}"
            )
        time.sleep(_POLL_SECONDS)
    process.stop()
    raise SimulationError(f"the server did not start within {timeout:.0f} s")


def _answers(handle: ServerHandle) -> bool:
    try:
        with handle.http() as http:
            return http.get("/health").status_code == 200
    except httpx.HTTPError:
        return False


def agent_command(
    server: ServerHandle, settings: SimulationSettings, index: int, state_dir: Path
) -> list[str]:
    """The ``fedguard client`` command line of agent ``index``."""
    args = [
        "client",
        "--server",
        server.url,
        "--state-dir",
        str(state_dir),
        "--name",
        f"cloud-{index}",
        "--dataset",
        settings.dataset,
        "--index",
        str(index),
        "--clients",
        str(settings.clients),
        "--seed",
        str(settings.seed),
        "--encryption-workers",
        str(settings.encryption_workers),
    ]
    if server.ca_file is not None:
        args += ["--ca-file", str(server.ca_file)]
    else:
        args.append("--insecure-http")
    if settings.dataset == "nsl-kdd":
        assert settings.data_dir is not None
        args += ["--data-dir", str(settings.data_dir), "--data-file"]
        args += [settings.train_file, "--partition", settings.partition]
    else:
        args += ["--rows", str(settings.rows_per_cloud)]
    for burst in settings.attack_bursts:
        if burst.agent == index:
            args += ["--attack-burst", burst.client_option()]
    return fedguard_command(*args)


def start_agent(
    server: ServerHandle,
    settings: SimulationSettings,
    index: int,
    out_dir: Path,
    token: str | None = None,
) -> Process:
    """Enroll (unless ``token`` is given) and start agent ``index``."""
    name = f"cloud-{index}"
    token = token or server.enrollment_token(name)
    state_dir = out_dir / "agents" / name
    command = agent_command(server, settings, index, state_dir)
    # The token travels in the environment, not on the command line, where other
    # local users could read it.
    return start_process(
        name,
        command,
        out_dir / "logs" / f"{name}.log",
        env={"FEDGUARD_ENROLLMENT_TOKEN": token},
    )


# --- the researcher's view -------------------------------------------------------


@dataclass
class Evaluator:
    """Scores downloaded global models on a held-back test set."""

    dataset: Any
    schema: Any = None
    features: Any = None

    def evaluate(self, fitted_schema: dict[str, Any], params: Any) -> dict[str, Any]:
        from fedguard.data.schema import FeatureSchema
        from fedguard.learning.metrics import evaluate
        from fedguard.learning.model import ModelSpec, predict_proba

        if self.schema != fitted_schema:
            schema = FeatureSchema.from_dict(fitted_schema)
            self.features = schema.transform(self.dataset)
            self.schema = fitted_schema
        spec = ModelSpec(n_features=self.features.shape[1])
        scores = predict_proba(spec, params, self.features)
        return evaluate(self.dataset.labels, scores).to_dict()


def load_test_set(settings: SimulationSettings) -> Any:
    if settings.dataset == "nsl-kdd":
        from fedguard.data.nsl_kdd import find_nsl_kdd_file, load_nsl_kdd

        assert settings.data_dir is not None
        return load_nsl_kdd(find_nsl_kdd_file(settings.data_dir, settings.test_file))

    from fedguard.data.synthetic import synthetic_split

    _, test = synthetic_split(1, SYNTHETIC_TEST_ROWS, seed=settings.seed + 1)
    return test


def centralized_baseline(
    settings: SimulationSettings, federation: dict[str, Any], test: Any
) -> dict[str, Any]:
    """The same model trained on the union of every agent's training rows."""
    from fedguard.client.data import load_local_data
    from fedguard.data.dataset import concat_datasets
    from fedguard.data.schema import FeatureSchema
    from fedguard.learning.metrics import evaluate
    from fedguard.learning.model import ModelSpec, predict_proba
    from fedguard.learning.training import TrainingConfig, train_centralized

    parts = [
        load_local_data(agent_source(settings, index))
        for index in range(settings.clients)
    ]
    rows = concat_datasets([part.train for part in parts])
    schema = FeatureSchema.from_dict(federation["feature_schema"]).fit(rows)
    training = federation["training"]
    config = TrainingConfig(
        epochs=int(training["epochs"]) * settings.rounds,
        batch_size=int(training["batch_size"]),
        learning_rate=float(training["learning_rate"]),
        l2=float(training["l2"]),
        class_weight=training["class_weight"],
        seed=int(training["seed"]),
    )
    spec = ModelSpec(n_features=schema.n_features)
    result = train_centralized(spec, schema.transform(rows), rows.labels, config)
    scores = predict_proba(spec, result.parameters, schema.transform(test))
    metrics = evaluate(test.labels, scores).to_dict()
    return {"epochs": config.epochs, "rows": len(rows), **metrics}


def agent_source(settings: SimulationSettings, index: int) -> Any:
    """The data source agent ``index`` of this simulation reads, bursts included."""
    from fedguard.client.data import DataSource, Partition
    from fedguard.client.events import AttackBurst

    return DataSource(
        dataset=settings.dataset,
        index=index,
        clients=settings.clients,
        seed=settings.seed,
        data_dir=settings.data_dir,
        data_file=settings.train_file,
        partition=Partition.parse(settings.partition),
        rows=settings.rows_per_cloud,
        bursts=tuple(
            AttackBurst(burst.round, burst.count)
            for burst in settings.attack_bursts
            if burst.agent == index
        ),
    )


# --- the run -----------------------------------------------------------------------


class Progress(Protocol):
    """What a run reports while it works; the command draws it as progress bars."""

    def step(self, description: str) -> None:
        """A step before or after the training rounds, which has no count."""

    def rounds(self, description: str, closed: int, total: int) -> None:
        """``closed`` of the ``total`` training rounds have closed."""


class SilentProgress:
    """Reports nothing."""

    def step(self, description: str) -> None:
        pass

    def rounds(self, description: str, closed: int, total: int) -> None:
        pass


def prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and clear the subdirectories a previous run left."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_SUBDIRS:
        shutil.rmtree(out_dir / name, ignore_errors=True)


def server_document(
    settings: SimulationSettings, state_dir: Path, certs: Any | None
) -> dict[str, Any]:
    """The TOML document of the simulated orchestrator."""
    server: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": settings.port,
        "state_dir": str(state_dir),
    }
    if settings.database_url:
        server["database_url"] = settings.database_url
    document: dict[str, Any] = {
        "server": server,
        "federation": {
            "name": f"simulated-{settings.dataset}",
            "dataset": settings.dataset,
            "rounds": settings.rounds,
            "min_clients": settings.required_clients,
            "wait_for_clients": settings.clients,
            "round_deadline": settings.round_deadline,
            "key_bits": settings.key_bits,
            "plaintext": settings.plaintext,
        },
    }
    if certs is not None:
        document["tls"] = {
            "cert_file": str(certs.server_cert),
            "key_file": str(certs.server_key),
            "ca_file": str(certs.ca_cert),
        }
    for section, values in settings.extra_config.items():
        if isinstance(values, dict):
            document.setdefault(section, {}).update(values)
        else:
            document[section] = values
    return document


@contextmanager
def running_federation(
    settings: SimulationSettings, *, tls: bool = True
) -> Iterator[tuple[ServerHandle, list[Process]]]:
    """Start the server and the agents; stop every process on the way out."""
    server = launch_server(settings, tls=tls)
    out_dir = settings.out_dir.resolve()
    agents: list[Process] = []
    try:
        for index in range(settings.clients):
            agents.append(start_agent(server, settings, index, out_dir))
        yield server, agents
    finally:
        for agent in agents:
            agent.stop()
        server.process.stop()


def launch_server(settings: SimulationSettings, *, tls: bool = True) -> ServerHandle:
    """Prepare ``out_dir`` (certificates, configuration, key) and start the server."""
    from fedguard.crypto.keys import load_private_key, save_private_key
    from fedguard.security.tls import init_certificates
    from fedguard.server.orchestrator import PRIVATE_KEY_FILE

    out_dir = settings.out_dir.resolve()
    prepare_out_dir(out_dir)
    state_dir = out_dir / "server"
    certs = init_certificates(out_dir / "certs") if tls else None
    config_path = out_dir / "server.toml"
    write_server_config(config_path, server_document(settings, state_dir, certs))
    if settings.key_file is not None:
        # Reusing a key skips generation; the copy is written 0600 like any key.
        save_private_key(
            load_private_key(settings.key_file), state_dir / PRIVATE_KEY_FILE
        )

    return start_server(
        config_path,
        state_dir,
        out_dir / "logs" / "server.log",
        ca_file=certs.ca_cert if certs else None,
        insecure_http=not tls,
    )


def run_simulation(
    settings: SimulationSettings, progress: Progress | None = None
) -> SimulationResult:
    """Run the federation of ``settings`` and return per-round results."""
    started = time.monotonic()
    progress = progress or SilentProgress()
    settings.check_data_files()
    progress.step("loading the test set")
    test = load_test_set(settings)
    evaluator = Evaluator(test)

    progress.step(f"starting the orchestrator and {settings.clients} agents")
    with running_federation(settings) as (server, agents):
        progress.rounds("waiting for round 1", 0, settings.rounds)
        rounds, federation = _follow(server, agents, settings, evaluator, progress)
        # Agents apply the last round's directives before they exit.
        wait_for_agents(agents)
        progress.step("reading the response audit log")
        actions = collect_actions(server)
        evaluation = _evaluation_round(server)

    progress.step("training the centralised baseline")
    centralized = centralized_baseline(settings, federation, test)
    result = SimulationResult(
        settings=_describe(settings),
        rounds=rounds,
        centralized=centralized,
        fingerprint=str(federation["fingerprint"]),
        wall_seconds=time.monotonic() - started,
        out_dir=settings.out_dir,
        actions=actions,
        evaluation=evaluation,
    )
    write_outputs(result)
    return result


def _follow(
    server: ServerHandle,
    agents: list[Process],
    settings: SimulationSettings,
    evaluator: Evaluator,
    progress: Progress,
) -> tuple[list[RoundResult], dict[str, Any]]:
    """Evaluate every training round as it closes, until the federation finishes."""
    from fedguard.server.wire import decode_model

    results: dict[int, RoundResult] = {}
    limit = time.monotonic() + (settings.rounds + 2) * settings.round_deadline + 120
    with server.http() as http:
        while time.monotonic() < limit:
            _check_processes(server, agents)
            # Read "finished" first: every round it covers is then in the list below.
            finished = bool(http.get("/health").json()["finished"])
            statuses = http.get("/rounds").raise_for_status().json()["rounds"]
            federation = http.get("/federation").raise_for_status().json()
            for status in statuses:
                number = status["round"]
                if status["kind"] != "training" or status["state"] != "closed":
                    continue
                if number not in results:
                    # A closed training round turns its model version v into v + 1;
                    # after a failed attempt round numbers run ahead of versions.
                    version = int(status["model_version"]) + 1
                    data = http.get(f"/model/{version}").raise_for_status().content
                    _, params = decode_model(data)
                    metrics = evaluator.evaluate(federation["fitted_schema"], params)
                    results[number] = _round_result(status, metrics)
                    progress.rounds(f"round {number}: F1 {metrics['f1']:.4f}",
                                    len(results), settings.rounds)  # fmt: skip
            _attach_fleet_metrics(results, statuses)
            if finished:
                return [results[n] for n in sorted(results)], federation
            time.sleep(_POLL_SECONDS)
    raise SimulationError("the federation did not finish in time")


def _check_processes(server: ServerHandle, agents: list[Process]) -> None:
    if not server.process.alive():
        raise SimulationError(
            f"the server exited with status {server.process.popen.returncode}:\n"
            f"{server.process.tail()}"
        )
    for agent in agents:
        if not agent.alive() and agent.popen.returncode != 0:
            raise SimulationError(
                f"{agent.name} exited with status {agent.popen.returncode}:\n"
                f"{agent.tail()}"
            )


def wait_for_agents(agents: list[Process], timeout: float = 30.0) -> None:
    """Give agents time to notice the end of the federation and exit by themselves."""
    end = time.monotonic() + timeout
    while any(agent.alive() for agent in agents) and time.monotonic() < end:
        time.sleep(_POLL_SECONDS)


def _round_result(status: dict[str, Any], metrics: dict[str, Any]) -> RoundResult:
    return RoundResult(
        round=status["round"],
        clients=status["contributors"],
        accuracy=metrics["accuracy"],
        precision=metrics["precision"],
        recall=metrics["recall"],
        f1=metrics["f1"],
        roc_auc=metrics["roc_auc"],
        fpr=metrics["fpr"],
        round_seconds=status["round_seconds"] or 0.0,
        training_seconds=status["training_seconds"] or 0.0,
        encryption_seconds=status["encryption_seconds"] or 0.0,
        upload_seconds=status["upload_seconds"] or 0.0,
        aggregation_seconds=status["aggregation_seconds"] or 0.0,
        decryption_seconds=status["decryption_seconds"] or 0.0,
        bytes_uploaded=status["bytes_uploaded"],
    )


def _attach_fleet_metrics(
    results: dict[int, RoundResult], statuses: list[dict[str, Any]]
) -> None:
    """File what the agents reported in round r under round r.

    That is the round whose recent events were scored, and the round the response
    engine names when a policy fires on them.
    """
    for status in statuses:
        fleet = status.get("fleet_metrics")
        number = status["round"]
        if fleet and number in results:
            results[number].fleet = fleet["metrics"]
            results[number].threat_rate = fleet["metrics"].get("threat_rate")


def _evaluation_round(server: ServerHandle) -> dict[str, Any] | None:
    """The evaluation round: the fleet metrics of the final model."""
    with server.http() as http:
        statuses = http.get("/rounds").raise_for_status().json()["rounds"]
    for status in statuses:
        fleet = status.get("fleet_metrics")
        if status["kind"] == "evaluation" and fleet:
            return {
                "round": status["round"],
                "model_version": status["model_version"],
                "fleet": fleet["metrics"],
                "threat_rate": fleet["metrics"].get("threat_rate"),
            }
    return None


def collect_actions(server: ServerHandle) -> list[dict[str, Any]]:
    """Every action of every fired policy, oldest first, once none is pending.

    Rows as :func:`fedguard.report.action_rows` builds them, with the entries of
    the default blocklist file in the server's state directory.
    """
    from fedguard.report import action_rows, read_blocklist
    from fedguard.response.actions import DEFAULT_BLOCKLIST

    listing = _settled_listing(server)
    blocklist = read_blocklist(server.state_dir / DEFAULT_BLOCKLIST)
    return action_rows(listing["decisions"], listing["directives"], blocklist)


def _settled_listing(server: ServerHandle) -> dict[str, Any]:
    """``GET /admin/actions``, waiting (bounded) for pending actions to finish."""
    end = time.monotonic() + _ACTIONS_SETTLE_SECONDS
    params = {"limit": _MAX_LISTED_DECISIONS}
    with server.http() as http:
        while True:
            listing: dict[str, Any] = (
                http.get("/admin/actions", params=params).raise_for_status().json()
            )
            pending = [
                action
                for decision in listing["decisions"]
                for action in decision["actions"]
                if action["status"] == "pending"
            ]
            if not pending or time.monotonic() > end:
                return listing
            time.sleep(_POLL_SECONDS)


def _describe(settings: SimulationSettings) -> dict[str, Any]:
    described = asdict(settings)
    described["data_dir"] = str(settings.data_dir) if settings.data_dir else None
    described["out_dir"] = str(settings.out_dir)
    described["key_file"] = str(settings.key_file) if settings.key_file else None
    described.pop("database_url", None)
    described.pop("extra_config", None)
    described["attack_bursts"] = [
        f"{b.agent}:{b.client_option()}" for b in settings.attack_bursts
    ]
    return described


def write_outputs(result: SimulationResult) -> None:
    """``metrics.json`` and ``report.html`` in the run's output directory."""
    from fedguard.report import write_report

    out_dir = result.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = result.to_dict()
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    write_report(metrics, out_dir / "report.html")


def mean_round_seconds(result: SimulationResult) -> float:
    return float(np.mean([r.round_seconds for r in result.rounds]))
