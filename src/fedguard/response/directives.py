"""The allow-list of directives the orchestrator may send to agents.

A directive names a handler the agent has configured locally and a few numeric
parameters; it never carries a command, a path or code. The orchestrator validates a
directive against this list when it reads its configuration, and the agent validates
it again before applying it (see :mod:`fedguard.client.directives`), so a tampered or
newer server cannot make an agent do anything outside it.

Handlers
--------
``lower_threshold``
    ``by`` (float in (0, 0.5]): lower the agent's alert threshold by this much, never
    below the floor the agent configured itself.
``quarantine``
    ``max_events`` (int in [1, 100000], default 1000): copy the agent's most recently
    flagged events to its local quarantine file.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fedguard.errors import InputError


@dataclass(frozen=True)
class ParamRule:
    """One numeric parameter of a directive: its type, bounds and default."""

    kind: type[int] | type[float]
    minimum: float
    maximum: float
    default: float | int | None = None
    exclusive_minimum: bool = False

    def describe(self) -> str:
        low = "(" if self.exclusive_minimum else "["
        return f"{self.kind.__name__} in {low}{self.minimum}, {self.maximum}]"


DIRECTIVE_HANDLERS: Mapping[str, Mapping[str, ParamRule]] = {
    "lower_threshold": {
        "by": ParamRule(float, 0.0, 0.5, exclusive_minimum=True),
    },
    "quarantine": {
        "max_events": ParamRule(int, 1, 100_000, default=1000),
    },
}


def validate_directive(handler: str, params: Mapping[str, object]) -> dict[str, object]:
    """Check a handler name and its parameters against the allow-list.

    Returns the parameters with defaults filled in. Raises :class:`InputError`
    naming the handler or parameter, the accepted range and the value received.
    """
    rules = DIRECTIVE_HANDLERS.get(handler)
    if rules is None:
        raise InputError(
            f"directive handler must be one of {sorted(DIRECTIVE_HANDLERS)}; "
            f"got {handler!r}"
        )
    unknown = sorted(set(params) - set(rules))
    if unknown:
        raise InputError(
            f"directive {handler!r} has unknown parameters {unknown!r}; "
            f"accepted: {sorted(rules)}"
        )

    checked: dict[str, object] = {}
    for name, rule in rules.items():
        if name not in params:
            if rule.default is None:
                raise InputError(
                    f"directive {handler!r} needs parameter {name!r} "
                    f"({rule.describe()})"
                )
            checked[name] = rule.default
            continue
        checked[name] = _checked_param(handler, name, params[name], rule)
    return checked


def _checked_param(handler: str, name: str, value: object, rule: ParamRule) -> object:
    integral = rule.kind is int
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integral and not isinstance(value, int))
    ):
        raise InputError(
            f"directive {handler!r} parameter {name!r} must be {rule.describe()}; "
            f"got {value!r}"
        )

    number: float = rule.kind(value)
    too_low = (
        number <= rule.minimum if rule.exclusive_minimum else number < rule.minimum
    )
    if not math.isfinite(number) or too_low or number > rule.maximum:
        raise InputError(
            f"directive {handler!r} parameter {name!r} must be {rule.describe()}; "
            f"got {value!r}"
        )
    return number
