"""What the orchestrator does when a policy fires.

Each configured action becomes an object with ``execute(decision, action_id)`` that
returns an :class:`ActionOutcome`; :class:`~fedguard.response.dispatch.Dispatcher`
runs them on worker threads and records the outcomes.

``log``
    a WARNING naming the policy, the metric, its value and the limit; the audit log
    keeps the line's text as the action's detail.
``webhook``
    a signed POST of :func:`webhook_document` (see :mod:`fedguard.response.webhook`).
``blocklist``
    one JSON line per decision appended to a 0600 file (see
    :mod:`fedguard.response.jsonl`); ``client_id`` is null because fleet metrics are
    aggregates that name no agent.
``agent``
    a directive queued in the audit store for agents to pick up on their next poll.
    It is only a local database insert, so the dispatcher runs it before returning
    (``inline``): agents that see the next round also see the directive.
"""

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import httpx

from fedguard.response.audit import ActionStatus, AuditStore
from fedguard.response.engine import Decision
from fedguard.response.jsonl import append_json_line
from fedguard.response.policies import (
    ActionConfig,
    AgentActionConfig,
    BlocklistActionConfig,
    LogActionConfig,
    ResponseConfig,
    WebhookActionConfig,
)
from fedguard.response.webhook import deliver

logger = logging.getLogger(__name__)

DEFAULT_BLOCKLIST = "blocklist.jsonl"
DEFAULT_DIRECTIVE_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class ActionOutcome:
    """How one action ended; stored in the audit log."""

    status: ActionStatus
    attempts: int = 1
    http_status: int | None = None
    detail: str = ""


class Action(Protocol):
    """An executable action built from one ``[actions.<name>]`` table."""

    name: str
    type: str
    # True for actions that only write to the orchestrator's own database.
    inline: bool

    def execute(self, decision: Decision, action_id: str) -> ActionOutcome: ...

    def close(self) -> None: ...


class LogAction:
    """Write a WARNING for the decision."""

    type = "log"
    inline = False

    def __init__(self, name: str) -> None:
        self.name = name

    def execute(self, decision: Decision, action_id: str) -> ActionOutcome:
        line = log_line(decision)
        logger.warning("%s", line)
        return ActionOutcome("done", detail=line)

    def close(self) -> None:
        """Nothing to release."""


class BlocklistAction:
    """Append an indicator line for the decision to a JSON-lines file."""

    type = "blocklist"
    inline = False

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path

    def execute(self, decision: Decision, action_id: str) -> ActionOutcome:
        append_json_line(self.path, blocklist_entry(decision, action_id))
        return ActionOutcome("done", detail=f"appended to {self.path.name}")

    def close(self) -> None:
        """Nothing to release."""


class WebhookAction:
    """POST a signed JSON document, retrying transient failures."""

    type = "webhook"
    inline = False

    def __init__(
        self,
        config: WebhookActionConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self._config = config
        self._sleep = sleep
        self._clock = clock
        # No redirects: a 3xx would carry the signed document to another URL.
        self._client = httpx.Client(
            timeout=config.timeout, follow_redirects=False, trust_env=False
        )

    def execute(self, decision: Decision, action_id: str) -> ActionOutcome:
        body = json.dumps(webhook_document(decision, action_id), sort_keys=True).encode(
            "utf-8"
        )
        result = deliver(
            self._client,
            self._config.url,
            body,
            self._config.secret.reveal().encode("utf-8"),
            delivery_id=action_id,
            retries=self._config.retries,
            backoff=self._config.backoff,
            max_backoff=self._config.max_backoff,
            sleep=self._sleep,
            clock=self._clock,
        )
        status: ActionStatus = "delivered" if result.delivered else "failed"
        return ActionOutcome(status, result.attempts, result.status_code, result.detail)

    def close(self) -> None:
        self._client.close()


class DirectiveAction:
    """Queue a directive for agents in the audit store."""

    type = "agent"
    inline = True

    def __init__(
        self,
        config: AgentActionConfig,
        audit: AuditStore,
        *,
        ttl: timedelta = DEFAULT_DIRECTIVE_TTL,
    ) -> None:
        self.name = config.name
        self._config = config
        self._audit = audit
        self._ttl = ttl

    def execute(self, decision: Decision, action_id: str) -> ActionOutcome:
        directive_id = uuid.uuid4().hex
        self._audit.create_directive(
            directive_id=directive_id,
            action_id=action_id,
            decision=decision,
            handler=self._config.handler,
            params=dict(self._config.params),
            target=self._config.target,
            ttl=self._ttl,
        )
        who = "all agents" if self._config.target is None else "named agents"
        return ActionOutcome(
            "queued",
            detail=f"directive {directive_id} ({self._config.handler}) for {who}",
        )

    def close(self) -> None:
        """Nothing to release."""


def log_line(decision: Decision) -> str:
    """The WARNING the ``log`` action writes for ``decision``."""
    return (
        f"policy {decision.policy} fired in round {decision.round} "
        f"(severity {decision.severity}): {decision.describe()}"
    )


def webhook_document(decision: Decision, action_id: str) -> dict[str, object]:
    """The JSON document a webhook receives."""
    document = decision.to_document()
    document.update(
        {
            "action_id": action_id,
            "source": "fedguard",
            "summary": f"policy {decision.policy} fired: {decision.describe()}",
        }
    )
    return document


def blocklist_entry(decision: Decision, action_id: str) -> dict[str, object]:
    """One indicator line of the blocklist file."""
    return {
        "action_id": action_id,
        "decision_id": decision.decision_id,
        "client_id": None,
        "policy": decision.policy,
        "severity": decision.severity,
        "round": decision.round,
        "model_version": decision.model_version,
        "metric": decision.metric,
        "value": decision.value,
        "time": datetime.now(UTC).isoformat(),
    }


def build_actions(
    config: ResponseConfig,
    *,
    state_dir: Path,
    audit: AuditStore,
    sleep: Callable[[float], None] = time.sleep,
    directive_ttl: timedelta = DEFAULT_DIRECTIVE_TTL,
) -> dict[str, Action]:
    """Executable actions for every configured action name.

    Relative blocklist paths are taken relative to ``state_dir``.
    """
    return {
        name: build_action(
            action, state_dir=state_dir, audit=audit, sleep=sleep, ttl=directive_ttl
        )
        for name, action in config.actions.items()
    }


def build_action(
    config: ActionConfig,
    *,
    state_dir: Path,
    audit: AuditStore,
    sleep: Callable[[float], None] = time.sleep,
    ttl: timedelta = DEFAULT_DIRECTIVE_TTL,
) -> Action:
    """The executable form of one validated action configuration."""
    if isinstance(config, LogActionConfig):
        return LogAction(config.name)
    if isinstance(config, BlocklistActionConfig):
        return BlocklistAction(config.name, _blocklist_path(config, state_dir))
    if isinstance(config, WebhookActionConfig):
        return WebhookAction(config, sleep=sleep)
    return DirectiveAction(config, audit, ttl=ttl)


def _blocklist_path(config: BlocklistActionConfig, state_dir: Path) -> Path:
    path = Path(config.path) if config.path else Path(DEFAULT_BLOCKLIST)
    return path if path.is_absolute() else state_dir / path


def close_actions(actions: Mapping[str, Action]) -> None:
    """Release the HTTP clients and other resources of ``actions``."""
    for action in actions.values():
        action.close()
