"""``fedguard report`` reads the database of a real federation, or a metrics.json.

The federation is a short real simulation (a server and two agent processes over
HTTPS) in which a policy fires in round 2 with a log line, a blocklist entry and a
directive the agents acknowledge, so the report has every kind of row to show.
"""

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fedguard.crypto.keys import PrivateKey, save_private_key
from fedguard.simulate import SimulationSettings, run_simulation

pytestmark = pytest.mark.slow

POLICY = {
    "name": "any-threat",
    "metric": "threat_rate",
    "comparison": ">=",
    "threshold": 0.0,
    "cooldown": 1000,
    "severity": "high",
    "actions": ["log", "blocklist", "tighten"],
}
ACTIONS = {
    "tighten": {"type": "agent", "handler": "lower_threshold", "params": {"by": 0.05}}
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, private_key_2048: PrivateKey) -> Path:
    """The output directory of a finished simulation: metrics.json and server/."""
    out = tmp_path_factory.mktemp("federation")
    key_file = out / "federation-key.json"
    save_private_key(private_key_2048, key_file)
    settings = SimulationSettings(
        clients=2,
        rounds=3,
        rows_per_cloud=1500,
        out_dir=out / "run",
        key_file=key_file,
        extra_config={"actions": ACTIONS, "policies": [POLICY]},
    )

    result = run_simulation(settings)

    assert {entry["round"] for entry in result.actions} == {2}
    return out / "run"


def fedguard(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, without the caller's FEDGUARD_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FEDGUARD_")}
    return subprocess.run(
        [sys.executable, "-m", "fedguard", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=clean | env,
    )


def snapshot(directory: Path) -> dict[str, str]:
    """Every file of ``directory`` with the SHA-256 of its bytes."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


def one_error_line(completed: subprocess.CompletedProcess[str]) -> str:
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == ""
    (line,) = completed.stderr.splitlines()
    return line


# --- the orchestrator's database -------------------------------------------------


def test_the_database_report_agrees_with_what_the_simulation_saw(
    run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "federation.html"
    before = snapshot(run / "server")

    done = fedguard("report", "--state-dir", str(run / "server"), "--out", str(out),
                    "--json")  # fmt: skip

    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    metrics = json.loads((run / "metrics.json").read_text())
    rounds = {entry["round"]: entry for entry in document["rounds"]}
    assert [(n, rounds[n]["kind"]) for n in sorted(rounds)] == [
        (0, "setup"),
        (1, "training"),
        (2, "training"),
        (3, "training"),
        (4, "evaluation"),
    ]
    # The fleet metrics in the database are those the simulation read over HTTP.
    for entry in metrics["rounds"]:
        assert rounds[entry["round"]]["fleet"] == entry["fleet"]
        assert rounds[entry["round"]]["clients"] == entry["clients"]
    assert document["evaluation"]["fleet"] == metrics["evaluation"]["fleet"]
    assert [rounds[n]["model_version"] for n in (2, 3, 4)] == [1, 2, 3]
    # Every action with its outcome, blocklist entry and acknowledgements.
    assert document["actions"] == metrics["actions"]
    kinds = {entry["type"]: entry for entry in document["actions"]}
    assert kinds["blocklist"]["blocklist_entry"]["policy"] == "any-threat"
    assert sorted(ack["status"] for ack in kinds["agent"]["acks"]) == [
        "applied",
        "applied",
    ]
    assert document["settings"]["status"] == "finished"
    assert document["settings"]["training rounds closed"] == 3
    assert done.stderr.strip().endswith(f"wrote {out}")

    # The HTML report: the orchestrator's sections, no test set.
    page = out.read_text()
    assert "<h1>fedguard federation: synthetic, encrypted</h1>" in page
    assert (
        "<h2>Fleet metrics</h2>" in page and "an orchestrator has no test set" in page
    )
    assert "any-threat (high)" in page
    assert "Detection on the test set" not in page
    assert page.count('src="data:image/png;base64,') == 5

    # Read only: not one byte of the state directory changed, nothing was added.
    assert snapshot(run / "server") == before


def test_the_tables_show_rounds_fleet_metrics_and_actions(
    run: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{run / 'server' / 'fedguard.db'}"

    done = fedguard("report", "--database-url", url, "--out",
                    str(tmp_path / "r.html"))  # fmt: skip

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    metrics = json.loads((run / "metrics.json").read_text())
    round_two = next(line for line in lines if line.startswith("│     2 │ training"))
    assert f"{metrics['rounds'][1]['threat_rate']:.4f}" in round_two
    assert any(line.startswith("│     4 │ evaluation") for line in lines)
    assert "finished: 3 training rounds closed, 2 agents" in done.stdout
    assert "any-threat (high)" in done.stdout
    assert "tighten (agent)" in done.stdout and ": applied" in done.stdout
    assert (tmp_path / "r.html").is_file()


def test_a_directory_without_a_database_is_refused_creating_nothing(
    tmp_path: Path,
) -> None:
    missing, empty = tmp_path / "nowhere", tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "report.html"

    assert one_error_line(
        fedguard("report", "--state-dir", str(missing), "--out", str(out))
    ) == (f"error: --state-dir {missing} does not exist")
    assert one_error_line(
        fedguard("report", "--state-dir", str(empty), "--out", str(out))
    ) == (
        f"error: no orchestrator database at {empty / 'fedguard.db'}; pass the "
        "server's --state-dir or --database-url"
    )

    assert not missing.exists()
    assert list(empty.iterdir()) == []
    assert not out.exists()


def test_a_database_of_something_else_is_refused_untouched(tmp_path: Path) -> None:
    database = tmp_path / "fedguard.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    connection.close()
    before = snapshot(tmp_path)

    line = one_error_line(fedguard("report", "--state-dir", str(tmp_path), "--out",
                                   str(tmp_path / "r.html")))  # fmt: skip

    assert line == (
        f"error: {tmp_path} holds no orchestrator database (no table fg_rounds); "
        "pass the server's --state-dir or --database-url"
    )
    assert snapshot(tmp_path) == before


def test_options_are_checked_before_anything_is_read(run: Path, tmp_path: Path) -> None:
    assert one_error_line(fedguard("report")) == (
        "error: pass the orchestrator's --state-dir DIR (or --database-url URL), "
        "or --metrics FILE of a simulation"
    )
    assert one_error_line(
        fedguard("report", "--state-dir", str(run / "server"), "--out",
                 str(tmp_path / "no" / "r.html"))
    ) == f"error: --out directory {tmp_path / 'no'} does not exist"  # fmt: skip
    assert one_error_line(
        fedguard("report", "--database-url", "not a url", "--out",
                 str(tmp_path / "r.html"))
    ) == "error: --database-url is not a SQLAlchemy URL"  # fmt: skip
    assert not (tmp_path / "r.html").exists()


# --- a simulation's metrics.json -------------------------------------------------


def test_metrics_json_is_rendered_again_beside_itself(
    run: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(run / "metrics.json", copy / "metrics.json")

    done = fedguard("report", "--metrics", str(copy / "metrics.json"))

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {copy / 'report.html'}"
    page = (copy / "report.html").read_text()
    assert "<h1>fedguard simulation: synthetic, encrypted</h1>" in page
    for heading in (
        "Fleet metrics",
        "Policies and actions",
        "Detection on the test set",
    ):
        assert f"<h2>{heading}</h2>" in page
    assert page.count('src="data:image/png;base64,') == 6


def test_metrics_takes_a_run_directory_and_ignores_the_environment(
    run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "again.html"

    done = fedguard("report", "--metrics", str(run), "--out", str(out),
                    FEDGUARD_STATE_DIR=str(tmp_path / "elsewhere"))  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "<h2>Fleet metrics</h2>" in out.read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"error: --metrics .*/metrics\.json does not exist"),
        ("{not json", r"error: --metrics .*/metrics\.json is not JSON: Expecting"),
        (
            '{"rounds": [{"f1": 1}]}',
            r"error: --metrics .* is not the metrics.json of a",
        ),
    ],
)
def test_a_file_that_is_not_metrics_json_is_one_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "metrics.json"
    if content is not None:
        path.write_text(content)

    line = one_error_line(fedguard("report", "--metrics", str(path)))

    assert re.match(message, line), line
    assert not (tmp_path / "report.html").exists()


def test_metrics_cannot_be_combined_with_a_database(run: Path) -> None:
    line = one_error_line(
        fedguard("report", "--metrics", str(run), "--state-dir", str(run / "server"))
    )

    assert line == (
        "error: --metrics renders a simulation's file; it cannot be combined with "
        "--state-dir"
    )
