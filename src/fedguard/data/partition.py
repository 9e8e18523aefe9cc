"""Splitting one dataset across simulated clients, IID or deliberately skewed.

Real federations are not IID: every cloud sees its own mix of traffic and attacks.
Three seeded strategies return disjoint index arrays that together cover every row
and give every client at least ``min_rows`` rows:

* ``iid``: a random permutation cut into near-equal parts.
* ``dirichlet``: for every class (binary label, or attack family), the shares of the
  clients are drawn from Dirichlet(α) (T.-M. H. Hsu, H. Qi and M. Brown, "Measuring
  the Effects of Non-Identical Data Distribution for Federated Visual
  Classification", 2019). Small α gives very skewed clients, large α nearly IID.
* ``family``: each attack family goes to one client (round robin when there are more
  families than clients, shared when there are more clients), normal rows are
  spread IID, so every cloud sees its own kind of attack.
"""

import logging
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fedguard.data.dataset import NORMAL, Dataset
from fedguard.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

Strategy = Literal["iid", "dirichlet", "family"]
STRATEGIES: tuple[str, ...] = ("iid", "dirichlet", "family")
PartitionKey = Literal["label", "family"]
PARTITION_KEYS: tuple[str, ...] = ("label", "family")

Indices = NDArray[np.int64]

# Redraws of a Dirichlet split that left a client short before rows are moved.
_MAX_DRAWS = 20


def iid_partition(num_rows: int, num_clients: int, *, seed: int) -> list[Indices]:
    """A random permutation of ``range(num_rows)`` cut into near-equal parts."""
    _check_sizes(num_rows, num_clients, min_rows=1)
    order = np.random.default_rng(seed).permutation(num_rows)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet_partition(
    keys: NDArray[np.generic],
    num_clients: int,
    *,
    alpha: float,
    seed: int,
    min_rows: int = 1,
) -> list[Indices]:
    """Per-class client shares drawn from Dirichlet(``alpha``).

    ``keys`` holds each row's class (labels or families). When a draw leaves a
    client with fewer than ``min_rows`` rows it is redrawn; after a bounded number of
    draws the shortest clients take rows from the largest one, so the call always
    succeeds when ``len(keys) >= num_clients * min_rows``.
    """
    if not alpha > 0:
        raise ConfigError(f"alpha must be > 0; got {alpha}")
    _check_sizes(len(keys), num_clients, min_rows=min_rows)
    rng = np.random.default_rng(seed)

    parts = _dirichlet_draw(rng, keys, num_clients, alpha)
    for _ in range(_MAX_DRAWS - 1):
        if min(len(p) for p in parts) >= min_rows:
            break
        parts = _dirichlet_draw(rng, keys, num_clients, alpha)
    else:
        parts = _top_up(parts, min_rows)
    return [np.sort(p) for p in parts]


def family_partition(
    families: NDArray[np.str_], num_clients: int, *, seed: int, min_rows: int = 1
) -> list[Indices]:
    """One attack family per client; normal rows spread IID over all clients."""
    _check_sizes(len(families), num_clients, min_rows=min_rows)
    rng = np.random.default_rng(seed)
    attack_families = sorted(set(np.unique(families).tolist()) - {NORMAL})
    parts: list[list[Indices]] = [[] for _ in range(num_clients)]

    normal = rng.permutation(np.flatnonzero(families == NORMAL))
    for client, chunk in enumerate(np.array_split(normal, num_clients)):
        parts[client].append(chunk)

    # With more clients than families, the clients that share a family split it.
    owners = _family_owners(len(attack_families), num_clients)
    for family, clients in zip(attack_families, owners, strict=True):
        rows = rng.permutation(np.flatnonzero(families == family))
        for client, chunk in zip(
            clients, np.array_split(rows, len(clients)), strict=True
        ):
            parts[client].append(chunk)

    merged = [np.concatenate(p).astype(np.int64) for p in parts]
    if min(len(p) for p in merged) < min_rows:
        merged = _top_up(merged, min_rows)
    return [np.sort(p) for p in merged]


def partition_dataset(
    dataset: Dataset,
    num_clients: int,
    *,
    strategy: Strategy = "iid",
    seed: int = 0,
    alpha: float = 0.5,
    by: PartitionKey = "label",
    min_rows: int = 1,
) -> list[Dataset]:
    """Split ``dataset`` into ``num_clients`` datasets named ``client-0`` … .

    ``by`` picks the class used by the ``dirichlet`` strategy; ``family`` (and
    ``by="family"``) needs :attr:`Dataset.families`.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}"
        )
    if by not in PARTITION_KEYS:
        raise ConfigError(f"by must be one of {', '.join(PARTITION_KEYS)}; got {by!r}")

    if strategy == "iid":
        parts = iid_partition(len(dataset), num_clients, seed=seed)
    elif strategy == "dirichlet":
        keys = dataset.labels if by == "label" else _families(dataset)
        parts = dirichlet_partition(
            keys, num_clients, alpha=alpha, seed=seed, min_rows=min_rows
        )
    else:
        parts = family_partition(
            _families(dataset), num_clients, seed=seed, min_rows=min_rows
        )
    return [dataset.subset(p, name=f"client-{i}") for i, p in enumerate(parts)]


def _dirichlet_draw(
    rng: np.random.Generator,
    keys: NDArray[np.generic],
    num_clients: int,
    alpha: float,
) -> list[Indices]:
    parts: list[list[Indices]] = [[] for _ in range(num_clients)]
    for value in np.unique(keys):
        rows = rng.permutation(np.flatnonzero(keys == value))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(np.int64)
        for client, chunk in enumerate(np.split(rows, cuts)):
            parts[client].append(chunk)
    return [np.concatenate(p).astype(np.int64) for p in parts]


def _top_up(parts: list[Indices], min_rows: int) -> list[Indices]:
    """Move rows from the largest client to those below ``min_rows``.

    Each pass moves at least one row and lowers the total shortfall, and the caller
    checked that there are enough rows, so the loop ends.
    """
    parts = [p.copy() for p in parts]
    while True:
        sizes = [len(p) for p in parts]
        needy = int(np.argmin(sizes))
        missing = min_rows - sizes[needy]
        if missing <= 0:
            break
        donor = int(np.argmax(sizes))
        moved = min(missing, sizes[donor] - min_rows)
        parts[needy] = np.concatenate([parts[needy], parts[donor][-moved:]])
        parts[donor] = parts[donor][:-moved]
    logger.debug("partition topped up clients to %d rows each", min_rows)
    return parts


def _family_owners(num_families: int, num_clients: int) -> list[list[int]]:
    """Which clients receive each family."""
    if num_families == 0:
        return []
    owners: list[list[int]] = [[] for _ in range(num_families)]
    for client in range(max(num_families, num_clients)):
        owners[client % num_families].append(client % num_clients)
    return [sorted(set(o)) for o in owners]


def _families(dataset: Dataset) -> NDArray[np.str_]:
    if dataset.families is None:
        raise InputError(
            f"dataset {dataset.name!r} has no attack families; load it with "
            "families=True to partition by family"
        )
    return dataset.families


def _check_sizes(num_rows: int, num_clients: int, *, min_rows: int) -> None:
    if num_clients < 1:
        raise ConfigError(f"num_clients must be >= 1; got {num_clients}")
    if min_rows < 1:
        raise ConfigError(f"min_rows must be >= 1; got {min_rows}")
    if num_rows < num_clients * min_rows:
        raise InputError(
            f"cannot give each of {num_clients} clients at least {min_rows} rows: "
            f"the dataset has only {num_rows} rows"
        )
