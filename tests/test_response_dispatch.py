"""The dispatcher: actions run off the caller's thread and every outcome is recorded."""

import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedguard.response.actions import ActionOutcome, build_actions
from fedguard.response.audit import AuditStore
from fedguard.response.dispatch import Dispatcher
from fedguard.response.engine import Decision, ResponseEngine
from fedguard.response.policies import parse_response_config
from fedguard.response.service import ResponseService
from fedguard.response.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_signature,
)
from fedguard.server.storage import open_engine, sqlite_url

SECRET = "a-test-secret-of-enough-length"
SURGE = [{"threat_rate": 0.1}, {"threat_rate": 0.9, "f1": 0.7}]


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditStore]:
    engine = open_engine(sqlite_url(tmp_path))
    store = AuditStore(engine)
    store.create_schema()
    yield store
    engine.dispose()


@pytest.fixture
def fedguard_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="fedguard")
    return caplog


def _raw_config(url: str, *, dry_run: bool = False, retries: int = 2) -> dict[str, Any]:
    return {
        "actions": {
            "soar": {
                "type": "webhook",
                "url": url,
                "secret": SECRET,
                "retries": retries,
            },
            "tighten": {
                "type": "agent",
                "handler": "lower_threshold",
                "params": {"by": 0.1},
            },
        },
        "policies": [
            {
                "name": "surge",
                "metric": "threat_rate",
                "comparison": ">",
                "threshold": 0.5,
                "severity": "high",
                "actions": ["log", "blocklist", "soar", "tighten"],
                "dry_run": dry_run,
            }
        ],
    }


class Recorder:
    """Collects outcomes from the worker threads and signals each one."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, ActionOutcome]] = []
        self.changed = threading.Condition()

    def __call__(
        self, decision: Decision, action_id: str, outcome: ActionOutcome
    ) -> None:
        with self.changed:
            self.outcomes.append((action_id, outcome))
            self.changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.outcomes) >= count, 30)


def _setup(
    audit: AuditStore,
    tmp_path: Path,
    raw: dict[str, Any],
    sleep: Callable[[float], None] = lambda _: None,
) -> tuple[ResponseEngine, Dispatcher, Recorder]:
    config = parse_response_config(raw)
    actions = build_actions(config, state_dir=tmp_path, audit=audit, sleep=sleep)
    recorder = Recorder()
    return (
        ResponseEngine(config),
        Dispatcher(actions, audit, on_outcome=recorder),
        recorder,
    )


def test_every_action_runs_and_is_recorded(
    audit: AuditStore,
    tmp_path: Path,
    webhook_receiver: Callable[..., Any],
    fedguard_logs: pytest.LogCaptureFixture,
) -> None:
    receiver = webhook_receiver(200)
    engine, dispatcher, _ = _setup(audit, tmp_path, _raw_config(receiver.url))

    decisions = engine.evaluate(2, 5, SURGE)
    dispatcher.submit(decisions)
    assert dispatcher.close(timeout=60)

    (record,) = audit.list_decisions()
    assert (record.policy, record.round, record.model_version) == ("surge", 2, 5)
    statuses = {a.action: (a.status, a.attempts) for a in record.actions}
    assert statuses == {
        "log": ("done", 1),
        "blocklist": ("done", 1),
        "soar": ("delivered", 1),
        "tighten": ("queued", 1),
    }

    ((headers, body),) = receiver.requests
    document = json.loads(body)
    soar_id = next(a.action_id for a in record.actions if a.action == "soar")
    assert document["action_id"] == soar_id
    assert (document["policy"], document["severity"], document["round"]) == (
        "surge",
        "high",
        2,
    )
    assert document["model_version"] == 5 and document["metrics"]["threat_rate"] == 0.9
    assert document["time"].startswith(record.created_at.date().isoformat())
    assert verify_signature(
        SECRET.encode(), body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    )

    (line,) = (tmp_path / "blocklist.jsonl").read_text().splitlines()
    assert json.loads(line)["policy"] == "surge"
    (directive,) = audit.pending_directives("cloud-a")
    assert directive.handler == "lower_threshold" and directive.params == {"by": 0.1}

    warnings = [
        r.getMessage() for r in fedguard_logs.records if r.levelno == logging.WARNING
    ]
    assert any(
        "policy surge" in m and "threat_rate = 0.9000" in m and "threshold 0.5000" in m
        for m in warnings
    )
    assert SECRET not in fedguard_logs.text and receiver.url not in fedguard_logs.text


def test_a_failing_receiver_is_retried_then_recorded_as_failed(
    audit: AuditStore, tmp_path: Path, webhook_receiver: Callable[..., Any]
) -> None:
    receiver = webhook_receiver(500)
    engine, dispatcher, _ = _setup(
        audit, tmp_path, _raw_config(receiver.url, retries=2)
    )

    dispatcher.submit(engine.evaluate(2, 2, SURGE))
    assert dispatcher.close(timeout=60)

    (soar,) = [a for a in audit.list_decisions()[0].actions if a.action == "soar"]
    assert (soar.status, soar.attempts, soar.http_status) == ("failed", 3, 500)
    assert soar.finished_at is not None
    assert len(receiver.requests) == 3


def test_dispatch_returns_before_an_unreachable_receiver_is_given_up(
    audit: AuditStore, tmp_path: Path, closed_port_url: str
) -> None:
    # Backoff waits on this event, so delivery cannot finish before the test allows.
    released = threading.Event()
    backoffs: list[float] = []

    def sleep(seconds: float) -> None:
        backoffs.append(seconds)
        released.wait(timeout=30)

    engine, dispatcher, recorder = _setup(
        audit, tmp_path, _raw_config(closed_port_url), sleep=sleep
    )

    dispatcher.submit(engine.evaluate(2, 2, SURGE))
    # Back in the caller: the webhook is still between attempts.
    assert not any(o.status == "failed" for _, o in recorder.outcomes)

    # The other actions of the decision finish meanwhile; the webhook still waits.
    assert recorder.wait_for(3)
    assert sorted(o.status for _, o in recorder.outcomes) == ["done", "done", "queued"]

    released.set()
    assert dispatcher.close(timeout=60)
    (soar,) = [a for a in audit.list_decisions()[0].actions if a.action == "soar"]
    assert (soar.status, soar.attempts, soar.detail) == ("failed", 3, "ConnectError")
    assert len(backoffs) == 2


def test_decision_and_directive_are_stored_before_submit_returns(
    audit: AuditStore, tmp_path: Path, webhook_receiver: Callable[..., Any]
) -> None:
    receiver = webhook_receiver(200)
    receiver.gate.clear()
    engine, dispatcher, _ = _setup(audit, tmp_path, _raw_config(receiver.url))

    dispatcher.submit(engine.evaluate(2, 2, SURGE))

    # No waiting: an agent polling right after the round closed finds the directive.
    (directive,) = audit.pending_directives("cloud-a")
    assert directive.handler == "lower_threshold"
    (record,) = audit.list_decisions()
    assert {a.action: a.status for a in record.actions}["tighten"] == "queued"
    receiver.gate.set()
    assert dispatcher.close(timeout=60)


def test_a_hanging_receiver_does_not_hold_back_other_actions(
    audit: AuditStore, tmp_path: Path, webhook_receiver: Callable[..., Any]
) -> None:
    receiver = webhook_receiver(200)
    receiver.gate.clear()
    engine, dispatcher, recorder = _setup(audit, tmp_path, _raw_config(receiver.url))

    dispatcher.submit(engine.evaluate(2, 2, SURGE))
    assert receiver.arrived.wait(timeout=30)
    assert recorder.wait_for(3)

    pending = [a for a in audit.list_decisions()[0].actions if a.status == "pending"]
    assert [a.action for a in pending] == ["soar"]

    receiver.gate.set()
    assert dispatcher.close(timeout=60)
    assert {a.status for a in audit.list_decisions()[0].actions} == {
        "done",
        "queued",
        "delivered",
    }


def test_dry_run_records_but_does_not_act(
    audit: AuditStore,
    tmp_path: Path,
    webhook_receiver: Callable[..., Any],
    fedguard_logs: pytest.LogCaptureFixture,
) -> None:
    receiver = webhook_receiver(200)
    engine, dispatcher, recorder = _setup(
        audit, tmp_path, _raw_config(receiver.url, dry_run=True)
    )

    dispatcher.submit(engine.evaluate(2, 2, SURGE))
    assert dispatcher.close(timeout=60)

    (record,) = audit.list_decisions()
    assert record.dry_run
    assert {a.status for a in record.actions} == {"dry_run"}
    assert receiver.requests == [] and recorder.outcomes == []
    assert not (tmp_path / "blocklist.jsonl").exists()
    assert audit.pending_directives("cloud-a") == []
    assert not any(r.levelno == logging.WARNING for r in fedguard_logs.records)
    assert "dry run: policy surge" in fedguard_logs.text


def test_a_closed_dispatcher_refuses_new_decisions(
    audit: AuditStore, tmp_path: Path
) -> None:
    engine, dispatcher, _ = _setup(audit, tmp_path, {})
    assert dispatcher.close(timeout=60)

    with pytest.raises(RuntimeError, match="closed"):
        dispatcher.submit(engine.evaluate(1, 1, [{"threat_rate": 0.9}]))


def test_the_service_restores_cooldowns_after_a_restart(
    tmp_path: Path, fedguard_logs: pytest.LogCaptureFixture
) -> None:
    db = open_engine(sqlite_url(tmp_path))
    history = [{"threat_rate": 0.9}]

    # Round 4 is the first after the default policies' warm-up.
    first = ResponseService.start({}, db_engine=db, state_dir=tmp_path)
    fired = first.after_round(4, 3, history)
    assert first.close(timeout=60)
    second = ResponseService.start({}, db_engine=db, state_dir=tmp_path)
    again = second.after_round(5, 4, [*history, {"threat_rate": 0.9}])
    assert second.close(timeout=60)
    db.dispose()

    assert [d.policy for d in fired] == ["threat-rate-high"]
    assert again == []
    lines = (tmp_path / "blocklist.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [4]
    assert "response engine: 2 default policies" in fedguard_logs.text
