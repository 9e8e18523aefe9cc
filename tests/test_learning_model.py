"""The flat-vector logistic regression model."""

import json

import numpy as np
import pytest

from fedguard.errors import ConfigError, InputError
from fedguard.learning import LogisticRegression, ModelSpec, build_model, predict_proba


def random_problem(
    seed: int, rows: int = 40, features: int = 6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(rows, features))
    labels = (rng.random(rows) < 0.4).astype(np.float64)
    parameters = rng.normal(scale=0.7, size=features + 1)
    return matrix, labels, parameters


def numeric_gradient(
    model: LogisticRegression,
    parameters: np.ndarray,
    matrix: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None,
    l2: float,
) -> np.ndarray:
    step = 1e-6
    gradient = np.empty_like(parameters)
    for i in range(len(parameters)):
        up, down = parameters.copy(), parameters.copy()
        up[i] += step
        down[i] -= step
        loss_up, _ = model.loss_and_gradient(up, matrix, labels, weights, l2)
        loss_down, _ = model.loss_and_gradient(down, matrix, labels, weights, l2)
        gradient[i] = (loss_up - loss_down) / (2 * step)
    return gradient


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_matches_finite_differences(
    seed: int, l2: float, weighted: bool
) -> None:
    matrix, labels, parameters = random_problem(seed)
    weights = np.random.default_rng(seed + 100).uniform(0.2, 3.0, len(labels))
    sample_weight = weights if weighted else None
    model = LogisticRegression(ModelSpec(matrix.shape[1]))

    _, analytic = model.loss_and_gradient(parameters, matrix, labels, sample_weight, l2)
    numeric = numeric_gradient(model, parameters, matrix, labels, sample_weight, l2)

    assert np.allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_loss_is_the_mean_log_loss_plus_penalty() -> None:
    matrix, labels, parameters = random_problem(7)
    model = LogisticRegression(ModelSpec(matrix.shape[1]))
    p = model.predict_proba(parameters, matrix)
    expected = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    expected += 0.5 * 0.1 * np.sum(parameters[:-1] ** 2)

    loss, _ = model.loss_and_gradient(parameters, matrix, labels, None, 0.1)

    assert loss == pytest.approx(expected, rel=1e-12)


def test_extreme_logits_do_not_overflow() -> None:
    spec = ModelSpec(1)
    matrix = np.array([[-1e4], [0.0], [1e4]])
    parameters = np.array([1.0, 0.0])

    p = predict_proba(spec, parameters, matrix)
    loss, gradient = build_model(spec).loss_and_gradient(
        parameters, matrix, np.array([1.0, 0.0, 0.0]), None, 0.0
    )

    assert p.tolist() == [0.0, 0.5, 1.0]
    assert np.isfinite(loss) and np.all(np.isfinite(gradient))
    assert loss == pytest.approx((1e4 + np.log(2) + 1e4) / 3)


def test_initial_parameters_are_zeros_of_the_right_length() -> None:
    spec = ModelSpec(12)

    assert spec.num_parameters == 13
    assert np.array_equal(build_model(spec).initial_parameters(), np.zeros(13))


def test_spec_round_trips_through_json() -> None:
    spec = ModelSpec(n_features=125)

    again = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))

    assert again == spec
    assert spec.to_dict() == {"kind": "logistic_regression", "n_features": 125}


def test_spec_validation() -> None:
    with pytest.raises(ConfigError, match="model kind 'mlp' is not supported"):
        ModelSpec(10, kind="mlp")
    with pytest.raises(ConfigError, match="n_features must be >= 1; got 0"):
        ModelSpec(0)
    with pytest.raises(InputError, match="model spec is malformed"):
        ModelSpec.from_dict({"kind": "logistic_regression"})


def test_shape_errors_name_the_expected_shape() -> None:
    spec = ModelSpec(3)

    with pytest.raises(InputError, match=r"parameters must have shape \(4,\); got"):
        predict_proba(spec, np.zeros(3), np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"features must have shape \(rows, 3\)"):
        predict_proba(spec, np.zeros(4), np.zeros((2, 5)))
