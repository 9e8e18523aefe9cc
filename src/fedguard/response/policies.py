"""Response policies and actions as read from the TOML configuration.

A policy compares one fleet metric with a threshold, or its rise over the mean of the
previous rounds with a limit, and names the actions to take when it fires::

    [actions]
    dry_run = false                  # true: record every decision, act on none

    [actions.soar]
    type = "webhook"
    url = "https://soar.example.net/hooks/fedguard"
    secret_env = "FEDGUARD_SOAR_SECRET"

    [[policies]]
    name = "threat-rate-rise"
    metric = "threat_rate"
    rise = 0.10                      # fires when the rate rises by >= 0.10 ...
    window = 3                       # ... over the mean of the 3 rounds before
    warmup_rounds = 3                # silent in rounds 1-3, while the model learns
    cooldown = 3                     # then stays silent for 3 rounds
    severity = "high"
    actions = ["log", "blocklist", "soar"]

The actions ``log`` and ``blocklist`` (a JSON-lines file in the state directory) are
always defined unless the configuration redefines those names. A configuration with
no ``[[policies]]`` (absent or an empty list) gets :data:`DEFAULT_POLICIES`. Any
unknown metric, action or field raises :class:`~fedguard.errors.ConfigError` naming
the policy and the field, so a mistyped policy stops the server at start-up instead
of silently never firing.
"""

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from fedguard.errors import ConfigError, InputError
from fedguard.response.directives import validate_directive
from fedguard.response.fleet import MetricsLayout

COMPARISONS: tuple[str, ...] = (">", ">=", "<", "<=")
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
ACTION_TYPES: tuple[str, ...] = ("log", "webhook", "blocklist", "agent")

Comparison = Literal[">", ">=", "<", "<="]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_ROUNDS = 1000
_MAX_COOLDOWN = 100_000
_MAX_WARMUP = 100_000
_MIN_SECRET_CHARS = 16


class Secret:
    """A credential read from the configuration; its repr never shows the value."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for computing a signature and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Policy:
    """One rule: when ``metric`` meets the condition, take ``actions``.

    In threshold mode the metric's value is compared with ``threshold``; in rise mode
    (``rise`` set) the compared value is the metric minus the mean of the ``window``
    rounds before. With ``for_rounds`` N the condition must hold in each of the last
    N rounds. After firing in round r the policy is silent in rounds r+1 … r+cooldown.
    It never fires in rounds 1 … ``warmup_rounds``, whose metrics describe a model
    that is still learning; their metrics still serve as the baseline of later
    rounds.
    """

    name: str
    metric: str
    comparison: Comparison
    threshold: float | None = None
    rise: float | None = None
    window: int | None = None
    for_rounds: int = 1
    cooldown: int = 3
    warmup_rounds: int = 0
    severity: str = "medium"
    actions: tuple[str, ...] = ("log",)
    dry_run: bool = False
    description: str = ""

    @property
    def limit(self) -> float:
        """The number the compared value is checked against."""
        limit = self.rise if self.rise is not None else self.threshold
        assert limit is not None  # guaranteed by parse_policy
        return limit


@dataclass(frozen=True)
class LogActionConfig:
    name: str
    type: Literal["log"] = "log"


@dataclass(frozen=True)
class WebhookActionConfig:
    """POST a signed JSON document; see :mod:`fedguard.response.webhook`."""

    name: str
    url: str
    secret: Secret = field(repr=False)
    timeout: float = 5.0
    retries: int = 3
    backoff: float = 1.0
    max_backoff: float = 30.0
    type: Literal["webhook"] = "webhook"


@dataclass(frozen=True)
class BlocklistActionConfig:
    """Append indicators as JSON lines; ``path`` None means the state directory."""

    name: str
    path: str | None = None
    type: Literal["blocklist"] = "blocklist"


@dataclass(frozen=True)
class AgentActionConfig:
    """Queue a directive for agents; ``target`` None means every agent."""

    name: str
    handler: str
    params: Mapping[str, object]
    target: tuple[str, ...] | None = None
    type: Literal["agent"] = "agent"


ActionConfig = (
    LogActionConfig | WebhookActionConfig | BlocklistActionConfig | AgentActionConfig
)

BUILTIN_ACTIONS: Mapping[str, ActionConfig] = {
    "log": LogActionConfig(name="log"),
    "blocklist": BlocklistActionConfig(name="blocklist"),
}

# The default policies stay silent in rounds 1-3. Round 1 reports no metrics (model
# version 0 is untrained); rounds 2 and 3 score with models trained for one and two
# rounds, whose recall may still climb quickly, and the threat rate climbs with it.
# From round 4 the rise policy compares each round with the round before: learning
# and sampling together then moved the fleet rate by at most 0.04 between rounds in
# the NSL-KDD and synthetic runs measured for docs/response.md, against a limit of
# 0.10. One round of baseline is enough because a fleet rate sums thousands of
# events, and it lets a burst in round 4 fire already.
DEFAULT_WARMUP_ROUNDS = 3

DEFAULT_POLICIES: tuple[Policy, ...] = (
    Policy(
        name="threat-rate-rise",
        metric="threat_rate",
        comparison=">=",
        rise=0.10,
        window=1,
        cooldown=3,
        warmup_rounds=DEFAULT_WARMUP_ROUNDS,
        severity="high",
        actions=("log", "blocklist"),
        description="fleet threat rate rose by 0.10 since the round before",
    ),
    Policy(
        name="threat-rate-high",
        metric="threat_rate",
        comparison=">",
        threshold=0.5,
        cooldown=5,
        warmup_rounds=DEFAULT_WARMUP_ROUNDS,
        severity="critical",
        actions=("log", "blocklist"),
        description="more than half of the fleet's recent events were flagged",
    ),
)


@dataclass(frozen=True)
class ResponseConfig:
    """Validated policies and actions; ``dry_run`` is the global switch."""

    policies: tuple[Policy, ...]
    actions: Mapping[str, ActionConfig]
    dry_run: bool = False
    default_policies: bool = False


_POLICY_FIELDS = frozenset(
    {
        "name",
        "metric",
        "comparison",
        "threshold",
        "rise",
        "window",
        "for_rounds",
        "cooldown",
        "warmup_rounds",
        "severity",
        "actions",
        "dry_run",
        "description",
    }
)
_ACTION_FIELDS: Mapping[str, frozenset[str]] = {
    "log": frozenset({"type"}),
    "webhook": frozenset(
        {
            "type",
            "url",
            "secret",
            "secret_env",
            "timeout",
            "retries",
            "backoff",
            "max_backoff",
        }
    ),
    "blocklist": frozenset({"type", "path"}),
    "agent": frozenset({"type", "handler", "params", "target"}),
}


def parse_response_config(
    raw: Mapping[str, Any],
    *,
    layout: MetricsLayout | None = None,
    dry_run: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> ResponseConfig:
    """Validate the ``policies`` and ``actions`` parts of the parsed TOML document.

    Parameters
    ----------
    raw
        The whole parsed configuration; keys other than ``policies`` and ``actions``
        are ignored.
    layout
        The federation's metrics layout, which decides the per-family metrics.
    dry_run
        Overrides ``[actions] dry_run`` (a command-line flag or environment variable).
    environ
        Where ``secret_env`` names are looked up (default: ``os.environ``).
    """
    layout = layout or MetricsLayout()
    raw_actions = raw.get("actions", {})
    if not isinstance(raw_actions, Mapping):
        raise ConfigError(f"actions must be a table; got {raw_actions!r}")
    actions, global_dry_run = _parse_actions(
        raw_actions, os.environ if environ is None else environ
    )

    raw_policies = raw.get("policies")
    # An absent table and an empty list both mean "nothing configured".
    if raw_policies is None or (
        isinstance(raw_policies, list | tuple) and not raw_policies
    ):
        policies, defaults = DEFAULT_POLICIES, True
    else:
        policies, defaults = _parse_policies(raw_policies, actions, layout), False

    return ResponseConfig(
        policies=policies,
        actions=actions,
        dry_run=global_dry_run if dry_run is None else dry_run,
        default_policies=defaults,
    )


def _parse_policies(
    raw_policies: object,
    actions: Mapping[str, ActionConfig],
    layout: MetricsLayout,
) -> tuple[Policy, ...]:
    if not isinstance(raw_policies, Sequence) or isinstance(raw_policies, str):
        raise ConfigError(
            f"policies must be an array of tables ([[policies]]); got {raw_policies!r}"
        )

    policies: list[Policy] = []
    for index, entry in enumerate(raw_policies):
        policy = parse_policy(entry, actions, layout, index=index)
        if any(existing.name == policy.name for existing in policies):
            raise ConfigError(
                f"policy {policy.name!r}: field 'name' must be unique; "
                f"{policy.name!r} is used twice"
            )
        policies.append(policy)
    return tuple(policies)


def parse_policy(
    entry: object,
    actions: Mapping[str, ActionConfig],
    layout: MetricsLayout,
    *,
    index: int = 0,
) -> Policy:
    """Validate one ``[[policies]]`` table."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"policies[{index}] must be a table; got {entry!r}")
    _require(f"policies[{index}]", entry, "name", f"a name matching {_NAME.pattern}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"policies[{index}]: field 'name' must match {_NAME.pattern}; got {name!r}"
        )
    where = f"policy {name!r}"
    _refuse_unknown(where, entry, _POLICY_FIELDS)

    _require(where, entry, "metric", f"one of {list(layout.metric_names)}")
    metric = entry.get("metric")
    if metric not in layout.metric_names:
        raise ConfigError(
            f"{where}: field 'metric' must be one of {list(layout.metric_names)}; "
            f"got {metric!r}"
        )
    threshold, rise, window, comparison = _parse_condition(where, entry)

    return Policy(
        name=name,
        metric=str(metric),
        comparison=comparison,
        threshold=threshold,
        rise=rise,
        window=window,
        for_rounds=_integer(where, entry, "for_rounds", 1, 1, _MAX_ROUNDS),
        cooldown=_integer(where, entry, "cooldown", 3, 0, _MAX_COOLDOWN),
        warmup_rounds=_integer(where, entry, "warmup_rounds", 0, 0, _MAX_WARMUP),
        severity=_choice(where, entry, "severity", "medium", SEVERITIES),
        actions=_policy_actions(where, entry, actions),
        dry_run=_boolean(where, entry, "dry_run", False),
        description=_string(where, entry, "description", ""),
    )


def _parse_condition(
    where: str, entry: Mapping[str, Any]
) -> tuple[float | None, float | None, int | None, Comparison]:
    has_threshold, has_rise = "threshold" in entry, "rise" in entry
    if not has_threshold and not has_rise:
        raise ConfigError(
            f"{where}: field 'threshold' is required (or 'rise' with 'window')"
        )
    if has_threshold == has_rise:
        field_name = "rise" if has_rise else "threshold"
        raise ConfigError(
            f"{where}: field {field_name!r}: set exactly one of 'threshold' or "
            f"'rise' (with 'window')"
        )

    if has_threshold:
        if "window" in entry:
            raise ConfigError(f"{where}: field 'window' only applies with 'rise'")
        threshold = _number(where, entry, "threshold", 0.0, 1.0)
        _require(where, entry, "comparison", f"one of {list(COMPARISONS)}")
        comparison = _choice(where, entry, "comparison", None, COMPARISONS)
        return threshold, None, None, comparison  # type: ignore[return-value]

    rise = _number(where, entry, "rise", -1.0, 1.0)
    if rise == 0:
        raise ConfigError(f"{where}: field 'rise' must be non-zero; got {rise!r}")
    if "window" not in entry:
        raise ConfigError(f"{where}: field 'window' is required with 'rise'")
    window = _integer(where, entry, "window", None, 1, _MAX_ROUNDS)
    default = ">=" if rise > 0 else "<="
    comparison = _choice(where, entry, "comparison", default, COMPARISONS)
    return None, rise, window, comparison  # type: ignore[return-value]


def _policy_actions(
    where: str, entry: Mapping[str, Any], actions: Mapping[str, ActionConfig]
) -> tuple[str, ...]:
    names = entry.get("actions", ["log"])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(
            f"{where}: field 'actions' must be a list of action names; got {names!r}"
        )
    for action_name in names:
        if action_name not in actions:
            raise ConfigError(
                f"{where}: field 'actions' names unknown action {action_name!r}; "
                f"defined actions: {sorted(actions)}"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: field 'actions' lists an action twice: {names!r}")
    return tuple(names)


def _parse_actions(
    raw_actions: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, ActionConfig], bool]:
    actions: dict[str, ActionConfig] = dict(BUILTIN_ACTIONS)
    dry_run = False
    for name, table in raw_actions.items():
        if name == "dry_run":
            if not isinstance(table, bool):
                raise ConfigError(
                    f"actions.dry_run must be true or false; got {table!r}"
                )
            dry_run = table
            continue
        actions[name] = parse_action(name, table, environ)
    return actions, dry_run


def parse_action(name: str, table: object, environ: Mapping[str, str]) -> ActionConfig:
    """Validate one ``[actions.<name>]`` table."""
    where = f"action {name!r}"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: the name must match {_NAME.pattern}")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table; got {table!r}")
    _require(where, table, "type", f"one of {list(ACTION_TYPES)}")
    kind = table.get("type")
    if kind not in ACTION_TYPES:
        raise ConfigError(
            f"{where}: field 'type' must be one of {list(ACTION_TYPES)}; got {kind!r}"
        )
    _refuse_unknown(where, table, _ACTION_FIELDS[kind])

    if kind == "log":
        return LogActionConfig(name=name)
    if kind == "blocklist":
        path = table.get("path")
        if path is not None and (not isinstance(path, str) or not path):
            raise ConfigError(
                f"{where}: field 'path' must be a file path; got {path!r}"
            )
        return BlocklistActionConfig(name=name, path=path)
    if kind == "webhook":
        return _parse_webhook(where, name, table, environ)
    return _parse_agent(where, name, table)


def _parse_webhook(
    where: str, name: str, table: Mapping[str, Any], environ: Mapping[str, str]
) -> WebhookActionConfig:
    _require(where, table, "url", "an http(s) URL")
    url = table.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: field 'url' must be an http(s) URL; got {url!r}")

    return WebhookActionConfig(
        name=name,
        url=str(url),
        secret=_webhook_secret(where, table, environ),
        timeout=_number(where, table, "timeout", 0.001, 60.0, default=5.0),
        retries=_integer(where, table, "retries", 3, 0, 10),
        backoff=_number(where, table, "backoff", 0.0, 60.0, default=1.0),
        max_backoff=_number(where, table, "max_backoff", 0.0, 300.0, default=30.0),
    )


def _webhook_secret(
    where: str, table: Mapping[str, Any], environ: Mapping[str, str]
) -> Secret:
    # The secret's value never appears in an error message.
    if ("secret" in table) == ("secret_env" in table):
        raise ConfigError(
            f"{where}: field 'secret': set exactly one of secret, secret_env"
        )
    if "secret_env" in table:
        variable = table["secret_env"]
        if not isinstance(variable, str) or variable not in environ:
            raise ConfigError(
                f"{where}: field 'secret_env' names environment variable "
                f"{variable!r}, which is not set"
            )
        value = environ[variable]
    else:
        value = table["secret"]
    if not isinstance(value, str) or len(value) < _MIN_SECRET_CHARS:
        raise ConfigError(
            f"{where}: field 'secret' must be a string of at least "
            f"{_MIN_SECRET_CHARS} characters"
        )
    return Secret(value)


def _parse_agent(where: str, name: str, table: Mapping[str, Any]) -> AgentActionConfig:
    _require(where, table, "handler", "the name of a directive handler")
    handler, params = table.get("handler"), table.get("params", {})
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: field 'params' must be a table; got {params!r}")
    try:
        checked = validate_directive(str(handler), params)
    except InputError as error:
        field_name = "handler" if "handler must" in str(error) else "params"
        raise ConfigError(f"{where}: field {field_name!r}: {error}") from None

    target = table.get("target", "all")
    if target == "all":
        return AgentActionConfig(name=name, handler=str(handler), params=checked)
    if (
        not isinstance(target, list)
        or not target
        or not all(isinstance(t, str) and t for t in target)
    ):
        raise ConfigError(
            f"{where}: field 'target' must be \"all\" or a list of client_id; "
            f"got {target!r}"
        )
    return AgentActionConfig(
        name=name, handler=str(handler), params=checked, target=tuple(target)
    )


def check_blocklist_paths(config: ResponseConfig, state_dir: Path) -> None:
    """Refuse blocklist files the server could not append to, before it starts.

    A relative path is taken from ``state_dir``, which may not exist yet (the server
    creates it); a missing file is created on the first append, so its nearest
    existing directory must be writable.
    """
    for action in config.actions.values():
        if not isinstance(action, BlocklistActionConfig) or action.path is None:
            continue
        path = Path(action.path)
        target = path if path.is_absolute() else state_dir / path
        problem = _unwritable(target)
        if problem:
            raise ConfigError(
                f"action {action.name!r}: field 'path' must name a file the server "
                f"can append to; {str(target)!r} {problem}"
            )


def _unwritable(target: Path) -> str:
    """Why ``target`` cannot be appended to, or an empty string."""
    if target.is_dir():
        return "is a directory"
    if target.exists():
        return "" if os.access(target, os.W_OK) else "is not writable"
    for ancestor in target.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"lies under {str(ancestor)!r}, which is not a directory"
            if not os.access(ancestor, os.W_OK | os.X_OK):
                return f"cannot be created in {str(ancestor)!r}"
            return ""
    return "has no existing parent directory"


def _require(where: str, table: Mapping[str, Any], key: str, accepted: str) -> None:
    if key not in table:
        raise ConfigError(
            f"{where}: field {key!r} must be {accepted}; it is required but missing"
        )


def _refuse_unknown(
    where: str, table: Mapping[str, Any], known: frozenset[str]
) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown field {key!r}; accepted fields: {sorted(known)}"
            )


def _number(
    where: str,
    table: Mapping[str, Any],
    key: str,
    low: float,
    high: float,
    default: float | None = None,
) -> float:
    value = table.get(key, default)
    valid = isinstance(value, int | float) and not isinstance(value, bool)
    if not valid or not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(
            f"{where}: field {key!r} must be a number in [{low}, {high}]; got {value!r}"
        )
    return float(value)


def _integer(
    where: str,
    table: Mapping[str, Any],
    key: str,
    default: int | None,
    low: int,
    high: int,
) -> int:
    value = table.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not low <= value <= high
    ):
        raise ConfigError(
            f"{where}: field {key!r} must be an integer in [{low}, {high}]; "
            f"got {value!r}"
        )
    return int(value)


def _choice(
    where: str,
    table: Mapping[str, Any],
    key: str,
    default: str | None,
    choices: tuple[str, ...],
) -> str:
    value = table.get(key, default)
    if value not in choices:
        raise ConfigError(
            f"{where}: field {key!r} must be one of {list(choices)}; got {value!r}"
        )
    return str(value)


def _boolean(where: str, table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(
            f"{where}: field {key!r} must be true or false; got {value!r}"
        )
    return value


def _string(where: str, table: Mapping[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: field {key!r} must be a string; got {value!r}")
    return value
