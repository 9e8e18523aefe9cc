"""The HTML report: settings that apply, fleet metrics, actions, plots and layout."""

import html
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fedguard.report import (
    action_rows,
    attack_families,
    fleet_series,
    read_blocklist,
    relevant_settings,
    render_report,
    report_figures,
    write_report,
)

TEST_SET = ("accuracy", "precision", "recall", "f1", "roc_auc", "fpr")
COSTS = (
    "round_seconds",
    "training_seconds",
    "encryption_seconds",
    "upload_seconds",
    "aggregation_seconds",
    "decryption_seconds",
)


def fleet(round_id: int) -> dict[str, float]:
    """Fleet metrics of the shape the orchestrator decrypts; u2r had no events."""
    rate = 0.4 + 0.01 * round_id
    return {
        "accuracy": 0.95,
        "precision": 0.96,
        "recall": 0.94,
        "f1": 0.95,
        "fpr": 0.03,
        "threat_rate": rate,
        "threat_rate.dos": rate - 0.1,
        "detection_rate.dos": 0.97,
        "threat_rate.u2r": 0.0,
    }


def simulation(rounds: int = 3, **settings: Any) -> dict[str, Any]:
    """A metrics.json document as ``fedguard simulate`` writes it."""
    entries = [
        {"round": n, "clients": 3, "bytes_uploaded": 6528}
        | {name: 0.5 + 0.01 * n for name in TEST_SET}
        | {name: 0.01 for name in COSTS}
        | {"fleet": fleet(n) if n > 1 else None}
        | {"threat_rate": fleet(n)["threat_rate"] if n > 1 else None}
        for n in range(1, rounds + 1)
    ]
    return {
        "settings": {
            "dataset": "synthetic",
            "data_dir": None,
            "train_file": "KDDTrain+.txt",
            "test_file": "KDDTest+.txt",
            "clients": 3,
            "rounds": rounds,
            "partition": "iid",
            "seed": 0,
            "plaintext": False,
            "out_dir": "run",
            "rows_per_cloud": 1500,
            "min_clients": None,
            "round_deadline": 120.0,
            "key_bits": 2048,
            "encryption_workers": 1,
            "key_file": None,
            "port": 0,
            "attack_bursts": [],
        }
        | settings,
        "fingerprint": "ab" * 32,
        "wall_seconds": 4.2,
        "rounds": entries,
        "final": entries[-1],
        "evaluation": {
            "round": rounds + 1,
            "model_version": rounds,
            "fleet": fleet(rounds + 1),
            "threat_rate": fleet(rounds + 1)["threat_rate"],
        },
        "centralized": {"epochs": rounds, "rows": 2700, "f1": 0.6, "accuracy": 0.7},
        "actions": [],
    }


def section(page: str, heading: str) -> str:
    return page.split(f"<h2>{heading}</h2>", 1)[1].split("<h2>", 1)[0]


# --- settings ----------------------------------------------------------------------


def test_a_synthetic_run_shows_no_file_names_port_or_unset_values() -> None:
    shown = dict(relevant_settings(simulation()))

    assert shown["dataset"] == "synthetic"
    assert shown["rows per cloud"] == "1,500"
    assert shown["min clients"] == "all (3)"
    assert shown["mode"] == "encrypted, 2048-bit Paillier key"
    assert shown["key fingerprint"] == "ab" * 8 + "…"
    for hidden in ("training file", "test file", "data directory", "partition"):
        assert hidden not in shown
    assert "server port" not in shown and "key file" not in shown
    assert "attack bursts" not in shown
    assert shown["seed"] == "0"
    assert all(value not in ("None", "[]", "") for value in shown.values())


def test_an_nsl_kdd_plaintext_run_shows_its_files_and_no_key_settings() -> None:
    document = simulation(
        dataset="nsl-kdd",
        data_dir="/data/nsl-kdd",
        train_file="KDDTrain+_20Percent.txt",
        plaintext=True,
        min_clients=2,
        attack_bursts=["2:4", "0:3:500"],
    )
    document["fingerprint"] = "plaintext"

    shown = dict(relevant_settings(document))

    assert shown["training file"] == "KDDTrain+_20Percent.txt"
    assert shown["test file"] == "KDDTest+.txt"
    assert shown["data directory"] == "/data/nsl-kdd"
    assert shown["min clients"] == "2"
    assert shown["mode"] == "plaintext baseline (no encryption)"
    assert shown["attack bursts"] == (
        "agent 2 in round 4 (default size); agent 0 in round 3 (500 events)"
    )
    assert "rows per cloud" not in shown
    assert "encryption workers per agent" not in shown
    assert "key fingerprint" not in shown


def test_settings_it_does_not_know_are_shown_unless_unset() -> None:
    document = {"settings": {"dataset": "nsl-kdd", "status": "finished", "x": None}}

    assert relevant_settings(document) == [
        ("dataset", "nsl-kdd"),
        ("status", "finished"),
    ]


# --- rounds and fleet metrics ------------------------------------------------------


def test_the_fleet_section_lists_every_round_with_fleet_metrics_and_families() -> None:
    page = render_report(simulation(rounds=3))

    fleet_html = section(page, "Fleet metrics")
    assert "unlike the test-set metrics above" in fleet_html.lower()
    assert "encrypted counts across agents" in fleet_html
    # Rounds 2 and 3, and the evaluation round 4; round 1 reported nothing.
    for number, version in ((2, 1), (3, 2), (4, 3)):
        rate = fleet(number)["threat_rate"]
        assert f"<td>{number}</td><td>{version}</td>" in fleet_html
        assert f"<td>{rate:.4f}</td>" in fleet_html
    assert "<td>1</td><td>0</td>" not in fleet_html
    assert "<th>dos detected</th><th>dos share of events</th>" in fleet_html
    # u2r had no events: no detection rate, a share of 0.
    assert "<td>-</td><td>0.0000</td>" in fleet_html


def test_fleet_series_ends_with_the_evaluation_round() -> None:
    series = fleet_series(simulation(rounds=2))

    assert [(p["round"], p["model_version"]) for p in series] == [(2, 1), (3, 2)]
    assert [p["kind"] for p in series] == ["training", "evaluation"]
    assert attack_families(series) == ["dos", "u2r"]


def test_the_rounds_table_leaves_out_columns_without_values() -> None:
    document = simulation()
    page = render_report(document)

    rounds_html = section(page, "Rounds")
    assert "<th>accuracy</th>" in rounds_html and "<th>ROC-AUC</th>" in rounds_html
    assert "<th>kind</th>" not in rounds_html
    assert "closed at" not in rounds_html

    orchestrator = {
        "title": "fedguard federation: synthetic, encrypted",
        "rounds": [
            {"round": 0, "kind": "setup", "model_version": 0, "clients": 2,
             "closed_at": "2025-03-01 12:00:00", "fleet": None},
            {"round": 2, "kind": "training", "model_version": 1, "clients": 2,
             "closed_at": None, "fleet": fleet(2)},
        ],
    }  # fmt: skip
    page = render_report(orchestrator)

    rounds_html = section(page, "Rounds")
    assert "<th>kind</th>" in rounds_html and "<td>setup</td>" in rounds_html
    assert "<th>accuracy</th>" not in rounds_html
    assert "an orchestrator has no test set" in section(page, "Fleet metrics")
    assert "Detection on the test set" not in page
    assert page.count("<h1>fedguard federation: synthetic, encrypted</h1>") == 1
    assert "<th>state</th>" not in rounds_html

    # A state column appears once a round did not simply close.
    orchestrator["rounds"][0]["state"] = "closed"
    orchestrator["rounds"][1]["state"] = "failed"
    rounds_html = section(render_report(orchestrator), "Rounds")
    assert "<th>state</th>" in rounds_html and "<td>failed</td>" in rounds_html


def test_the_comparison_says_what_the_baseline_was_trained_on() -> None:
    page = render_report(simulation())

    comparison = section(page, "Final model against the centralised baseline")
    assert "the same 2,700 training rows the agents hold" in comparison
    assert "-0.0700" in comparison  # F1 0.53 against 0.6


# --- policies and actions ----------------------------------------------------------


def decision(policy: str, round_id: int, actions: list[dict[str, Any]]) -> Any:
    """A decision as the audit listing gives it in JSON."""
    return {
        "decision_id": f"d-{policy}",
        "policy": policy,
        "metric": "threat_rate",
        "value": 0.7,
        "compared": 0.25,
        "comparison": ">=",
        "limit": 0.1,
        "baseline": 0.45,
        "severity": "high",
        "round": round_id,
        "model_version": round_id - 1,
        "dry_run": False,
        "metrics": {"threat_rate": 0.7},
        "actions": actions,
    }


def action(action_id: str, kind: str, status: str, detail: str) -> dict[str, Any]:
    return {
        "action_id": action_id,
        "action": kind,
        "type": kind,
        "status": status,
        "attempts": 1,
        "http_status": None,
        "detail": detail,
    }


def test_action_rows_are_oldest_first_with_blocklist_entries_and_acks(
    tmp_path: Path,
) -> None:
    blocklist = tmp_path / "blocklist.jsonl"
    blocklist.write_text(
        '{"action_id": "a-2", "round": 4, "client_id": null}\n{"action_id": "a-'
    )
    decisions = [
        decision("later", 4, [action("a-2", "blocklist", "done", "appended")]),
        decision("first", 3, [action("a-1", "agent", "queued", "directive x")]),
    ]
    directives = [
        {"action_id": "a-1", "acks": [{"client_id": "c-1", "status": "applied"}]}
    ]

    rows = action_rows(decisions, directives, read_blocklist(blocklist))

    assert [(row["round"], row["policy"]) for row in rows] == [
        (3, "first"),
        (4, "later"),
    ]
    assert rows[0]["acks"] == [{"client_id": "c-1", "status": "applied"}]
    assert rows[1]["blocklist_entry"] == {
        "action_id": "a-2",
        "round": 4,
        "client_id": None,
    }
    assert rows[1]["threshold"] == 0.1 and rows[1]["outcome"] == "done"
    assert read_blocklist(tmp_path / "missing.jsonl") == {}


def test_report_lists_actions_with_their_details_escaped() -> None:
    fired = {
        "round": 4,
        "policy": "threat-rate-rise",
        "severity": "high",
        "metric": "threat_rate",
        "value": 0.7,
        "comparison": ">=",
        "threshold": 0.1,
        "baseline": 0.45,
        "compared": 0.25,
        "dry_run": False,
    }
    actions = [
        fired | {"action": "soar", "type": "webhook", "outcome": "failed",
                 "attempts": 4, "http_status": 500, "detail": "HTTP 500"},
        fired | {"action": "tighten", "type": "agent", "outcome": "queued",
                 "attempts": 1, "http_status": None, "detail": "<b>directive</b>",
                 "acks": [{"client_id": "c-1", "status": "refused",
                           "detail": "handler 'x' is not enabled"}]},
    ]  # fmt: skip
    document = simulation() | {"actions": actions}

    page = render_report(document)

    table = section(page, "Policies and actions")
    assert "threat_rate = 0.7000, +0.2500 over the mean 0.4500" in table
    assert "&gt;= +0.1000" in table
    assert "failed, 4 attempt(s), HTTP 500" in table
    assert "&lt;b&gt;directive&lt;/b&gt;" in table and "<b>directive" not in page
    assert html.escape("c-1: refused (handler 'x' is not enabled)") in table


def test_no_policy_fired_says_so() -> None:
    page = render_report(simulation())

    assert "No policy fired in this run." in section(page, "Policies and actions")


# --- plots -------------------------------------------------------------------------


def test_every_plot_is_embedded_under_its_heading() -> None:
    document = simulation()
    document["actions"] = [
        {"round": 3, "policy": "threat-rate-rise"},
        {"round": 3, "policy": "threat-rate-high"},
    ]

    headings = [heading for heading, _ in report_figures(document)]
    page = render_report(document)

    assert headings == [
        "Detection on the test set",
        "Fleet metrics by round",
        "Fleet threat rate and policies",
        "Cost per round",
    ]
    # Test set; fleet and families; threat rate; time and bytes.
    assert page.count('src="data:image/png;base64,') == 6


def test_legends_never_cover_the_data() -> None:
    document = simulation(rounds=6)
    document["actions"] = [{"round": 4, "policy": "threat-rate-rise"}]

    legends = 0
    for _, figures in report_figures(document):
        for figure in figures:
            figure.draw_without_rendering()  # runs the constrained layout
            for axes in figure.axes:
                legend = axes.get_legend()
                if legend is None:
                    continue
                legends += 1
                box, area = legend.get_window_extent(), axes.get_window_extent()
                assert not box.overlaps(area), axes.get_title()
                # And the legend is inside the figure, not cut off.
                assert box.x1 <= figure.bbox.x1 and box.y0 >= figure.bbox.y0

    assert legends == 5


def test_write_report_writes_one_self_contained_file(tmp_path: Path) -> None:
    path = tmp_path / "report.html"

    write_report(simulation(), path)

    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert "http://" not in page and "https://" not in page


@pytest.mark.slow
def test_the_page_needs_no_horizontal_scroll_bar_at_1200_pixels(
    tmp_path: Path,
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("headless Chromium is not installed")
    document = simulation(rounds=8, dataset="nsl-kdd", data_dir="/a/long/" * 8)
    document["actions"] = [
        {"round": 4, "policy": "threat-rate-rise-of-a-long-name", "severity": "high",
         "metric": "threat_rate", "value": 0.7, "comparison": ">=",
         "threshold": 0.1, "baseline": 0.45, "compared": 0.25, "action": "log",
         "type": "log", "outcome": "done", "detail": "policy fired " * 40},
    ]  # fmt: skip
    # The page reports its own width in its title once it is laid out.
    probe = "<script>document.title = document.documentElement.scrollWidth;</script>"
    page = render_report(document).replace("</body>", probe + "</body>")
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")

    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--window-size=1200,3000", "--dump-dom", path.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip

    width = int(dom.split("<title>", 1)[1].split("</title>", 1)[0])
    assert width <= 1200
