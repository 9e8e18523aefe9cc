"""Weighted federated averaging (FedAvg) with clipped updates: the plaintext reference.

FedAvg is due to H. B. McMahan, E. Moore, D. Ramage, S. Hampson and B. Agüera y
Arcas, "Communication-Efficient Learning of Deep Networks from Decentralized Data"
(AISTATS 2017). fedguard's rule is shaped by what the encrypted path can compute,
and this module is the exact reference that path must reproduce:

* client ``i``'s update is ``delta_i = local_parameters_i − global_parameters``,
  clipped elementwise to ``[−clip, clip]`` (the packing codec's value range);
* its weight is ``w_i = min(num_examples_i, max_examples) / max_examples``, a number
  in (0, 1] (the codec multiplies by a bounded weight; capping at ``max_examples``
  also limits how much one large client can pull the model);
* the aggregate is ``Σ w_i · delta_i / Σ w_i`` (the server decrypts both sums);
* the new global model is ``global_parameters + server_lr · aggregate``.

All functions are pure: they never change their arguments.
"""

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from fedguard.errors import ConfigError, InputError
from fedguard.learning.model import FloatArray

DEFAULT_CLIP = 1.0
DEFAULT_SERVER_LR = 1.0


def client_weight(num_examples: int, max_examples: int) -> float:
    """``min(num_examples, max_examples) / max_examples``, in (0, 1]."""
    if max_examples < 1:
        raise ConfigError(f"max_examples must be >= 1; got {max_examples}")
    if num_examples < 1:
        raise InputError(f"num_examples must be >= 1; got {num_examples}")
    return min(num_examples, max_examples) / max_examples


def clip_update(update: ArrayLike, clip: float) -> FloatArray:
    """Every value of ``update`` limited to ``[−clip, clip]``."""
    _check_clip(clip)
    return np.clip(np.asarray(update, dtype=np.float64), -clip, clip)


def client_update(
    local_parameters: ArrayLike, global_parameters: ArrayLike, *, clip: float
) -> FloatArray:
    """The clipped difference a client sends: ``clip(local − global)``."""
    local = np.asarray(local_parameters, dtype=np.float64)
    start = np.asarray(global_parameters, dtype=np.float64)
    if local.shape != start.shape:
        raise InputError(
            f"local parameters must have shape {start.shape}; got {local.shape}"
        )
    return clip_update(local - start, clip)


def aggregate(
    updates: Sequence[ArrayLike], weights: Sequence[float], *, clip: float
) -> FloatArray:
    """``Σ w_i · clip(delta_i) / Σ w_i`` over the clients' updates."""
    if len(updates) == 0:
        raise InputError("aggregate needs at least one update; got none")
    if len(updates) != len(weights):
        raise InputError(
            f"need one weight per update; got {len(updates)} updates and "
            f"{len(weights)} weights"
        )
    for weight in weights:
        if not 0 < weight <= 1:
            raise InputError(f"every weight must be in (0, 1]; got {weight}")

    clipped = [clip_update(u, clip) for u in updates]
    shape = clipped[0].shape
    for update in clipped:
        if update.ndim != 1 or update.shape != shape:
            raise InputError(
                f"every update must be a flat vector of shape {shape}; "
                f"got {update.shape}"
            )
    w = np.asarray(weights, dtype=np.float64)
    result: FloatArray = (w @ np.stack(clipped)) / w.sum()
    return result


def apply_aggregate(
    global_parameters: ArrayLike,
    aggregate_update: ArrayLike,
    *,
    server_lr: float = DEFAULT_SERVER_LR,
) -> FloatArray:
    """The next global model: ``global_parameters + server_lr · aggregate``."""
    if not server_lr > 0:
        raise ConfigError(f"server_lr must be > 0; got {server_lr}")
    start = np.asarray(global_parameters, dtype=np.float64)
    step = np.asarray(aggregate_update, dtype=np.float64)
    if step.shape != start.shape:
        raise InputError(f"aggregate must have shape {start.shape}; got {step.shape}")
    result: FloatArray = start + server_lr * step
    return result


def fedavg(
    global_parameters: ArrayLike,
    deltas: Sequence[ArrayLike],
    weights: Sequence[float],
    *,
    server_lr: float = DEFAULT_SERVER_LR,
    clip: float = DEFAULT_CLIP,
) -> FloatArray:
    """One FedAvg step: clip the deltas, take their weighted mean, apply it."""
    step = aggregate(deltas, weights, clip=clip)
    return apply_aggregate(global_parameters, step, server_lr=server_lr)


def _check_clip(clip: float) -> None:
    if not (clip > 0 and np.isfinite(clip)):
        raise ConfigError(f"clip must be > 0; got {clip}")
