"""A seeded generator of flow-like security events: the embedded default dataset.

Each row looks like a summarised network flow (duration, bytes and packets each way,
connection rate, distinct ports and hosts contacted in the window, failed logins,
regularity of inter-arrival times, payload entropy, off-hours flag, protocol,
service, TCP flag pattern, direction). Normal traffic mixes several kinds (web, DNS,
internal services, administration) including benign look-alikes of attacks (backups
move as many bytes as an exfiltration, health checks are as regular as a beacon, an
asset inventory sweeps ports like a scan). Five attack types are generated: port
scan, brute force, exfiltration, denial of service and C2 beaconing, and a share of
attack rows is "stealthy": some of their measurements are drawn from normal traffic.
The overlap keeps the task learnable by logistic regression but not trivially.

Clouds differ (:class:`CloudProfile`): their attack mix, attack base rate, traffic
volume (which scales bytes, packets and rates) and share of stealthy attacks, so a
federation over them is not IID.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedguard.data.dataset import NORMAL, Dataset, concat_datasets, string_matrix
from fedguard.data.schema import CategoricalFeature, FeatureSchema, NumericFeature
from fedguard.errors import ConfigError

Rng = np.random.Generator
Column = NDArray[Any]
Sampler = Callable[[Rng, int], NDArray[np.float64] | NDArray[np.str_]]

ATTACK_TYPES: tuple[str, ...] = (
    "port_scan", "brute_force", "exfiltration", "dos", "c2_beaconing",
)  # fmt: skip

NUMERIC_COLUMNS: tuple[str, ...] = (
    "duration", "bytes_out", "bytes_in", "packets_out", "packets_in", "conn_rate",
    "distinct_ports", "distinct_hosts", "failed_logins", "interval_cv", "off_hours",
    "payload_entropy",
)  # fmt: skip
CATEGORICAL_COLUMNS: tuple[str, ...] = ("protocol", "service", "flag", "direction")

PROTOCOLS: tuple[str, ...] = ("tcp", "udp", "icmp")
SERVICES: tuple[str, ...] = (
    "http", "https", "ssh", "rdp", "dns", "smtp", "ftp", "smb", "ntp", "other",
)  # fmt: skip
FLAGS: tuple[str, ...] = ("SF", "S0", "S1", "REJ", "RSTO", "RSTR", "SH", "OTH")
DIRECTIONS: tuple[str, ...] = ("inbound", "outbound", "internal")

# Heavy-tailed measurements; interval_cv, off_hours and payload_entropy are bounded.
LOG1P_COLUMNS: frozenset[str] = frozenset(NUMERIC_COLUMNS[:9])


def _lognormal(mu: float, sigma: float) -> Sampler:
    return lambda rng, n: rng.lognormal(mu, sigma, n)


def _normal(mu: float, sigma: float, low: float, high: float) -> Sampler:
    return lambda rng, n: np.clip(rng.normal(mu, sigma, n), low, high)


def _count(mu: float, sigma: float, minimum: int = 0) -> Sampler:
    """A rounded lognormal count, at least ``minimum``."""
    return lambda rng, n: np.maximum(np.rint(rng.lognormal(mu, sigma, n)), minimum)


def _poisson(lam: float) -> Sampler:
    return lambda rng, n: rng.poisson(lam, n).astype(np.float64)


def _bernoulli(p: float) -> Sampler:
    return lambda rng, n: (rng.random(n) < p).astype(np.float64)


def _choice(weights: Mapping[str, float]) -> Sampler:
    values = list(weights)
    p = np.array(list(weights.values()))
    return lambda rng, n: rng.choice(values, size=n, p=p / p.sum()).astype(np.str_)


# One entry per kind of traffic: a sampler for every column except the packet
# counts, which follow from the byte counts.
_KINDS: dict[str, dict[str, Sampler]] = {
    "web": {
        "duration": _lognormal(0.5, 1.0),
        "bytes_out": _lognormal(7, 1),
        "bytes_in": _lognormal(10, 1.5),
        "conn_rate": _lognormal(1.2, 0.8),
        "distinct_ports": _count(0, 0.5, 1),
        "distinct_hosts": _count(1.5, 0.7, 1),
        "failed_logins": _poisson(0.02),
        "interval_cv": _normal(1.0, 0.35, 0, 4),
        "off_hours": _bernoulli(0.15),
        "payload_entropy": _normal(7.2, 0.6, 0, 8),
        "protocol": _choice({"tcp": 1}),
        "service": _choice({"https": 0.75, "http": 0.25}),
        "flag": _choice({"SF": 0.92, "RSTO": 0.04, "RSTR": 0.04}),
        "direction": _choice({"outbound": 1}),
    },
    "dns": {
        "duration": _lognormal(-3, 0.5),
        "bytes_out": _lognormal(4.2, 0.3),
        "bytes_in": _lognormal(5, 0.5),
        "conn_rate": _lognormal(2, 0.8),
        "distinct_ports": _count(0, 0.1, 1),
        "distinct_hosts": _count(0.5, 0.5, 1),
        "failed_logins": _poisson(0),
        "interval_cv": _normal(1.0, 0.4, 0, 4),
        "off_hours": _bernoulli(0.2),
        "payload_entropy": _normal(4.5, 0.6, 0, 8),
        "protocol": _choice({"udp": 1}),
        "service": _choice({"dns": 1}),
        "flag": _choice({"SF": 1}),
        "direction": _choice({"outbound": 1}),
    },
    "internal": {
        "duration": _lognormal(1, 1.5),
        "bytes_out": _lognormal(8, 2),
        "bytes_in": _lognormal(9, 2),
        "conn_rate": _lognormal(1, 1),
        "distinct_ports": _count(0.3, 0.6, 1),
        "distinct_hosts": _count(1, 0.8, 1),
        "failed_logins": _poisson(0.05),
        "interval_cv": _normal(1.0, 0.4, 0, 4),
        "off_hours": _bernoulli(0.2),
        "payload_entropy": _normal(6, 1.2, 0, 8),
        "protocol": _choice({"tcp": 0.9, "udp": 0.1}),
        "service": _choice(
            {
                "smb": 0.3,
                "http": 0.2,
                "ssh": 0.15,
                "rdp": 0.1,
                "ntp": 0.1,
                "smtp": 0.1,
                "other": 0.05,
            }
        ),
        "flag": _choice({"SF": 0.93, "REJ": 0.03, "S0": 0.02, "S1": 0.02}),
        "direction": _choice({"internal": 1}),
    },
    "admin": {
        "duration": _lognormal(5, 1.2),
        "bytes_out": _lognormal(9, 1.2),
        "bytes_in": _lognormal(8, 1.2),
        "conn_rate": _lognormal(0, 0.7),
        "distinct_ports": _count(0, 0.1, 1),
        "distinct_hosts": _count(0.3, 0.5, 1),
        "failed_logins": _poisson(0.6),
        "interval_cv": _normal(1.0, 0.5, 0, 4),
        "off_hours": _bernoulli(0.25),
        "payload_entropy": _normal(7.5, 0.3, 0, 8),
        "protocol": _choice({"tcp": 1}),
        "service": _choice({"ssh": 0.6, "rdp": 0.4}),
        "flag": _choice({"SF": 0.9, "RSTO": 0.1}),
        "direction": _choice({"inbound": 0.7, "internal": 0.3}),
    },
    "backup": {
        "duration": _lognormal(6, 1),
        "bytes_out": _lognormal(15.5, 1.3),
        "bytes_in": _lognormal(9, 1),
        "conn_rate": _lognormal(-0.5, 0.5),
        "distinct_ports": _count(0, 0.1, 1),
        "distinct_hosts": _count(0, 0.2, 1),
        "failed_logins": _poisson(0),
        "interval_cv": _normal(0.6, 0.3, 0, 4),
        "off_hours": _bernoulli(0.7),
        "payload_entropy": _normal(7.8, 0.2, 0, 8),
        "protocol": _choice({"tcp": 1}),
        "service": _choice({"https": 0.5, "ftp": 0.2, "smb": 0.3}),
        "flag": _choice({"SF": 1}),
        "direction": _choice({"outbound": 1}),
    },
    "monitoring": {
        "duration": _lognormal(-1, 0.5),
        "bytes_out": _lognormal(6, 0.4),
        "bytes_in": _lognormal(7, 0.5),
        "conn_rate": _lognormal(0.7, 0.4),
        "distinct_ports": _count(0, 0.1, 1),
        "distinct_hosts": _count(0.5, 0.5, 1),
        "failed_logins": _poisson(0),
        "interval_cv": _normal(0.15, 0.08, 0, 4),
        "off_hours": _bernoulli(0.3),
        "payload_entropy": _normal(6, 1, 0, 8),
        "protocol": _choice({"tcp": 0.8, "udp": 0.2}),
        "service": _choice({"https": 0.5, "http": 0.3, "ntp": 0.2}),
        "flag": _choice({"SF": 1}),
        "direction": _choice({"outbound": 0.5, "internal": 0.5}),
    },
    "discovery": {
        "duration": _lognormal(-3, 1),
        "bytes_out": _lognormal(4.5, 0.5),
        "bytes_in": _lognormal(3, 1.5),
        "conn_rate": _lognormal(2.5, 1),
        "distinct_ports": _count(2.5, 1, 1),
        "distinct_hosts": _count(2.5, 1, 1),
        "failed_logins": _poisson(0),
        "interval_cv": _normal(0.6, 0.4, 0, 4),
        "off_hours": _bernoulli(0.5),
        "payload_entropy": _normal(3, 1.2, 0, 8),
        "protocol": _choice({"tcp": 0.8, "udp": 0.1, "icmp": 0.1}),
        "service": _choice({"other": 0.5, "http": 0.2, "smb": 0.15, "ssh": 0.15}),
        "flag": _choice({"S0": 0.3, "REJ": 0.3, "SF": 0.3, "RSTR": 0.1}),
        "direction": _choice({"internal": 1}),
    },
    "port_scan": {
        "duration": _lognormal(-4, 1),
        "bytes_out": _lognormal(4, 0.3),
        "bytes_in": _lognormal(2, 1.5),
        "conn_rate": _lognormal(3.5, 1),
        "distinct_ports": _count(3.5, 1.2, 1),
        "distinct_hosts": _count(1, 1, 1),
        "failed_logins": _poisson(0),
        "interval_cv": _normal(0.5, 0.4, 0, 4),
        "off_hours": _bernoulli(0.4),
        "payload_entropy": _normal(2, 1, 0, 8),
        "protocol": _choice({"tcp": 0.9, "udp": 0.1}),
        "service": _choice(
            {"other": 0.6, "http": 0.1, "ssh": 0.1, "smb": 0.1, "rdp": 0.1}
        ),
        "flag": _choice({"S0": 0.45, "REJ": 0.35, "RSTR": 0.1, "SF": 0.1}),
        "direction": _choice({"inbound": 0.8, "internal": 0.2}),
    },
    "brute_force": {
        "duration": _lognormal(0, 0.8),
        "bytes_out": _lognormal(7, 0.6),
        "bytes_in": _lognormal(7.5, 0.6),
        "conn_rate": _lognormal(2.5, 0.8),
        "distinct_ports": _count(0, 0.1, 1),
        "distinct_hosts": _count(0.2, 0.4, 1),
        "failed_logins": _poisson(6),
        "interval_cv": _normal(0.6, 0.3, 0, 4),
        "off_hours": _bernoulli(0.5),
        "payload_entropy": _normal(7.3, 0.4, 0, 8),
        "protocol": _choice({"tcp": 1}),
        "service": _choice({"ssh": 0.5, "rdp": 0.3, "ftp": 0.2}),
        "flag": _choice({"SF": 0.6, "RSTO": 0.4}),
        "direction": _choice({"inbound": 1}),
    },
    "exfiltration": {
        "duration": _lognormal(5, 1.2),
        "bytes_out": _lognormal(15.5, 1.5),
        "bytes_in": _lognormal(8, 1.2),
        "conn_rate": _lognormal(0, 0.8),
        "distinct_ports": _count(0, 0.1, 1),
        "distinct_hosts": _count(0, 0.2, 1),
        "failed_logins": _poisson(0),
        "interval_cv": _normal(0.8, 0.4, 0, 4),
        "off_hours": _bernoulli(0.65),
        "payload_entropy": _normal(7.8, 0.2, 0, 8),
        "protocol": _choice({"tcp": 0.85, "udp": 0.15}),
        "service": _choice({"https": 0.5, "dns": 0.2, "ftp": 0.15, "other": 0.15}),
        "flag": _choice({"SF": 1}),
        "direction": _choice({"outbound": 1}),
    },
    "dos": {
        "duration": _lognormal(-3, 1.2),
        "bytes_out": _lognormal(5, 1),
        "bytes_in": _lognormal(3, 2),
        "conn_rate": _lognormal(5.5, 1.2),
        "distinct_ports": _count(0, 0.1, 1),
        "distinct_hosts": _count(0, 0.3, 1),
        "failed_logins": _poisson(0),
        "interval_cv": _normal(0.3, 0.2, 0, 4),
        "off_hours": _bernoulli(0.3),
        "payload_entropy": _normal(3, 1.5, 0, 8),
        "protocol": _choice({"tcp": 0.8, "udp": 0.15, "icmp": 0.05}),
        "service": _choice({"http": 0.6, "https": 0.3, "other": 0.1}),
        "flag": _choice({"S0": 0.5, "SF": 0.3, "RSTO": 0.1, "OTH": 0.1}),
        "direction": _choice({"inbound": 1}),
    },
    "c2_beaconing": {
        "duration": _lognormal(0, 0.7),
        "bytes_out": _lognormal(6.5, 0.5),
        "bytes_in": _lognormal(6.5, 0.7),
        "conn_rate": _lognormal(0.5, 0.5),
        "distinct_ports": _count(0, 0.1, 1),
        "distinct_hosts": _count(0, 0.2, 1),
        "failed_logins": _poisson(0),
        "interval_cv": _normal(0.12, 0.07, 0, 4),
        "off_hours": _bernoulli(0.5),
        "payload_entropy": _normal(7.6, 0.3, 0, 8),
        "protocol": _choice({"tcp": 0.8, "udp": 0.2}),
        "service": _choice({"https": 0.6, "dns": 0.25, "http": 0.15}),
        "flag": _choice({"SF": 1}),
        "direction": _choice({"outbound": 1}),
    },
}

# Share of each kind within normal traffic.
_NORMAL_MIX: dict[str, float] = {
    "web": 0.45, "dns": 0.15, "internal": 0.2, "admin": 0.05, "backup": 0.05,
    "monitoring": 0.06, "discovery": 0.04,
}  # fmt: skip

# Fraction of a stealthy attack's numeric measurements drawn from normal traffic.
_CAMOUFLAGE = 0.5


@dataclass(frozen=True)
class CloudProfile:
    """How one cloud's traffic is biased.

    Attributes
    ----------
    name
        The cloud's name (also the name of the datasets generated for it).
    attack_rate
        Share of rows that are attacks, in [0, 1].
    attack_mix
        Relative frequency of each attack type (normalised; missing types are 0).
    volume_scale
        Factor applied to bytes, packets and connection rates of every row.
    stealth
        Share of attack rows whose measurements are partly drawn from normal traffic.
    """

    name: str = "default"
    attack_rate: float = 0.3
    attack_mix: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(dict.fromkeys(ATTACK_TYPES, 1.0))
    )
    volume_scale: float = 1.0
    stealth: float = 0.3

    def __post_init__(self) -> None:
        for name, value in (
            ("attack_rate", self.attack_rate),
            ("stealth", self.stealth),
        ):
            if not 0 <= value <= 1:
                raise ConfigError(f"{name} must be in [0, 1]; got {value}")
        if not self.volume_scale > 0:
            raise ConfigError(f"volume_scale must be > 0; got {self.volume_scale}")
        unknown = sorted(set(self.attack_mix) - set(ATTACK_TYPES))
        if unknown:
            raise ConfigError(
                f"attack_mix keys must be among {', '.join(ATTACK_TYPES)}; "
                f"got {unknown}"
            )
        if not sum(self.attack_mix.values()) > 0 or min(self.attack_mix.values()) < 0:
            raise ConfigError("attack_mix weights must be >= 0 with a positive sum")

    def attack_probabilities(self) -> NDArray[np.float64]:
        """The attack mix as probabilities in :data:`ATTACK_TYPES` order."""
        weights = np.array([self.attack_mix.get(a, 0.0) for a in ATTACK_TYPES])
        return np.asarray(weights / weights.sum(), dtype=np.float64)


DEFAULT_PROFILE = CloudProfile()


def cloud_profiles(num_clouds: int, *, seed: int) -> list[CloudProfile]:
    """Deterministic, differently biased profiles ``cloud-0`` … ``cloud-{n-1}``.

    Attack mixes are drawn from a Dirichlet(0.6) (each cloud sees mostly one or two
    attack types), attack rates from U(0.1, 0.4), traffic volume scales from a
    log-normal with σ = 0.5 and stealth shares from U(0.15, 0.45).
    """
    if num_clouds < 1:
        raise ConfigError(f"num_clouds must be >= 1; got {num_clouds}")
    rng = _rng(seed, 0)
    profiles = []
    for index in range(num_clouds):
        mix = rng.dirichlet(np.full(len(ATTACK_TYPES), 0.6))
        profiles.append(
            CloudProfile(
                name=f"cloud-{index}",
                attack_rate=float(rng.uniform(0.1, 0.4)),
                attack_mix=MappingProxyType(
                    dict(zip(ATTACK_TYPES, mix.tolist(), strict=True))
                ),
                volume_scale=float(rng.lognormal(0, 0.5)),
                stealth=float(rng.uniform(0.15, 0.45)),
            )
        )
    return profiles


def generate_events(
    num_rows: int, *, seed: int, profile: CloudProfile = DEFAULT_PROFILE
) -> Dataset:
    """``num_rows`` shuffled events of one cloud, ``round(num_rows · attack_rate)``
    of them attacks."""
    if num_rows < 0:
        raise ConfigError(f"num_rows must be >= 0; got {num_rows}")
    rng = _rng(seed, 1)
    num_attacks = round(num_rows * profile.attack_rate)

    normal_kinds = rng.choice(
        list(_NORMAL_MIX), size=num_rows - num_attacks, p=_probabilities(_NORMAL_MIX)
    )
    attack_kinds = rng.choice(
        list(ATTACK_TYPES), size=num_attacks, p=profile.attack_probabilities()
    )
    dataset = _generate(rng, normal_kinds, attack_kinds, profile)
    return dataset.subset(rng.permutation(len(dataset)), name=profile.name)


def generate_recent_events(
    profile: CloudProfile,
    num_events: int,
    *,
    seed: int,
    extra_attacks: int = 0,
    burst_attack: str | None = None,
) -> Dataset:
    """A cloud's recent events to score, optionally with an attack burst on top.

    The first part is ``num_events`` ordinary events of ``profile``; then
    ``extra_attacks`` rows of ``burst_attack`` (default: the cloud's most frequent
    attack type) are added, all shuffled together. A burst raises the cloud's
    threat rate so that a rate policy has something to fire on.
    """
    if extra_attacks < 0:
        raise ConfigError(f"extra_attacks must be >= 0; got {extra_attacks}")
    if burst_attack is None:
        burst_attack = ATTACK_TYPES[int(np.argmax(profile.attack_probabilities()))]
    if burst_attack not in ATTACK_TYPES:
        raise ConfigError(
            f"burst_attack must be one of {', '.join(ATTACK_TYPES)}; "
            f"got {burst_attack!r}"
        )

    ordinary = generate_events(num_events, seed=seed, profile=profile)
    rng = _rng(seed, 2)
    kinds = np.full(extra_attacks, burst_attack)
    burst = _generate(rng, np.array([], dtype=np.str_), kinds, profile)
    events = concat_datasets([ordinary, burst], name=profile.name)
    return events.subset(rng.permutation(len(events)))


def generate_cloud_datasets(
    num_clouds: int, rows_per_cloud: int, *, seed: int
) -> list[Dataset]:
    """One dataset per profile of :func:`cloud_profiles` (same ``seed``)."""
    profiles = cloud_profiles(num_clouds, seed=seed)
    return [
        generate_events(rows_per_cloud, seed=_child_seed(seed, index), profile=p)
        for index, p in enumerate(profiles)
    ]


def synthetic_split(
    train_rows: int = 20_000, test_rows: int = 5_000, *, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Independent train and test sets from the default (mixed) profile."""
    train = generate_events(train_rows, seed=_child_seed(seed, 0))
    test = generate_events(test_rows, seed=_child_seed(seed, 1))
    return train, test


def synthetic_schema() -> FeatureSchema:
    """The unfitted feature schema of the synthetic events (fixed vocabularies)."""
    numeric = tuple(
        NumericFeature(name, "log1p" if name in LOG1P_COLUMNS else "identity")
        for name in NUMERIC_COLUMNS
    )
    categorical = (
        CategoricalFeature("protocol", PROTOCOLS),
        CategoricalFeature("service", SERVICES),
        CategoricalFeature("flag", FLAGS),
        CategoricalFeature("direction", DIRECTIONS),
    )
    return FeatureSchema(name="synthetic", numeric=numeric, categorical=categorical)


def _generate(
    rng: Rng,
    normal_kinds: NDArray[np.str_],
    attack_kinds: NDArray[np.str_],
    profile: CloudProfile,
) -> Dataset:
    """Rows for the given kinds, in that order (normal ones first)."""
    kinds = np.concatenate([normal_kinds, attack_kinds]).astype(np.str_)
    columns = _sample_columns(rng, kinds)
    is_attack = np.isin(kinds, ATTACK_TYPES)
    _camouflage(rng, columns, is_attack, profile.stealth)
    _scale_volume(columns, profile.volume_scale)
    _add_packets(rng, columns)

    numeric = np.column_stack([columns[c] for c in NUMERIC_COLUMNS]).astype(np.float64)
    categorical = string_matrix([columns[c] for c in CATEGORICAL_COLUMNS], len(kinds))
    attack_types = np.where(is_attack, kinds, NORMAL).astype(np.str_)
    return Dataset(
        numeric_columns=NUMERIC_COLUMNS,
        numeric=numeric.reshape(len(kinds), len(NUMERIC_COLUMNS)),
        categorical_columns=CATEGORICAL_COLUMNS,
        categorical=categorical,
        labels=is_attack.astype(np.int8),
        attack_types=attack_types,
        families=attack_types,
        name=profile.name,
    )


def _sample_columns(rng: Rng, kinds: NDArray[np.str_]) -> dict[str, Column]:
    """Every column but the packet counts, each kind's rows from its own samplers."""
    names = [c for c in (*NUMERIC_COLUMNS, *CATEGORICAL_COLUMNS) if "packets" not in c]
    columns: dict[str, Column] = {
        c: np.zeros(len(kinds)) for c in names if c in NUMERIC_COLUMNS
    }
    for c in CATEGORICAL_COLUMNS:
        columns[c] = np.full(len(kinds), "", dtype="<U16")
    for kind in np.unique(kinds):
        rows = np.flatnonzero(kinds == kind)
        for column in names:
            columns[column][rows] = _KINDS[str(kind)][column](rng, len(rows))
    return columns


def _camouflage(
    rng: Rng,
    columns: dict[str, Column],
    is_attack: NDArray[np.bool_],
    stealth: float,
) -> None:
    """Replace part of the stealthy attack rows' measurements with normal ones."""
    stealthy = np.flatnonzero(is_attack & (rng.random(len(is_attack)) < stealth))
    if len(stealthy) == 0:
        return
    cover = rng.choice(
        list(_NORMAL_MIX), size=len(stealthy), p=_probabilities(_NORMAL_MIX)
    )
    decoy = _sample_columns(rng, cover.astype(np.str_))
    for column in NUMERIC_COLUMNS:
        if "packets" in column:
            continue
        swap = rng.random(len(stealthy)) < _CAMOUFLAGE
        columns[column][stealthy[swap]] = decoy[column][swap]


def _scale_volume(columns: dict[str, Column], scale: float) -> None:
    for column in ("bytes_out", "bytes_in", "conn_rate"):
        columns[column] = columns[column] * scale
    for column in ("bytes_out", "bytes_in"):
        columns[column] = np.rint(columns[column])


def _add_packets(rng: Rng, columns: dict[str, Column]) -> None:
    """Packet counts follow from bytes and a typical packet size."""
    rows = len(columns["bytes_out"])
    columns["packets_out"] = 1 + np.floor(
        columns["bytes_out"] / rng.lognormal(6.5, 0.4, rows)
    )
    columns["packets_in"] = np.floor(
        columns["bytes_in"] / rng.lognormal(6.8, 0.4, rows)
    )


def _probabilities(weights: Mapping[str, float]) -> NDArray[np.float64]:
    values = np.array(list(weights.values()), dtype=np.float64)
    return np.asarray(values / values.sum(), dtype=np.float64)


def _rng(seed: int, stream: int) -> Rng:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _child_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, 1000 + index]).generate_state(1)[0])
