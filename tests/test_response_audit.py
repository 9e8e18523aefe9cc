"""The audit store on a real SQLite file: decisions, actions, directives, acks."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fedguard.errors import ConflictError, InputError, NotFoundError
from fedguard.response.audit import AuditStore, DirectiveAck
from fedguard.response.engine import Decision
from fedguard.server.storage import open_engine, sqlite_url


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditStore]:
    engine = open_engine(sqlite_url(tmp_path))
    store = AuditStore(engine)
    store.create_schema()
    yield store
    engine.dispose()


def _decision(
    policy: str = "surge", round_id: int = 3, dry_run: bool = False
) -> Decision:
    return Decision(
        decision_id=f"{policy}-{round_id}",
        policy=policy,
        metric="threat_rate",
        value=0.8,
        compared=0.8,
        comparison=">",
        limit=0.5,
        baseline=None,
        severity="high",
        round=round_id,
        model_version=round_id,
        dry_run=dry_run,
        actions=("log", "tighten"),
        metrics={"threat_rate": 0.8, "f1": 0.9},
    )


def _queue_directive(
    audit: AuditStore,
    directive_id: str = "dir1",
    target: list[str] | None = None,
    ttl: timedelta = timedelta(hours=1),
) -> None:
    decision = _decision(round_id=len(directive_id))
    audit.record_decision(
        decision, [(f"act-{directive_id}", "tighten", "agent", "pending")]
    )
    audit.create_directive(
        directive_id=directive_id,
        action_id=f"act-{directive_id}",
        decision=decision,
        handler="lower_threshold",
        params={"by": 0.1},
        target=target,
        ttl=ttl,
    )


def test_decisions_and_outcomes_are_listed_newest_first(audit: AuditStore) -> None:
    audit.record_decision(_decision(round_id=1), [("a1", "log", "log", "pending")])
    audit.record_decision(
        _decision(round_id=2, dry_run=True), [("a2", "log", "log", "dry_run")]
    )
    audit.finish_action("a1", "done", attempts=1, detail="logged")

    newest, oldest = audit.list_decisions()

    assert (newest.round, newest.dry_run, oldest.round) == (2, True, 1)
    assert newest.actions[0].status == "dry_run"
    assert newest.actions[0].finished_at is not None
    (action,) = oldest.actions
    assert (action.status, action.attempts, action.detail) == ("done", 1, "logged")
    assert oldest.metrics == {"threat_rate": 0.8, "f1": 0.9}
    assert oldest.created_at.tzinfo is not None
    assert [d.round for d in audit.list_decisions(limit=1, offset=1)] == [1]


def test_the_listing_combines_decisions_and_directives(audit: AuditStore) -> None:
    _queue_directive(audit)

    listing = audit.listing(limit=10)

    assert [d.policy for d in listing.decisions] == ["surge"]
    assert [d.directive_id for d in listing.directives] == ["dir1"]
    assert listing.model_dump(mode="json")["directives"][0]["acks"] == []


def test_last_fired_rounds_per_policy(audit: AuditStore) -> None:
    for policy, round_id in [("a", 1), ("a", 4), ("b", 2)]:
        audit.record_decision(_decision(policy, round_id), [])

    assert audit.last_fired_rounds() == {"a": 4, "b": 2}
    assert [d.policy for d in audit.list_decisions(policy="b")] == ["b"]


def test_a_directive_is_pending_until_acknowledged(audit: AuditStore) -> None:
    _queue_directive(audit)

    (pending,) = audit.pending_directives("cloud-a")
    assert (pending.handler, pending.params, pending.policy) == (
        "lower_threshold",
        {"by": 0.1},
        "surge",
    )
    audit.acknowledge_directive("dir1", "cloud-a", DirectiveAck(status="applied"))

    assert audit.pending_directives("cloud-a") == []
    assert [d.directive_id for d in audit.pending_directives("cloud-b")] == ["dir1"]
    (record,) = audit.list_directives()
    assert [(a.client_id, a.status) for a in record.acks] == [("cloud-a", "applied")]


def test_acknowledging_twice_is_harmless_but_changing_is_refused(
    audit: AuditStore,
) -> None:
    _queue_directive(audit)
    applied = DirectiveAck(status="applied", detail="lowered")

    audit.acknowledge_directive("dir1", "cloud-a", applied)
    audit.acknowledge_directive("dir1", "cloud-a", applied)

    with pytest.raises(ConflictError, match="already acknowledged as 'applied'"):
        audit.acknowledge_directive("dir1", "cloud-a", DirectiveAck(status="refused"))
    assert len(audit.list_directives()[0].acks) == 1


def test_targeted_directives_reach_only_their_agents(audit: AuditStore) -> None:
    _queue_directive(audit, target=["cloud-b"])

    assert audit.pending_directives("cloud-a") == []
    assert len(audit.pending_directives("cloud-b")) == 1
    with pytest.raises(NotFoundError, match="does not exist"):
        audit.acknowledge_directive("dir1", "cloud-a", DirectiveAck(status="applied"))
    with pytest.raises(NotFoundError, match="does not exist"):
        audit.acknowledge_directive("nope", "cloud-b", DirectiveAck(status="applied"))


def test_expired_directives_are_not_handed_out(audit: AuditStore) -> None:
    _queue_directive(audit, ttl=timedelta(minutes=5))
    later = datetime.now(UTC) + timedelta(minutes=10)

    assert len(audit.pending_directives("cloud-a")) == 1
    assert audit.pending_directives("cloud-a", now=later) == []


def test_listing_arguments_are_checked(audit: AuditStore) -> None:
    with pytest.raises(InputError, match=r"limit must be in \[1, 1000\]; got 0"):
        audit.list_decisions(limit=0)
    with pytest.raises(InputError, match="offset must be >= 0; got -1"):
        audit.list_directives(offset=-1)
    with pytest.raises(InputError, match="client_id must have 1 to 128 characters"):
        audit.pending_directives("")


def test_unknown_action_outcome_is_refused(audit: AuditStore) -> None:
    with pytest.raises(NotFoundError, match="action 'ghost' does not exist"):
        audit.finish_action("ghost", "done", attempts=1)


def test_an_ack_detail_is_bounded() -> None:
    with pytest.raises(ValueError, match="at most 500 characters"):
        DirectiveAck(status="failed", detail="x" * 501)
