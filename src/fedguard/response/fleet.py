"""Fleet threat metrics from encrypted, summed per-agent counts.

After each round every agent evaluates the new global model on its held-out data and
scores its recent events. It reports *counts*, never rates: the confusion counts of the
evaluation (``tp``, ``fp``, ``tn``, ``fn``), how many recent events it scored and how
many it flagged, and the same two counts per attack family where its labels allow. The
counts are packed and encrypted like a model update, the server multiplies the
ciphertexts and decrypts only the sums, so it learns fleet-wide rates and no figure of
any single agent.

The metrics vector has a fixed layout (:class:`MetricsLayout`)::

    index  name
    0      tp                 held-out evaluation: attacks flagged
    1      fp                 held-out evaluation: benign events flagged
    2      tn                 held-out evaluation: benign events passed
    3      fn                 held-out evaluation: attacks missed
    4      scored             recent events scored
    5      flagged            recent events flagged (score >= alert threshold)
    6+2i   scored.<family>    recent events labelled with attack family i
    7+2i   flagged.<family>   of those, the ones flagged

Exact integer counts through the packing codec
----------------------------------------------
The codec carries real values: each is clipped to ``±clip``, multiplied by a weight in
``[0, 1]``, quantized to a multiple of ``2**-scale_bits`` and summed slot-wise. A count
``c`` with ``0 <= c <= count_cap`` travels as ``c / count_cap`` with weight 1. With
``count_cap = 2**k`` and ``scale_bits >= k`` the value ``c / 2**k`` is an integer
multiple of the quantization step ``2**-scale_bits`` (the step divides
``1 / count_cap``), so quantization loses nothing, clipping at ``clip >= 1`` never
applies, and the decoded sum of N agents is exactly ``sum(c_i) / count_cap``.
Multiplying back by the power of two ``count_cap`` is exact in binary floating point
while the sum stays below ``2**53``, and rounding only removes the representation of
an integer. See ``docs/response.md``.
"""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedguard.crypto.keys import PrivateKey, PublicKey
from fedguard.crypto.packing import PackingParams
from fedguard.crypto.vectors import (
    EncryptedVector,
    EncryptionPool,
    decrypt_aggregate,
    encrypt_update,
)
from fedguard.errors import ConfigError, InputError
from fedguard.learning.metrics import ConfusionCounts

CONFUSION_FIELDS: tuple[str, ...] = ("tp", "fp", "tn", "fn")
EVENT_FIELDS: tuple[str, ...] = ("scored", "flagged")

# The attack families of NSL-KDD (Tavallaee et al., 2009), the labelled data fedguard
# ships loaders for; a federation may configure others.
DEFAULT_FAMILIES: tuple[str, ...] = ("dos", "probe", "r2l", "u2r")
DEFAULT_COUNT_CAP = 2**20

FLEET_METRICS: tuple[str, ...] = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "fpr",
    "threat_rate",
)

_FAMILY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_MAX_FAMILIES = 32
_MAX_CAP_BITS = 40


@dataclass(frozen=True)
class MetricsLayout:
    """The fixed order of the counts in the encrypted metrics vector.

    Parameters
    ----------
    families
        Attack families counted separately, in vector order.
    count_cap
        Largest count one agent may report per field, a power of two. Counts travel
        as ``count / count_cap``, so the federation's ``scale_bits`` must be at least
        ``log2(count_cap)`` (see :attr:`min_scale_bits`).
    """

    families: tuple[str, ...] = DEFAULT_FAMILIES
    count_cap: int = DEFAULT_COUNT_CAP

    def __post_init__(self) -> None:
        cap = self.count_cap
        if cap < 2 or cap & (cap - 1) or cap > 2**_MAX_CAP_BITS:
            raise ConfigError(
                f"count_cap must be a power of two in [2, 2**{_MAX_CAP_BITS}]; "
                f"got {cap!r}"
            )

        if len(self.families) > _MAX_FAMILIES:
            raise ConfigError(
                f"families must list at most {_MAX_FAMILIES} names; "
                f"got {len(self.families)}"
            )
        for family in self.families:
            if not _FAMILY_NAME.match(family):
                raise ConfigError(
                    f"family names must match [a-z][a-z0-9_]{{0,31}}; got {family!r}"
                )
        if len(set(self.families)) != len(self.families):
            raise ConfigError(f"families must be unique; got {list(self.families)!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """The count names in vector order."""
        per_family = tuple(
            f"{field}.{family}" for family in self.families for field in EVENT_FIELDS
        )
        return CONFUSION_FIELDS + EVENT_FIELDS + per_family

    @property
    def length(self) -> int:
        """Number of values in the metrics vector."""
        return len(CONFUSION_FIELDS) + len(EVENT_FIELDS) * (1 + len(self.families))

    @property
    def min_scale_bits(self) -> int:
        """Smallest ``scale_bits`` whose quantization step divides ``1 / count_cap``."""
        return self.count_cap.bit_length() - 1

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric :func:`fleet_metrics` can produce with this layout."""
        per_family = tuple(
            f"{metric}.{family}"
            for family in self.families
            for metric in ("threat_rate", "detection_rate")
        )
        return FLEET_METRICS + per_family

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description the server can publish to agents."""
        return {
            "names": list(self.names),
            "families": list(self.families),
            "count_cap": self.count_cap,
        }


def metrics_packing_params(
    layout: MetricsLayout, key_bits: int, max_contributors: int
) -> PackingParams:
    """Packing parameters that carry ``layout``'s counts exactly.

    ``clip`` 1 and ``scale_bits = log2(count_cap)``: every value ``c / count_cap``
    lies in ``[0, 1]`` and is a multiple of the quantization step.
    """
    return PackingParams(
        key_bits=key_bits,
        clip=1.0,
        scale_bits=layout.min_scale_bits,
        max_contributors=max_contributors,
    )


def check_packing(layout: MetricsLayout, packing: PackingParams) -> None:
    """Refuse packing parameters that could not carry the layout's counts exactly."""
    if packing.scale_bits < layout.min_scale_bits:
        raise ConfigError(
            f"scale_bits must be >= {layout.min_scale_bits} to carry counts up to "
            f"count_cap {layout.count_cap} exactly; got {packing.scale_bits}"
        )
    if packing.clip < 1.0:
        raise ConfigError(
            f"clip must be >= 1 to carry counts as fractions of count_cap "
            f"without clipping; got {packing.clip}"
        )
    # The decoded sum must stay an exactly representable float (see module notes).
    if packing.max_contributors * layout.count_cap >= 2**53:
        raise ConfigError(
            f"max_contributors * count_cap must be < 2**53; got "
            f"{packing.max_contributors} * {layout.count_cap}"
        )


def counts_to_vector(
    counts: Mapping[str, int],
    layout: MetricsLayout,
    packing: PackingParams | None = None,
) -> npt.NDArray[np.float64]:
    """Turn one agent's counts into the values it packs and encrypts (weight 1).

    Missing names count as zero. ``packing``, when given, is checked against the
    layout so that a federation that cannot carry the counts exactly fails here
    instead of producing wrong fleet metrics.
    """
    if packing is not None:
        check_packing(layout, packing)
    unknown = sorted(set(counts) - set(layout.names))
    if unknown:
        raise InputError(
            f"counts has unknown names {unknown!r}; accepted: {list(layout.names)!r}"
        )

    values = [
        _checked_count(name, counts.get(name, 0), layout) for name in layout.names
    ]
    _check_consistent(dict(zip(layout.names, values, strict=True)), layout)

    # Division by a power of two is exact in binary floating point.
    return np.array(values, dtype=np.float64) / layout.count_cap


def vector_to_counts(
    summed: Sequence[float] | npt.NDArray[np.float64], layout: MetricsLayout
) -> dict[str, int]:
    """Turn the decrypted, unpacked sum of the metrics vectors back into counts."""
    if len(summed) != layout.length:
        raise InputError(
            f"summed metrics vector must have {layout.length} values for this layout; "
            f"got {len(summed)}"
        )

    counts: dict[str, int] = {}
    for name, value in zip(layout.names, summed, strict=True):
        scaled = float(value) * layout.count_cap
        nearest = round(scaled)
        if not math.isfinite(scaled) or nearest < 0 or abs(scaled - nearest) > 1e-6:
            raise InputError(
                f"summed count {name!r} must be a non-negative integer after scaling "
                f"by count_cap {layout.count_cap}; got {scaled!r} (the packing "
                f"parameters did not carry the counts exactly)"
            )
        counts[name] = nearest
    return counts


def encrypt_counts(
    public_key: PublicKey,
    packing: PackingParams,
    counts: Mapping[str, int],
    layout: MetricsLayout,
    pool: EncryptionPool | None = None,
) -> EncryptedVector:
    """Agent side: validate, pack and encrypt one agent's counts (weight 1)."""
    vector = counts_to_vector(counts, layout, packing)
    return encrypt_update(public_key, packing, vector, 1.0, pool)


def decrypt_counts(
    private_key: PrivateKey,
    packing: PackingParams,
    total: EncryptedVector,
    layout: MetricsLayout,
) -> dict[str, int]:
    """Server side: decrypt the aggregate of the agents' metrics vectors into counts.

    The weight slot must equal the number of contributors (each agent sent weight
    1); anything else means a contribution was not a metrics vector.
    """
    check_packing(layout, packing)
    summed = decrypt_aggregate(private_key, packing, total)
    if summed.weight != total.contributors:
        raise InputError(
            f"metrics sum has total weight {summed.weight}; expected one per "
            f"contributor ({total.contributors})"
        )
    return vector_to_counts(summed.values, layout)


def local_counts(
    layout: MetricsLayout,
    *,
    y_true: Sequence[int] | npt.NDArray[np.int_],
    y_pred: Sequence[int] | npt.NDArray[np.int_],
    flagged: Sequence[bool] | npt.NDArray[np.bool_],
    families: Sequence[str | None] | None = None,
) -> dict[str, int]:
    """An agent's counts for one round.

    ``y_true``/``y_pred`` are the held-out labels and predictions (1 = attack);
    ``flagged`` marks which recent events scored at or above the alert threshold and
    ``families`` names the attack family of each recent event where labels allow
    (``None`` or a name outside the layout counts only in the totals; case is
    ignored).
    """
    confusion = ConfusionCounts.from_predictions(y_true, y_pred)
    alerts = np.asarray(flagged, dtype=bool)

    counts = {
        "tp": confusion.tp,
        "fp": confusion.fp,
        "tn": confusion.tn,
        "fn": confusion.fn,
    }
    counts["scored"] = int(alerts.size)
    counts["flagged"] = int(alerts.sum())
    if families is not None:
        counts.update(_family_counts(alerts, families, layout))
    return counts


def fleet_metrics(counts: Mapping[str, int], layout: MetricsLayout) -> dict[str, float]:
    """Fleet accuracy, precision, recall, F1, FPR and threat rates from summed counts.

    A metric whose population is empty (no held-out events at all, or no recent
    events) is left out rather than reported as zero, so that a policy on it cannot
    fire on missing data. Within a non-empty evaluation a ratio with a zero
    denominator (precision when nothing was flagged) is 0.0.
    """
    tp, fp, tn, fn = (int(counts.get(name, 0)) for name in CONFUSION_FIELDS)
    metrics: dict[str, float] = {}
    if tp + fp + tn + fn > 0:
        metrics.update(_confusion_metrics(tp, fp, tn, fn))

    scored = int(counts.get("scored", 0))
    if scored > 0:
        metrics["threat_rate"] = int(counts.get("flagged", 0)) / scored
        for family in layout.families:
            flagged_family = int(counts.get(f"flagged.{family}", 0))
            metrics[f"threat_rate.{family}"] = flagged_family / scored
            scored_family = int(counts.get(f"scored.{family}", 0))
            if scored_family > 0:
                metrics[f"detection_rate.{family}"] = flagged_family / scored_family
    return metrics


def _confusion_metrics(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    confusion = ConfusionCounts(tp=tp, fp=fp, tn=tn, fn=fn)
    return {
        "accuracy": confusion.accuracy,
        "precision": confusion.precision,
        "recall": confusion.recall,
        "f1": confusion.f1,
        "fpr": confusion.fpr,
    }


def _family_counts(
    alerts: npt.NDArray[np.bool_],
    families: Sequence[str | None],
    layout: MetricsLayout,
) -> dict[str, int]:
    if len(families) != alerts.size:
        raise InputError(
            f"families must name one family per scored event ({alerts.size}); "
            f"got {len(families)}"
        )
    # Loaders spell families their own way ("DoS"); the layout is lower case.
    labels = np.array([(family or "").lower() for family in families], dtype=object)

    counts: dict[str, int] = {}
    for family in layout.families:
        member = labels == family
        counts[f"scored.{family}"] = int(member.sum())
        counts[f"flagged.{family}"] = int((member & alerts).sum())
    return counts


def _checked_count(name: str, value: object, layout: MetricsLayout) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputError(f"count {name!r} must be an integer; got {value!r}")
    if not 0 <= int(value) <= layout.count_cap:
        raise InputError(
            f"count {name!r} must be in [0, {layout.count_cap}] (count_cap); "
            f"got {int(value)}"
        )
    return int(value)


def _check_consistent(counts: Mapping[str, int], layout: MetricsLayout) -> None:
    # Inconsistent counts mean an agent bug; once summed nobody could tell.
    if counts["flagged"] > counts["scored"]:
        raise InputError(
            f"count 'flagged' must be <= 'scored' ({counts['scored']}); "
            f"got {counts['flagged']}"
        )
    family_total = 0
    for family in layout.families:
        scored, flagged = counts[f"scored.{family}"], counts[f"flagged.{family}"]
        if flagged > scored:
            raise InputError(
                f"count 'flagged.{family}' must be <= 'scored.{family}' ({scored}); "
                f"got {flagged}"
            )
        family_total += scored
    if family_total > counts["scored"]:
        raise InputError(
            f"per-family scored counts must add up to <= 'scored' "
            f"({counts['scored']}); got {family_total}"
        )
