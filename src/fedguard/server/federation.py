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
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedguard.crypto.packing import PackingParams
from fedguard.data.schema import FeatureSchema
from fedguard.errors import ConfigError
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
        schema = FeatureSchema.load(schema_file)
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
        "update": PackingParams(
            key_bits=bits,
            clip=config.packing.clip,
            scale_bits=config.packing.scale_bits,
            max_contributors=capacity,
        ),
        "statistics": PackingParams(
            key_bits=bits,
            clip=config.setup.clip,
            scale_bits=config.setup.scale_bits,
            max_contributors=capacity,
        ),
        "metrics": metrics_packing_params(layout, bits, capacity),
    }
