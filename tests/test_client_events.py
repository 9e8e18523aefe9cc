"""Recent events per round and attack bursts on top of them."""

from pathlib import Path

import numpy as np
import pytest

from fedguard.client.data import DataSource, load_local_data
from fedguard.client.events import (
    AttackBurst,
    HeldOutEvents,
    SyntheticEvents,
    burst_size,
)
from fedguard.data.synthetic import cloud_profiles, generate_events
from fedguard.errors import ConfigError

NSL_KDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "nsl-kdd"


@pytest.mark.parametrize(
    ("text", "burst"),
    [
        ("4", AttackBurst(4)),
        ("4:2500", AttackBurst(4, 2500)),
        ("2:1", AttackBurst(2, 1)),
    ],
)
def test_bursts_are_parsed(text: str, burst: AttackBurst) -> None:
    assert AttackBurst.parse(text) == burst
    assert str(burst) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("four", r"--attack-burst must be ROUND or ROUND:COUNT .*got 'four'"),
        ("4:", "must be ROUND or ROUND:COUNT"),
        ("4:5:6", "must be ROUND or ROUND:COUNT"),
        ("1", r"ROUND must be an integer in \[2, 2147483647\] .*; got 1"),
        ("4:0", r"COUNT must be an integer in \[1, 100000\]; got 0"),
        ("4:100001", "COUNT must be an integer in"),
    ],
)
def test_bad_bursts_name_the_option_range_and_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AttackBurst.parse(text)


def test_burst_sizes_default_to_three_times_the_round_and_add_up() -> None:
    bursts = (AttackBurst(4), AttackBurst(4, 10), AttackBurst(6, 7))

    assert burst_size(bursts, 4, 100) == 310
    assert burst_size(bursts, 6, 100) == 7
    assert burst_size(bursts, 5, 100) == 0


def test_held_out_rows_are_scored_every_round_with_bursts_on_top() -> None:
    rows = generate_events(400, seed=3)
    holdout, train = rows.subset(np.arange(100)), rows.subset(np.arange(100, 400))
    events = HeldOutEvents(holdout, train, (AttackBurst(3),), seed=5)

    calm, burst = events.for_round(2), events.for_round(3)

    assert calm is holdout
    assert len(burst) == 400
    assert np.array_equal(burst.numeric[:100], holdout.numeric)
    assert burst.labels[100:].all()
    assert np.array_equal(events.for_round(3).numeric, burst.numeric)


def test_a_burst_needs_attack_rows() -> None:
    rows = generate_events(50, seed=3)
    normal = rows.subset(rows.labels == 0)

    with pytest.raises(ConfigError, match="needs attack rows to draw from"):
        HeldOutEvents(rows, normal, (AttackBurst(2),), seed=0)
    # Without a burst, a partition without attacks is fine.
    assert HeldOutEvents(rows, normal, seed=0).for_round(2) is rows


def test_synthetic_clouds_see_fresh_events_every_round() -> None:
    profile = cloud_profiles(2, seed=0)[1]
    events = SyntheticEvents(profile, 500, (AttackBurst(4, 300),), seed=9)

    second, third = events.for_round(2), events.for_round(3)
    burst = events.for_round(4)

    assert len(second) == len(third) == 500
    assert not np.array_equal(second.numeric, third.numeric)
    assert np.array_equal(events.for_round(2).numeric, second.numeric)
    assert len(burst) == 800
    assert burst.num_attacks >= 300 + second.num_attacks // 2


def test_local_data_carries_the_bursts_of_its_source() -> None:
    source = DataSource("synthetic", rows=1000, bursts=(AttackBurst(3),))

    local = load_local_data(source)

    assert len(local.recent_events(2)) == len(local.holdout) == 100
    assert len(local.recent_events(3)) == 400
    # Fresh events, not the held-out rows.
    assert not np.array_equal(local.recent_events(2).numeric, local.holdout.numeric)


@pytest.mark.skipif(not NSL_KDD.is_dir(), reason="NSL-KDD is not available")
def test_nsl_kdd_bursts_are_attack_rows_of_the_partition() -> None:
    source = DataSource(
        "nsl-kdd",
        index=2,
        clients=3,
        data_dir=NSL_KDD,
        data_file="KDDTrain+_20Percent.txt",
        bursts=(AttackBurst(4),),
    )

    local = load_local_data(source)
    calm, burst = local.recent_events(3), local.recent_events(4)

    assert calm is local.holdout
    extra = burst.subset(np.arange(len(calm), len(burst)))
    assert len(extra) == 3 * len(calm)
    assert extra.labels.all() and extra.families is not None
    assert {str(f).lower() for f in extra.families} <= {"dos", "probe", "r2l", "u2r"}
