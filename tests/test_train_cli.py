"""``fedguard train`` run as a real subprocess."""

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedguard.data import Dataset, generate_events

METRIC_KEYS = {"accuracy", "precision", "recall", "f1", "roc_auc", "fpr"}
SIZE_KEYS = {"train_rows", "test_rows", "features"}


def fedguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedguard", "--quiet", "train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def run_json(*args: str) -> dict[str, Any]:
    completed = fedguard(*args, "--json")
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


def write_csv(dataset: Dataset, path: Path) -> None:
    """Write events as a flow CSV with a label column and an id column to drop."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "flow_id",
                *dataset.numeric_columns,
                *dataset.categorical_columns,
                "verdict",
            ]
        )
        for row in range(len(dataset)):
            writer.writerow(
                [
                    f"f{row}",
                    *dataset.numeric[row].tolist(),
                    *dataset.categorical[row].tolist(),
                    dataset.attack_types[row],
                ]
            )


def test_nsl_kdd_json(nsl_kdd_dir: Path) -> None:
    result = run_json("--dataset", "nsl-kdd", "--data-dir", str(nsl_kdd_dir))

    assert set(result) >= METRIC_KEYS | SIZE_KEYS
    assert result["train_rows"] == 125_973
    assert result["test_rows"] == 22_544
    assert result["features"] == 125
    assert 0.7 < result["f1"] < 0.8
    assert result["tp"] + result["fn"] == 12_833


def test_synthetic_json_is_seeded() -> None:
    first = run_json("--dataset", "synthetic", "--seed", "4", "--rows", "4000")
    second = run_json("--dataset", "synthetic", "--seed", "4", "--rows", "4000")

    assert set(first) >= METRIC_KEYS | SIZE_KEYS
    assert first["train_rows"] == 4_000
    assert first["test_rows"] == 5_000
    assert first["f1"] == second["f1"]
    assert 0.7 < first["f1"] < 0.95


def test_flow_csv_with_a_separate_test_file(tmp_path: Path) -> None:
    train_path, test_path = tmp_path / "train.csv", tmp_path / "test.csv"
    train = generate_events(3_000, seed=1)
    write_csv(train, train_path)
    write_csv(generate_events(1_000, seed=2), test_path)

    result = run_json(
        "--csv", str(train_path), "--test-csv", str(test_path),
        "--label-column", "verdict", "--normal-values", "normal",
        "--categorical", "protocol,service,flag,direction", "--drop", "flow_id",
        "--epochs", "5", "--class-weight", "balanced",
    )  # fmt: skip

    assert result["train_rows"] == 3_000
    assert result["test_rows"] == 1_000
    # Every numeric column, then one-hot over the training vocabulary + unknown.
    one_hot = sum(len(set(column)) + 1 for column in train.categorical.T)
    assert result["features"] == len(train.numeric_columns) + one_hot
    assert result["f1"] > 0.7


def test_flow_csv_holds_out_a_test_fraction(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    write_csv(generate_events(1_000, seed=3), path)

    result = run_json(
        "--csv", str(path), "--label-column", "verdict",
        "--attack-values", "port_scan,brute_force,exfiltration,dos,c2_beaconing",
        "--categorical", "protocol,service,flag,direction", "--drop", "flow_id",
        "--test-fraction", "0.3",
    )  # fmt: skip

    assert (result["train_rows"], result["test_rows"]) == (700, 300)


def test_table_output() -> None:
    completed = fedguard("--dataset", "synthetic", "--rows", "2000")

    assert completed.returncode == 0, completed.stderr
    for word in ("accuracy", "f1", "roc_auc", "fpr", "train_rows", "features"):
        assert word in completed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dataset", "kdd"],
            "--dataset must be one of nsl-kdd, synthetic; got 'kdd'",
        ),
        (
            ["--dataset", "synthetic", "--epochs", "0"],
            "--epochs must be an integer >= 1; got 0",
        ),
        (
            ["--dataset", "synthetic", "--learning-rate", "fast"],
            "--learning-rate must be a number > 0.0; got 'fast'",
        ),
        (
            ["--dataset", "synthetic", "--class-weight", "auto"],
            "--class-weight must be one of none, balanced; got 'auto'",
        ),
        (["--dataset", "nsl-kdd"], "--dataset nsl-kdd needs --data-dir DIR"),
        (
            ["--dataset", "synthetic", "--label-column", "x"],
            "--label-column only applies with --csv",
        ),
        (["--csv", "flows.csv", "--label-column", "y"], "--csv needs --attack-values"),
        ([], "give exactly one of --dataset (nsl-kdd, synthetic) and --csv FILE"),
    ],
)
def test_bad_options_give_one_line_errors(args: list[str], message: str) -> None:
    completed = fedguard(*args)

    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1
    assert completed.stderr.startswith("error: ")
    assert message in completed.stderr


def test_missing_data_dir_is_reported(tmp_path: Path) -> None:
    completed = fedguard("--dataset", "nsl-kdd", "--data-dir", str(tmp_path))

    assert completed.returncode == 2
    assert "KDDTrain+.txt (or KDDTrain+.txt.gz) not found in" in completed.stderr
