"""fedguard simulate: real server and agent processes, metrics.json and report.html."""

import html
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedguard.errors import ConfigError
from fedguard.report import render_report
from fedguard.simulate import AgentBurst, SimulationSettings, run_simulation

pytestmark = pytest.mark.slow

ROUND_KEYS = {
    "round",
    "clients",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "fpr",
    "training_seconds",
    "encryption_seconds",
    "upload_seconds",
    "aggregation_seconds",
    "decryption_seconds",
    "bytes_uploaded",
}


def fedguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedguard", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_command_runs_a_federation_and_writes_its_outputs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    completed = fedguard("simulate", "--clients", "2", "--rounds", "5",
                         "--rows", "1500", "--out", str(out))  # fmt: skip

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "centralised baseline" in completed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [entry["round"] for entry in metrics["rounds"]] == [1, 2, 3, 4, 5]
    assert set(metrics["rounds"][0]) >= ROUND_KEYS
    assert metrics["final"] == metrics["rounds"][-1]
    assert metrics["rounds"][0]["clients"] == 2
    assert 0.5 < metrics["final"]["accuracy"] <= 1.0
    # Fleet threat rates from round 2 on; the default policies stay silent.
    rates = [entry["threat_rate"] for entry in metrics["rounds"]]
    assert rates[0] is None and all(0.0 < rate < 0.5 for rate in rates[1:])
    assert metrics["evaluation"]["round"] == 6
    assert metrics["actions"] == []
    assert "no policy fired" in completed.stdout
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 4
    assert "No policy fired in this run." in report
    assert (out / "logs" / "server.log").exists()


def test_plaintext_run_uploads_floats_with_the_same_protocol(tmp_path: Path) -> None:
    settings = SimulationSettings(
        clients=2, rounds=1, rows_per_cloud=1500, plaintext=True, out_dir=tmp_path
    )

    result = run_simulation(settings)

    assert result.fingerprint == "plaintext"
    assert result.rounds[0].decryption_seconds == 0.0
    # Two plain frames of 8-byte floats: a 28-byte header, the weight, the values.
    length = (result.rounds[0].bytes_uploaded // 2 - 28 - 8) // 8
    assert length > 10
    assert json.loads((tmp_path / "metrics.json").read_text())["settings"]["plaintext"]


def test_settings_are_checked_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--data-dir is required"):
        SimulationSettings(dataset="nsl-kdd", out_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"min_clients must be in \[1, 3\]"):
        SimulationSettings(min_clients=4, out_dir=tmp_path)


@pytest.mark.parametrize(
    ("burst", "message"),
    [
        ("3:4", r"--attack-burst AGENT must be an agent index in \[0, 2\] "
                r"\(--clients 3\); got 3"),
        ("-1:4", r"AGENT must be an agent index in \[0, 2\] .*; got -1"),
        ("0:1", r"--attack-burst ROUND must be in \[2, 6\] \(round 1 scores no "
                r"events; round 6 is the evaluation round after --rounds 5\); got 1"),
        ("0:7", r"ROUND must be in \[2, 6\] .*; got 7"),
        ("0:4:0", r"--attack-burst COUNT must be in \[1, 100000\]; got 0"),
        ("2-4", r"--attack-burst must be AGENT:ROUND or AGENT:ROUND:COUNT .*'2-4'"),
        ("2:x", "must be AGENT:ROUND or AGENT:ROUND:COUNT"),
    ],
)  # fmt: skip
def test_attack_bursts_name_the_option_range_and_value(
    tmp_path: Path, burst: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SimulationSettings(
            clients=3,
            rounds=5,
            out_dir=tmp_path,
            attack_bursts=(AgentBurst.parse(burst),),
        )


def test_a_bad_attack_burst_stops_the_command_with_one_line(tmp_path: Path) -> None:
    completed = fedguard("simulate", "--clients", "3", "--attack-burst", "2:4",
                         "--attack-burst", "5:4", "--out", str(tmp_path))  # fmt: skip

    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines() == [
        "error: --attack-burst AGENT must be an agent index in [0, 2] "
        "(--clients 3); got 5"
    ]
    assert not (tmp_path / "server").exists()


def test_an_attack_burst_fires_the_default_threat_rate_policy_in_its_round(
    tmp_path: Path, nsl_kdd_dir: Path
) -> None:
    out = tmp_path / "run"
    completed = fedguard(
        "simulate", "--dataset", "nsl-kdd", "--data-dir", str(nsl_kdd_dir),
        "--train-file", "KDDTrain+_20Percent.txt", "--clients", "3", "--rounds", "5",
        "--attack-burst", "2:4", "--out", str(out),
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    rates = {entry["round"]: entry["threat_rate"] for entry in metrics["rounds"]}
    assert rates[4] > rates[3] + 0.1 and rates[4] > rates[5] + 0.1

    # Only round 4 fired: not in the warm-up, not after the burst.
    actions = metrics["actions"]
    assert {entry["round"] for entry in actions} == {4}
    assert {entry["policy"] for entry in actions} <= {
        "threat-rate-rise",
        "threat-rate-high",
    }
    assert all(entry["outcome"] == "done" for entry in actions)
    log = next(e for e in actions if e["type"] == "log")
    blocklist = next(e for e in actions if e["type"] == "blocklist")
    assert log["detail"].startswith(f"policy {log['policy']} fired in round 4")
    assert f"threat_rate = {rates[4]:.4f}" in log["detail"]
    entry = blocklist["blocklist_entry"]
    assert (entry["round"], entry["client_id"], entry["value"]) == (4, None, rates[4])

    # The same facts in the report: log line, blocklist entry, threshold.
    report = (out / "report.html").read_text()
    section = report.split("<h2>Policies and actions</h2>", 1)[1].split("<h2>")[0]
    assert html.escape(log["detail"]) in section
    assert html.escape(json.dumps(entry, sort_keys=True)) in section
    assert "<td>4</td>" in section and "<td>3</td>" not in section
    # And on the command's output.
    assert "policies fired and their actions" in completed.stdout


def test_report_renders_rounds_and_the_comparison() -> None:
    rounds = [
        {key: 0.5 for key in ROUND_KEYS} | {"round": n, "bytes_uploaded": 100}
        for n in (1, 2)
    ]
    metrics = {
        "settings": {"dataset": "synthetic", "plaintext": False},
        "rounds": rounds,
        "final": rounds[-1],
        "centralized": {"f1": 0.6, "accuracy": 0.7},
    }

    page = render_report(metrics)

    assert "<h2>Final model against the centralised baseline</h2>" in page
    assert "-0.1000" in page
    assert page.count("<img") == 3


def test_report_lists_actions_with_their_details_escaped() -> None:
    fired = {
        "round": 4,
        "policy": "threat-rate-rise",
        "severity": "high",
        "metric": "threat_rate",
        "value": 0.7,
        "comparison": ">=",
        "threshold": 0.1,
        "baseline": 0.45,
        "compared": 0.25,
        "dry_run": False,
    }
    actions = [
        fired | {"action": "soar", "type": "webhook", "outcome": "failed",
                 "attempts": 4, "http_status": 500, "detail": "HTTP 500"},
        fired | {"action": "tighten", "type": "agent", "outcome": "queued",
                 "attempts": 1, "http_status": None, "detail": "<b>directive</b>",
                 "acks": [{"client_id": "c-1", "status": "refused",
                           "detail": "handler 'x' is not enabled"}]},
    ]  # fmt: skip
    metrics = {"settings": {}, "rounds": [], "actions": actions}

    page = render_report(metrics)

    assert "threat_rate = 0.7000, +0.2500 over the mean 0.4500" in page
    assert "&gt;= +0.1000" in page
    assert "failed, 4 attempt(s), HTTP 500" in page
    assert "&lt;b&gt;directive&lt;/b&gt;" in page and "<b>directive" not in page
    assert "c-1: refused (handler &#x27;x&#x27; is not enabled)" in page
