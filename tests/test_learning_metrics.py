"""Metrics from confusion counts, checked against scikit-learn."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as sk

from fedguard.errors import InputError
from fedguard.learning import ConfusionCounts, Metrics, evaluate, roc_auc, sum_counts


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 300),
    attack_rate=st.floats(0.0, 1.0),
    coarse=st.booleans(),
)
def test_metrics_equal_scikit_learn(
    seed: int, rows: int, attack_rate: float, coarse: bool
) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < attack_rate).astype(np.int8)
    scores = np.clip(labels * 0.3 + rng.random(rows) * 0.7, 0, 1)
    if coarse:  # many ties, the hard case for ROC-AUC
        scores = np.round(scores, 1)
    predicted = scores >= 0.5

    result = evaluate(labels, scores)

    assert result.accuracy == pytest.approx(sk.accuracy_score(labels, predicted))
    assert result.precision == pytest.approx(
        sk.precision_score(labels, predicted, zero_division=0)
    )
    assert result.recall == pytest.approx(
        sk.recall_score(labels, predicted, zero_division=0)
    )
    assert result.f1 == pytest.approx(sk.f1_score(labels, predicted, zero_division=0))
    tn, fp, fn, tp = sk.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    assert (result.counts.tp, result.counts.fp) == (tp, fp)
    assert (result.counts.tn, result.counts.fn) == (tn, fn)
    assert result.fpr == pytest.approx(fp / (fp + tn) if fp + tn else 0.0)
    if 0 < labels.sum() < rows:
        assert result.roc_auc == pytest.approx(sk.roc_auc_score(labels, scores))


def test_zero_divisions_give_zero() -> None:
    nothing_flagged = ConfusionCounts(tp=0, fp=0, tn=5, fn=3)
    no_attacks = ConfusionCounts(tp=0, fp=2, tn=5, fn=0)
    empty = ConfusionCounts()

    assert nothing_flagged.precision == 0.0
    assert nothing_flagged.f1 == 0.0
    assert no_attacks.recall == 0.0
    assert ConfusionCounts(tp=3, fp=0, tn=0, fn=1).fpr == 0.0
    assert [empty.accuracy, empty.precision, empty.recall, empty.f1, empty.fpr] == [
        0.0
    ] * 5


def test_roc_auc_with_one_class_is_undefined() -> None:
    assert roc_auc([1, 1, 1], [0.2, 0.5, 0.9]) is None
    assert roc_auc([0, 0], [0.2, 0.5]) is None


def test_one_class_evaluation_keeps_the_other_metrics() -> None:
    result = evaluate([1, 1, 1, 1], [0.9, 0.8, 0.3, 0.7])

    assert result.roc_auc is None and result.to_dict()["roc_auc"] is None
    assert (result.recall, result.precision, result.accuracy) == (0.75, 1.0, 0.75)


def test_roc_auc_known_values() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5


def test_counts_add_like_the_encrypted_fleet_sum() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 900)
    scores = rng.random(900)
    parts = np.array_split(np.arange(900), 4)

    total = sum_counts(
        [ConfusionCounts.from_scores(labels[p], scores[p]) for p in parts]
    )

    assert total == ConfusionCounts.from_scores(labels, scores)
    assert Metrics.from_counts(total).f1 == pytest.approx(evaluate(labels, scores).f1)


def test_counts_vector_round_trip() -> None:
    counts = ConfusionCounts(tp=7, fp=2, tn=30, fn=1)

    assert counts.to_vector().tolist() == [7.0, 2.0, 30.0, 1.0]
    assert ConfusionCounts.from_vector([7.0000001, 1.9999, 30, 1]) == counts


def test_to_dict_is_flat_and_complete() -> None:
    result = evaluate([0, 1, 1, 0], [0.2, 0.7, 0.4, 0.6])

    assert result.to_dict() == {
        "accuracy": 0.5,
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "roc_auc": 0.75,
        "fpr": 0.5,
        "tp": 1,
        "fp": 1,
        "tn": 1,
        "fn": 1,
    }


def test_bad_inputs() -> None:
    with pytest.raises(InputError, match="labels must be 0 or 1"):
        evaluate([0, 2], [0.1, 0.2])
    with pytest.raises(InputError, match="same length; got 2 and 3"):
        ConfusionCounts.from_predictions([0, 1], [0, 1, 1])
    with pytest.raises(InputError, match="tp must be >= 0; got -1"):
        ConfusionCounts(tp=-1)
    with pytest.raises(InputError, match="4 finite numbers"):
        ConfusionCounts.from_vector([1, 2, 3])
