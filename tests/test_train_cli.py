"""``fedguard train`` run as a real subprocess."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedguard.commands.score import load_model_file
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


def test_a_saved_model_scores_like_fedguard_score_expects(tmp_path: Path) -> None:
    train_path, events = tmp_path / "train.csv", tmp_path / "events.csv"
    write_csv(generate_events(1_500, seed=5), train_path)
    test = generate_events(300, seed=6)
    write_csv(test, events)
    model = tmp_path / "baseline.json"

    result = run_json(
        "--csv", str(train_path), "--label-column", "verdict",
        "--normal-values", "normal", "--categorical", "protocol,service,flag,direction",
        "--drop", "flow_id", "--save-model", str(model),
    )  # fmt: skip
    scored = subprocess.run(
        [sys.executable, "-m", "fedguard", "score", str(events), "--model", str(model),
         "--format", "csv", "--all", "-o", str(tmp_path / "alerts.jsonl")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip

    assert result["model_file"] == str(model)
    assert scored.returncode == 0, scored.stderr
    saved = load_model_file(model)
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["score"] for r in records] == [
        round(float(value), 6) for value in saved.score(test)
    ]
    assert saved.schema.is_fitted and saved.spec.n_features == result["features"]


def test_attack_values_that_match_no_row_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    write_csv(generate_events(500, seed=3), path)

    completed = fedguard(
        "--csv", str(path), "--label-column", "verdict", "--attack-values", "DOS,scan",
        "--categorical", "protocol,service,flag,direction", "--drop", "flow_id",
    )  # fmt: skip

    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1
    assert re.match(
        r"error: .*flows\.csv: no row's 'verdict' value is one of attack_values "
        r"\['DOS', 'scan'\]; the column holds 'normal' \(\d+\), ",
        completed.stderr,
    ), completed.stderr


def test_normal_values_that_match_every_row_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    path.write_text("bytes,verdict\n" + "".join(f"{i},ok\n" for i in range(50)))

    completed = fedguard(
        "--csv", str(path), "--label-column", "verdict", "--normal-values", "ok"
    )

    assert completed.returncode == 2
    assert "so there is no attack to learn from; the column holds 'ok' (50)" in (
        completed.stderr
    )


def test_one_class_test_rows_report_roc_auc_as_undefined(tmp_path: Path) -> None:
    train_path, test_path = tmp_path / "train.csv", tmp_path / "test.csv"
    write_csv(generate_events(1_000, seed=1), train_path)
    events = generate_events(1_000, seed=2)
    write_csv(events.subset(events.labels == 0), test_path)
    args = (
        "--csv", str(train_path), "--test-csv", str(test_path),
        "--label-column", "verdict", "--normal-values", "normal",
        "--categorical", "protocol,service,flag,direction", "--drop", "flow_id",
    )  # fmt: skip

    result = run_json(*args)
    table = fedguard(*args)

    assert result["roc_auc"] is None
    assert result["tp"] + result["fn"] == 0 and 0.0 <= result["fpr"] <= 1.0
    assert table.returncode == 0, table.stderr
    assert re.search(r"roc_auc\s*│\s*n/a", table.stdout), table.stdout
