"""The plaintext FedAvg rule: clipped deltas, capped weights, server learning rate."""

import numpy as np
import pytest

from fedguard.errors import ConfigError, InputError
from fedguard.learning import (
    ModelSpec,
    TrainingConfig,
    aggregate,
    apply_aggregate,
    client_update,
    client_weight,
    clip_update,
    fedavg,
    train_local,
)


def problem(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(rows, 4))
    labels = (matrix[:, 0] - matrix[:, 2] + rng.normal(size=rows) > 0).astype(np.int8)
    return matrix, labels


def test_client_weight() -> None:
    assert client_weight(250, 1_000) == 0.25
    assert client_weight(1_000, 1_000) == 1.0
    assert client_weight(5_000, 1_000) == 1.0
    with pytest.raises(ConfigError, match="max_examples must be >= 1; got 0"):
        client_weight(1, 0)
    with pytest.raises(InputError, match="num_examples must be >= 1; got 0"):
        client_weight(0, 10)


def test_identical_clients_reproduce_the_centralised_step() -> None:
    matrix, labels = problem(1, 500)
    spec = ModelSpec(4)
    start = np.zeros(5)
    config = TrainingConfig(epochs=2, learning_rate=0.05, seed=9)
    local = train_local(spec, start, matrix, labels, config)
    update = client_update(local.parameters, start, clip=1.0)

    result = fedavg(start, [update] * 4, [client_weight(500, 500)] * 4)

    assert np.abs(local.parameters - start).max() < 1.0  # no clipping in play
    assert np.allclose(result, local.parameters, rtol=0, atol=1e-15)


def test_weighted_full_batch_steps_equal_the_union_gradient_step() -> None:
    """One full-batch step per client, weights ∝ rows: the union's gradient step."""
    spec = ModelSpec(4)
    start = np.random.default_rng(0).normal(scale=0.3, size=5)
    sizes = [120, 300, 80]
    clients = [problem(seed, rows) for seed, rows in enumerate(sizes, start=10)]

    updates, weights = [], []
    for matrix, labels in clients:
        config = TrainingConfig(batch_size=len(labels), learning_rate=0.2, l2=0.01)
        local = train_local(spec, start, matrix, labels, config)
        updates.append(client_update(local.parameters, start, clip=5.0))
        weights.append(client_weight(len(labels), max(sizes)))
    federated = fedavg(start, updates, weights, clip=5.0)

    union = np.concatenate([m for m, _ in clients])
    union_labels = np.concatenate([y for _, y in clients])
    config = TrainingConfig(batch_size=len(union), learning_rate=0.2, l2=0.01)
    central = train_local(spec, start, union, union_labels, config)
    assert np.allclose(federated, central.parameters, rtol=1e-12, atol=1e-14)


def test_aggregate_is_the_weighted_mean_of_clipped_deltas() -> None:
    deltas = [np.array([0.5, -3.0, 0.1]), np.array([2.0, 0.2, -0.1])]
    weights = [1.0, 0.25]

    result = aggregate(deltas, weights, clip=1.0)

    clipped = [np.array([0.5, -1.0, 0.1]), np.array([1.0, 0.2, -0.1])]
    expected = (1.0 * clipped[0] + 0.25 * clipped[1]) / 1.25
    assert np.allclose(result, expected, rtol=1e-15)


def test_server_learning_rate_scales_the_step() -> None:
    start = np.array([1.0, 2.0])
    deltas = [np.array([0.4, -0.2])]

    assert np.allclose(fedavg(start, deltas, [0.5], server_lr=0.5), [1.2, 1.9])
    assert np.allclose(apply_aggregate(start, [0.4, -0.2], server_lr=2.0), [1.8, 1.6])


def test_functions_do_not_modify_their_inputs() -> None:
    start = np.array([0.0, 0.0])
    delta = np.array([3.0, -3.0])

    fedavg(start, [delta], [1.0], clip=1.0)
    clip_update(delta, 1.0)

    assert start.tolist() == [0.0, 0.0]
    assert delta.tolist() == [3.0, -3.0]


def test_client_update_clips_elementwise() -> None:
    update = client_update([2.0, 0.3, -5.0], [0.0, 0.0, 0.0], clip=1.0)

    assert update.tolist() == [1.0, 0.3, -1.0]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: aggregate([], [], clip=1.0), InputError, "at least one update"),
        (lambda: aggregate([[1.0]], [1.0, 1.0], clip=1.0), InputError, "one weight"),
        (lambda: aggregate([[1.0]], [0.0], clip=1.0), InputError, r"in \(0, 1\]"),
        (lambda: aggregate([[1.0]], [1.5], clip=1.0), InputError, "got 1.5"),
        (lambda: aggregate([[1.0]], [1.0], clip=-1.0), ConfigError, "clip must be > 0"),
        (
            lambda: aggregate([[1.0], [1.0, 2.0]], [1.0, 1.0], clip=1.0),
            InputError,
            r"flat vector of shape \(1,\); got \(2,\)",
        ),
        (
            lambda: apply_aggregate([0.0], [1.0], server_lr=0.0),
            ConfigError,
            "server_lr must be > 0; got 0.0",
        ),
        (
            lambda: client_update([0.0, 1.0], [0.0], clip=1.0),
            InputError,
            r"shape \(1,\); got \(2,\)",
        ),
    ],
)
def test_bad_arguments(call: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()  # type: ignore[operator]
