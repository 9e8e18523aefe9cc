"""Partitioning one dataset across simulated clients."""

from dataclasses import replace

import numpy as np
import pytest

from fedguard.data import (
    Dataset,
    dirichlet_partition,
    family_partition,
    generate_events,
    iid_partition,
    partition_dataset,
)
from fedguard.errors import ConfigError, InputError


def assert_disjoint_cover(parts: list[np.ndarray], num_rows: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == num_rows
    assert np.array_equal(np.sort(joined), np.arange(num_rows))


@pytest.fixture(scope="module")
def events() -> Dataset:
    return generate_events(3_000, seed=21)


def test_iid_is_seeded_disjoint_balanced_and_covering() -> None:
    parts = iid_partition(1_003, 4, seed=1)

    assert_disjoint_cover(parts, 1_003)
    assert sorted(len(p) for p in parts) == [250, 251, 251, 251]
    again = iid_partition(1_003, 4, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = iid_partition(1_003, 4, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0])
def test_dirichlet_is_seeded_disjoint_and_covering(
    events: Dataset, alpha: float
) -> None:
    parts = dirichlet_partition(events.labels, 5, alpha=alpha, seed=3, min_rows=10)

    assert_disjoint_cover(parts, len(events))
    assert min(len(p) for p in parts) >= 10
    again = dirichlet_partition(events.labels, 5, alpha=alpha, seed=3, min_rows=10)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_small_alpha_skews_label_mix_large_alpha_does_not(events: Dataset) -> None:
    def spread(alpha: float) -> float:
        parts = dirichlet_partition(events.labels, 5, alpha=alpha, seed=4)
        rates = [events.labels[p].mean() for p in parts]
        return float(np.ptp(rates))

    assert spread(0.1) > 0.3
    assert spread(1_000.0) < 0.05


def test_dirichlet_over_families(events: Dataset) -> None:
    assert events.families is not None
    parts = dirichlet_partition(events.families, 4, alpha=0.3, seed=5)

    assert_disjoint_cover(parts, len(events))


def test_dirichlet_tops_up_when_draws_keep_leaving_a_client_short() -> None:
    keys = np.zeros(12, dtype=np.int64)

    parts = dirichlet_partition(keys, 6, alpha=0.01, seed=0, min_rows=2)

    assert_disjoint_cover(parts, 12)
    assert [len(p) for p in parts] == [2] * 6


def test_family_partition_gives_each_client_its_own_attack_family(
    events: Dataset,
) -> None:
    assert events.families is not None
    parts = family_partition(events.families, 5, seed=6)

    assert_disjoint_cover(parts, len(events))
    attack_families = [set(events.families[p]) - {"normal"} for p in parts]
    assert all(len(f) == 1 for f in attack_families)
    assert len(set.union(*attack_families)) == 5
    normal_counts = [np.sum(events.families[p] == "normal") for p in parts]
    assert max(normal_counts) - min(normal_counts) <= 1


def test_family_partition_with_more_clients_than_families(events: Dataset) -> None:
    assert events.families is not None
    parts = family_partition(events.families, 7, seed=7)

    assert_disjoint_cover(parts, len(events))
    assert all(len(set(events.families[p]) - {"normal"}) == 1 for p in parts)


def test_family_partition_with_fewer_clients_than_families(events: Dataset) -> None:
    assert events.families is not None
    parts = family_partition(events.families, 2, seed=8)

    assert_disjoint_cover(parts, len(events))
    assert [len(set(events.families[p]) - {"normal"}) for p in parts] == [3, 2]


@pytest.mark.parametrize("strategy", ["iid", "dirichlet", "family"])
def test_partition_dataset_names_and_splits_rows(
    events: Dataset, strategy: str
) -> None:
    clients = partition_dataset(events, 3, strategy=strategy, seed=9)  # type: ignore[arg-type]

    assert [c.name for c in clients] == ["client-0", "client-1", "client-2"]
    assert sum(len(c) for c in clients) == len(events)
    assert sum(c.num_attacks for c in clients) == events.num_attacks


def test_impossible_partition_says_why() -> None:
    with pytest.raises(InputError, match=r"each of 5 clients at least 1 rows: .* 3"):
        iid_partition(3, 5, seed=0)
    with pytest.raises(InputError, match="at least 10 rows"):
        dirichlet_partition(np.zeros(30), 4, alpha=1.0, seed=0, min_rows=10)


def test_partition_argument_errors(events: Dataset) -> None:
    with pytest.raises(ConfigError, match=r"alpha must be > 0; got 0\.0"):
        dirichlet_partition(events.labels, 2, alpha=0.0, seed=0)
    with pytest.raises(ConfigError, match="num_clients must be >= 1; got 0"):
        iid_partition(10, 0, seed=0)
    with pytest.raises(ConfigError, match="strategy must be one of iid, dirichlet"):
        partition_dataset(events, 2, strategy="random")  # type: ignore[arg-type]
    without_families = replace(events.subset(np.arange(100)), families=None)
    with pytest.raises(InputError, match="has no attack families"):
        partition_dataset(without_families, 2, strategy="family")
