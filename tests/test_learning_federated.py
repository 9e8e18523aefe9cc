"""Plaintext federated training, including the NSL-KDD targets of the defaults."""

from typing import Any

import numpy as np
import pytest

from fedguard.data import (
    dirichlet_partition,
    generate_cloud_datasets,
    iid_partition,
    synthetic_schema,
)
from fedguard.data.dataset import concat_datasets
from fedguard.errors import ConfigError, InputError
from fedguard.learning import (
    FederatedConfig,
    ModelSpec,
    client_seed,
    evaluate,
    predict_proba,
    run_fedavg,
    train_centralized,
)


def f1_of(spec: ModelSpec, parameters: np.ndarray, matrix: Any, labels: Any) -> float:
    return evaluate(labels, predict_proba(spec, parameters, matrix)).f1


@pytest.fixture(scope="module")
def kdd_centralized(kdd_matrices: tuple[Any, ...]) -> tuple[ModelSpec, float]:
    schema, train_x, train_y, test_x, test_y = kdd_matrices
    spec = ModelSpec(schema.n_features)
    model = train_centralized(spec, train_x, train_y)
    return spec, f1_of(spec, model.parameters, test_x, test_y)


def test_iid_fedavg_defaults_reach_centralized_f1_without_clipping(
    kdd_matrices: tuple[Any, ...], kdd_centralized: tuple[ModelSpec, float]
) -> None:
    _, train_x, train_y, test_x, test_y = kdd_matrices
    spec, central_f1 = kdd_centralized
    parts = iid_partition(len(train_y), 5, seed=0)

    result = run_fedavg(spec, [(train_x[p], train_y[p]) for p in parts])

    assert len(result.rounds) == 10
    assert abs(f1_of(spec, result.parameters, test_x, test_y) - central_f1) < 0.01
    assert result.max_abs_delta < FederatedConfig().clip
    assert all(r.clipped_fraction == 0 for r in result.rounds)


def test_dirichlet_fedavg_defaults_stay_close_to_centralized(
    kdd_matrices: tuple[Any, ...], kdd_centralized: tuple[ModelSpec, float]
) -> None:
    _, train_x, train_y, test_x, test_y = kdd_matrices
    spec, central_f1 = kdd_centralized
    parts = dirichlet_partition(train_y, 5, alpha=0.5, seed=0)

    result = run_fedavg(spec, [(train_x[p], train_y[p]) for p in parts])

    assert abs(f1_of(spec, result.parameters, test_x, test_y) - central_f1) < 0.03


def test_federation_of_biased_synthetic_clouds_learns() -> None:
    clouds = generate_cloud_datasets(4, 2_000, seed=3)
    schema = synthetic_schema().fit(concat_datasets(clouds))
    spec = ModelSpec(schema.n_features)
    clients = [(schema.transform(c), c.labels) for c in clouds]
    config = FederatedConfig(rounds=5)

    result = run_fedavg(spec, clients, config)
    again = run_fedavg(spec, clients, config)

    assert np.array_equal(result.parameters, again.parameters)
    losses = [r.mean_loss for r in result.rounds]
    assert losses == sorted(losses, reverse=True)
    pooled = evaluate(
        np.concatenate([labels for _, labels in clients]),
        predict_proba(spec, result.parameters, np.concatenate([f for f, _ in clients])),
    )
    assert pooled.roc_auc is not None and pooled.roc_auc > 0.85


def test_max_examples_caps_the_weight_of_a_large_client() -> None:
    rng = np.random.default_rng(4)
    small = (rng.normal(size=(50, 3)), rng.integers(0, 2, 50))
    large = (rng.normal(size=(500, 3)) + 1.0, np.ones(500, dtype=np.int8))
    spec = ModelSpec(3)

    capped = run_fedavg(
        spec, [small, large], FederatedConfig(rounds=1, max_examples=50)
    )
    default = run_fedavg(spec, [small, large], FederatedConfig(rounds=1))

    # With equal weights the bias moves less towards the large all-attack client.
    assert capped.parameters[-1] < default.parameters[-1]


def test_client_seeds_differ_per_round_and_client() -> None:
    seeds = {client_seed(0, r, c) for r in range(1, 4) for c in range(3)}

    assert len(seeds) == 9
    assert client_seed(5, 2, 1) == client_seed(5, 2, 1)


def test_config_and_input_validation() -> None:
    with pytest.raises(ConfigError, match="rounds must be >= 1; got 0"):
        FederatedConfig(rounds=0)
    with pytest.raises(ConfigError, match=r"clip must be > 0; got 0\.0"):
        FederatedConfig(clip=0.0)
    with pytest.raises(ConfigError, match="max_examples must be >= 1; got 0"):
        FederatedConfig(max_examples=0)
    with pytest.raises(InputError, match="at least one client"):
        run_fedavg(ModelSpec(2), [])
