"""The feature schema: how raw columns become the model's input matrix.

A schema lists numeric columns, each with a transform (``identity``, or ``log1p`` for
heavy tails, applied as ``sign(x)·log1p(|x|)``) followed by standardisation, and
categorical columns, each with a fixed vocabulary one-hot encoded plus one extra
"unknown" bucket for values outside it. Unseen categories therefore never fail.

The standardisation statistics are designed to be computed by a federation without
any party revealing its own: each party computes :class:`LocalStatistics` (its row
count and, per numeric column after the transform, the local mean and mean of
squares), flattens them with :meth:`LocalStatistics.to_vector`, and the weighted
mean of those vectors (weights proportional to the row counts, which is what an
encrypted weighted sum followed by a division gives) is handed to
:meth:`FeatureSchema.with_statistics`::

    mean_j    = Σ n_i · mean_ij / Σ n_i
    meansq_j  = Σ n_i · meansq_ij / Σ n_i
    std_j     = sqrt(meansq_j − mean_j²)   (1.0 when the variance ≤ min_variance)

Fitting on one party's data (:meth:`FeatureSchema.fit`) takes exactly this path with
a single party. The schema serialises to JSON so the orchestrator can publish it.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedguard.data.dataset import Dataset
from fedguard.errors import InputError

Transform = Literal["identity", "log1p"]
TRANSFORMS: tuple[str, ...] = ("identity", "log1p")

SCHEMA_FORMAT = "fedguard.feature_schema"
SCHEMA_VERSION = 1

DEFAULT_MIN_VARIANCE = 1e-6
"""A column whose variance is at most this counts as constant and gets std 1.0."""

UNKNOWN_CATEGORY = "<unknown>"
"""Name of the extra one-hot bucket that receives values outside a vocabulary."""


@dataclass(frozen=True)
class NumericFeature:
    """A numeric column: its transform and, once fitted, its mean and std."""

    name: str
    transform: Transform = "identity"
    mean: float | None = None
    std: float | None = None

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise InputError(
                f"transform of column {self.name!r} must be one of "
                f"{', '.join(TRANSFORMS)}; got {self.transform!r}"
            )
        if self.std is not None and not self.std > 0:
            raise InputError(
                f"std of column {self.name!r} must be > 0; got {self.std!r}"
            )

    def apply(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """The transform alone (before standardisation)."""
        if self.transform == "log1p":
            return np.sign(values) * np.log1p(np.abs(values))
        return values


@dataclass(frozen=True)
class CategoricalFeature:
    """A categorical column with a fixed vocabulary and one unknown bucket."""

    name: str
    vocabulary: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.vocabulary)) != len(self.vocabulary):
            raise InputError(f"vocabulary of column {self.name!r} has duplicates")

    @property
    def width(self) -> int:
        """One-hot width: one column per known value plus the unknown bucket."""
        return len(self.vocabulary) + 1

    def encode(self, values: NDArray[np.str_]) -> NDArray[np.int64]:
        """Index of each value in the vocabulary; ``len(vocabulary)`` if unknown."""
        distinct, inverse = np.unique(values, return_inverse=True)
        index = {value: position for position, value in enumerate(self.vocabulary)}
        unknown = len(self.vocabulary)
        codes = np.array([index.get(str(v), unknown) for v in distinct], np.int64)
        return codes[inverse.reshape(-1)]


@dataclass(frozen=True)
class LocalStatistics:
    """One party's contribution to the standardisation statistics.

    ``mean`` and ``mean_of_squares`` are per numeric column, after the column's
    transform, over this party's ``num_examples`` rows (zeros when it has none).
    """

    columns: tuple[str, ...]
    num_examples: int
    mean: NDArray[np.float64]
    mean_of_squares: NDArray[np.float64]

    def to_vector(self) -> NDArray[np.float64]:
        """The flat vector ``[mean_1 … mean_k, mean_of_squares_1 … _k]``."""
        return np.concatenate([self.mean, self.mean_of_squares])

    @classmethod
    def from_vector(
        cls, columns: Sequence[str], num_examples: int, vector: ArrayLike
    ) -> "LocalStatistics":
        """Inverse of :meth:`to_vector`."""
        values = _statistics_vector(vector, len(columns))
        return cls(
            tuple(columns), num_examples, values[: len(columns)], values[len(columns) :]
        )


def sum_statistics(statistics: Sequence[LocalStatistics]) -> LocalStatistics:
    """Exact statistics of the union of several parties' rows (plaintext reference).

    Means are combined with weights ``num_examples``; the result equals
    :meth:`FeatureSchema.local_statistics` of the concatenated rows up to rounding.
    """
    if not statistics:
        raise InputError("sum_statistics needs at least one LocalStatistics; got none")
    columns = statistics[0].columns
    if any(s.columns != columns for s in statistics):
        raise InputError("cannot sum statistics computed over different columns")

    total = sum(s.num_examples for s in statistics)
    if total == 0:
        return statistics[0]
    mean = sum(s.num_examples * s.mean for s in statistics) / total
    mean_of_squares = (
        sum(s.num_examples * s.mean_of_squares for s in statistics) / total
    )
    return LocalStatistics(
        columns, total, np.asarray(mean), np.asarray(mean_of_squares)
    )


@dataclass(frozen=True)
class FeatureSchema:
    """Numeric and categorical features, and the statistics once fitted.

    ``num_examples`` is the number of rows behind the statistics (0 when unfitted).
    """

    name: str
    numeric: tuple[NumericFeature, ...]
    categorical: tuple[CategoricalFeature, ...] = ()
    num_examples: int = 0

    def __post_init__(self) -> None:
        names = [f.name for f in self.numeric] + [f.name for f in self.categorical]
        if len(set(names)) != len(names):
            raise InputError(f"schema {self.name!r} lists a column twice")
        if not names:
            raise InputError(f"schema {self.name!r} has no columns")

    @property
    def numeric_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.numeric)

    @property
    def categorical_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.categorical)

    @property
    def is_fitted(self) -> bool:
        """Whether every numeric column has its mean and std."""
        return all(f.mean is not None and f.std is not None for f in self.numeric)

    @property
    def n_features(self) -> int:
        """Width of the transformed matrix."""
        return len(self.numeric) + sum(f.width for f in self.categorical)

    @property
    def statistics_length(self) -> int:
        """Length of :meth:`LocalStatistics.to_vector` for this schema."""
        return 2 * len(self.numeric)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Name of every column of the transformed matrix, in order."""
        names = [f.name for f in self.numeric]
        for feature in self.categorical:
            names += [f"{feature.name}={value}" for value in feature.vocabulary]
            names.append(f"{feature.name}={UNKNOWN_CATEGORY}")
        return tuple(names)

    def local_statistics(self, dataset: Dataset) -> LocalStatistics:
        """This party's row count, and mean and mean of squares per numeric column."""
        values = self._transformed_numeric(dataset)
        if len(values) == 0:
            zeros = np.zeros(len(self.numeric))
            return LocalStatistics(self.numeric_columns, 0, zeros, zeros.copy())
        return LocalStatistics(
            columns=self.numeric_columns,
            num_examples=len(values),
            mean=values.mean(axis=0),
            mean_of_squares=np.square(values).mean(axis=0),
        )

    def with_statistics(
        self,
        count: int,
        mean_vector: ArrayLike,
        *,
        min_variance: float = DEFAULT_MIN_VARIANCE,
    ) -> "FeatureSchema":
        """A fitted copy, from the weighted mean of the parties' statistic vectors.

        ``mean_vector`` is ``Σ n_i·v_i / Σ n_i`` over the parties' vectors ``v_i``
        (:meth:`LocalStatistics.to_vector`) and ``count`` is ``Σ n_i``. A column
        whose variance is at most ``min_variance`` (constant, or only rounding
        noise) gets std 1.0 so that it never divides by zero or blows up.
        """
        if count < 1:
            raise InputError(f"count must be >= 1; got {count}")
        if not min_variance >= 0:
            raise InputError(f"min_variance must be >= 0; got {min_variance}")
        vector = _statistics_vector(mean_vector, len(self.numeric))

        k = len(self.numeric)
        mean, mean_of_squares = vector[:k], vector[k:]
        variance = mean_of_squares - np.square(mean)
        std = np.where(variance > min_variance, np.sqrt(np.maximum(variance, 0)), 1.0)

        numeric = tuple(
            replace(f, mean=float(m), std=float(s))
            for f, m, s in zip(self.numeric, mean, std, strict=True)
        )
        return replace(self, numeric=numeric, num_examples=int(count))

    def fit(self, dataset: Dataset) -> "FeatureSchema":
        """Fit on one party's rows, through the same path a federation uses."""
        statistics = self.local_statistics(dataset)
        if statistics.num_examples == 0:
            raise InputError(f"cannot fit schema {self.name!r} on an empty dataset")
        return self.with_statistics(statistics.num_examples, statistics.to_vector())

    def transform(self, dataset: Dataset) -> NDArray[np.float64]:
        """The model input: standardised numerics, then one-hot categoricals."""
        if not self.is_fitted:
            raise InputError(
                f"schema {self.name!r} is not fitted; call fit() or "
                "with_statistics() first"
            )
        rows = len(dataset)
        output = np.zeros((rows, self.n_features), dtype=np.float64)

        mean = np.array([cast(float, f.mean) for f in self.numeric])
        std = np.array([cast(float, f.std) for f in self.numeric])
        output[:, : len(self.numeric)] = (
            self._transformed_numeric(dataset) - mean
        ) / std

        offset = len(self.numeric)
        for feature in self.categorical:
            codes = feature.encode(dataset.categorical_column(feature.name))
            output[np.arange(rows), offset + codes] = 1.0
            offset += feature.width
        return output

    def _transformed_numeric(self, dataset: Dataset) -> NDArray[np.float64]:
        values = np.empty((len(dataset), len(self.numeric)), dtype=np.float64)
        for position, feature in enumerate(self.numeric):
            values[:, position] = feature.apply(dataset.numeric_column(feature.name))
        return values

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description; :meth:`from_dict` reverses it exactly."""
        return {
            "format": SCHEMA_FORMAT,
            "version": SCHEMA_VERSION,
            "name": self.name,
            "num_examples": self.num_examples,
            "numeric": [
                {"name": f.name, "transform": f.transform, "mean": f.mean, "std": f.std}
                for f in self.numeric
            ],
            "categorical": [
                {"name": f.name, "vocabulary": list(f.vocabulary)}
                for f in self.categorical
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureSchema":
        """Rebuild a schema from :meth:`to_dict` output, checking every field."""
        if data.get("format") != SCHEMA_FORMAT or data.get("version") != SCHEMA_VERSION:
            raise InputError(
                f"feature schema must have format {SCHEMA_FORMAT!r} version "
                f"{SCHEMA_VERSION}; got {data.get('format')!r} version "
                f"{data.get('version')!r}"
            )
        try:
            numeric = tuple(_numeric_from_dict(item) for item in data["numeric"])
            categorical = tuple(
                CategoricalFeature(
                    str(item["name"]), tuple(map(str, item["vocabulary"]))
                )
                for item in data["categorical"]
            )
            return cls(
                str(data["name"]), numeric, categorical, int(data["num_examples"])
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"feature schema is malformed: {error!r}") from error

    def save(self, path: str | Path) -> None:
        """Write the schema as JSON."""
        text = json.dumps(self.to_dict(), indent=2)
        Path(path).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSchema":
        """Read a schema written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as error:
            raise InputError(f"feature schema file {path} does not exist") from error
        except json.JSONDecodeError as error:
            raise InputError(
                f"feature schema file {path} is not JSON: {error}"
            ) from error
        if not isinstance(data, dict):
            raise InputError(f"feature schema file {path} must hold a JSON object")
        return cls.from_dict(data)


def fit_schema(
    schema: FeatureSchema,
    statistics: Sequence[LocalStatistics],
    *,
    min_variance: float = DEFAULT_MIN_VARIANCE,
) -> FeatureSchema:
    """Fit ``schema`` from several parties' statistics, summed in plaintext."""
    total = sum_statistics(statistics)
    if total.num_examples == 0:
        raise InputError("cannot fit a schema: the parties hold no rows")
    return schema.with_statistics(
        total.num_examples, total.to_vector(), min_variance=min_variance
    )


def infer_schema(
    dataset: Dataset,
    *,
    name: str,
    vocabularies: Mapping[str, Sequence[str]] | None = None,
    log1p_columns: Sequence[str] | None = None,
) -> FeatureSchema:
    """An unfitted schema for a mapped CSV, covering all of the dataset's columns.

    Vocabularies and the log1p columns come from the caller when given. Otherwise
    they are read from ``dataset`` (meant for one party's training data): the sorted
    distinct values of each categorical column, and log1p for every numeric column
    whose values are all >= 0 and reach above 100 (counts, bytes, durations).
    """
    vocabularies = dict(vocabularies or {})
    categorical = []
    for column in dataset.categorical_columns:
        vocabulary = vocabularies.get(column)
        if vocabulary is None:
            vocabulary = sorted(set(dataset.categorical_column(column).tolist()))
        categorical.append(CategoricalFeature(column, tuple(map(str, vocabulary))))

    if log1p_columns is None:
        log1p = {c for c in dataset.numeric_columns if _heavy_tailed(dataset, c)}
    else:
        log1p = set(log1p_columns)
    numeric = tuple(
        NumericFeature(c, "log1p" if c in log1p else "identity")
        for c in dataset.numeric_columns
    )
    return FeatureSchema(name=name, numeric=numeric, categorical=tuple(categorical))


def _heavy_tailed(dataset: Dataset, column: str) -> bool:
    values = dataset.numeric_column(column)
    return len(values) > 0 and values.min() >= 0 and values.max() > 100


def _numeric_from_dict(item: Mapping[str, Any]) -> NumericFeature:
    mean, std = item.get("mean"), item.get("std")
    return NumericFeature(
        name=str(item["name"]),
        transform=item.get("transform", "identity"),
        mean=None if mean is None else float(mean),
        std=None if std is None else float(std),
    )


def _statistics_vector(vector: ArrayLike, columns: int) -> NDArray[np.float64]:
    values = np.asarray(vector, dtype=np.float64).reshape(-1)
    if values.shape != (2 * columns,):
        raise InputError(
            f"statistics vector must have length {2 * columns} (mean and mean of "
            f"squares of {columns} columns); got {values.shape[0]}"
        )
    if not np.isfinite(values).all():
        raise InputError("statistics vector must hold finite numbers only")
    return values
