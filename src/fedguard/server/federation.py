"""The federation's fixed facts: feature schema, model shape and packing per frame.

A federation trains one model on one feature schema. The orchestrator has no data,
so the schema comes from the dataset name in the configuration (each supported
dataset has a fixed list of columns and vocabularies); the setup round fits its
standardisation statistics from the agents' encrypted sums.

Three packings share the key: ``update`` (model deltas, ``[packing]``),
``statistics`` (feature means and means of squares, ``[setup]``, a much larger
clip) and ``metrics`` (fleet counts, exact by construction, see
:mod:`fedguard.response.fleet`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedguard.crypto.packing import PackingParams, slot_bits_for
from fedguard.data.schema import FeatureSchema
from fedguard.errors import ConfigError, FedguardError
from fedguard.learning.model import ModelSpec, build_model
from fedguard.response.fleet import (
    MetricsLayout,
    fleet_metrics,
    metrics_packing_params,
    vector_to_counts,
)
from fedguard.server.config import ServerConfig

logger = logging.getLogger(__name__)

MODEL_KIND = "logistic_regression"
DATASETS = ("nsl-kdd", "synthetic", "csv")


def base_schema(dataset: str, schema_file: str = "") -> FeatureSchema:
    """The unfitted feature schema every agent of a ``dataset`` federation uses.

    A ``csv`` federation (agents reading flow CSVs through a column mapping) names
    its schema in a JSON file, as written by :meth:`FeatureSchema.save`; any
    statistics in it are ignored, because the setup round computes them.
    """
    if dataset == "csv":
        schema = _load_schema_file(schema_file)
        numeric = tuple(replace(f, mean=None, std=None) for f in schema.numeric)
        return replace(schema, numeric=numeric, num_examples=0)
    if dataset == "nsl-kdd":
        from fedguard.data.nsl_kdd import nsl_kdd_schema

        return nsl_kdd_schema()
    if dataset == "synthetic":
        from fedguard.data.synthetic import synthetic_schema

        return synthetic_schema()
    raise ConfigError(
        f"federation.dataset must be one of {', '.join(map(repr, DATASETS))}; "
        f"got {dataset!r}"
    )


def _load_schema_file(schema_file: str) -> FeatureSchema:
    """``federation.schema_file``, with errors that name the setting."""
    name = "federation.schema_file"
    if Path(schema_file).is_dir():
        raise ConfigError(
            f"{name} must name a feature schema JSON file; {schema_file!r} is a "
            "directory"
        )
    try:
        return FeatureSchema.load(schema_file)
    except FedguardError as error:
        raise ConfigError(f"{name}: {error}") from None
    except OSError as error:
        raise ConfigError(
            f"{name} {schema_file!r} cannot be read: {error.strerror}"
        ) from None
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(
            f"{name} {schema_file!r} is not a feature schema written by "
            f"FeatureSchema.save: {type(error).__name__}: {error}"
        ) from None


def metrics_layout(dataset: str) -> MetricsLayout:
    """Fleet-metric counts with the dataset's attack families.

    Mapped CSVs have no fixed families, so their fleet metrics are totals only.
    """
    if dataset == "csv":
        return MetricsLayout(families=())
    if dataset == "nsl-kdd":
        from fedguard.data.nsl_kdd import FAMILIES

        families = FAMILIES
    else:
        from fedguard.data.synthetic import ATTACK_TYPES

        families = ATTACK_TYPES
    return MetricsLayout(families=tuple(family.lower() for family in families))


@dataclass(frozen=True)
class Federation:
    """Schema, model shape and packings of one federation (see module docstring)."""

    config: ServerConfig
    schema: FeatureSchema
    layout: MetricsLayout
    packings: dict[str, PackingParams]

    @classmethod
    def from_config(cls, config: ServerConfig) -> Federation:
        schema = base_schema(config.federation.dataset, config.federation.schema_file)
        layout = metrics_layout(config.federation.dataset)
        return cls(config, schema, layout, build_packings(config, layout))

    @property
    def rounds(self) -> int:
        return self.config.federation.rounds

    @property
    def collects_metrics(self) -> bool:
        return True

    @property
    def model_spec(self) -> ModelSpec:
        return ModelSpec(n_features=self.schema.n_features, kind=MODEL_KIND)

    @property
    def n_params(self) -> int:
        return self.model_spec.num_parameters

    def frame_length(self, kind: str) -> int:
        if kind == "update":
            return self.n_params
        if kind == "statistics":
            return self.schema.statistics_length
        if kind == "metrics":
            return self.layout.length
        raise ConfigError(
            f"frame kind must be update, statistics or metrics; got {kind!r}"
        )

    def initial_model(self) -> NDArray[np.float64]:
        return build_model(self.model_spec).initial_parameters()

    def fitted_schema(self, mean: NDArray[np.float64], weight: float) -> dict[str, Any]:
        # The weights are min(n, max_examples) / max_examples, so the summed weight
        # times max_examples is the row count behind the statistics (exact while no
        # client holds more than max_examples rows).
        count = max(1, round(weight * self.config.federation.max_examples))
        fitted = self.schema.with_statistics(count, mean)
        return fitted.to_dict()

    def fleet_metrics(self, summed: NDArray[np.float64]) -> dict[str, Any]:
        counts = vector_to_counts(summed, self.layout)
        return {"counts": counts, "metrics": fleet_metrics(counts, self.layout)}


def build_packings(
    config: ServerConfig, layout: MetricsLayout
) -> dict[str, PackingParams]:
    """The packing parameters of each frame kind."""
    bits = config.federation.key_bits
    capacity = config.packing.max_contributors
    return {
        "update": _packing(
            "packing", bits, config.packing.clip, config.packing.scale_bits, capacity
        ),
        "statistics": _packing(
            "setup", bits, config.setup.clip, config.setup.scale_bits, capacity
        ),
        "metrics": metrics_packing_params(layout, bits, capacity),
    }


def _packing(
    section: str, key_bits: int, clip: float, scale_bits: int, capacity: int
) -> PackingParams:
    """One packing, with errors that name the configuration section."""
    try:
        return PackingParams(
            key_bits=key_bits,
            clip=clip,
            scale_bits=scale_bits,
            max_contributors=capacity,
        )
    except ConfigError as error:
        settings = (
            f"{section}.clip {clip:g} with {section}.scale_bits {scale_bits} and "
            f"packing.max_contributors {capacity}"
        )
        if "slot" not in str(error):
            raise ConfigError(f"{settings}: {error}") from None
        raise ConfigError(
            f"{settings} needs {slot_bits_for(clip, scale_bits, capacity)}-bit slots, "
            "wider than the packing supports: lower one of them"
        ) from None
