"""fedguard simulate: real server and agent processes, metrics.json and report.html."""

import html
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedguard.errors import ConfigError, InputError
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
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["centralized"]["rows"]
    assert (
        f"centralised baseline on the same {rows:,} training rows the agents hold"
        in (completed.stdout)
    )
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
    assert report.count("data:image/png;base64,") == 6
    assert "No policy fired in this run." in report
    assert "<h2>Fleet metrics</h2>" in report
    assert (out / "logs" / "server.log").exists()

    # Progress goes to standard error: the rounds bar counts rounds, the steps
    # before and after it have no count.
    progress = [line for line in completed.stderr.splitlines() if "━" in line]
    assert "5/5 rounds" in next(line for line in progress if "round 5" in line)
    baseline = next(line for line in progress if "centralised baseline" in line)
    assert "rounds" not in baseline
    assert "training the centralised baseline" not in completed.stdout


class RecordedProgress:
    """Keeps what a run reports, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def step(self, description: str) -> None:
        self.events.append(("step", description))

    def rounds(self, description: str, closed: int, total: int) -> None:
        self.events.append(("rounds", f"{closed}/{total}"))


def test_plaintext_run_uploads_floats_with_the_same_protocol(tmp_path: Path) -> None:
    settings = SimulationSettings(
        clients=2, rounds=2, rows_per_cloud=1500, plaintext=True, out_dir=tmp_path
    )
    progress = RecordedProgress()

    result = run_simulation(settings, progress)

    assert progress.events == [
        ("step", "loading the test set"),
        ("step", "starting the orchestrator and 2 agents"),
        ("rounds", "0/2"),
        ("rounds", "1/2"),
        ("rounds", "2/2"),
        ("step", "reading the response audit log"),
        ("step", "training the centralised baseline"),
    ]
    assert result.fingerprint == "plaintext"
    assert result.rounds[0].decryption_seconds == 0.0
    # Two plain frames of 8-byte floats: a 28-byte header, the weight, the values.
    length = (result.rounds[0].bytes_uploaded // 2 - 28 - 8) // 8
    assert length > 10
    assert json.loads((tmp_path / "metrics.json").read_text())["settings"]["plaintext"]


def test_data_files_are_checked_training_file_first(
    tmp_path: Path, nsl_kdd_dir: Path
) -> None:
    def settings(data_dir: Path) -> SimulationSettings:
        return SimulationSettings(
            dataset="nsl-kdd",
            data_dir=data_dir,
            train_file="KDDTrain+_20Percent.txt",
            out_dir=tmp_path / "run",
        )

    with pytest.raises(InputError, match=r"^--data-dir .*/nowhere does not exist$"):
        settings(tmp_path / "nowhere").check_data_files()
    (tmp_path / "file").touch()
    with pytest.raises(InputError, match=r"^--data-dir .*/file is not a directory$"):
        settings(tmp_path / "file").check_data_files()

    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(InputError, match=r"KDDTrain\+_20Percent\.txt .*not found"):
        settings(data).check_data_files()
    (data / "KDDTrain+_20Percent.txt").symlink_to(
        nsl_kdd_dir / "KDDTrain+_20Percent.txt"
    )
    with pytest.raises(InputError, match=r"KDDTest\+\.txt .*not found"):
        settings(data).check_data_files()
    (data / "KDDTest+.txt").symlink_to(nsl_kdd_dir / "KDDTest+.txt")
    settings(data).check_data_files()


def test_a_missing_data_directory_is_one_line_on_standard_error(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere"

    completed = fedguard("simulate", "--dataset", "nsl-kdd", "--data-dir",
                         str(missing), "--out", str(tmp_path / "run"))  # fmt: skip

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.splitlines() == [
        f"error: --data-dir {missing} does not exist"
    ]
    assert not (tmp_path / "run").exists()


def test_a_run_that_fails_leaves_no_progress_bars_behind(
    tmp_path: Path, closed_port_url: str
) -> None:
    port = closed_port_url.split(":")[2].split("/")[0]
    database = f"postgresql+psycopg://fedguard@127.0.0.1:{port}/none"

    completed = fedguard("simulate", "--clients", "2", "--rounds", "2",
                         "--database-url", database,
                         "--out", str(tmp_path / "run"))  # fmt: skip

    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "error: the server exited with status" in completed.stderr
    # No bars and no blank line they would leave before the error.
    assert "━" not in completed.stderr
    assert "\n\nerror:" not in completed.stderr


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
