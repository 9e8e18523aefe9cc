"""Actions: blocklist files, log lines, and how configured actions are built."""

import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedguard.response.actions import (
    BlocklistAction,
    DirectiveAction,
    LogAction,
    WebhookAction,
    build_actions,
    close_actions,
)
from fedguard.response.audit import AuditStore
from fedguard.response.engine import Decision
from fedguard.response.jsonl import append_json_line
from fedguard.response.policies import parse_response_config
from fedguard.server.storage import open_engine, sqlite_url


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditStore]:
    engine = open_engine(sqlite_url(tmp_path))
    store = AuditStore(engine)
    store.create_schema()
    yield store
    engine.dispose()


def _decision() -> Decision:
    return Decision(
        decision_id="d1",
        policy="surge",
        metric="threat_rate.dos",
        value=0.42,
        compared=0.42,
        comparison=">=",
        limit=0.3,
        baseline=None,
        severity="critical",
        round=9,
        model_version=8,
        dry_run=False,
        actions=("blocklist",),
    )


def test_blocklist_lines_are_json_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "blocklist.jsonl"
    action = BlocklistAction("blocklist", path)

    outcome = action.execute(_decision(), "a1")
    action.execute(_decision(), "a2")

    assert outcome.status == "done"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["action_id"] == "a1" and second["action_id"] == "a2"
    assert first["client_id"] is None
    assert (first["policy"], first["severity"], first["round"]) == (
        "surge",
        "critical",
        9,
    )
    assert first["time"].endswith("+00:00")


def test_an_existing_wider_file_is_tightened_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "blocklist.jsonl"
    path.write_text("")
    os.chmod(path, 0o644)

    append_json_line(path, {"a": 1})

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_concurrent_appends_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "blocklist.jsonl"
    padding = "x" * 6000  # larger than a pipe buffer, to tempt interleaving
    start = threading.Barrier(8)

    def writer(thread: int) -> None:
        start.wait(timeout=30)
        for index in range(40):
            append_json_line(path, {"thread": thread, "index": index, "pad": padding})

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 8 * 40
    assert {(r["thread"], r["index"]) for r in records} == {
        (t, i) for t in range(8) for i in range(40)
    }


def test_log_action_names_policy_metric_value_and_threshold(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedguard"):
        outcome = LogAction("log").execute(_decision(), "a1")

    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "policy surge" in message and "round 9" in message
    assert "threat_rate.dos = 0.4200 >= threshold 0.3000" in message
    # The audit log keeps the exact line.
    assert (outcome.status, outcome.detail) == ("done", message)


def test_configured_actions_are_built_with_their_settings(
    tmp_path: Path, audit: AuditStore
) -> None:
    raw = {
        "actions": {
            "soar": {
                "type": "webhook",
                "url": "http://127.0.0.1:9/x",
                "secret": "a-test-secret-of-enough-length",
            },
            "siem": {"type": "blocklist", "path": "exports/indicators.jsonl"},
            "fixed": {"type": "blocklist", "path": str(tmp_path / "abs.jsonl")},
            "tighten": {"type": "agent", "handler": "quarantine"},
        }
    }

    actions = build_actions(parse_response_config(raw), state_dir=tmp_path, audit=audit)

    assert isinstance(actions["log"], LogAction)
    assert isinstance(actions["soar"], WebhookAction)
    assert isinstance(actions["tighten"], DirectiveAction)
    default, siem, fixed = actions["blocklist"], actions["siem"], actions["fixed"]
    assert isinstance(default, BlocklistAction)
    assert default.path == tmp_path / "blocklist.jsonl"
    assert isinstance(siem, BlocklistAction)
    assert siem.path == tmp_path / "exports" / "indicators.jsonl"
    assert isinstance(fixed, BlocklistAction) and fixed.path == tmp_path / "abs.jsonl"
    close_actions(actions)


def test_directive_action_queues_a_directive(tmp_path: Path, audit: AuditStore) -> None:
    raw = {"actions": {"isolate": {"type": "agent", "handler": "quarantine"}}}
    action = build_actions(parse_response_config(raw), state_dir=tmp_path, audit=audit)[
        "isolate"
    ]
    decision = _decision()
    audit.record_decision(decision, [("a1", "isolate", "agent", "pending")])

    outcome = action.execute(decision, "a1")

    assert outcome.status == "queued" and "quarantine" in outcome.detail
    (directive,) = audit.pending_directives("cloud-a")
    assert directive.params == {"max_events": 1000} and directive.round == 9
