"""Load on the secured orchestrator: N agents upload real encrypted frames at once.

Starts a real ``fedguard server`` over TLS on 127.0.0.1, enrolls the agents through
the admin API and the enrollment route, connects each with its own credential, then
releases every upload at the same moment while a watcher polls ``/health``
(:mod:`fedguard.loadtest`). Prints uploads per second, upload latency percentiles,
the health checks answered during the burst and whether every accepted update is in
the decrypted aggregate.

Run: ``.venv/bin/python benchmarks/bench_load.py [--agents 200] [--out DIR] [--json]``
"""

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from fedguard.errors import FedguardError
from fedguard.loadtest import (
    MAX_AGENTS,
    MIN_AGENTS,
    LoadReport,
    LoadSettings,
    run_load_test,
)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--agents",
        type=int,
        default=200,
        help=f"agents uploading at once, {MIN_AGENTS} to {MAX_AGENTS} (default 200)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the run's files here"
    )
    parser.add_argument(
        "--dataset",
        choices=("nsl-kdd", "synthetic"),
        default="nsl-kdd",
        help="feature schema of the federation; it fixes the frame size",
    )
    parser.add_argument("--seed", type=int, default=20240607)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args(argv)


def print_table(report: LoadReport) -> None:
    from rich.console import Console
    from rich.table import Table

    figures = report.summary()
    table = Table(title=f"fedguard load test: {report.agents} agents over TLS")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("uploads accepted", f"{report.accepted} of {report.agents}")
    table.add_row("frame size", f"{figures['frame_bytes']:,.0f} bytes")
    table.add_row("burst wall time", f"{report.burst_seconds:.2f} s")
    table.add_row("uploads per second", f"{report.uploads_per_second:,.1f}")
    for percent in (50, 95, 99):
        table.add_row(f"upload latency p{percent}", _ms(report.latency(percent)))
    table.add_row("upload latency max", _ms(figures["latency_max_seconds"]))
    table.add_row(
        "health checks answered",
        f"{report.health_answered} of {len(report.health_statuses)}",
    )
    table.add_row("health latency max", _ms(figures["health_max_seconds"]))
    table.add_row("aggregate contributors", str(report.contributors))
    table.add_row("accepted updates lost", str(len(report.lost)))
    table.add_row(
        "every accepted update in the aggregate",
        "yes" if figures["all_accepted_in_aggregate"] else "NO",
    )
    table.add_row("max error of published means", f"{report.max_mean_error:.2e}")
    Console().print(table)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="fedguard-load-") as scratch:
        out = arguments.out or Path(scratch)
        try:
            settings = LoadSettings(
                out_dir=out,
                agents=arguments.agents,
                dataset=arguments.dataset,
                seed=arguments.seed,
            )
            report = run_load_test(settings)
        except FedguardError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if arguments.json:
        print(json.dumps(report.summary()))
    else:
        print_table(report)
    return 0 if report.summary()["all_accepted_in_aggregate"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
