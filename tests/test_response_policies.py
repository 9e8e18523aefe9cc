"""Reading policies and actions from the TOML configuration."""

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from fedguard.errors import ConfigError
from fedguard.response.fleet import MetricsLayout
from fedguard.response.policies import (
    DEFAULT_POLICIES,
    AgentActionConfig,
    BlocklistActionConfig,
    WebhookActionConfig,
    parse_response_config,
)

SECRET = "a-test-secret-of-enough-length"

CONFIG = f"""
[server]
port = 8443

[actions]
dry_run = false

[actions.soar]
type = "webhook"
url = "http://127.0.0.1:9/hook"
secret = "{SECRET}"
retries = 2
backoff = 0.5

[actions.tighten]
type = "agent"
handler = "lower_threshold"
params = {{ by = 0.1 }}

[actions.isolate]
type = "agent"
handler = "quarantine"
target = ["cloud-a", "cloud-b"]

[[policies]]
name = "threat-rate-rise"
metric = "threat_rate"
rise = 0.1
window = 3
cooldown = 2
severity = "high"
actions = ["log", "soar", "tighten"]

[[policies]]
name = "dos-surge"
metric = "threat_rate.dos"
comparison = ">"
threshold = 0.2
for_rounds = 2
actions = ["blocklist", "isolate"]
dry_run = true
"""


def _parse(text: str, **kwargs: Any) -> Any:
    return parse_response_config(tomllib.loads(text), **kwargs)


def _policy(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "p1",
        "metric": "threat_rate",
        "comparison": ">",
        "threshold": 0.3,
    }
    return {"policies": [base | fields]}


def test_a_full_configuration_is_read() -> None:
    config = _parse(CONFIG)

    rise, surge = config.policies
    assert (rise.rise, rise.window, rise.comparison, rise.cooldown) == (0.1, 3, ">=", 2)
    assert rise.threshold is None and rise.severity == "high"
    assert (surge.threshold, surge.for_rounds, surge.dry_run) == (0.2, 2, True)
    assert surge.cooldown == 3 and surge.severity == "medium"

    soar = config.actions["soar"]
    assert isinstance(soar, WebhookActionConfig)
    assert soar.secret.reveal() == SECRET and soar.retries == 2
    tighten, isolate = config.actions["tighten"], config.actions["isolate"]
    assert isinstance(tighten, AgentActionConfig) and tighten.target is None
    assert isinstance(isolate, AgentActionConfig)
    assert isolate.target == ("cloud-a", "cloud-b")
    assert isolate.params == {"max_events": 1000}
    assert isinstance(config.actions["blocklist"], BlocklistActionConfig)
    assert not config.dry_run and not config.default_policies


def test_without_policies_the_defaults_apply() -> None:
    config = parse_response_config({"server": {"port": 1}})

    assert config.policies == DEFAULT_POLICIES
    assert config.default_policies
    assert {"log", "blocklist"} <= set(config.actions)
    rise = next(p for p in config.policies if p.rise is not None)
    assert rise.metric == "threat_rate" and rise.rise == 0.10 and rise.window == 1
    assert all(p.warmup_rounds == 3 for p in config.policies)
    assert all(p.actions == ("log", "blocklist") for p in config.policies)
    assert not any(p.dry_run for p in config.policies)


def test_global_dry_run_from_config_and_override() -> None:
    raw = {"actions": {"dry_run": True}}

    assert parse_response_config(raw).dry_run
    assert not parse_response_config(raw, dry_run=False).dry_run
    assert parse_response_config({}, dry_run=True).dry_run


def test_the_secret_never_shows_in_a_repr() -> None:
    config = _parse(CONFIG)

    assert SECRET not in repr(config)
    assert SECRET not in repr(config.actions["soar"])


def test_secret_from_environment() -> None:
    raw = {
        "actions": {
            "soar": {
                "type": "webhook",
                "url": "https://soar.invalid/x",
                "secret_env": "FEDGUARD_TEST_SECRET",
            }
        }
    }

    config = parse_response_config(raw, environ={"FEDGUARD_TEST_SECRET": SECRET})
    soar = config.actions["soar"]
    assert isinstance(soar, WebhookActionConfig) and soar.secret.reveal() == SECRET

    with pytest.raises(ConfigError, match="'FEDGUARD_TEST_SECRET', which is not set"):
        parse_response_config(raw, environ={})


def test_unknown_metric_names_policy_and_field() -> None:
    with pytest.raises(ConfigError, match=r"policy 'p1': field 'metric'.*'threat'"):
        parse_response_config(_policy(metric="threat"))


def test_family_metrics_follow_the_layout() -> None:
    layout = MetricsLayout(families=("ransomware",))

    parse_response_config(_policy(metric="threat_rate.ransomware"), layout=layout)
    with pytest.raises(ConfigError, match="policy 'p1': field 'metric'"):
        parse_response_config(_policy(metric="threat_rate.dos"), layout=layout)


def test_unknown_action_names_policy_and_field() -> None:
    with pytest.raises(
        ConfigError, match=r"policy 'p1': field 'actions' names unknown action 'pager'"
    ):
        parse_response_config(_policy(actions=["log", "pager"]))


def test_unknown_field_names_policy_and_field() -> None:
    with pytest.raises(ConfigError, match=r"policy 'p1': unknown field 'thresold'"):
        parse_response_config(_policy(thresold=0.2))


def test_unknown_action_field_names_action_and_field() -> None:
    raw = {"actions": {"pager": {"type": "log", "url": "x"}}}

    with pytest.raises(ConfigError, match=r"action 'pager': unknown field 'url'"):
        parse_response_config(raw)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"comparison": "=="}, "field 'comparison' must be one of"),
        ({"threshold": 5}, r"field 'threshold' must be a number in \[0.0, 1.0\]"),
        ({"threshold": "high"}, "field 'threshold' must be a number"),
        ({"rise": 0.1, "window": 3}, "set exactly one of 'threshold' or 'rise'"),
        ({"window": 3}, "field 'window' only applies with 'rise'"),
        ({"for_rounds": 0}, r"field 'for_rounds' must be an integer in \[1, 1000\]"),
        ({"cooldown": -1}, "field 'cooldown' must be an integer"),
        ({"warmup_rounds": -1}, r"field 'warmup_rounds' must be an integer in \[0,"),
        ({"warmup_rounds": 1.5}, "field 'warmup_rounds' must be an integer"),
        ({"severity": "urgent"}, "field 'severity' must be one of"),
        ({"dry_run": "yes"}, "field 'dry_run' must be true or false"),
        ({"actions": "log"}, "field 'actions' must be a list"),
        ({"actions": ["log", "log"]}, "lists an action twice"),
    ],
)
def test_invalid_policy_fields(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"policy 'p1': .*{message}"):
        parse_response_config(_policy(**fields))


def test_rise_needs_a_window_and_a_non_zero_rise() -> None:
    rise = {"name": "r", "metric": "accuracy", "rise": -0.05}

    with pytest.raises(ConfigError, match="policy 'r': field 'window' is required"):
        parse_response_config({"policies": [rise]})
    with pytest.raises(ConfigError, match="policy 'r': field 'rise' must be non-zero"):
        parse_response_config({"policies": [rise | {"rise": 0.0, "window": 2}]})

    drop = parse_response_config({"policies": [rise | {"window": 2}]}).policies[0]
    assert drop.comparison == "<="


def test_policy_names_are_checked_and_unique() -> None:
    policy = _policy()["policies"][0]

    with pytest.raises(ConfigError, match=r"policies\[0\]: field 'name'"):
        parse_response_config({"policies": [policy | {"name": ""}]})
    with pytest.raises(ConfigError, match="policy 'p1': field 'name' must be unique"):
        parse_response_config({"policies": [policy, policy]})
    with pytest.raises(ConfigError, match="policies must be an array of tables"):
        parse_response_config({"policies": {"name": "x"}})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"type": "email"}, "field 'type' must be one of"),
        ({"type": "webhook", "secret": SECRET}, "field 'url' must be an http"),
        (
            {"type": "webhook", "url": "file:///etc/passwd", "secret": SECRET},
            "field 'url' must be an http",
        ),
        ({"type": "webhook", "url": "https://h.invalid/"}, "field 'secret'"),
        (
            {"type": "webhook", "url": "https://h.invalid/", "secret": "short"},
            "at least 16 characters",
        ),
        (
            {
                "type": "webhook",
                "url": "https://h.invalid/",
                "secret": SECRET,
                "retries": 99,
            },
            r"field 'retries' must be an integer in \[0, 10\]",
        ),
        ({"type": "agent", "handler": "run_shell"}, "field 'handler'"),
        (
            {"type": "agent", "handler": "lower_threshold", "params": {"by": 2.0}},
            r"field 'params'.*'by' must be float in \(0.0, 0.5\]",
        ),
        (
            {"type": "agent", "handler": "quarantine", "params": {"path": "/tmp/x"}},
            "field 'params'.*unknown parameters",
        ),
        ({"type": "agent", "handler": "quarantine", "target": []}, "field 'target'"),
        ({"type": "blocklist", "path": 3}, "field 'path' must be a file path"),
    ],
)
def test_invalid_actions(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"action 'x': .*{message}"):
        parse_response_config({"actions": {"x": table}})


def test_the_secret_value_is_not_in_config_errors() -> None:
    table = {"type": "webhook", "url": "https://h.invalid/", "secret": "tiny-secret"}

    with pytest.raises(ConfigError) as caught:
        parse_response_config({"actions": {"x": table}})
    assert "tiny-secret" not in str(caught.value)


BAD_POLICIES = [
    (
        'metric = "threat"\nthreshold = 0.5\ncomparison = ">"',
        "error: policy 'p1': field 'metric' must be one of ['accuracy', ",
    ),
    (
        'metric = "threat_rate"\nthreshold = 0.5\ncomparison = ">"\n'
        'actions = ["pager"]',
        "error: policy 'p1': field 'actions' names unknown action 'pager'; "
        "defined actions: ['blocklist', 'log']",
    ),
    (
        'metric = "threat_rate"\nthresold = 0.5\ncomparison = ">"',
        "error: policy 'p1': unknown field 'thresold'; accepted fields: [",
    ),
    (
        'metric = "threat_rate"\nrise = 0.1\nwindow = 1\nwarmup_rounds = -2',
        "error: policy 'p1': field 'warmup_rounds' must be an integer in "
        "[0, 100000]; got -2",
    ),
]


@pytest.mark.parametrize(("fields", "message"), BAD_POLICIES)
def test_the_server_refuses_to_start_with_a_bad_policy(
    tmp_path: Path, fields: str, message: str
) -> None:
    state_dir = tmp_path / "state"
    config = tmp_path / "bad.toml"
    config.write_text(
        f'[server]\nport = 0\nstate_dir = "{state_dir}"\n\n'
        f'[[policies]]\nname = "p1"\n{fields}\n'
    )

    completed = subprocess.run(
        [sys.executable, "-m", "fedguard", "server", "--config", str(config),
         "--insecure-http"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip

    assert completed.returncode == 2
    # One line naming the policy and the field, after the plain-HTTP warning.
    errors = [
        line for line in completed.stderr.splitlines() if line.startswith("error:")
    ]
    assert len(errors) == 1 and errors[0].startswith(message)
    assert "Traceback" not in completed.stderr
    # Stopped before it generated a key or created a database.
    assert not (state_dir / "private-key.json").exists()
    assert not (state_dir / "fedguard.db").exists()
