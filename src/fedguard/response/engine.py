"""The policy engine: which policies fire after a round, and with what evidence.

:meth:`ResponseEngine.evaluate` does no I/O: it compares the metrics history with the
policies and returns :class:`Decision` objects. Acting on them is the job of
:class:`fedguard.response.dispatch.Dispatcher`, which never blocks the caller.

Two values closer than :data:`TOLERANCE` count as equal, so a rate that rose by
exactly the configured 0.10 fires even though ``0.3 - 0.2`` is
``0.09999999999999998`` in binary floating point.
"""

import logging
import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fedguard.errors import InputError
from fedguard.response.policies import Policy, ResponseConfig

logger = logging.getLogger(__name__)

TOLERANCE = 1e-9

MetricsHistory = Sequence[Mapping[str, float]]


@dataclass(frozen=True)
class Decision:
    """A policy that fired in one round, with the evidence that made it fire.

    ``value`` is the metric in this round; ``compared`` is what was checked against
    ``limit``: the value itself in threshold mode, or its change over ``baseline``
    (the mean of the previous ``window`` rounds) in rise mode.
    """

    decision_id: str
    policy: str
    metric: str
    value: float
    compared: float
    comparison: str
    limit: float
    baseline: float | None
    severity: str
    round: int
    model_version: int
    dry_run: bool
    actions: tuple[str, ...]
    metrics: Mapping[str, float] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def describe(self) -> str:
        """One human sentence: what crossed which limit."""
        if self.baseline is None:
            return (
                f"{self.metric} = {self.value:.4f} {self.comparison} "
                f"threshold {self.limit:.4f}"
            )
        return (
            f"{self.metric} = {self.value:.4f} changed by {self.compared:+.4f} over "
            f"the mean {self.baseline:.4f} of previous rounds "
            f"({self.comparison} {self.limit:+.4f})"
        )

    def to_document(self) -> dict[str, object]:
        """The JSON-ready form used by webhooks, the blocklist and the audit log."""
        return {
            "decision_id": self.decision_id,
            "policy": self.policy,
            "severity": self.severity,
            "round": self.round,
            "model_version": self.model_version,
            "metric": self.metric,
            "value": self.value,
            "compared": self.compared,
            "comparison": self.comparison,
            "limit": self.limit,
            "baseline": self.baseline,
            "metrics": dict(self.metrics),
            "dry_run": self.dry_run,
            "time": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class Evidence:
    """Why a policy's condition holds in the current round."""

    value: float
    compared: float
    baseline: float | None


class ResponseEngine:
    """Evaluates the configured policies after each round.

    The engine remembers in which round each policy last fired (to apply cooldowns);
    pass ``last_fired`` from :meth:`AuditStore.last_fired_rounds` after a restart so
    that a policy does not fire again inside its cooldown.
    """

    def __init__(
        self,
        config: ResponseConfig,
        *,
        last_fired: Mapping[str, int] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self._last_fired: dict[str, int] = dict(last_fired or {})
        self._clock = clock

    @property
    def last_fired(self) -> Mapping[str, int]:
        """The round in which each policy last fired."""
        return dict(self._last_fired)

    def evaluate(
        self, round_id: int, model_version: int, metrics_history: MetricsHistory
    ) -> list[Decision]:
        """Decisions for ``round_id``; ``metrics_history`` ends with this round.

        ``metrics_history`` holds one metrics mapping per completed round, oldest
        first. A metric missing from a round (or NaN) makes every condition that
        needs it false: a policy never fires on missing data. A policy stays silent
        while ``round_id`` is within its ``warmup_rounds``.
        """
        if not metrics_history:
            raise InputError("metrics_history must hold at least the current round")

        decisions: list[Decision] = []
        for policy in self.config.policies:
            if round_id <= policy.warmup_rounds:
                continue
            evidence = check_policy(policy, metrics_history)
            if evidence is None:
                continue
            if self._cooling_down(policy, round_id):
                continue

            self._last_fired[policy.name] = round_id
            decisions.append(
                self._decision(
                    policy, evidence, round_id, model_version, metrics_history
                )
            )
        return decisions

    def _cooling_down(self, policy: Policy, round_id: int) -> bool:
        last = self._last_fired.get(policy.name)
        if last is None or round_id > last + policy.cooldown:
            return False

        logger.debug(
            "policy %s holds in round %d but is cooling down (fired in round %d)",
            policy.name,
            round_id,
            last,
        )
        return True

    def _decision(
        self,
        policy: Policy,
        evidence: Evidence,
        round_id: int,
        model_version: int,
        history: MetricsHistory,
    ) -> Decision:
        current = {k: float(v) for k, v in history[-1].items() if _usable(v)}
        return Decision(
            decision_id=uuid.uuid4().hex,
            policy=policy.name,
            metric=policy.metric,
            value=evidence.value,
            compared=evidence.compared,
            comparison=policy.comparison,
            limit=policy.limit,
            baseline=evidence.baseline,
            severity=policy.severity,
            round=round_id,
            model_version=model_version,
            dry_run=policy.dry_run or self.config.dry_run,
            actions=policy.actions,
            metrics=current,
            created_at=self._clock(),
        )


def check_policy(policy: Policy, history: MetricsHistory) -> Evidence | None:
    """The current round's evidence if ``policy``'s condition holds, else None.

    With ``for_rounds`` N the condition must hold at each of the last N entries of
    ``history``; too short a history never fires.
    """
    if len(history) < policy.for_rounds:
        return None

    evidence: Evidence | None = None
    for index in range(len(history) - policy.for_rounds, len(history)):
        evidence = _condition_at(policy, history, index)
        if evidence is None:
            return None
    return evidence


def compare(left: float, comparison: str, right: float) -> bool:
    """``left <comparison> right`` where values within TOLERANCE are equal."""
    if comparison == ">":
        return left > right + TOLERANCE
    if comparison == ">=":
        return left >= right - TOLERANCE
    if comparison == "<":
        return left < right - TOLERANCE
    if comparison == "<=":
        return left <= right + TOLERANCE
    raise InputError(f"comparison must be one of >, >=, <, <=; got {comparison!r}")


def _condition_at(
    policy: Policy, history: MetricsHistory, index: int
) -> Evidence | None:
    value = history[index].get(policy.metric)
    if not _usable(value):
        return None
    assert value is not None
    value = float(value)

    baseline: float | None = None
    compared = value
    if policy.window is not None:
        baseline = _baseline(policy.metric, history, index, policy.window)
        if baseline is None:
            return None
        compared = value - baseline

    if not compare(compared, policy.comparison, policy.limit):
        return None
    return Evidence(value=value, compared=compared, baseline=baseline)


def _baseline(
    metric: str, history: MetricsHistory, index: int, window: int
) -> float | None:
    if index < window:
        return None
    previous = [history[i].get(metric) for i in range(index - window, index)]
    if not all(_usable(v) for v in previous):
        return None
    return math.fsum(float(v) for v in previous if v is not None) / window


def _usable(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
