"""Directives from the orchestrator, applied by handlers the agent configured itself.

The orchestrator never sends a command: a directive names a handler and a few
numeric parameters from the allow-list in :mod:`fedguard.response.directives`. The
agent applies it only if it registered a handler under that name, and only after
checking the parameters again, because the agent does not have to trust the server
with more than a lower alert threshold or a copy of its own flagged events.

Typical wiring in the agent loop::

    threshold = AlertThreshold(0.5, floor=0.2)
    registry = default_registry(threshold, state_dir / "quarantine.jsonl", recent)
    for directive in fetch_pending_directives():
        result = registry.apply(directive)
        acknowledge(directive["directive_id"], result.as_ack())
"""

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from fedguard.errors import ConfigError, InputError
from fedguard.response.directives import DIRECTIVE_HANDLERS, validate_directive
from fedguard.response.jsonl import append_json_lines

logger = logging.getLogger(__name__)

ResultStatus = Literal["applied", "refused", "failed"]


@dataclass(frozen=True)
class DirectiveResult:
    """How the agent handled one directive; sent back as the acknowledgement."""

    status: ResultStatus
    detail: str

    def as_ack(self) -> dict[str, str]:
        """The body of the acknowledgement request."""
        return {"status": self.status, "detail": self.detail[:500]}


class DirectiveHandler(Protocol):
    """Applies one kind of directive; returns a short description of what it did."""

    def __call__(
        self, params: Mapping[str, Any], directive: Mapping[str, Any]
    ) -> str: ...


class AlertThreshold:
    """The agent's alert threshold, shared by its scorer and its directive handlers.

    Directives may lower it, never below ``floor``, which the agent's operator
    configured locally.
    """

    def __init__(self, value: float, *, floor: float) -> None:
        if not 0.0 <= floor <= value <= 1.0:
            raise ConfigError(
                f"alert threshold must satisfy 0 <= floor <= value <= 1; "
                f"got floor={floor!r}, value={value!r}"
            )
        self._value = value
        self.floor = floor
        self._lock = threading.Lock()

    @property
    def value(self) -> float:
        with self._lock:
            return self._value

    def lower(self, by: float) -> tuple[float, float]:
        """Lower the threshold by ``by`` (down to the floor); return (old, new)."""
        with self._lock:
            old = self._value
            self._value = max(self.floor, old - by)
            return old, self._value


class LowerThresholdHandler:
    """``lower_threshold``: flag more events for a while after a fleet alert."""

    def __init__(self, threshold: AlertThreshold) -> None:
        self._threshold = threshold

    def __call__(self, params: Mapping[str, Any], directive: Mapping[str, Any]) -> str:
        old, new = self._threshold.lower(float(params["by"]))
        return f"alert threshold lowered from {old:.3f} to {new:.3f}"


class QuarantineHandler:
    """``quarantine``: copy the recently flagged events to a local 0600 file.

    ``flagged_events`` returns the agent's recent flagged events, oldest first; the
    newest ``max_events`` of them are written, one JSON line each, with the
    directive's id, policy and round.
    """

    def __init__(
        self,
        path: Path,
        flagged_events: Callable[[], Sequence[Mapping[str, Any]]],
    ) -> None:
        self.path = path
        self._flagged_events = flagged_events

    def __call__(self, params: Mapping[str, Any], directive: Mapping[str, Any]) -> str:
        events = list(self._flagged_events())[-int(params["max_events"]) :]
        moment = datetime.now(UTC).isoformat()
        records = [
            {
                "directive_id": directive.get("directive_id"),
                "policy": directive.get("policy"),
                "round": directive.get("round"),
                "time": moment,
                "event": dict(event),
            }
            for event in events
        ]
        append_json_lines(self.path, records)
        return f"quarantined {len(records)} flagged events"


class DirectiveRegistry:
    """The handlers this agent accepts, by allow-listed name."""

    def __init__(self, handlers: Mapping[str, DirectiveHandler] | None = None) -> None:
        self._handlers: dict[str, DirectiveHandler] = {}
        for name, handler in (handlers or {}).items():
            self.register(name, handler)

    @property
    def enabled(self) -> tuple[str, ...]:
        """Names of the handlers this agent applies."""
        return tuple(sorted(self._handlers))

    def register(self, name: str, handler: DirectiveHandler) -> None:
        """Enable ``handler`` for directives named ``name`` (allow-listed only)."""
        if name not in DIRECTIVE_HANDLERS:
            raise ConfigError(
                f"directive handler name must be one of {sorted(DIRECTIVE_HANDLERS)}; "
                f"got {name!r}"
            )
        self._handlers[name] = handler

    def apply(self, directive: Mapping[str, Any]) -> DirectiveResult:
        """Apply one directive as received from the orchestrator; never raises."""
        name = directive.get("handler")
        directive_id = str(directive.get("directive_id", "?"))[:64]
        handler = self._handlers.get(name) if isinstance(name, str) else None
        if handler is None:
            logger.warning(
                "refused directive %s: handler %r is not enabled on this agent",
                directive_id,
                name,
            )
            return DirectiveResult("refused", f"handler {name!r} is not enabled")

        try:
            params = validate_directive(str(name), _params(directive))
        except InputError as error:
            logger.warning("refused directive %s: %s", directive_id, error)
            return DirectiveResult("refused", str(error))

        return _run(handler, str(name), params, directive, directive_id)


def default_registry(
    threshold: AlertThreshold,
    quarantine_path: Path,
    flagged_events: Callable[[], Sequence[Mapping[str, Any]]],
) -> DirectiveRegistry:
    """A registry with both built-in handlers enabled."""
    return DirectiveRegistry(
        {
            "lower_threshold": LowerThresholdHandler(threshold),
            "quarantine": QuarantineHandler(quarantine_path, flagged_events),
        }
    )


def _params(directive: Mapping[str, Any]) -> Mapping[str, object]:
    params = directive.get("params", {})
    if not isinstance(params, Mapping):
        raise InputError(f"directive params must be an object; got {params!r}")
    return params


def _run(
    handler: DirectiveHandler,
    name: str,
    params: Mapping[str, Any],
    directive: Mapping[str, Any],
    directive_id: str,
) -> DirectiveResult:
    try:
        detail = handler(params, directive)
    except Exception as error:
        logger.exception("directive %s (%s) failed", directive_id, name)
        return DirectiveResult("failed", f"{name} failed: {type(error).__name__}")

    logger.info("applied directive %s (%s): %s", directive_id, name, detail)
    return DirectiveResult("applied", detail)
