"""The feature schema: transforms, statistics from parties, serialisation."""

import json
from pathlib import Path

import numpy as np
import pytest

from fedguard.data import (
    CategoricalFeature,
    Dataset,
    FeatureSchema,
    LocalStatistics,
    NumericFeature,
    fit_schema,
    generate_events,
    iid_partition,
    infer_schema,
    nsl_kdd_schema,
    sum_statistics,
    synthetic_schema,
)
from fedguard.errors import InputError


def make_dataset(numeric: list[list[float]], categories: list[str]) -> Dataset:
    rows = len(numeric)
    return Dataset(
        numeric_columns=("bytes", "rate"),
        numeric=np.array(numeric, dtype=np.float64).reshape(rows, 2),
        categorical_columns=("proto",),
        categorical=np.array(categories, dtype=np.str_).reshape(rows, 1),
        labels=np.zeros(rows, dtype=np.int8),
        attack_types=np.full(rows, "normal"),
    )


SCHEMA = FeatureSchema(
    name="tiny",
    numeric=(NumericFeature("bytes", "log1p"), NumericFeature("rate")),
    categorical=(CategoricalFeature("proto", ("tcp", "udp")),),
)


@pytest.fixture(scope="module")
def events() -> Dataset:
    return generate_events(3_000, seed=11)


def test_fit_standardises_the_training_columns(events: Dataset) -> None:
    schema = synthetic_schema().fit(events)
    matrix = schema.transform(events)
    numeric = matrix[:, : len(schema.numeric)]

    assert matrix.shape == (3_000, schema.n_features)
    assert np.allclose(numeric.mean(axis=0), 0, atol=1e-9)
    assert np.allclose(numeric.std(axis=0), 1, atol=1e-9)
    assert schema.num_examples == 3_000
    assert len(schema.feature_names) == schema.n_features


def test_one_hot_rows_have_one_entry_per_categorical(events: Dataset) -> None:
    schema = synthetic_schema().fit(events)
    one_hot = schema.transform(events)[:, len(schema.numeric) :]

    assert set(np.unique(one_hot)) == {0.0, 1.0}
    assert np.all(one_hot.sum(axis=1) == len(schema.categorical))


def test_unseen_category_goes_to_the_unknown_bucket() -> None:
    train = make_dataset([[10, 0.1], [100, 0.5], [0, 0.9]], ["tcp", "udp", "tcp"])
    new = make_dataset([[5, 0.2], [7, 0.3]], ["sctp", "udp"])

    matrix = SCHEMA.fit(train).transform(new)

    names = SCHEMA.feature_names
    assert names[2:] == ("proto=tcp", "proto=udp", "proto=<unknown>")
    assert matrix[:, 2:].tolist() == [[0, 0, 1], [0, 1, 0]]


def test_log1p_is_sign_preserving() -> None:
    feature = NumericFeature("x", "log1p")
    values = np.array([-99.0, -1.0, 0.0, 1.0, 99.0])

    assert np.allclose(feature.apply(values), [-np.log(100), -np.log(2), 0, np.log(2),
                                               np.log(100)])  # fmt: skip


def test_statistics_summed_over_partitions_equal_those_of_the_union(
    events: Dataset,
) -> None:
    schema = synthetic_schema()
    parts = [events.subset(p) for p in iid_partition(len(events), 4, seed=5)]

    summed = sum_statistics([schema.local_statistics(p) for p in parts])
    union = schema.local_statistics(events)

    assert summed.num_examples == union.num_examples == 3_000
    assert np.allclose(summed.mean, union.mean, rtol=1e-12)
    assert np.allclose(summed.mean_of_squares, union.mean_of_squares, rtol=1e-12)


def test_weighted_mean_of_vectors_gives_the_centralised_fit(events: Dataset) -> None:
    """The encrypted setup round's recipe: Σ n_i·v_i / Σ n_i, then with_statistics."""
    schema = synthetic_schema()
    parts = [events.subset(p) for p in iid_partition(len(events), 3, seed=2)]
    local = [schema.local_statistics(p) for p in parts]

    counts = np.array([s.num_examples for s in local], dtype=np.float64)
    vectors = np.stack([s.to_vector() for s in local])
    weighted_mean = counts @ vectors / counts.sum()
    federated = schema.with_statistics(int(counts.sum()), weighted_mean)

    for other in (schema.fit(events), fit_schema(schema, local)):
        assert other.num_examples == federated.num_examples
        for a, b in zip(federated.numeric, other.numeric, strict=True):
            assert a.mean == pytest.approx(b.mean, rel=1e-12, abs=1e-12)
            assert a.std == pytest.approx(b.std, rel=1e-9)


def test_statistics_vector_round_trip(events: Dataset) -> None:
    stats = synthetic_schema().local_statistics(events)
    vector = stats.to_vector()

    again = LocalStatistics.from_vector(stats.columns, stats.num_examples, vector)

    assert vector.shape == (synthetic_schema().statistics_length,)
    assert np.array_equal(again.mean, stats.mean)
    assert np.array_equal(again.mean_of_squares, stats.mean_of_squares)


def test_constant_column_gets_unit_std() -> None:
    train = make_dataset([[4, 0.5], [4, 0.5], [4, 0.5]], ["tcp"] * 3)

    fitted = SCHEMA.fit(train)

    assert [f.std for f in fitted.numeric] == [1.0, 1.0]
    assert np.all(np.isfinite(fitted.transform(make_dataset([[9, 2]], ["udp"]))))


def test_rounding_noise_below_min_variance_counts_as_constant() -> None:
    vector = [2.0, 0.5, 4.0 + 1e-9, 0.25 + 0.04]

    fitted = SCHEMA.with_statistics(10, vector, min_variance=1e-6)

    assert fitted.numeric[0].std == 1.0
    assert fitted.numeric[1].std == pytest.approx(0.2)


def test_empty_party_contributes_nothing() -> None:
    empty = make_dataset([], [])
    full = make_dataset([[1, 0.1], [3, 0.3]], ["tcp", "udp"])

    stats = SCHEMA.local_statistics(empty)
    summed = sum_statistics([stats, SCHEMA.local_statistics(full)])

    assert stats.num_examples == 0
    assert np.allclose(summed.mean, SCHEMA.local_statistics(full).mean)


def test_save_load_round_trip(tmp_path: Path, events: Dataset) -> None:
    schema = synthetic_schema().fit(events)
    path = tmp_path / "schema.json"

    schema.save(path)
    loaded = FeatureSchema.load(path)

    assert loaded == schema
    assert np.array_equal(loaded.transform(events), schema.transform(events))
    assert json.loads(path.read_text())["format"] == "fedguard.feature_schema"


def test_unfitted_schema_round_trips_too() -> None:
    schema = nsl_kdd_schema()

    assert FeatureSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema
    assert not schema.is_fitted


def test_transform_needs_statistics(events: Dataset) -> None:
    with pytest.raises(InputError, match="not fitted; call fit"):
        synthetic_schema().transform(events)


def test_transform_names_a_missing_column(events: Dataset) -> None:
    with pytest.raises(InputError, match="has no numeric column 'bytes'"):
        SCHEMA.local_statistics(events)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other"}, "format 'fedguard.feature_schema' version 1"),
        ({"version": 2}, "got 'fedguard.feature_schema' version 2"),
        ({"numeric": [{"name": "x", "transform": "sqrt"}]}, "must be one of"),
        ({"numeric": [{"name": "x", "std": -1.0}]}, "std of column 'x' must be > 0"),
        ({"categorical": [{"name": "proto"}]}, "malformed"),
    ],
)
def test_from_dict_rejects_bad_input(change: dict[str, object], message: str) -> None:
    data = SCHEMA.to_dict() | change

    with pytest.raises(InputError, match=message):
        FeatureSchema.from_dict(data)


def test_load_rejects_non_json(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text("{not json")

    with pytest.raises(InputError, match="is not JSON"):
        FeatureSchema.load(path)


def test_with_statistics_checks_its_inputs() -> None:
    with pytest.raises(InputError, match="count must be >= 1; got 0"):
        SCHEMA.with_statistics(0, [0, 0, 1, 1])
    with pytest.raises(InputError, match="must have length 4"):
        SCHEMA.with_statistics(3, [0, 0, 1])
    with pytest.raises(InputError, match="finite"):
        SCHEMA.with_statistics(3, [0, np.nan, 1, 1])


def test_infer_schema_reads_vocabularies_and_heavy_tails() -> None:
    train = make_dataset([[10, 0.1], [5000, 0.5], [0, 0.9]], ["tcp", "udp", "tcp"])

    inferred = infer_schema(train, name="csv")
    given = infer_schema(
        train, name="csv", vocabularies={"proto": ["udp"]}, log1p_columns=[]
    )

    assert [f.transform for f in inferred.numeric] == ["log1p", "identity"]
    assert inferred.categorical[0].vocabulary == ("tcp", "udp")
    assert [f.transform for f in given.numeric] == ["identity", "identity"]
    assert given.categorical[0].vocabulary == ("udp",)


def test_schema_rejects_duplicate_columns() -> None:
    with pytest.raises(InputError, match="lists a column twice"):
        FeatureSchema("dup", (NumericFeature("a"), NumericFeature("a")))
    with pytest.raises(InputError, match="has duplicates"):
        CategoricalFeature("p", ("tcp", "tcp"))
