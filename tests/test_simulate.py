"""fedguard simulate: real server and agent processes, metrics.json and report.html."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedguard.errors import ConfigError
from fedguard.report import render_report
from fedguard.simulate import SimulationSettings, run_simulation

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


def test_command_runs_a_federation_and_writes_its_outputs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "fedguard", "simulate", "--clients", "2",
         "--rounds", "2", "--rows", "1500", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "centralised baseline" in completed.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert [entry["round"] for entry in metrics["rounds"]] == [1, 2]
    assert set(metrics["rounds"][0]) >= ROUND_KEYS
    assert metrics["final"] == metrics["rounds"][-1]
    assert metrics["rounds"][0]["clients"] == 2
    assert 0.5 < metrics["final"]["accuracy"] <= 1.0
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 3
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
