"""A bounded load test of the secured server on loopback (fedguard.loadtest).

200 agents enroll, each opens its own TLS connection with its own credential, then
all upload real encrypted setup-round frames at the same moment while a watcher
keeps asking for ``/health``. Every accepted frame must be in the decrypted
aggregate (client ids, bytes and the published feature means), none may be lost,
and the health endpoint must answer throughout. Latency percentiles and the upload
rate are recorded as test suite properties (``--junitxml``) and logged, never asserted:
the machine is shared.
"""

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedguard.errors import ConfigError
from fedguard.loadtest import LoadReport, LoadSettings, run_load_test

pytestmark = pytest.mark.slow

AGENTS = 200

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> LoadReport:
    out = tmp_path_factory.mktemp("load")
    return run_load_test(LoadSettings(out_dir=out, agents=AGENTS))


def test_every_agent_is_accepted_and_none_is_lost(report: LoadReport) -> None:
    assert report.statuses == [200] * AGENTS
    assert report.accepted == AGENTS
    assert report.lost == set()
    assert report.aggregated_ids == report.accepted_ids
    assert report.contributors == AGENTS
    assert report.bytes_aggregated == report.bytes_accepted > 0


def test_the_aggregate_is_the_weighted_mean_of_every_frame(report: LoadReport) -> None:
    np.testing.assert_allclose(
        report.published_means, report.expected_means, rtol=1e-6, atol=1e-4
    )
    assert report.published_examples == report.expected_examples


def test_health_answers_throughout_the_burst(report: LoadReport) -> None:
    assert report.health_statuses
    assert set(report.health_statuses) == {200}


def test_figures_are_recorded(
    report: LoadReport, record_testsuite_property: Callable[[str, object], None]
) -> None:
    figures = report.summary()
    for name in (
        "uploads_per_second",
        "latency_p50_seconds",
        "latency_p99_seconds",
        "health_max_seconds",
    ):
        record_testsuite_property(f"load_{name}", figures[name])
    logger.info("load test figures: %s", figures)

    assert len(report.latencies) == AGENTS
    assert 0 < figures["latency_p50_seconds"] <= figures["latency_p99_seconds"]
    assert figures["uploads_per_second"] > 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"agents": 1}, r"agents must be in \[2, 500\]; got 1"),
        ({"agents": 501}, r"agents must be in \[2, 500\]; got 501"),
        ({"dataset": "csv"}, r"dataset must be nsl-kdd or synthetic; got 'csv'"),
        ({"timeout": 5.0}, r"timeout must be in \[10, 3600\] s; got 5.0"),
    ],
)
def test_settings_are_bounded(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        LoadSettings(out_dir=tmp_path, **changes)  # type: ignore[arg-type]
