"""Detection metrics, from confusion counts so that they can come from encrypted sums.

Clients can report only their four confusion counts (true/false positives and
negatives, attack being the positive class); the counts add up over clients, and
every metric but ROC-AUC follows from the totals. ROC-AUC needs the scores, so it is
computed where the scores are (one party's evaluation, or the centralised baseline).

Any ratio whose denominator is zero is reported as 0.0 (for example precision when
nothing was flagged), never NaN. ROC-AUC is different: with only one class in the
evaluation data it is undefined, not merely zero, so it is ``None`` (``null`` in
JSON, "n/a" in tables) and the other metrics are kept.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedguard.errors import InputError


@dataclass(frozen=True)
class ConfusionCounts:
    """True/false positives and negatives, attack being the positive class."""

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0:
                raise InputError(f"{name} must be >= 0; got {value}")

    @classmethod
    def from_predictions(
        cls, labels: ArrayLike, predictions: ArrayLike
    ) -> "ConfusionCounts":
        """Count agreements between 0/1 ``labels`` and 0/1 ``predictions``."""
        truth = _binary("labels", labels)
        predicted = _binary("predictions", predictions)
        if truth.shape != predicted.shape:
            raise InputError(
                f"labels and predictions must have the same length; got "
                f"{len(truth)} and {len(predicted)}"
            )
        return cls(
            tp=int(np.sum(truth & predicted)),
            fp=int(np.sum(~truth & predicted)),
            tn=int(np.sum(~truth & ~predicted)),
            fn=int(np.sum(truth & ~predicted)),
        )

    @classmethod
    def from_scores(
        cls, labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5
    ) -> "ConfusionCounts":
        """Counts when a row is flagged as an attack if its score >= ``threshold``."""
        return cls.from_predictions(labels, np.asarray(scores) >= threshold)

    def __add__(self, other: "ConfusionCounts") -> "ConfusionCounts":
        return ConfusionCounts(
            self.tp + other.tp,
            self.fp + other.fp,
            self.tn + other.tn,
            self.fn + other.fn,
        )

    def to_vector(self) -> NDArray[np.float64]:
        """``[tp, fp, tn, fn]`` as floats, ready for an encrypted sum."""
        return np.array([self.tp, self.fp, self.tn, self.fn], dtype=np.float64)

    @classmethod
    def from_vector(cls, vector: ArrayLike) -> "ConfusionCounts":
        """Inverse of :meth:`to_vector`; values are rounded to whole counts."""
        values = np.asarray(vector, dtype=np.float64).reshape(-1)
        if values.shape != (4,) or not np.isfinite(values).all():
            raise InputError(
                f"confusion vector must be 4 finite numbers; got {values.tolist()}"
            )
        tp, fp, tn, fn = (round(v) for v in values.tolist())
        return cls(tp, fp, tn, fn)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.total)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def fpr(self) -> float:
        """False-positive rate: share of normal rows flagged as attacks."""
        return _ratio(self.fp, self.fp + self.tn)


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Area under the ROC curve (tied scores count one half); None with one class.

    Computed as the Mann-Whitney statistic from average ranks, which equals the
    trapezoidal area under the ROC curve.
    """
    truth = _binary("labels", labels)
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.shape != truth.shape:
        raise InputError(
            f"labels and scores must have the same length; got {len(truth)} "
            f"and {len(values)}"
        )
    positives = int(truth.sum())
    negatives = len(truth) - positives
    if positives == 0 or negatives == 0:
        return None  # no pair of an attack and a normal row to rank

    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average_rank = ends - (counts - 1) / 2.0
    rank_sum = float(average_rank[inverse.reshape(-1)][truth].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


@dataclass(frozen=True)
class Metrics:
    """Detection metrics at one threshold, with the counts behind them."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    fpr: float
    roc_auc: float | None
    counts: ConfusionCounts

    @classmethod
    def from_counts(
        cls, counts: ConfusionCounts, *, roc_auc: float | None = None
    ) -> "Metrics":
        """Metrics of summed counts; ROC-AUC only if the caller has it."""
        return cls(
            accuracy=counts.accuracy,
            precision=counts.precision,
            recall=counts.recall,
            f1=counts.f1,
            fpr=counts.fpr,
            roc_auc=roc_auc,
            counts=counts,
        )

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dictionary (counts under ``tp``, ``fp``, ``tn``, ``fn``)."""
        values: dict[str, Any] = {
            "accuracy": self.accuracy,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "roc_auc": self.roc_auc,
            "fpr": self.fpr,
        }
        return values | asdict(self.counts)


def evaluate(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> Metrics:
    """All metrics for attack ``scores`` (probabilities) against 0/1 ``labels``."""
    counts = ConfusionCounts.from_scores(labels, scores, threshold)
    return Metrics.from_counts(counts, roc_auc=roc_auc(labels, scores))


def sum_counts(counts: Sequence[ConfusionCounts]) -> ConfusionCounts:
    """Total of several parties' counts (the plaintext reference of the fleet sum)."""
    total = ConfusionCounts()
    for item in counts:
        total = total + item
    return total


def _binary(name: str, values: ArrayLike) -> NDArray[np.bool_]:
    array = np.asarray(values).reshape(-1)
    if array.dtype != np.bool_:
        if not np.isin(array, (0, 1)).all():
            raise InputError(f"{name} must be 0 or 1 (or booleans)")
        array = array.astype(bool)
    return array


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator else 0.0
