"""Dataset loaders, the feature schema, the synthetic generator and partitioning."""

from fedguard.data.dataset import NORMAL, UNKNOWN_FAMILY, Dataset, concat_datasets
from fedguard.data.flow_csv import (
    CsvMapping,
    check_labels,
    load_flow_csv,
    read_mapping_file,
)
from fedguard.data.nsl_kdd import (
    attack_family,
    load_nsl_kdd,
    load_nsl_kdd_split,
    nsl_kdd_schema,
)
from fedguard.data.partition import (
    dirichlet_partition,
    family_partition,
    iid_partition,
    partition_dataset,
)
from fedguard.data.schema import (
    CategoricalFeature,
    FeatureSchema,
    LocalStatistics,
    NumericFeature,
    fit_schema,
    infer_schema,
    sum_statistics,
)
from fedguard.data.synthetic import (
    ATTACK_TYPES,
    CloudProfile,
    cloud_profiles,
    generate_cloud_datasets,
    generate_events,
    generate_recent_events,
    synthetic_schema,
    synthetic_split,
)

__all__ = [
    "ATTACK_TYPES",
    "NORMAL",
    "UNKNOWN_FAMILY",
    "CategoricalFeature",
    "CloudProfile",
    "CsvMapping",
    "Dataset",
    "FeatureSchema",
    "LocalStatistics",
    "NumericFeature",
    "attack_family",
    "check_labels",
    "cloud_profiles",
    "concat_datasets",
    "dirichlet_partition",
    "family_partition",
    "fit_schema",
    "generate_cloud_datasets",
    "generate_events",
    "generate_recent_events",
    "iid_partition",
    "infer_schema",
    "load_flow_csv",
    "load_nsl_kdd",
    "load_nsl_kdd_split",
    "nsl_kdd_schema",
    "partition_dataset",
    "read_mapping_file",
    "sum_statistics",
    "synthetic_schema",
    "synthetic_split",
]
