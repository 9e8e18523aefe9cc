"""The response engine wired together for the orchestrator.

The server needs three calls::

    response = ResponseService.start(config, db_engine=engine, state_dir=state_dir)
    ...
    decisions = response.after_round(round_id, model_version, metrics_history)
    ...
    response.close()

``after_round`` evaluates the policies (cheap, no I/O) and hands the decisions to the
dispatcher's worker threads; it returns before any action runs.
"""

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from fedguard.response.actions import DEFAULT_DIRECTIVE_TTL, build_actions
from fedguard.response.audit import AuditStore
from fedguard.response.dispatch import DEFAULT_WORKERS, Dispatcher, OutcomeHook
from fedguard.response.engine import Decision, MetricsHistory, ResponseEngine
from fedguard.response.fleet import MetricsLayout
from fedguard.response.policies import ResponseConfig, parse_response_config

logger = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT = 30.0


class ResponseService:
    """Policy engine, action dispatcher and audit store of one orchestrator."""

    def __init__(
        self, engine: ResponseEngine, dispatcher: Dispatcher, audit: AuditStore
    ) -> None:
        self.engine = engine
        self.dispatcher = dispatcher
        self.audit = audit

    @classmethod
    def start(
        cls,
        raw_config: Mapping[str, Any] | ResponseConfig,
        *,
        db_engine: Engine,
        state_dir: Path,
        layout: MetricsLayout | None = None,
        dry_run: bool | None = None,
        max_workers: int = DEFAULT_WORKERS,
        directive_ttl: timedelta = DEFAULT_DIRECTIVE_TTL,
        sleep: Callable[[float], None] | None = None,
        on_outcome: OutcomeHook | None = None,
    ) -> "ResponseService":
        """Validate the configuration, create the audit tables and start workers.

        ``raw_config`` is the whole parsed TOML document (only ``policies`` and
        ``actions`` are read) or an already parsed :class:`ResponseConfig`. Raises
        :class:`~fedguard.errors.ConfigError` for an invalid policy or action.
        """
        config = (
            raw_config
            if isinstance(raw_config, ResponseConfig)
            else parse_response_config(raw_config, layout=layout, dry_run=dry_run)
        )
        audit = AuditStore(db_engine)
        audit.create_schema()

        extra: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
        actions = build_actions(
            config,
            state_dir=state_dir,
            audit=audit,
            directive_ttl=directive_ttl,
            **extra,
        )
        dispatcher = Dispatcher(
            actions, audit, max_workers=max_workers, on_outcome=on_outcome
        )
        engine = ResponseEngine(config, last_fired=audit.last_fired_rounds())
        _log_start(config)
        return cls(engine, dispatcher, audit)

    def after_round(
        self, round_id: int, model_version: int, metrics_history: MetricsHistory
    ) -> list[Decision]:
        """Evaluate the policies for a finished round and dispatch their actions."""
        decisions = self.engine.evaluate(round_id, model_version, metrics_history)
        self.dispatcher.submit(decisions)
        for decision in decisions:
            logger.info(
                "round %d: policy %s fired%s",
                round_id,
                decision.policy,
                " (dry run)" if decision.dry_run else "",
            )
        return decisions

    def close(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Wait up to ``timeout`` seconds for running actions, then release them."""
        return self.dispatcher.close(timeout)


def _log_start(config: ResponseConfig) -> None:
    source = "default" if config.default_policies else "configured"
    logger.info(
        "response engine: %d %s policies, actions %s%s",
        len(config.policies),
        source,
        ", ".join(sorted(config.actions)),
        "; global dry run" if config.dry_run else "",
    )
