"""The agent's local data: which rows it trains on and which it holds out.

An agent reads one of:

* ``nsl-kdd``: an NSL-KDD file from ``data_dir`` (``KDDTrain+.txt`` by default),
  cut into ``clients`` parts by a seeded partition (``iid``, ``dirichlet:ALPHA`` or
  ``by-family``); the agent keeps part ``index``. Every agent of a simulated
  federation computes the same partition from the same seed, so the parts are
  disjoint without any coordination.
* ``synthetic``: the rows of synthetic cloud ``index`` (its own attack mix, base
  rate and volume, see :mod:`fedguard.data.synthetic`), generated from ``seed``.
* ``csv``: a labelled flow CSV read through a column mapping (TOML file).

A seeded share of the rows (``holdout``) is kept aside: the agent evaluates each
global model on it and reports only encrypted counts. The recent events it scores
each round (and any attack burst among them) come from :mod:`fedguard.client.events`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fedguard.client.events import (
    AttackBurst,
    HeldOutEvents,
    RecentEvents,
    SyntheticEvents,
)
from fedguard.data.dataset import Dataset
from fedguard.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

DATASETS = ("nsl-kdd", "synthetic", "csv")
DEFAULT_NSL_KDD_FILE = "KDDTrain+.txt"
DEFAULT_SYNTHETIC_ROWS = 20_000
DEFAULT_HOLDOUT = 0.1


@dataclass(frozen=True)
class Partition:
    """How one dataset is split among simulated clients."""

    strategy: str
    alpha: float = 0.5

    @classmethod
    def parse(cls, text: str) -> Partition:
        """``iid``, ``dirichlet:ALPHA`` (e.g. ``dirichlet:0.5``) or ``by-family``."""
        if text in ("iid", "by-family"):
            return cls("family" if text == "by-family" else "iid")
        name, _, value = text.partition(":")
        if name == "dirichlet":
            try:
                alpha = float(value) if value else 0.5
            except ValueError:
                alpha = -1.0
            if alpha > 0 and np.isfinite(alpha):
                return cls("dirichlet", alpha)
        raise ConfigError(
            "partition must be iid, dirichlet:ALPHA with ALPHA > 0 (e.g. "
            f"dirichlet:0.5) or by-family; got {text!r}"
        )

    def __str__(self) -> str:
        if self.strategy == "dirichlet":
            return f"dirichlet:{self.alpha:g}"
        return "by-family" if self.strategy == "family" else "iid"


@dataclass(frozen=True)
class DataSource:
    """Where an agent's rows come from (see the module docstring)."""

    dataset: str
    index: int = 0
    clients: int = 1
    seed: int = 0
    data_dir: Path | None = None
    data_file: str | None = None
    mapping_file: Path | None = None
    partition: Partition = Partition("iid")
    rows: int = DEFAULT_SYNTHETIC_ROWS
    holdout: float = DEFAULT_HOLDOUT
    bursts: tuple[AttackBurst, ...] = ()

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(
                f"dataset must be one of {', '.join(DATASETS)}; got {self.dataset!r}"
            )
        if self.clients < 1:
            raise ConfigError(f"clients must be >= 1; got {self.clients}")
        if not 0 <= self.index < self.clients:
            raise ConfigError(
                f"index must be in [0, {self.clients - 1}] (clients - 1); "
                f"got {self.index}"
            )
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"holdout must be in [0, 1); got {self.holdout}")
        if self.rows < 10:
            raise ConfigError(f"rows must be >= 10; got {self.rows}")


@dataclass(frozen=True)
class LocalData:
    """The rows an agent trains on, evaluates on, and the events it scores.

    Without ``recent`` the agent scores its held-out rows every round.
    """

    train: Dataset
    holdout: Dataset
    recent: RecentEvents | None = None

    def recent_events(self, round_id: int) -> Dataset:
        """The events the agent scores in ``round_id``, bursts included."""
        if self.recent is None:
            return self.holdout
        return self.recent.for_round(round_id)


def load_local_data(source: DataSource) -> LocalData:
    """Read, partition and split the agent's rows.

    Refuses data an agent cannot train on (no rows, no training rows left after
    the hold-out, a CSV mapping that matches no row) with an error naming the
    file, before the agent contacts anyone.
    """
    if source.dataset == "nsl-kdd":
        rows = _nsl_kdd_part(source)
    elif source.dataset == "synthetic":
        rows = _synthetic_cloud(source)
    else:
        rows = _mapped_csv(source)

    local = split_holdout(rows, source.holdout, seed=source.seed + source.index)
    if len(local.train) == 0:
        raise ConfigError(
            f"holdout {source.holdout} leaves no training rows of the {len(rows)} "
            f"in {rows.name}; lower --holdout or use more data"
        )
    return replace(local, recent=recent_events(source, local))


def recent_events(source: DataSource, local: LocalData) -> RecentEvents:
    """Fresh synthetic events per round, or the held-out rows of a file."""
    # A seed of its own, so that recent events never repeat the training rows.
    seed = int(
        np.random.SeedSequence([source.seed, 3000 + source.index]).generate_state(1)[0]
    )
    if source.dataset == "synthetic":
        from fedguard.data.synthetic import cloud_profiles

        profile = cloud_profiles(source.index + 1, seed=source.seed)[source.index]
        return SyntheticEvents(profile, len(local.holdout), source.bursts, seed=seed)

    return HeldOutEvents(local.holdout, local.train, source.bursts, seed=seed)


def split_holdout(rows: Dataset, fraction: float, *, seed: int) -> LocalData:
    """A seeded random split into training and held-out rows."""
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = round(len(rows) * fraction)
    return LocalData(
        train=rows.subset(np.sort(order[cut:])),
        holdout=rows.subset(np.sort(order[:cut])),
    )


def _nsl_kdd_part(source: DataSource) -> Dataset:
    from fedguard.data.nsl_kdd import find_nsl_kdd_file, load_nsl_kdd
    from fedguard.data.partition import partition_dataset

    if source.data_dir is None:
        raise ConfigError("--data-dir is required with --dataset nsl-kdd")
    path = find_nsl_kdd_file(source.data_dir, source.data_file or DEFAULT_NSL_KDD_FILE)
    everything = load_nsl_kdd(path, families=True)
    parts = partition_dataset(
        everything,
        source.clients,
        strategy=source.partition.strategy,  # type: ignore[arg-type]
        seed=source.seed,
        alpha=source.partition.alpha,
    )
    part = parts[source.index]
    if len(part) == 0:
        raise InputError(
            f"part {source.index} of the {source.clients}-way {source.partition} "
            f"partition of {path} holds no rows; use fewer --clients or another "
            "--partition"
        )
    return part


def _synthetic_cloud(source: DataSource) -> Dataset:
    from fedguard.data.synthetic import generate_cloud_datasets

    clouds = generate_cloud_datasets(source.index + 1, source.rows, seed=source.seed)
    return clouds[source.index]


def _mapped_csv(source: DataSource) -> Dataset:
    from fedguard.data.flow_csv import check_labels, load_flow_csv, read_mapping_file

    if source.data_file is None or source.mapping_file is None:
        raise ConfigError("--data-file and --mapping are required with --dataset csv")
    mapping = read_mapping_file(source.mapping_file)
    rows = load_flow_csv(source.data_file, mapping)
    check_labels(rows, mapping, f"data file {source.data_file}")
    return rows
