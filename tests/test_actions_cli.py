"""``fedguard actions`` reads the audit log a real response engine wrote."""

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedguard.response.audit import DirectiveAck
from fedguard.response.service import ResponseService
from fedguard.server.storage import open_engine, sqlite_url

SECRET = "a-test-secret-of-enough-length"


def _fedguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedguard", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def state_dir(tmp_path: Path, webhook_receiver: Callable[..., Any]) -> Path:
    """A state directory whose database holds two rounds of decisions."""
    receiver = webhook_receiver(500)
    config = {
        "actions": {
            "soar": {
                "type": "webhook",
                "url": receiver.url,
                "secret": SECRET,
                "retries": 1,
                "backoff": 0.0,
            },
            "tighten": {
                "type": "agent",
                "handler": "lower_threshold",
                "params": {"by": 0.05},
            },
        },
        "policies": [
            {
                "name": "dos-surge",
                "metric": "threat_rate.dos",
                "comparison": ">",
                "threshold": 0.2,
                "cooldown": 0,
                "severity": "critical",
                "actions": ["log", "soar", "tighten"],
            },
            {
                "name": "f1-drop",
                "metric": "f1",
                "rise": -0.1,
                "window": 1,
                "dry_run": True,
                "actions": ["blocklist"],
            },
        ],
    }
    db = open_engine(sqlite_url(tmp_path))
    service = ResponseService.start(config, db_engine=db, state_dir=tmp_path)
    history = [{"threat_rate.dos": 0.1, "f1": 0.9}]
    service.after_round(1, 1, history)
    history.append({"threat_rate.dos": 0.3, "f1": 0.7})
    service.after_round(2, 2, history)
    assert service.close(timeout=60)

    (directive,) = service.audit.pending_directives("cloud-a")
    service.audit.acknowledge_directive(
        directive.directive_id, "cloud-a", DirectiveAck(status="applied")
    )
    db.dispose()
    return tmp_path


def test_json_lists_decisions_actions_and_directives(state_dir: Path) -> None:
    done = _fedguard("actions", "--state-dir", str(state_dir), "--json")

    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    decisions = {d["policy"]: d for d in document["decisions"]}
    assert set(decisions) == {"dos-surge", "f1-drop"}

    surge = decisions["dos-surge"]
    assert (surge["round"], surge["severity"], surge["dry_run"]) == (
        2,
        "critical",
        False,
    )
    outcomes = {a["action"]: a for a in surge["actions"]}
    assert outcomes["log"]["status"] == "done"
    assert outcomes["tighten"]["status"] == "queued"
    soar = outcomes["soar"]
    assert (soar["status"], soar["attempts"], soar["http_status"]) == ("failed", 2, 500)

    drop = decisions["f1-drop"]
    assert drop["dry_run"] and drop["baseline"] == 0.9
    assert [a["status"] for a in drop["actions"]] == ["dry_run"]

    (directive,) = document["directives"]
    assert directive["handler"] == "lower_threshold"
    assert [(a["client_id"], a["status"]) for a in directive["acks"]] == [
        ("cloud-a", "applied")
    ]
    assert SECRET not in done.stdout


def test_the_table_shows_policies_and_outcomes(state_dir: Path) -> None:
    done = _fedguard("actions", "--state-dir", str(state_dir))

    assert done.returncode == 0, done.stderr
    for text in (
        "dos-surge",
        "f1-drop (dry run)",
        "soar (webhook)",
        "failed, 2 attempt(s), HTTP 500",
        "lower_threshold",
        "cloud-a: applied",
    ):
        assert text in done.stdout


def test_policy_filter_and_database_url(state_dir: Path) -> None:
    url = sqlite_url(state_dir)

    done = _fedguard("actions", "--database-url", url, "--policy", "f1-drop", "--json")

    assert done.returncode == 0, done.stderr
    assert [d["policy"] for d in json.loads(done.stdout)["decisions"]] == ["f1-drop"]


def test_an_empty_database_says_so(tmp_path: Path) -> None:
    open_engine(sqlite_url(tmp_path)).dispose()
    (tmp_path / "fedguard.db").touch()

    done = _fedguard("actions", "--state-dir", str(tmp_path))

    assert done.returncode == 0, done.stderr
    assert "no policy has fired yet" in done.stdout


def test_a_missing_state_directory_is_a_one_line_error(tmp_path: Path) -> None:
    done = _fedguard("actions", "--state-dir", str(tmp_path / "nowhere"))

    assert done.returncode == 2
    assert done.stderr.startswith("error: no orchestrator database at")
    assert (
        "--limit must be in [1, 1000]; got 0"
        in _fedguard("actions", "--state-dir", str(tmp_path), "--limit", "0").stderr
    )
