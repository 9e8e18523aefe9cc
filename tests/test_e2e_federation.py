"""End to end: a real server and three agent processes over loopback HTTPS.

The encrypted federation must compute what plaintext FedAvg computes from the same
seeds. Each round is replayed here in plaintext from the server's own model
version ``v`` (so that quantization errors do not compound across rounds) and the
server's version ``v + 1`` must match within the packing error bound:

    |Ŝ − S| <= K·ε and |Ŵ − W| <= K·ε with ε = 2^-(scale_bits + 1),
    so |Ŝ/Ŵ − S/W| <= K·ε·(1 + |S/W|) / (W − K·ε), times server_lr,

for K contributors, S the sum of the weighted clipped updates and W the summed
weights. The same run works against PostgreSQL when one is reachable.
"""

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedguard.client.data import load_local_data
from fedguard.data.schema import FeatureSchema
from fedguard.learning.fedavg import client_update, client_weight, fedavg
from fedguard.learning.federated import client_seed
from fedguard.learning.model import ModelSpec
from fedguard.learning.training import TrainingConfig, train_local
from fedguard.server.wire import decode_model
from fedguard.simulate import (
    ServerHandle,
    SimulationSettings,
    agent_source,
    running_federation,
    wait_for_agents,
)

pytestmark = pytest.mark.slow

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NSL_KDD = SHARED_DATA / "nsl-kdd"
POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432


def settings_for(tmp_path: Path, key_file: Path, **changes: Any) -> SimulationSettings:
    if not (NSL_KDD / "KDDTrain+_20Percent.txt").is_file():
        pytest.skip(f"NSL-KDD is not available in {NSL_KDD}")
    settings = SimulationSettings(
        dataset="nsl-kdd",
        data_dir=NSL_KDD,
        train_file="KDDTrain+_20Percent.txt",
        clients=3,
        rounds=3,
        seed=11,
        out_dir=tmp_path / "run",
        key_file=key_file,
        round_deadline=120.0,
    )
    return replace(settings, **changes)


def run_to_the_end(server: ServerHandle, timeout: float = 300.0) -> dict[str, Any]:
    """Wait for the federation to finish; return what the researcher can see."""
    with server.http() as http:
        end = time.monotonic() + timeout
        while not http.get("/health").json()["finished"]:
            assert server.process.alive(), server.process.tail()
            assert time.monotonic() < end, "the federation did not finish"
            time.sleep(0.2)
        federation = http.get("/federation").json()
        rounds = http.get("/rounds").json()["rounds"]
        models = {
            version: decode_model(http.get(f"/model/{version}").content)[1]
            for version in http.get("/metrics").json()["model_versions"]
        }
    return {"federation": federation, "rounds": rounds, "models": models}


def replay_round(
    settings: SimulationSettings,
    federation: dict[str, Any],
    round_id: int,
    start: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Plaintext FedAvg of one round from ``start``; returns (model, total weight)."""
    fitted = FeatureSchema.from_dict(federation["fitted_schema"])
    training = federation["training"]
    spec = ModelSpec(n_features=fitted.n_features)
    clip = federation["packing"]["update"]["clip"]
    deltas, weights = [], []
    for index in range(settings.clients):
        local = load_local_data(agent_source(settings, index))
        config = TrainingConfig(
            epochs=training["epochs"],
            batch_size=training["batch_size"],
            learning_rate=training["learning_rate"],
            l2=training["l2"],
            class_weight=training["class_weight"],
            seed=client_seed(training["seed"], round_id, index),
        )
        result = train_local(
            spec, start, fitted.transform(local.train), local.train.labels, config
        )
        deltas.append(client_update(result.parameters, start, clip=clip))
        weights.append(client_weight(result.num_examples, federation["max_examples"]))
    model = fedavg(start, deltas, weights, server_lr=federation["server_lr"], clip=clip)
    return model, float(sum(weights))


def error_bound(packing: dict[str, Any], contributors: int, weight: float,
                mean: np.ndarray, server_lr: float) -> float:  # fmt: skip
    epsilon = 2.0 ** -(packing["scale_bits"] + 1)
    spread = contributors * epsilon
    largest = float(np.max(np.abs(mean)))
    return server_lr * spread * (1 + largest) / (weight - spread) + 1e-12


def check_against_plaintext(settings: SimulationSettings, seen: dict[str, Any]) -> None:
    federation, models = seen["federation"], seen["models"]
    training_rounds = [r for r in seen["rounds"] if r["kind"] == "training"]
    assert [r["round"] for r in training_rounds] == list(range(1, settings.rounds + 1))

    for status in training_rounds:
        round_id, version = status["round"], status["model_version"]
        assert status["contributors"] == settings.clients
        expected, weight = replay_round(settings, federation, round_id, models[version])
        mean = (expected - models[version]) / federation["server_lr"]
        bound = error_bound(federation["packing"]["update"], settings.clients, weight,
                            mean, federation["server_lr"])  # fmt: skip
        difference = np.max(np.abs(models[version + 1] - expected))
        assert difference <= bound, (round_id, difference, bound)


def check_setup_statistics(settings: SimulationSettings, seen: dict[str, Any]) -> None:
    """The fitted schema equals the plaintext weighted mean of the statistics."""
    federation = seen["federation"]
    schema = FeatureSchema.from_dict(federation["feature_schema"])
    fitted = FeatureSchema.from_dict(federation["fitted_schema"])
    vectors, weights = [], []
    for index in range(settings.clients):
        local = load_local_data(agent_source(settings, index))
        statistics = schema.local_statistics(local.train)
        vectors.append(statistics.to_vector())
        weights.append(
            client_weight(statistics.num_examples, federation["max_examples"])
        )
    mean = np.average(vectors, axis=0, weights=weights)

    packing = federation["packing"]["statistics"]
    epsilon = 2.0 ** -(packing["scale_bits"] + 1) * settings.clients
    bound = epsilon * (1 + np.max(np.abs(mean))) / (sum(weights) - epsilon)
    k = len(schema.numeric)
    assert np.max(np.abs([f.mean for f in fitted.numeric] - mean[:k])) <= bound


def test_encrypted_federation_equals_plaintext_fedavg(
    tmp_path: Path, key_file: Path
) -> None:
    settings = settings_for(tmp_path, key_file)

    with running_federation(settings) as (server, agents):
        seen = run_to_the_end(server)
        wait_for_agents(agents)

    check_setup_statistics(settings, seen)
    check_against_plaintext(settings, seen)
    assert [agent.popen.returncode for agent in agents] == [0, 0, 0]
    frames = [r["bytes_uploaded"] for r in seen["rounds"] if r["kind"] == "training"]
    ciphertexts = seen["federation"]["packing"]["update"]["ciphertexts"]
    assert frames[0] == settings.clients * (64 + ciphertexts * 512)


def test_plaintext_baseline_matches_fedavg_exactly(
    tmp_path: Path, key_file: Path
) -> None:
    settings = settings_for(tmp_path, key_file, plaintext=True, rounds=2)

    with running_federation(settings) as (server, _agents):
        seen = run_to_the_end(server)

    assert seen["federation"]["public_key"] is None
    for status in [r for r in seen["rounds"] if r["kind"] == "training"]:
        version = status["model_version"]
        expected, _ = replay_round(
            settings, seen["federation"], status["round"], seen["models"][version]
        )
        np.testing.assert_allclose(seen["models"][version + 1], expected, atol=1e-12)


# --- PostgreSQL ------------------------------------------------------------------


def postgres_user() -> str | None:
    """A user that can connect to the local PostgreSQL test database, if any."""
    psycopg = pytest.importorskip("psycopg")
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(
                host=POSTGRES_HOST,
                port=POSTGRES_PORT,
                user=user,
                dbname="test",
                connect_timeout=3,
            ):
                return user
        except psycopg.OperationalError:
            continue
    return None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose tables live in a fresh schema, dropped afterwards."""
    user = postgres_user()
    if user is None:
        pytest.skip(
            f"no PostgreSQL accepting user postgres or root at "
            f"{POSTGRES_HOST}:{POSTGRES_PORT}, database 'test'"
        )
    import psycopg

    schema = f"fedguard_test_{os.getpid()}_{secrets.token_hex(4)}"
    connection = dict(host=POSTGRES_HOST, port=POSTGRES_PORT, user=user, dbname="test")
    with psycopg.connect(**connection, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            f"postgresql+psycopg://{user}@{POSTGRES_HOST}:{POSTGRES_PORT}/test"
            f"?options=-csearch_path%3D{schema}"
        )
    finally:
        with psycopg.connect(**connection, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_encrypted_federation_on_postgresql(
    tmp_path: Path, key_file: Path, postgres_url: str
) -> None:
    settings = settings_for(tmp_path, key_file, rounds=1, database_url=postgres_url)

    with running_federation(settings) as (server, _agents):
        seen = run_to_the_end(server)

    check_against_plaintext(settings, seen)
    assert not (settings.out_dir / "server" / "fedguard.db").exists()
