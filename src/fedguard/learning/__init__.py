"""Models, local training, federated averaging and metrics (no I/O)."""

from fedguard.learning.fedavg import (
    aggregate,
    apply_aggregate,
    client_update,
    client_weight,
    clip_update,
    fedavg,
)
from fedguard.learning.federated import (
    FederatedConfig,
    FederatedResult,
    RoundSummary,
    client_seed,
    run_fedavg,
)
from fedguard.learning.metrics import (
    ConfusionCounts,
    Metrics,
    evaluate,
    roc_auc,
    sum_counts,
)
from fedguard.learning.model import (
    LogisticRegression,
    Model,
    ModelSpec,
    build_model,
    predict_proba,
)
from fedguard.learning.training import (
    LocalUpdate,
    TrainingConfig,
    train_centralized,
    train_local,
)

__all__ = [
    "ConfusionCounts",
    "FederatedConfig",
    "FederatedResult",
    "LocalUpdate",
    "LogisticRegression",
    "Metrics",
    "Model",
    "ModelSpec",
    "RoundSummary",
    "TrainingConfig",
    "aggregate",
    "apply_aggregate",
    "build_model",
    "client_seed",
    "client_update",
    "client_weight",
    "clip_update",
    "evaluate",
    "fedavg",
    "predict_proba",
    "roc_auc",
    "run_fedavg",
    "sum_counts",
    "train_centralized",
    "train_local",
]
