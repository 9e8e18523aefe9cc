"""The policy engine: thresholds, for_rounds, rise over a window, cooldowns."""

import math
from typing import Any

import pytest

from fedguard.errors import InputError
from fedguard.response.engine import ResponseEngine, check_policy, compare
from fedguard.response.policies import Policy, ResponseConfig, parse_response_config


def _engine(*policies: dict[str, Any], dry_run: bool = False) -> ResponseEngine:
    config = parse_response_config({"policies": list(policies)}, dry_run=dry_run)
    return ResponseEngine(config)


def _threshold(**fields: Any) -> dict[str, Any]:
    base = {"name": "high", "metric": "threat_rate", "comparison": ">"}
    return base | {"threshold": 0.3, "cooldown": 0} | fields


def _run(
    engine: ResponseEngine, rates: list[float], metric: str = "threat_rate"
) -> list[int]:
    """Feed one round per rate; return the rounds in which a policy fired."""
    history: list[dict[str, float]] = []
    fired: list[int] = []
    for round_id, rate in enumerate(rates, start=1):
        history.append({metric: rate})
        if engine.evaluate(round_id, round_id, history):
            fired.append(round_id)
    return fired


def test_threshold_fires_when_crossed() -> None:
    engine = _engine(_threshold())

    assert _run(engine, [0.1, 0.3, 0.31, 0.2, 0.5]) == [3, 5]


def test_a_policy_fires_once_within_its_cooldown() -> None:
    engine = _engine(_threshold(cooldown=3))

    fired = _run(engine, [0.5] * 10)

    # Silent in the three rounds after each firing.
    assert fired == [1, 5, 9]


def test_the_same_round_never_fires_twice() -> None:
    engine = _engine(_threshold(cooldown=0))
    history = [{"threat_rate": 0.9}]

    assert len(engine.evaluate(4, 4, history)) == 1
    assert engine.evaluate(4, 4, history) == []


def test_cooldown_survives_a_restart_through_last_fired() -> None:
    config = parse_response_config({"policies": [_threshold(cooldown=5)]})
    engine = ResponseEngine(config, last_fired={"high": 10})
    history = [{"threat_rate": 0.9}]

    assert engine.evaluate(15, 15, history) == []
    assert len(engine.evaluate(16, 16, history)) == 1
    assert engine.last_fired == {"high": 16}


def test_for_rounds_needs_consecutive_rounds() -> None:
    engine = _engine(_threshold(for_rounds=3))

    fired = _run(engine, [0.5, 0.5, 0.1, 0.5, 0.5, 0.5, 0.5])

    assert fired == [6, 7]


def test_rise_over_the_mean_of_the_window() -> None:
    rise = {"name": "rise", "metric": "threat_rate", "rise": 0.1, "window": 3}
    engine = _engine(rise | {"cooldown": 0})

    # Round 4: 0.3 - mean(0.2, 0.2, 0.2) = 0.1 exactly (0.0999… in binary floats);
    # round 5: 0.3 - mean(0.2, 0.2, 0.3) = 0.067; round 8: 0.5 - 0.317 = 0.183.
    fired = _run(engine, [0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.35, 0.5])

    assert fired == [4, 8]


def test_rise_needs_a_full_window_of_history() -> None:
    rise = {"name": "rise", "metric": "threat_rate", "rise": 0.1, "window": 3}
    engine = _engine(rise)

    assert _run(engine, [0.0, 0.0, 0.9]) == []


def test_drop_with_a_negative_rise() -> None:
    drop = {"name": "drop", "metric": "accuracy", "rise": -0.05, "window": 2}
    engine = _engine(drop | {"cooldown": 0})

    fired = _run(engine, [0.95, 0.95, 0.93, 0.88, 0.90], metric="accuracy")

    assert fired == [4]


def test_rise_with_for_rounds_checks_each_round_against_its_own_window() -> None:
    rise = {"name": "rise", "metric": "threat_rate", "rise": 0.1, "window": 1}
    engine = _engine(rise | {"for_rounds": 2, "cooldown": 0})

    fired = _run(engine, [0.1, 0.2, 0.3, 0.3, 0.5, 0.7])

    assert fired == [3, 6]


def test_missing_or_nan_metrics_never_fire() -> None:
    engine = _engine(_threshold(metric="precision", comparison="<", threshold=0.5))
    history: list[dict[str, float]] = [{"threat_rate": 0.2}, {"precision": math.nan}]

    assert engine.evaluate(1, 1, history[:1]) == []
    assert engine.evaluate(2, 2, history) == []


def test_decision_carries_the_evidence() -> None:
    rise = {"name": "rise", "metric": "threat_rate", "rise": 0.1, "window": 2}
    engine = _engine(rise | {"severity": "critical", "actions": ["log", "blocklist"]})
    history = [
        {"threat_rate": 0.1},
        {"threat_rate": 0.2},
        {"threat_rate": 0.4, "f1": 0.8},
    ]

    (decision,) = engine.evaluate(7, 3, history)

    assert (decision.policy, decision.round, decision.model_version) == ("rise", 7, 3)
    assert decision.value == 0.4 and decision.baseline == pytest.approx(0.15)
    assert decision.compared == pytest.approx(0.25) and decision.limit == 0.1
    assert decision.severity == "critical" and not decision.dry_run
    assert decision.actions == ("log", "blocklist")
    assert decision.metrics == {"threat_rate": 0.4, "f1": 0.8}
    assert "changed by +0.2500" in decision.describe()
    assert decision.to_document()["policy"] == "rise"


def test_dry_run_is_marked_per_policy_and_globally() -> None:
    per_policy = _engine(_threshold(dry_run=True), _threshold(name="live"))
    everything = _engine(_threshold(), dry_run=True)
    history = [{"threat_rate": 0.9}]

    decisions = {d.policy: d.dry_run for d in per_policy.evaluate(1, 1, history)}
    assert decisions == {"high": True, "live": False}
    assert [d.dry_run for d in everything.evaluate(1, 1, history)] == [True]


def test_default_policies_fire_on_a_threat_rate_surge() -> None:
    engine = ResponseEngine(parse_response_config({}))
    # Fleet metrics start in round 2 and describe the model of the round before.
    history = [{"threat_rate": r} for r in (0.05, 0.06)]

    assert engine.evaluate(3, 2, history) == []
    history.append({"threat_rate": 0.2})
    assert [d.policy for d in engine.evaluate(4, 3, history)] == ["threat-rate-rise"]
    history.append({"threat_rate": 0.7})
    assert [d.policy for d in engine.evaluate(5, 4, history)] == ["threat-rate-high"]


def test_the_default_policies_are_silent_in_rounds_1_to_3() -> None:
    engine = ResponseEngine(parse_response_config({}))
    history = [{"threat_rate": 0.1}]

    assert engine.evaluate(2, 1, history) == []
    history.append({"threat_rate": 0.8})
    # Both conditions hold in round 3, which is still the warm-up.
    assert engine.evaluate(3, 2, history) == []
    history.append({"threat_rate": 0.8})
    assert [d.policy for d in engine.evaluate(4, 3, history)] == ["threat-rate-high"]


def test_warmup_rounds_keep_a_policy_silent_but_count_as_baseline() -> None:
    engine = _engine(
        {
            "name": "rise",
            "metric": "threat_rate",
            "rise": 0.1,
            "window": 2,
            "warmup_rounds": 3,
            "cooldown": 0,
        }
    )

    # A model that learns: the rate climbs 0.2 per round during the warm-up.
    fired = _run(engine, [0.1, 0.3, 0.5, 0.45, 0.46, 0.7])

    # Round 6 rose by 0.245 over the mean of rounds 4 and 5.
    assert fired == [6]


def test_default_policies_ignore_a_learning_model_during_the_warm_up() -> None:
    engine = ResponseEngine(parse_response_config({}))
    history: list[dict[str, float]] = []
    fired = []

    # Recall improves quickly, then settles: the threat rate follows it.
    rates = (0.2, 0.33, 0.4, 0.42, 0.43, 0.43, 0.44)
    for round_id, rate in enumerate(rates, start=2):
        history.append({"threat_rate": rate})
        fired += engine.evaluate(round_id, round_id - 1, history)

    assert fired == []
    # Without the warm-up, round 3 would have fired: 0.33 - 0.2 > 0.1.
    assert rates[1] - rates[0] > 0.1


def test_empty_history_is_refused() -> None:
    engine = ResponseEngine(ResponseConfig(policies=(), actions={}))

    with pytest.raises(InputError, match="metrics_history must hold"):
        engine.evaluate(1, 1, [])


def test_compare_treats_float_noise_as_equal() -> None:
    assert compare(0.3 - 0.2, ">=", 0.1)
    assert not compare(0.3 - 0.2, "<", 0.1)
    assert not compare(0.1 + 1e-12, ">", 0.1)
    assert compare(0.1 + 1e-6, ">", 0.1)


def test_check_policy_is_pure() -> None:
    policy = Policy(name="p", metric="fpr", comparison=">=", threshold=0.2)
    history = [{"fpr": 0.25}]

    first, second = check_policy(policy, history), check_policy(policy, history)

    assert first == second and first is not None and first.value == 0.25
