"""The synthetic security-event generator."""

import numpy as np
import pytest

from fedguard.data import (
    ATTACK_TYPES,
    CloudProfile,
    cloud_profiles,
    generate_cloud_datasets,
    generate_events,
    generate_recent_events,
    synthetic_schema,
    synthetic_split,
)
from fedguard.errors import ConfigError
from fedguard.learning import ModelSpec, evaluate, predict_proba, train_centralized


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    a = generate_events(500, seed=1)
    b = generate_events(500, seed=1)
    c = generate_events(500, seed=2)

    assert np.array_equal(a.numeric, b.numeric)
    assert np.array_equal(a.categorical, b.categorical)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.numeric, c.numeric)


def test_attack_rate_and_types_follow_the_profile() -> None:
    profile = CloudProfile(attack_rate=0.2, attack_mix={"dos": 3, "port_scan": 1})

    events = generate_events(4_000, seed=3, profile=profile)

    assert events.num_attacks == 800
    assert events.families is not None
    attack_families = set(events.families[events.labels == 1])
    assert attack_families == {"dos", "port_scan"}
    dos_share = np.mean(events.families[events.labels == 1] == "dos")
    assert 0.7 < dos_share < 0.8


def test_values_are_plausible_flows() -> None:
    events = generate_events(2_000, seed=4)

    for column in ("duration", "bytes_out", "bytes_in", "packets_out", "conn_rate"):
        assert events.numeric_column(column).min() >= 0
    assert events.numeric_column("packets_out").min() >= 1
    assert set(np.unique(events.numeric_column("off_hours"))) <= {0.0, 1.0}
    assert events.numeric_column("payload_entropy").max() <= 8


def test_schema_vocabularies_cover_every_generated_category() -> None:
    events = generate_events(5_000, seed=5)
    schema = synthetic_schema()

    for feature in schema.categorical:
        assert set(events.categorical_column(feature.name)) <= set(feature.vocabulary)
    assert schema.numeric_columns == events.numeric_columns


def test_learnable_but_not_perfectly() -> None:
    train, test = synthetic_split(20_000, 5_000, seed=0)
    schema = synthetic_schema().fit(train)
    spec = ModelSpec(schema.n_features)

    model = train_centralized(spec, schema.transform(train), train.labels)
    scores = predict_proba(spec, model.parameters, schema.transform(test))
    metrics = evaluate(test.labels, scores)

    assert 0.8 <= metrics.f1 <= 0.95
    assert metrics.roc_auc is not None and metrics.roc_auc > 0.9


def test_cloud_profiles_are_seeded_and_differ() -> None:
    profiles = cloud_profiles(5, seed=7)

    assert profiles == cloud_profiles(5, seed=7)
    assert [p.name for p in profiles] == [f"cloud-{i}" for i in range(5)]
    assert len({round(p.attack_rate, 6) for p in profiles}) == 5
    assert len({round(p.volume_scale, 6) for p in profiles}) == 5
    mixes = np.stack([p.attack_probabilities() for p in profiles])
    assert np.allclose(mixes.sum(axis=1), 1)
    assert np.ptp(mixes, axis=0).max() > 0.3


def test_cloud_datasets_have_their_own_bias() -> None:
    datasets = generate_cloud_datasets(4, 3_000, seed=8)
    profiles = cloud_profiles(4, seed=8)

    for dataset, profile in zip(datasets, profiles, strict=True):
        assert dataset.name == profile.name
        assert dataset.num_attacks == round(3_000 * profile.attack_rate)
    medians = [np.median(d.numeric_column("bytes_in")) for d in datasets]
    assert max(medians) > 1.5 * min(medians)


def test_recent_events_with_a_burst_add_that_many_attacks() -> None:
    profile = cloud_profiles(3, seed=9)[1]

    calm = generate_recent_events(profile, 1_000, seed=10)
    burst = generate_recent_events(profile, 1_000, seed=10, extra_attacks=400)

    assert len(calm) == 1_000
    assert len(burst) == 1_400
    assert burst.num_attacks == calm.num_attacks + 400
    favourite = ATTACK_TYPES[int(np.argmax(profile.attack_probabilities()))]
    assert burst.families is not None and calm.families is not None
    assert (
        np.sum(burst.families == favourite) == np.sum(calm.families == favourite) + 400
    )


def test_burst_of_a_chosen_attack() -> None:
    events = generate_recent_events(
        CloudProfile(attack_rate=0.0), 100, seed=1, extra_attacks=25,
        burst_attack="c2_beaconing",
    )  # fmt: skip

    assert events.families is not None
    assert sorted(set(events.families)) == ["c2_beaconing", "normal"]
    assert events.num_attacks == 25


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attack_rate": 1.5}, r"attack_rate must be in \[0, 1\]; got 1.5"),
        ({"stealth": -0.1}, r"stealth must be in \[0, 1\]; got -0.1"),
        ({"volume_scale": 0.0}, "volume_scale must be > 0; got 0.0"),
        ({"attack_mix": {"phishing": 1.0}}, r"got \['phishing'\]"),
        ({"attack_mix": {"dos": 0.0}}, "positive sum"),
    ],
)
def test_profile_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CloudProfile(**kwargs)  # type: ignore[arg-type]


def test_generator_argument_errors() -> None:
    with pytest.raises(ConfigError, match="num_rows must be >= 0; got -1"):
        generate_events(-1, seed=0)
    with pytest.raises(ConfigError, match="extra_attacks must be >= 0; got -2"):
        generate_recent_events(CloudProfile(), 10, seed=0, extra_attacks=-2)
    with pytest.raises(ConfigError, match="burst_attack must be one of"):
        generate_recent_events(CloudProfile(), 10, seed=0, burst_attack="worm")
    with pytest.raises(ConfigError, match="num_clouds must be >= 1; got 0"):
        cloud_profiles(0, seed=0)
