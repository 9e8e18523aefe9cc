"""Local and centralised training with mini-batch gradient descent."""

import numpy as np
import pytest

from fedguard.errors import ConfigError, InputError
from fedguard.learning import (
    ModelSpec,
    TrainingConfig,
    build_model,
    evaluate,
    predict_proba,
    train_centralized,
    train_local,
)
from fedguard.learning.training import class_sample_weights


def separable_problem(seed: int, rows: int = 2_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(rows, 5))
    true_weights = np.array([2.0, -1.0, 0.5, 0.0, 1.5])
    labels = matrix @ true_weights + rng.normal(scale=0.5, size=rows) > 0.8
    return matrix, labels.astype(np.int8)


def test_training_lowers_the_loss_and_learns() -> None:
    matrix, labels = separable_problem(1)
    spec = ModelSpec(5)
    start = build_model(spec).initial_parameters()
    initial_loss, _ = build_model(spec).loss_and_gradient(
        start, matrix, labels.astype(np.float64), None, 1e-4
    )

    result = train_centralized(spec, matrix, labels)

    assert result.loss < 0.5 * initial_loss
    assert result.num_examples == 2_000
    metrics = evaluate(labels, predict_proba(spec, result.parameters, matrix))
    assert metrics.accuracy > 0.9


def test_same_seed_same_parameters_other_seed_differs() -> None:
    matrix, labels = separable_problem(2)
    spec = ModelSpec(5)
    start = np.zeros(6)

    a = train_local(spec, start, matrix, labels, TrainingConfig(seed=3))
    b = train_local(spec, start, matrix, labels, TrainingConfig(seed=3))
    c = train_local(spec, start, matrix, labels, TrainingConfig(seed=4))

    assert np.array_equal(a.parameters, b.parameters)
    assert not np.array_equal(a.parameters, c.parameters)


def test_global_parameters_are_not_modified() -> None:
    matrix, labels = separable_problem(3)
    start = np.full(6, 0.25)

    result = train_local(ModelSpec(5), start, matrix, labels)

    assert np.array_equal(start, np.full(6, 0.25))
    assert not np.array_equal(result.parameters, start)


def test_one_full_batch_epoch_is_one_gradient_step() -> None:
    matrix, labels = separable_problem(4, rows=300)
    spec = ModelSpec(5)
    start = np.random.default_rng(0).normal(size=6)
    config = TrainingConfig(epochs=1, batch_size=300, learning_rate=0.3, l2=0.01)

    result = train_local(spec, start, matrix, labels, config)

    _, gradient = build_model(spec).loss_and_gradient(
        start, matrix, labels.astype(np.float64), None, 0.01
    )
    assert np.allclose(result.parameters, start - 0.3 * gradient, rtol=1e-12)


def test_balanced_class_weight_raises_recall_on_a_rare_class() -> None:
    rng = np.random.default_rng(5)
    matrix = rng.normal(size=(4_000, 3))
    labels = ((matrix[:, 0] + rng.normal(scale=1.0, size=4_000)) > 2.2).astype(np.int8)
    spec = ModelSpec(3)

    plain = train_centralized(spec, matrix, labels)
    balanced = train_centralized(
        spec, matrix, labels, TrainingConfig(epochs=10, class_weight="balanced")
    )

    recall_plain = evaluate(labels, predict_proba(spec, plain.parameters, matrix))
    recall_balanced = evaluate(labels, predict_proba(spec, balanced.parameters, matrix))
    assert labels.mean() < 0.1
    assert recall_balanced.recall > recall_plain.recall + 0.2


def test_balanced_weights_average_one_and_survive_a_missing_class() -> None:
    labels = np.array([1, 0, 0, 0], dtype=np.float64)

    weights = class_sample_weights(labels, "balanced")

    assert weights is not None
    assert weights.tolist() == [2.0, 2 / 3, 2 / 3, 2 / 3]
    single_class = class_sample_weights(np.zeros(3), "balanced")
    assert single_class is not None
    assert single_class.tolist() == [1.0] * 3
    assert class_sample_weights(labels, "none") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1; got 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1; got 0"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0; got 0.0"),
        ({"learning_rate": float("nan")}, "learning_rate must be > 0; got nan"),
        ({"l2": -1.0}, "l2 must be >= 0; got -1.0"),
        ({"class_weight": "auto"}, "class_weight must be one of none, balanced"),
    ],
)
def test_config_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainingConfig(**kwargs)  # type: ignore[arg-type]


def test_input_validation() -> None:
    spec = ModelSpec(2)

    with pytest.raises(
        InputError, match=r"labels must be 0 \(normal\) or 1 \(attack\)"
    ):
        train_local(spec, np.zeros(3), np.zeros((2, 2)), [0, 2])
    with pytest.raises(InputError, match="labels must have 2 entries; got 3"):
        train_local(spec, np.zeros(3), np.zeros((2, 2)), [0, 1, 1])
    with pytest.raises(InputError, match="cannot train on 0 rows"):
        train_local(spec, np.zeros(3), np.zeros((0, 2)), [])
