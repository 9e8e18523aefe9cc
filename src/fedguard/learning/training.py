"""Local training: vectorised mini-batch gradient descent from given parameters.

A client starts from the global parameters, runs ``epochs`` passes of shuffled
mini-batch gradient descent over its own rows and returns the new parameters with
``num_examples``. Centralised training is the same call starting from the model's
initial parameters.
"""

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedguard.errors import ConfigError, InputError
from fedguard.learning.model import FloatArray, Model, ModelSpec, build_model

logger = logging.getLogger(__name__)

ClassWeight = Literal["none", "balanced"]
CLASS_WEIGHTS: tuple[str, ...] = ("none", "balanced")


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of local training.

    The defaults are one epoch per federated round; :data:`CENTRALIZED_EPOCHS`
    epochs with the same settings give the centralised baseline.
    """

    epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 0.05
    l2: float = 1e-4
    class_weight: ClassWeight = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        if not (self.learning_rate > 0 and np.isfinite(self.learning_rate)):
            raise ConfigError(f"learning_rate must be > 0; got {self.learning_rate}")
        if not (self.l2 >= 0 and np.isfinite(self.l2)):
            raise ConfigError(f"l2 must be >= 0; got {self.l2}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise ConfigError(
                f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}; "
                f"got {self.class_weight!r}"
            )


CENTRALIZED_EPOCHS = 10
"""Epochs of the centralised baseline: as many passes as 10 rounds of 1 epoch."""


@dataclass(frozen=True)
class LocalUpdate:
    """The result of local training."""

    parameters: FloatArray
    num_examples: int
    loss: float
    """Mean regularised training loss over the batches of the last epoch."""


def train_local(
    spec: ModelSpec,
    global_parameters: ArrayLike,
    features: FloatArray,
    labels: ArrayLike,
    config: TrainingConfig | None = None,
) -> LocalUpdate:
    """Train from ``global_parameters`` on one party's rows.

    Raises :class:`InputError` when there are no rows, the shapes disagree or a
    label is not 0 or 1.
    """
    config = config or TrainingConfig()
    model = build_model(spec)
    parameters = np.array(global_parameters, dtype=np.float64)
    targets = _check_labels(labels, len(features))
    if len(features) == 0:
        raise InputError("cannot train on 0 rows")

    sample_weight = class_sample_weights(targets, config.class_weight)
    rng = np.random.default_rng(config.seed)
    loss = float("nan")
    for _ in range(config.epochs):
        loss = _epoch(model, parameters, features, targets, sample_weight, config, rng)
    return LocalUpdate(parameters=parameters, num_examples=len(features), loss=loss)


def train_centralized(
    spec: ModelSpec,
    features: FloatArray,
    labels: ArrayLike,
    config: TrainingConfig | None = None,
) -> LocalUpdate:
    """Train from the model's initial parameters (default: centralised epochs)."""
    config = config or TrainingConfig(epochs=CENTRALIZED_EPOCHS)
    initial = build_model(spec).initial_parameters()
    return train_local(spec, initial, features, labels, config)


def class_sample_weights(
    labels: NDArray[np.float64], class_weight: ClassWeight
) -> FloatArray | None:
    """Per-row weights: ``None`` for ``"none"``; ``n / (k·n_class)`` for ``"balanced"``.

    ``k`` is the number of classes present, so the weights always average 1 and a
    client holding a single class (common in skewed federations) trains at the
    same pace as the others; an absent class divides nothing.
    """
    if class_weight == "none":
        return None
    rows = len(labels)
    positives = float(labels.sum())
    negatives = rows - positives
    present = int(positives > 0) + int(negatives > 0)
    weight_positive = rows / (present * positives) if positives else 0.0
    weight_negative = rows / (present * negatives) if negatives else 0.0
    return np.where(labels == 1, weight_positive, weight_negative)


def _epoch(
    model: Model,
    parameters: FloatArray,
    features: FloatArray,
    labels: FloatArray,
    sample_weight: FloatArray | None,
    config: TrainingConfig,
    rng: np.random.Generator,
) -> float:
    """One shuffled pass, updating ``parameters`` in place; returns the mean loss."""
    order = rng.permutation(len(features))
    losses = []
    for start in range(0, len(order), config.batch_size):
        batch = order[start : start + config.batch_size]
        weights = None if sample_weight is None else sample_weight[batch]
        loss, gradient = model.loss_and_gradient(
            parameters, features[batch], labels[batch], weights, config.l2
        )
        parameters -= config.learning_rate * gradient
        losses.append(loss)
    return float(np.mean(losses))


def _check_labels(labels: ArrayLike, rows: int) -> NDArray[np.float64]:
    targets = np.asarray(labels, dtype=np.float64).reshape(-1)
    if len(targets) != rows:
        raise InputError(f"labels must have {rows} entries; got {len(targets)}")
    if not np.isin(targets, (0.0, 1.0)).all():
        raise InputError("labels must be 0 (normal) or 1 (attack)")
    return targets


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")
