"""The response engine in a real federation: server and agents as subprocesses.

A policy that fires on the first fleet metrics (round 2) runs every kind of action:
a log line, a blocklist entry, a webhook to a receiver the test started, a webhook
to a closed loopback port, and two directives that the agents pick up over HTTPS
(``GET /directives``), apply with their own handlers and acknowledge.
"""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedguard.client.data import load_local_data
from fedguard.data.schema import FeatureSchema
from fedguard.learning.model import ModelSpec, predict_proba
from fedguard.response.fleet import MetricsLayout, local_counts
from fedguard.response.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)
from fedguard.server.wire import decode_model
from fedguard.simulate import (
    AgentBurst,
    ServerHandle,
    SimulationSettings,
    agent_source,
    run_simulation,
    running_federation,
    wait_for_agents,
)

pytestmark = pytest.mark.slow

SECRET = "a-test-secret-of-enough-length"


def first_metrics_policy(*actions: str) -> dict[str, Any]:
    """Fires in round 2, the first round with fleet metrics, and never again."""
    return {
        "name": "any-threat",
        "metric": "threat_rate",
        "comparison": ">=",
        "threshold": 0.0,
        "cooldown": 1000,
        "severity": "high",
        "actions": list(actions),
    }


def webhook(url: str, **settings: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": url, "secret": SECRET, **settings}


def test_every_action_of_a_fired_policy_reaches_its_target(
    tmp_path: Path,
    key_file: Path,
    webhook_receiver: Callable[..., Any],
    closed_port_url: str,
) -> None:
    receiver = webhook_receiver(200)
    actions = {
        "soar": webhook(receiver.url),
        "dead": webhook(closed_port_url, retries=2, backoff=0.1),
        "tighten": {
            "type": "agent",
            "handler": "lower_threshold",
            "params": {"by": 0.1},
        },
        "collect": {
            "type": "agent",
            "handler": "quarantine",
            "params": {"max_events": 5},
        },
    }
    policy = first_metrics_policy(
        "log", "blocklist", "soar", "dead", "tighten", "collect"
    )
    settings = SimulationSettings(
        clients=2,
        rounds=3,
        rows_per_cloud=1500,
        out_dir=tmp_path / "run",
        key_file=key_file,
        extra_config={"actions": actions, "policies": [policy]},
    )

    result = run_simulation(settings)

    # Every round closed although one webhook target refuses connections.
    assert [r.round for r in result.rounds] == [1, 2, 3]
    assert result.evaluation is not None and result.evaluation["round"] == 4
    by_action = {entry["action"]: entry for entry in result.actions}
    assert set(by_action) == set(policy["actions"])
    assert {entry["round"] for entry in result.actions} == {2}
    assert by_action["log"]["detail"].startswith("policy any-threat fired in round 2")
    assert by_action["blocklist"]["blocklist_entry"]["policy"] == "any-threat"

    soar, dead = by_action["soar"], by_action["dead"]
    assert (soar["outcome"], soar["attempts"], soar["http_status"]) == (
        "delivered",
        1,
        200,
    )
    assert (dead["outcome"], dead["attempts"], dead["detail"]) == (
        "failed",
        3,
        "ConnectError",
    )
    ((headers, body),) = receiver.requests
    assert verify_signature(
        SECRET.encode(), body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    )
    document = json.loads(body)
    assert (document["policy"], document["round"]) == ("any-threat", 2)
    assert document["action_id"] == headers[DELIVERY_HEADER]

    # Both agents picked the directives up over HTTPS, applied them, acknowledged.
    tighten, collect = by_action["tighten"], by_action["collect"]
    assert tighten["outcome"] == collect["outcome"] == "queued"
    assert [(a["status"], a["detail"]) for a in tighten["acks"]] == [
        ("applied", "alert threshold lowered from 0.500 to 0.400")
    ] * 2
    assert [(a["status"], a["detail"]) for a in collect["acks"]] == [
        ("applied", "quarantined 5 flagged events")
    ] * 2
    for index in range(2):
        agent_dir = settings.out_dir / "agents" / f"cloud-{index}"
        lines = (agent_dir / "quarantine.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        assert len(records) == 5
        assert {r["policy"] for r in records} == {"any-threat"}
        assert all(r["event"]["score"] >= 0.5 for r in records)
        log = (settings.out_dir / "logs" / f"cloud-{index}.log").read_text()
        assert "applied directive" in log and "lower_threshold" in log

    # The report shows each outcome.
    report = (settings.out_dir / "report.html").read_text()
    assert "delivered, 1 attempt(s), HTTP 200" in report
    assert "failed, 3 attempt(s)" in report and "ConnectError" in report
    assert "applied (alert threshold lowered from 0.500 to 0.400)" in report


def test_a_round_closes_while_a_webhook_is_still_waiting_for_its_receiver(
    tmp_path: Path, key_file: Path, webhook_receiver: Callable[..., Any]
) -> None:
    receiver = webhook_receiver(200)
    receiver.gate.clear()  # the receiver holds the request until the test says so
    settings = SimulationSettings(
        clients=2,
        rounds=2,
        rows_per_cloud=1500,
        out_dir=tmp_path / "run",
        key_file=key_file,
        extra_config={
            "actions": {"soar": webhook(receiver.url, timeout=60.0, retries=0)},
            "policies": [first_metrics_policy("log", "soar")],
        },
    )

    with running_federation(settings) as (server, agents):
        finished = wait_until_finished(server)
        held = action_statuses(server)
        arrived = receiver.arrived.is_set()
        receiver.gate.set()
        wait_for_agents(agents)
        released = wait_for_outcome(server, "soar")

    # Rounds 2, 3 (evaluation) closed while the webhook of round 2 was in flight.
    assert finished and arrived
    assert held == {"log": "done", "soar": "pending"}
    assert released == "delivered"


def test_fleet_counts_are_the_exact_sum_of_the_agents_plaintext_counts(
    tmp_path: Path, key_file: Path
) -> None:
    settings = SimulationSettings(
        clients=3,
        rounds=3,
        rows_per_cloud=1500,
        out_dir=tmp_path / "run",
        key_file=key_file,
        attack_bursts=(AgentBurst(1, 3, 200),),
    )

    with running_federation(settings) as (server, _agents):
        assert wait_until_finished(server)
        with server.http() as http:
            federation = http.get("/federation").json()
            statuses = http.get("/rounds").json()["rounds"]
            models = {
                version: decode_model(http.get(f"/model/{version}").content)[1]
                for version in range(settings.rounds + 1)
            }

    # Rounds 2, 3 and the evaluation round 4 carry counts; round 3 holds a burst.
    reported = {s["round"]: s for s in statuses if s["fleet_metrics"]}
    assert sorted(reported) == [2, 3, 4]
    for round_id, status in reported.items():
        model = models[status["model_version"]]
        expected = plaintext_fleet_counts(settings, federation, round_id, model)
        assert status["fleet_metrics"]["counts"] == expected, round_id
    assert reported[3]["fleet_metrics"]["counts"]["scored"] == 3 * 150 + 200


def plaintext_fleet_counts(
    settings: SimulationSettings,
    federation: dict[str, Any],
    round_id: int,
    model: Any,
) -> dict[str, int]:
    """What every agent counted in ``round_id``, summed here in plaintext."""
    schema = FeatureSchema.from_dict(federation["fitted_schema"])
    spec = ModelSpec(n_features=schema.n_features)
    layout = MetricsLayout(
        families=tuple(federation["metrics_layout"]["families"]),
        count_cap=federation["metrics_layout"]["count_cap"],
    )
    total = dict.fromkeys(layout.names, 0)
    for index in range(settings.clients):
        local = load_local_data(agent_source(settings, index))
        events = local.recent_events(round_id)
        held_out = predict_proba(spec, model, schema.transform(local.holdout))
        scores = predict_proba(spec, model, schema.transform(events))
        assert events.families is not None
        counts = local_counts(
            layout,
            y_true=local.holdout.labels,
            y_pred=(held_out >= 0.5).astype(int),
            flagged=scores >= 0.5,
            families=[str(f).lower() for f in events.families],
        )
        for name, value in counts.items():
            total[name] += value
    return total


def wait_until_finished(server: ServerHandle, timeout: float = 300.0) -> bool:
    end = time.monotonic() + timeout
    with server.http() as http:
        while time.monotonic() < end:
            if http.get("/health").json()["finished"]:
                return True
            assert server.process.alive(), server.process.tail()
            time.sleep(0.1)
    return False


def action_statuses(server: ServerHandle) -> dict[str, str]:
    with server.http() as http:
        listing = http.get("/admin/actions").raise_for_status().json()
    return {
        action["action"]: action["status"]
        for decision in listing["decisions"]
        for action in decision["actions"]
    }


def wait_for_outcome(server: ServerHandle, name: str, timeout: float = 60.0) -> str:
    end = time.monotonic() + timeout
    status = "pending"
    while status == "pending" and time.monotonic() < end:
        try:
            status = action_statuses(server)[name]
        except httpx.HTTPError:
            break
        time.sleep(0.1)
    return status
