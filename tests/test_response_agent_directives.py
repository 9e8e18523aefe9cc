"""Agent-side directive handlers: allow-listed only, parameters re-checked."""

import json
import logging
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fedguard.client.directives import (
    AlertThreshold,
    DirectiveRegistry,
    LowerThresholdHandler,
    default_registry,
)
from fedguard.errors import ConfigError, InputError
from fedguard.response.directives import DIRECTIVE_HANDLERS, validate_directive

FLAGGED = [{"row": i, "score": 0.9, "src_bytes": 100 * i} for i in range(5)]


def _directive(handler: str, **params: Any) -> dict[str, Any]:
    return {
        "directive_id": "dir1",
        "handler": handler,
        "params": params,
        "policy": "surge",
        "round": 4,
    }


def _registry(tmp_path: Path, threshold: AlertThreshold) -> DirectiveRegistry:
    return default_registry(threshold, tmp_path / "quarantine.jsonl", lambda: FLAGGED)


def test_lower_threshold_stops_at_the_local_floor(tmp_path: Path) -> None:
    threshold = AlertThreshold(0.5, floor=0.35)
    registry = _registry(tmp_path, threshold)

    first = registry.apply(_directive("lower_threshold", by=0.1))
    second = registry.apply(_directive("lower_threshold", by=0.1))

    assert first.status == "applied" and "0.500 to 0.400" in first.detail
    assert second.status == "applied" and threshold.value == 0.35


def test_quarantine_writes_the_newest_flagged_events(tmp_path: Path) -> None:
    registry = _registry(tmp_path, AlertThreshold(0.5, floor=0.2))

    result = registry.apply(_directive("quarantine", max_events=3))

    path = tmp_path / "quarantine.jsonl"
    assert (
        result.status == "applied" and result.detail == "quarantined 3 flagged events"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["event"]["row"] for r in records] == [2, 3, 4]
    assert {(r["directive_id"], r["policy"], r["round"]) for r in records} == {
        ("dir1", "surge", 4)
    }


def test_unknown_handlers_are_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _registry(tmp_path, AlertThreshold(0.5, floor=0.2))
    with caplog.at_level(logging.WARNING, logger="fedguard"):
        result = registry.apply(_directive("run_command", cmd="rm -rf /"))

    assert result.status == "refused"
    assert result.as_ack() == {
        "status": "refused",
        "detail": "handler 'run_command' is not enabled",
    }
    assert "refused directive dir1" in caplog.text
    assert not (tmp_path / "quarantine.jsonl").exists()


def test_allow_listed_but_locally_disabled_handlers_are_refused(tmp_path: Path) -> None:
    threshold = AlertThreshold(0.5, floor=0.2)
    registry = DirectiveRegistry({"lower_threshold": LowerThresholdHandler(threshold)})

    result = registry.apply(_directive("quarantine"))

    assert registry.enabled == ("lower_threshold",)
    assert result.status == "refused"
    assert not (tmp_path / "quarantine.jsonl").exists()


@pytest.mark.parametrize(
    "params",
    [{"by": 0.9}, {"by": -0.1}, {"by": "0.1"}, {"by": True}, {}, {"by": 0.1, "x": 1}],
)
def test_out_of_range_parameters_are_refused(
    tmp_path: Path, params: Mapping[str, Any]
) -> None:
    threshold = AlertThreshold(0.5, floor=0.2)

    result = _registry(tmp_path, threshold).apply(
        _directive("lower_threshold", **params)
    )

    assert result.status == "refused"
    assert threshold.value == 0.5


def test_a_malformed_directive_is_refused(tmp_path: Path) -> None:
    registry = _registry(tmp_path, AlertThreshold(0.5, floor=0.2))

    assert registry.apply({"handler": "quarantine", "params": [1]}).status == "refused"
    assert registry.apply({}).status == "refused"


def test_a_failing_handler_reports_failed(tmp_path: Path) -> None:
    def broken() -> list[Mapping[str, Any]]:
        raise OSError("disk full")

    registry = default_registry(
        AlertThreshold(0.5, floor=0.2), tmp_path / "q.jsonl", broken
    )

    result = registry.apply(_directive("quarantine"))

    assert (result.status, result.detail) == ("failed", "quarantine failed: OSError")


def test_only_allow_listed_names_can_be_registered() -> None:
    registry = DirectiveRegistry()

    with pytest.raises(ConfigError, match="handler name must be one of"):
        registry.register("exec", lambda params, directive: "")


def test_threshold_bounds_are_checked() -> None:
    with pytest.raises(ConfigError, match="0 <= floor <= value <= 1"):
        AlertThreshold(0.3, floor=0.4)


def test_validate_directive_fills_defaults_and_names_the_rule() -> None:
    assert set(DIRECTIVE_HANDLERS) == {"lower_threshold", "quarantine"}
    assert validate_directive("quarantine", {}) == {"max_events": 1000}
    with pytest.raises(InputError, match=r"'max_events' must be int in \[1, 100000\]"):
        validate_directive("quarantine", {"max_events": 2.5})
