"""Runs the actions of decisions on worker threads and records every outcome.

:meth:`Dispatcher.submit` records each decision (with its actions as ``pending``, or
``dry_run``) and queues its agent directives, both local database writes, then
hands every other action to a thread pool and returns. A round therefore never
waits for an action: a webhook receiver that hangs or refuses connections costs one
worker thread for at most ``(retries + 1) * timeout`` plus the backoff, never the
caller's time. Every action runs as its own task, so a slow webhook does not hold
back the log line or the blocklist entry of the same decision. Directives are
queued before ``submit`` returns so that an agent that sees the next round, or the
end of the federation, also sees the directives of the round that just closed.
"""

import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from fedguard.errors import InputError
from fedguard.response.actions import Action, ActionOutcome, close_actions
from fedguard.response.audit import ActionStatus, AuditStore
from fedguard.response.engine import Decision

logger = logging.getLogger(__name__)

DEFAULT_WORKERS = 4

OutcomeHook = Callable[[Decision, str, ActionOutcome], None]


class Dispatcher:
    """Executes decisions' actions asynchronously; see the module docstring.

    Parameters
    ----------
    actions
        Executable actions by configured name (:func:`build_actions`).
    audit
        Where decisions and action outcomes are recorded.
    max_workers
        Threads running actions at the same time.
    on_outcome
        Called after each action's outcome is recorded: on the worker thread, or on
        the caller's thread for inline actions (agent directives).
    """

    def __init__(
        self,
        actions: Mapping[str, Action],
        audit: AuditStore,
        *,
        max_workers: int = DEFAULT_WORKERS,
        on_outcome: OutcomeHook | None = None,
    ) -> None:
        self._actions = dict(actions)
        self._audit = audit
        self._on_outcome = on_outcome
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="fedguard-action"
        )
        self._idle = threading.Condition()
        self._outstanding = 0
        self._closed = False

    def submit(self, decisions: Sequence[Decision]) -> None:
        """Queue ``decisions`` and return at once."""
        for decision in decisions:
            unknown = [name for name in decision.actions if name not in self._actions]
            if unknown:
                raise InputError(
                    f"policy {decision.policy!r} names actions that are not "
                    f"configured: {unknown!r}"
                )
        with self._idle:
            if self._closed:
                raise RuntimeError("the dispatcher is closed; no new decisions")
        for decision in decisions:
            self._dispatch(decision)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every queued decision and action has finished.

        Returns False if ``timeout`` seconds passed first.
        """
        with self._idle:
            return self._idle.wait_for(lambda: self._outstanding == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new decisions, drain the queue, then release the actions.

        Returns False if work was still running after ``timeout`` seconds; those
        actions keep their ``pending`` status in the audit log and their threads
        end by themselves when their bounded retries run out.
        """
        with self._idle:
            self._closed = True
        drained = self.wait_idle(timeout)
        self._executor.shutdown(wait=drained)
        if drained:
            close_actions(self._actions)
        else:
            logger.warning("response actions still running at shutdown")
        return drained

    def _start(self, task: Callable[..., None], *args: object) -> None:
        with self._idle:
            self._outstanding += 1
        self._executor.submit(self._track, task, *args)

    def _track(self, task: Callable[..., None], *args: object) -> None:
        try:
            task(*args)
        except Exception:
            logger.exception("response task failed")
        finally:
            with self._idle:
                self._outstanding -= 1
                self._idle.notify_all()

    def _dispatch(self, decision: Decision) -> None:
        planned = self._record_decision(decision)
        if decision.dry_run:
            logger.info(
                "dry run: policy %s fired in round %d (%s); not running %s",
                decision.policy,
                decision.round,
                decision.describe(),
                ", ".join(decision.actions) or "no actions",
            )
            return

        for action_id, name in planned:
            action = self._actions[name]
            if action.inline:
                self._run_action(decision, action_id, action)
            else:
                self._start(self._run_action, decision, action_id, action)

    def _record_decision(self, decision: Decision) -> list[tuple[str, str]]:
        """Store the decision with its actions; return ``(action_id, name)`` pairs."""
        planned = [(uuid.uuid4().hex, name) for name in decision.actions]
        status: ActionStatus = "dry_run" if decision.dry_run else "pending"
        rows = [
            (action_id, name, self._actions[name].type, status)
            for action_id, name in planned
        ]
        try:
            self._audit.record_decision(decision, rows)
        except Exception:
            # Acting matters more than the record of acting; say so loudly.
            logger.exception("could not record decision of policy %s", decision.policy)
        return planned

    def _run_action(self, decision: Decision, action_id: str, action: Action) -> None:
        try:
            outcome = action.execute(decision, action_id)
        except Exception as error:
            logger.exception(
                "action %s of policy %s failed", action.name, decision.policy
            )
            outcome = ActionOutcome("failed", detail=type(error).__name__)

        self._record(action_id, outcome)
        level = logging.INFO if outcome.status != "failed" else logging.ERROR
        logger.log(
            level,
            "action %s (%s) of policy %s: %s after %d attempt(s) %s",
            action.name,
            action.type,
            decision.policy,
            outcome.status,
            outcome.attempts,
            outcome.detail,
        )
        if self._on_outcome is not None:
            self._on_outcome(decision, action_id, outcome)

    def _record(self, action_id: str, outcome: ActionOutcome) -> None:
        try:
            self._audit.finish_action(
                action_id,
                outcome.status,
                attempts=outcome.attempts,
                http_status=outcome.http_status,
                detail=outcome.detail,
            )
        except Exception:
            logger.exception("could not record the outcome of action %s", action_id)
