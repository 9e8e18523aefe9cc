"""Plaintext federated training in one process: the reference federation.

:func:`run_fedavg` plays every client and the server of a federation with the FedAvg
rule of :mod:`fedguard.learning.fedavg`, without encryption. It is what the encrypted
federation is compared against, and the benchmark's federated rows.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import ArrayLike

from fedguard.errors import ConfigError, InputError
from fedguard.learning.fedavg import (
    DEFAULT_CLIP,
    DEFAULT_SERVER_LR,
    aggregate,
    apply_aggregate,
    client_update,
    client_weight,
)
from fedguard.learning.model import FloatArray, ModelSpec, build_model
from fedguard.learning.training import TrainingConfig, train_local

logger = logging.getLogger(__name__)

DEFAULT_ROUNDS = 10

ClientData = tuple[FloatArray, ArrayLike]
"""One client's transformed features and 0/1 labels."""


@dataclass(frozen=True)
class FederatedConfig:
    """Settings of a plaintext federation.

    ``max_examples`` caps a client's weight (see :func:`client_weight`); ``None``
    uses the largest client's row count, so that client has weight 1.
    """

    rounds: int = DEFAULT_ROUNDS
    server_lr: float = DEFAULT_SERVER_LR
    clip: float = DEFAULT_CLIP
    max_examples: int | None = None
    local: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self) -> None:
        if isinstance(self.rounds, bool) or self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1; got {self.rounds!r}")
        if not self.server_lr > 0:
            raise ConfigError(f"server_lr must be > 0; got {self.server_lr}")
        if not self.clip > 0:
            raise ConfigError(f"clip must be > 0; got {self.clip}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigError(f"max_examples must be >= 1; got {self.max_examples}")


@dataclass(frozen=True)
class RoundSummary:
    """What happened in one round (no per-client values are kept)."""

    round: int
    max_abs_delta: float
    """Largest |local − global| over all clients and parameters, before clipping."""
    clipped_fraction: float
    """Share of update values that clipping changed."""
    mean_loss: float
    """Mean of the clients' last-epoch training losses."""


@dataclass(frozen=True)
class FederatedResult:
    parameters: FloatArray
    rounds: tuple[RoundSummary, ...]

    @property
    def max_abs_delta(self) -> float:
        """Largest unclipped update value seen in any round."""
        return max(r.max_abs_delta for r in self.rounds)


def client_seed(seed: int, round_number: int, client_index: int) -> int:
    """The shuffling seed of one client in one round, derived from ``seed``."""
    sequence = np.random.SeedSequence([seed, round_number, client_index])
    return int(sequence.generate_state(1)[0])


def run_fedavg(
    spec: ModelSpec,
    clients: Sequence[ClientData],
    config: FederatedConfig | None = None,
    *,
    initial_parameters: ArrayLike | None = None,
) -> FederatedResult:
    """Run ``config.rounds`` rounds of plaintext FedAvg over ``clients``."""
    config = config or FederatedConfig()
    if not clients:
        raise InputError("run_fedavg needs at least one client; got none")
    if initial_parameters is None:
        parameters = build_model(spec).initial_parameters()
    else:
        parameters = np.array(initial_parameters, dtype=np.float64)
    max_examples = config.max_examples or max(len(f) for f, _ in clients)

    summaries = []
    for round_number in range(1, config.rounds + 1):
        parameters, summary = _round(
            spec, parameters, clients, config, round_number, max_examples
        )
        summaries.append(summary)
        logger.debug(
            "round %d: max |delta| %.3f, clipped %.4f, loss %.4f",
            round_number,
            summary.max_abs_delta,
            summary.clipped_fraction,
            summary.mean_loss,
        )
    return FederatedResult(parameters, tuple(summaries))


def _round(
    spec: ModelSpec,
    parameters: FloatArray,
    clients: Sequence[ClientData],
    config: FederatedConfig,
    round_number: int,
    max_examples: int,
) -> tuple[FloatArray, RoundSummary]:
    updates, weights, losses, raw_max, clipped = [], [], [], 0.0, 0
    for index, (features, labels) in enumerate(clients):
        local = replace(
            config.local, seed=client_seed(config.local.seed, round_number, index)
        )
        result = train_local(spec, parameters, features, labels, local)
        raw = result.parameters - parameters
        raw_max = max(raw_max, float(np.abs(raw).max()))
        clipped += int(np.sum(np.abs(raw) > config.clip))

        updates.append(client_update(result.parameters, parameters, clip=config.clip))
        weights.append(client_weight(result.num_examples, max_examples))
        losses.append(result.loss)

    step = aggregate(updates, weights, clip=config.clip)
    summary = RoundSummary(
        round=round_number,
        max_abs_delta=raw_max,
        clipped_fraction=clipped / (len(clients) * len(parameters)),
        mean_loss=float(np.mean(losses)),
    )
    return apply_aggregate(parameters, step, server_lr=config.server_lr), summary
