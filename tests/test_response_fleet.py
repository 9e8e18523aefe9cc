"""Fleet metrics: the counts layout, exact transport through the codec, the math."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedguard.crypto.keys import PrivateKey
from fedguard.crypto.packing import PackingParams, decode, encode
from fedguard.crypto.vectors import aggregate
from fedguard.errors import ConfigError, InputError
from fedguard.response.fleet import (
    MetricsLayout,
    check_packing,
    counts_to_vector,
    decrypt_counts,
    encrypt_counts,
    fleet_metrics,
    local_counts,
    metrics_packing_params,
    vector_to_counts,
)

LAYOUT = MetricsLayout()


def _random_counts(rng: np.random.Generator, cap: int) -> dict[str, int]:
    tp, fp, tn, fn = (int(v) for v in rng.integers(0, cap // 4, size=4))
    scored = int(rng.integers(0, cap))
    flagged = int(rng.integers(0, scored + 1))
    counts = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    counts.update(scored=scored, flagged=flagged)

    remaining = scored
    for family in LAYOUT.families:
        family_scored = int(rng.integers(0, remaining + 1))
        remaining -= family_scored
        counts[f"scored.{family}"] = family_scored
        counts[f"flagged.{family}"] = int(rng.integers(0, family_scored + 1))
    return counts


def _plaintext_sum(agents: list[dict[str, int]]) -> dict[str, int]:
    return {name: sum(a.get(name, 0) for a in agents) for name in LAYOUT.names}


def test_layout_order_is_the_documented_one() -> None:
    assert LAYOUT.names == (
        "tp",
        "fp",
        "tn",
        "fn",
        "scored",
        "flagged",
        "scored.dos",
        "flagged.dos",
        "scored.probe",
        "flagged.probe",
        "scored.r2l",
        "flagged.r2l",
        "scored.u2r",
        "flagged.u2r",
    )
    assert LAYOUT.length == 14
    assert LAYOUT.min_scale_bits == 20
    assert "threat_rate.dos" in LAYOUT.metric_names


def test_counts_travel_as_fractions_of_the_cap() -> None:
    vector = counts_to_vector({"tp": 3, "scored": 2**20}, LAYOUT)

    assert vector[0] == 3 / 2**20
    assert vector[4] == 1.0
    assert vector.sum() == vector[0] + vector[4]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    agents=st.integers(1, 32),
)
def test_codec_sum_equals_plaintext_count_sum_exactly(seed: int, agents: int) -> None:
    # Paillier adds plaintexts; adding the packed integers is the same sum.
    rng = np.random.default_rng(seed)
    packing = metrics_packing_params(LAYOUT, key_bits=2048, max_contributors=32)
    per_agent = [_random_counts(rng, LAYOUT.count_cap) for _ in range(agents)]

    packed = [
        encode(packing, counts_to_vector(c, LAYOUT, packing), 1.0) for c in per_agent
    ]
    total = [sum(column) for column in zip(*packed, strict=True)]
    decoded = decode(packing, total, LAYOUT.length, agents)

    assert decoded.weight == agents
    assert vector_to_counts(decoded.values, LAYOUT) == _plaintext_sum(per_agent)


def test_counts_at_the_cap_from_every_allowed_agent_stay_exact() -> None:
    packing = metrics_packing_params(LAYOUT, key_bits=2048, max_contributors=32)
    full = dict.fromkeys(LAYOUT.names, 0) | {
        "tp": LAYOUT.count_cap,
        "scored": LAYOUT.count_cap,
        "flagged": LAYOUT.count_cap,
    }

    packed = encode(packing, counts_to_vector(full, LAYOUT, packing), 1.0)
    total = [value * 32 for value in packed]
    decoded = decode(packing, total, LAYOUT.length, 32)

    assert vector_to_counts(decoded.values, LAYOUT)["tp"] == 32 * 2**20


def test_fleet_metrics_through_real_encryption_equal_plaintext_sums(
    small_private_key: PrivateKey,
) -> None:
    rng = np.random.default_rng(7)
    public_key = small_private_key.public_key
    packing = metrics_packing_params(LAYOUT, public_key.bits, max_contributors=8)
    per_agent = [_random_counts(rng, LAYOUT.count_cap) for _ in range(5)]

    encrypted = [encrypt_counts(public_key, packing, c, LAYOUT) for c in per_agent]
    total = aggregate(encrypted, public_key, packing)
    counts = decrypt_counts(small_private_key, packing, total, LAYOUT)

    expected = _plaintext_sum(per_agent)
    assert counts == expected
    assert fleet_metrics(counts, LAYOUT) == fleet_metrics(expected, LAYOUT)


def test_fleet_metrics_through_a_2048_bit_key(private_key_2048: PrivateKey) -> None:
    public_key = private_key_2048.public_key
    packing = metrics_packing_params(LAYOUT, public_key.bits, max_contributors=4)
    agents = [
        {"tp": 90, "fp": 5, "tn": 880, "fn": 25, "scored": 400, "flagged": 37},
        {"tp": 10, "fp": 15, "tn": 70, "fn": 5, "scored": 100, "flagged": 13},
    ]

    encrypted = [encrypt_counts(public_key, packing, c, LAYOUT) for c in agents]
    total = aggregate(encrypted, public_key, packing)
    counts = decrypt_counts(private_key_2048, packing, total, LAYOUT)
    metrics = fleet_metrics(counts, LAYOUT)

    assert counts["tp"] == 100 and counts["fp"] == 20
    assert metrics["precision"] == 100 / 120
    assert metrics["recall"] == 100 / 130
    assert metrics["threat_rate"] == 50 / 500


def test_packing_that_would_round_counts_is_refused() -> None:
    coarse = PackingParams(key_bits=2048, scale_bits=16)
    narrow = PackingParams(key_bits=2048, clip=0.5, scale_bits=24)

    with pytest.raises(ConfigError, match="scale_bits must be >= 20"):
        check_packing(LAYOUT, coarse)
    with pytest.raises(ConfigError, match="clip must be >= 1"):
        counts_to_vector({"tp": 1}, LAYOUT, narrow)


def test_a_sum_that_is_not_whole_counts_is_refused() -> None:
    summed = np.zeros(LAYOUT.length)
    summed[0] = 1.5 / LAYOUT.count_cap

    with pytest.raises(InputError, match="'tp' must be a non-negative integer"):
        vector_to_counts(summed, LAYOUT)
    with pytest.raises(InputError, match="must have 14 values"):
        vector_to_counts(summed[:3], LAYOUT)


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"tp": -1}, r"'tp' must be in \[0, 1048576\]"),
        ({"tp": 2**20 + 1}, r"'tp' must be in \[0, 1048576\]"),
        ({"tp": 1.0}, "'tp' must be an integer"),
        ({"tp": True}, "'tp' must be an integer"),
        ({"scored": 2, "flagged": 3}, "'flagged' must be <= 'scored'"),
        ({"scored": 1, "scored.dos": 1, "scored.r2l": 1}, "must add up to <="),
        ({"scored": 5, "scored.dos": 1, "flagged.dos": 2}, "'flagged.dos' must be <="),
        ({"bogus": 1}, "unknown names"),
    ],
)
def test_invalid_agent_counts_are_refused(counts: dict[str, int], message: str) -> None:
    with pytest.raises(InputError, match=message):
        counts_to_vector(counts, LAYOUT)


def test_fleet_metrics_math() -> None:
    counts = {"tp": 40, "fp": 10, "tn": 45, "fn": 5, "scored": 200, "flagged": 30}
    counts |= {"scored.dos": 20, "flagged.dos": 15}

    metrics = fleet_metrics(counts, LAYOUT)

    assert metrics["accuracy"] == 85 / 100
    assert metrics["precision"] == 40 / 50
    assert metrics["recall"] == 40 / 45
    assert metrics["f1"] == 80 / 95
    assert metrics["fpr"] == 10 / 55
    assert metrics["threat_rate"] == 30 / 200
    assert metrics["threat_rate.dos"] == 15 / 200
    assert metrics["detection_rate.dos"] == 15 / 20
    assert metrics["threat_rate.u2r"] == 0.0
    assert "detection_rate.u2r" not in metrics


def test_metrics_of_empty_populations_are_left_out() -> None:
    assert fleet_metrics(dict.fromkeys(LAYOUT.names, 0), LAYOUT) == {}
    only_events = fleet_metrics({"scored": 10, "flagged": 1}, LAYOUT)
    assert "accuracy" not in only_events
    assert only_events["threat_rate"] == 0.1


def test_local_counts_from_predictions_and_alerts() -> None:
    counts = local_counts(
        LAYOUT,
        y_true=[1, 1, 0, 0, 1],
        y_pred=[1, 0, 1, 0, 1],
        flagged=[True, False, True, True],
        families=["DoS", "dos", None, "Probe"],
    )

    assert counts["tp"] == 2 and counts["fn"] == 1
    assert counts["fp"] == 1 and counts["tn"] == 1
    assert counts["scored"] == 4 and counts["flagged"] == 3
    assert counts["scored.dos"] == 2 and counts["flagged.dos"] == 1
    assert counts["scored.probe"] == 1 and counts["flagged.probe"] == 1
    counts_to_vector(counts, LAYOUT)


def test_layout_validation() -> None:
    with pytest.raises(ConfigError, match="count_cap must be a power of two"):
        MetricsLayout(count_cap=1000)
    with pytest.raises(ConfigError, match="families must be unique"):
        MetricsLayout(families=("dos", "dos"))
    with pytest.raises(ConfigError, match="family names must match"):
        MetricsLayout(families=("DoS",))
