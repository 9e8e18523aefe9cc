"""Models held as one flat parameter vector.

Federated averaging, clipping, packing and encryption all work on a flat float
vector, so every model exposes its parameters that way and nothing else needs to
know the model's shape. A :class:`ModelSpec` (JSON-serialisable) says which model
and how many features; :func:`build_model` turns it into an object implementing
:class:`Model`. Logistic regression is the only kind today; another kind (a small
MLP, say) joins by adding a spec kind and a class with the same four methods.

Logistic regression parameters are ``[w_1 … w_d, b]`` and the loss minimised is the
(optionally sample-weighted) mean log loss plus ``l2/2 · ‖w‖²`` (the bias is not
penalised)::

    L(w, b) = 1/m Σ s_i · (log(1 + e^{z_i}) − y_i z_i) + l2/2 ‖w‖²,  z_i = w·x_i + b
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from fedguard.errors import ConfigError, InputError

FloatArray = NDArray[np.float64]

MODEL_KINDS: tuple[str, ...] = ("logistic_regression",)


@dataclass(frozen=True)
class ModelSpec:
    """Which model, over how many input features."""

    n_features: int
    kind: str = "logistic_regression"

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(
                f"model kind {self.kind!r} is not supported; use one of "
                f"{', '.join(MODEL_KINDS)}"
            )
        if isinstance(self.n_features, bool) or self.n_features < 1:
            raise ConfigError(f"n_features must be >= 1; got {self.n_features!r}")

    @property
    def num_parameters(self) -> int:
        """Length of the flat parameter vector."""
        return self.n_features + 1

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_features": self.n_features}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelSpec":
        try:
            return cls(n_features=int(data["n_features"]), kind=str(data["kind"]))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"model spec is malformed: {error!r}") from error


class Model(Protocol):
    """What training, averaging and scoring need from a model."""

    @property
    def spec(self) -> ModelSpec: ...

    def initial_parameters(self) -> FloatArray:
        """Deterministic starting parameters."""
        ...

    def predict_proba(self, parameters: FloatArray, features: FloatArray) -> FloatArray:
        """Probability of the attack class for every row of ``features``."""
        ...

    def loss_and_gradient(
        self,
        parameters: FloatArray,
        features: FloatArray,
        labels: FloatArray,
        sample_weight: FloatArray | None,
        l2: float,
    ) -> tuple[float, FloatArray]:
        """Regularised mean loss on the rows given, and its gradient."""
        ...


@dataclass(frozen=True)
class LogisticRegression:
    """Binary logistic regression over a flat ``[weights…, bias]`` vector."""

    spec: ModelSpec

    def initial_parameters(self) -> FloatArray:
        """All zeros: the loss is convex, so no random start is needed."""
        return np.zeros(self.spec.num_parameters)

    def predict_proba(self, parameters: FloatArray, features: FloatArray) -> FloatArray:
        self._check(parameters, features)
        return _sigmoid(features @ parameters[:-1] + parameters[-1])

    def loss_and_gradient(
        self,
        parameters: FloatArray,
        features: FloatArray,
        labels: FloatArray,
        sample_weight: FloatArray | None,
        l2: float,
    ) -> tuple[float, FloatArray]:
        self._check(parameters, features)
        weights, bias = parameters[:-1], parameters[-1]
        logits = features @ weights + bias
        rows = len(labels)

        # log(1 + e^z) − y z, computed without overflow for large |z|.
        losses = np.logaddexp(0.0, logits) - labels * logits
        residual = _sigmoid(logits) - labels
        if sample_weight is not None:
            losses = losses * sample_weight
            residual = residual * sample_weight

        gradient = np.empty_like(parameters)
        gradient[:-1] = features.T @ residual / rows + l2 * weights
        gradient[-1] = residual.sum() / rows
        loss = losses.sum() / rows + 0.5 * l2 * float(weights @ weights)
        return float(loss), gradient

    def _check(self, parameters: FloatArray, features: FloatArray) -> None:
        if parameters.shape != (self.spec.num_parameters,):
            raise InputError(
                f"parameters must have shape ({self.spec.num_parameters},); "
                f"got {parameters.shape}"
            )
        if features.ndim != 2 or features.shape[1] != self.spec.n_features:
            raise InputError(
                f"features must have shape (rows, {self.spec.n_features}); "
                f"got {features.shape}"
            )


def build_model(spec: ModelSpec) -> Model:
    """The model object for ``spec``."""
    return LogisticRegression(spec)


def predict_proba(
    spec: ModelSpec, parameters: FloatArray, features: FloatArray
) -> FloatArray:
    """Attack probability of every row under the model ``spec`` with ``parameters``."""
    return build_model(spec).predict_proba(np.asarray(parameters, np.float64), features)


def _sigmoid(z: FloatArray) -> FloatArray:
    # Two branches so that neither exp() can overflow.
    out = np.empty_like(z)
    positive = z >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-z[positive]))
    exp_z = np.exp(z[~positive])
    out[~positive] = exp_z / (1.0 + exp_z)
    return out
