"""The raw, labelled table every loader and the synthetic generator produce.

A :class:`Dataset` holds the columns before any feature transform: numbers as one
float matrix, categories as one string matrix, the binary target (1 = attack), the
original label of each row and, when known, its attack family. The feature schema
(:mod:`fedguard.data.schema`) turns it into the model's input matrix.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedguard.errors import InputError

NORMAL = "normal"
"""Label and family value of benign rows."""

UNKNOWN_FAMILY = "unknown"
"""Family of an attack whose name no mapping knows."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled rows of raw features.

    Attributes
    ----------
    numeric_columns, numeric
        Names of the numeric columns and their values, shape ``(rows, columns)``.
    categorical_columns, categorical
        Names of the categorical columns and their values as strings.
    labels
        Binary target, ``1`` for an attack and ``0`` for normal traffic (int8).
    attack_types
        The original label of each row (``"normal"``, ``"neptune"``, ``"port_scan"``).
    families
        Attack family of each row (``"normal"`` for benign rows), or ``None`` when
        the loader was not asked for it.
    name
        Where the rows came from, for messages.
    skipped_rows
        Malformed rows the loader dropped because the caller asked it to.
    """

    numeric_columns: tuple[str, ...]
    numeric: NDArray[np.float64]
    categorical_columns: tuple[str, ...]
    categorical: NDArray[np.str_]
    labels: NDArray[np.int8]
    attack_types: NDArray[np.str_]
    families: NDArray[np.str_] | None = None
    name: str = "dataset"
    skipped_rows: int = 0

    def __post_init__(self) -> None:
        rows = len(self.labels)
        expected = {
            "numeric": (rows, len(self.numeric_columns)),
            "categorical": (rows, len(self.categorical_columns)),
            "attack_types": (rows,),
        }
        if self.families is not None:
            expected["families"] = (rows,)
        for field, shape in expected.items():
            actual = getattr(self, field).shape
            if actual != shape:
                raise InputError(
                    f"dataset {self.name!r}: {field} must have shape {shape}; "
                    f"got {actual}"
                )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_attacks(self) -> int:
        """Number of rows labelled as an attack."""
        return int(self.labels.sum())

    @property
    def num_normal(self) -> int:
        """Number of rows labelled as normal traffic."""
        return len(self) - self.num_attacks

    def label_counts(self) -> dict[str, int]:
        """Rows per binary class: ``{"normal": ..., "attack": ...}``."""
        return {NORMAL: self.num_normal, "attack": self.num_attacks}

    def numeric_column(self, name: str) -> NDArray[np.float64]:
        """The values of one numeric column."""
        return self.numeric[:, _index_of(name, self.numeric_columns, "numeric", self)]

    def categorical_column(self, name: str) -> NDArray[np.str_]:
        """The values of one categorical column."""
        index = _index_of(name, self.categorical_columns, "categorical", self)
        return self.categorical[:, index]

    def subset(self, indices: ArrayLike, *, name: str | None = None) -> "Dataset":
        """The rows at ``indices`` (integer positions or a boolean mask), in order."""
        rows = np.asarray(indices)
        families = None if self.families is None else self.families[rows]
        return replace(
            self,
            numeric=self.numeric[rows],
            categorical=self.categorical[rows],
            labels=self.labels[rows],
            attack_types=self.attack_types[rows],
            families=families,
            name=name or self.name,
            skipped_rows=0,
        )


def concat_datasets(datasets: Sequence[Dataset], *, name: str | None = None) -> Dataset:
    """Stack datasets that have the same columns, keeping their row order."""
    if not datasets:
        raise InputError("concat_datasets needs at least one dataset; got none")
    first = datasets[0]
    for other in datasets[1:]:
        if (other.numeric_columns, other.categorical_columns) != (
            first.numeric_columns,
            first.categorical_columns,
        ):
            raise InputError(
                f"cannot concatenate {other.name!r} with {first.name!r}: "
                "the columns differ"
            )

    families = None
    if all(d.families is not None for d in datasets):
        families = np.concatenate(
            [d.families for d in datasets if d.families is not None]
        )
    return Dataset(
        numeric_columns=first.numeric_columns,
        numeric=np.concatenate([d.numeric for d in datasets]),
        categorical_columns=first.categorical_columns,
        categorical=np.concatenate([d.categorical for d in datasets]),
        labels=np.concatenate([d.labels for d in datasets]),
        attack_types=np.concatenate([d.attack_types for d in datasets]),
        families=families,
        name=name or first.name,
        skipped_rows=sum(d.skipped_rows for d in datasets),
    )


def string_matrix(columns: Sequence[NDArray[np.str_]], rows: int) -> NDArray[np.str_]:
    """Stack string columns side by side; an empty list gives shape ``(rows, 0)``."""
    if not columns:
        return np.empty((rows, 0), dtype=np.str_)
    return np.column_stack(columns).astype(np.str_)


def _index_of(name: str, columns: tuple[str, ...], kind: str, dataset: Dataset) -> int:
    try:
        return columns.index(name)
    except ValueError:
        raise InputError(
            f"dataset {dataset.name!r} has no {kind} column {name!r}; "
            f"it has: {', '.join(columns) or 'none'}"
        ) from None
