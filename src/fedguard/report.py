"""A self-contained HTML report of a federation.

Two commands write it from one document: ``fedguard simulate`` from the run it just
finished (the document is its ``metrics.json``), and ``fedguard report`` from an
orchestrator's database or from a ``metrics.json`` file. The document holds:

* ``settings``: what the run was (only the settings that apply are shown);
* ``rounds``: one entry per round, with whatever is known about it. A simulation
  adds the test-set metrics of each round's model (``accuracy`` … ``fpr``); the
  orchestrator knows the round's kind, model version, closing time and costs. Both
  file the fleet metrics the agents reported in a round under ``fleet``;
* ``evaluation``: the fleet metrics of the final model, if reported;
* ``centralized``: a centralised baseline (simulations only);
* ``actions``: every action of every fired policy (:func:`action_rows`).

The page shows the settings, the comparison with the baseline, a table of rounds,
the fleet metrics with their attack families, the policies that fired with every
action's outcome, and plots. Plots are drawn with matplotlib's Agg backend (no
display needed) and embedded as base64 PNG, so the file can be mailed or archived
on its own.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

QUALITY = ("accuracy", "precision", "recall", "f1", "roc_auc")
FLEET = ("accuracy", "precision", "recall", "f1", "fpr", "threat_rate")
TIMINGS = (
    "training_seconds",
    "encryption_seconds",
    "upload_seconds",
    "aggregation_seconds",
    "decryption_seconds",
)
# Columns without a single value are left out, so one table serves a simulation
# (test-set metrics) and an orchestrator's database (kinds, closing times).
TABLE_COLUMNS = (
    ("round", "round", "{}"),
    ("kind", "kind", "{}"),
    ("state", "state", "{}"),
    ("model_version", "model version", "{}"),
    ("clients", "clients", "{}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("precision", "precision", "{:.4f}"),
    ("recall", "recall", "{:.4f}"),
    ("f1", "F1", "{:.4f}"),
    ("roc_auc", "ROC-AUC", "{:.4f}"),
    ("fpr", "FPR", "{:.4f}"),
    ("threat_rate", "fleet threat rate", "{:.4f}"),
    ("closed_at", "closed at (UTC)", "{}"),
    ("round_seconds", "round s", "{:.2f}"),
    ("training_seconds", "train s", "{:.3f}"),
    ("encryption_seconds", "encrypt s", "{:.3f}"),
    ("upload_seconds", "upload s", "{:.3f}"),
    ("aggregation_seconds", "aggregate s", "{:.4f}"),
    ("decryption_seconds", "decrypt s", "{:.4f}"),
    ("bytes_uploaded", "bytes", "{:,}"),
)
FLEET_LABELS = {
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "fpr": "FPR",
    "threat_rate": "threat rate",
}


def write_report(document: Mapping[str, Any], path: Path) -> None:
    """Write the HTML report of ``document`` (see the module docstring) to ``path``."""
    path.write_text(render_report(document), encoding="utf-8")


def render_report(document: Mapping[str, Any]) -> str:
    rounds: Sequence[Mapping[str, Any]] = document.get("rounds") or []
    actions: Sequence[Mapping[str, Any]] = document.get("actions") or []
    title = report_title(document)

    sections = [
        f"<h1>{html.escape(title)}</h1>",
        _settings_table(document),
        _comparison(document),
        "<h2>Rounds</h2>",
        _rounds_note(rounds),
        format_rounds_html(rounds),
        _fleet_section(document),
        "<h2>Policies and actions</h2>",
        format_actions_html(actions),
        _plots(document),
    ]
    body = "\n".join(section for section in sections if section)
    return _PAGE.format(title=html.escape(title), body=body)


def report_title(document: Mapping[str, Any]) -> str:
    """The document's own title, or that of a simulation."""
    if document.get("title"):
        return str(document["title"])
    settings: Mapping[str, Any] = document.get("settings") or {}
    mode = "plaintext baseline" if settings.get("plaintext") else "encrypted"
    return f"fedguard simulation: {settings.get('dataset', '?')}, {mode}"


# Wide tables scroll inside their own box, so the page itself never needs a
# horizontal scroll bar; long log lines and JSON entries wrap.
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; padding: 0 1em;
        max-width: 72em; }}
.scroll {{ overflow-x: auto; max-width: 100%; margin: 1em 0; }}
table {{ border-collapse: collapse; font-size: 0.92em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.45em; text-align: right; }}
th {{ background: #f3f3f3; }}
table.settings th, table.settings td {{ text-align: left; }}
table.rounds td {{ white-space: nowrap; }}
table.actions {{ width: 100%; }}
table.actions td {{ text-align: left; vertical-align: top; }}
table.actions td:nth-child(2) {{ white-space: nowrap; }}
table.actions td:nth-child(3) {{ min-width: 14em; }}
table.actions td:last-child {{ min-width: 22em; }}
code {{ white-space: pre-wrap; overflow-wrap: anywhere; }}
p.note {{ max-width: 60em; color: #333; }}
img {{ max-width: 100%; height: auto; display: block; margin: 1em 0; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def _scroll(table: str) -> str:
    return f'<div class="scroll">{table}</div>'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


# --- settings ----------------------------------------------------------------------


def relevant_settings(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The settings that apply to this run, as (label, value) pairs.

    A simulation records every field of its settings; this keeps those that
    describe the run (no file names in a synthetic run, no rows per cloud with
    NSL-KDD, no key size in a plaintext run) and says what an unset value meant.
    Settings this function does not know are shown unless they are None.
    """
    settings = dict(document.get("settings") or {})
    shown: list[tuple[str, str]] = []
    for key, label, describe in _KNOWN_SETTINGS:
        if key in settings:
            text = describe(settings.pop(key), document.get("settings") or {})
            if text is not None:
                shown.append((label, text))
    shown += [
        (str(key).replace("_", " "), _plain(value))
        for key, value in settings.items()
        if value is not None and value != []
    ]
    shown += _run_facts(document)
    return shown


def _run_facts(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    facts = []
    fingerprint = document.get("fingerprint")
    if fingerprint and fingerprint != "plaintext":
        facts.append(("key fingerprint", str(fingerprint)[:16] + "…"))
    if document.get("wall_seconds") is not None:
        facts.append(("wall time", f"{float(document['wall_seconds']):.1f} s"))
    return facts


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    return str(value)


def _if_nsl_kdd(value: Any, settings: Mapping[str, Any]) -> str | None:
    return None if settings.get("dataset") == "synthetic" else _plain(value)


def _if_synthetic(value: Any, settings: Mapping[str, Any]) -> str | None:
    return f"{int(value):,}" if settings.get("dataset") == "synthetic" else None


def _if_encrypted(value: Any, settings: Mapping[str, Any]) -> str | None:
    return None if settings.get("plaintext") else _plain(value)


def _mode(value: Any, settings: Mapping[str, Any]) -> str:
    if value:
        return "plaintext baseline (no encryption)"
    return f"encrypted, {settings.get('key_bits', '?')}-bit Paillier key"


def _min_clients(value: Any, settings: Mapping[str, Any]) -> str:
    if value is None:
        return f"all ({settings['clients']})" if "clients" in settings else "all"
    return str(value)


def _bursts(value: Any, settings: Mapping[str, Any]) -> str | None:
    bursts = []
    for text in value or ():
        agent, round_id, *count = str(text).split(":")
        size = f"{count[0]} events" if count else "default size"
        bursts.append(f"agent {agent} in round {round_id} ({size})")
    return "; ".join(bursts) or None


def _unless_none(value: Any, settings: Mapping[str, Any]) -> str | None:
    return None if value is None else _plain(value)


def _port(value: Any, settings: Mapping[str, Any]) -> str | None:
    # Port 0: the simulation let the system choose a free port.
    return None if not value else str(value)


def _seconds(value: Any, settings: Mapping[str, Any]) -> str:
    return f"{float(value):g} s"


def _hidden(value: Any, settings: Mapping[str, Any]) -> None:
    return None


_Describe = Callable[[Any, Mapping[str, Any]], str | None]
_KNOWN_SETTINGS: tuple[tuple[str, str, _Describe], ...] = (
    ("dataset", "dataset", _unless_none),
    ("data_dir", "data directory", _if_nsl_kdd),
    ("train_file", "training file", _if_nsl_kdd),
    ("test_file", "test file", _if_nsl_kdd),
    ("partition", "partition", _if_nsl_kdd),
    ("rows_per_cloud", "rows per cloud", _if_synthetic),
    ("clients", "clients", _unless_none),
    ("min_clients", "min clients", _min_clients),
    ("rounds", "training rounds", _unless_none),
    ("plaintext", "mode", _mode),
    ("key_bits", "key bits", _hidden),  # part of "mode"
    ("key_file", "key file", _unless_none),
    ("encryption_workers", "encryption workers per agent", _if_encrypted),
    ("round_deadline", "round deadline", _seconds),
    ("attack_bursts", "attack bursts", _bursts),
    ("seed", "seed", _unless_none),
    ("port", "server port", _port),
    ("out_dir", "output directory", _unless_none),
)


def _settings_table(document: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
        for label, value in relevant_settings(document)
    )
    return f'<h2>Settings</h2><table class="settings">{rows}</table>'


def _comparison(document: Mapping[str, Any]) -> str:
    final, centralized = document.get("final"), document.get("centralized")
    if not final or not centralized:
        return ""
    rows = []
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc", "fpr"):
        federated, central = final.get(name), centralized.get(name)
        if federated is None or central is None:
            continue
        rows.append(
            f"<tr><th>{name}</th><td>{federated:.4f}</td><td>{central:.4f}</td>"
            f"<td>{federated - central:+.4f}</td></tr>"
        )
    header = "<tr><th></th><th>federated</th><th>centralised</th><th>difference</th>"
    return (
        "<h2>Final model against the centralised baseline</h2>"
        + _note(centralized_description(centralized) + "; both on the test set.")
        + f"<table>{header}</tr>{''.join(rows)}</table>"
    )


def centralized_description(centralized: Mapping[str, Any]) -> str:
    """What the centralised baseline was trained on, in one phrase."""
    text = "The centralised baseline is the same model trained"
    if centralized.get("rows") is not None:
        text += (
            f" on the same {int(centralized['rows']):,} training rows the agents "
            "hold (their held-out rows excluded)"
        )
    if centralized.get("epochs") is not None:
        text += f" for {centralized['epochs']} epochs"
    return text


# --- rounds ------------------------------------------------------------------------


def _rounds_note(rounds: Sequence[Mapping[str, Any]]) -> str:
    if not any(entry.get("accuracy") is not None for entry in rounds):
        return ""
    return _note(
        "Accuracy to FPR: each round's global model on the test set, which no "
        "agent holds. Timings: agent means (train, encrypt, upload) and the "
        "orchestrator's own (aggregate, decrypt)."
    )


def format_rounds_html(rounds: Sequence[Mapping[str, Any]]) -> str:
    columns = [column for column in TABLE_COLUMNS if _has_values(rounds, column[0])]
    header = "".join(f"<th>{label}</th>" for _, label, _ in columns)
    lines = [f"<tr>{header}</tr>"]
    for entry in rounds:
        cells = "".join(
            f"<td>{html.escape(_format(entry.get(key), pattern))}</td>"
            for key, _, pattern in columns
        )
        lines.append(f"<tr>{cells}</tr>")
    return _scroll(f'<table class="rounds">{"".join(lines)}</table>')


def _has_values(rounds: Sequence[Mapping[str, Any]], key: str) -> bool:
    # A state column is worth showing only when a round did not simply close.
    ordinary = (None, "closed") if key == "state" else (None,)
    return any(entry.get(key) not in ordinary for entry in rounds)


def _format(value: Any, pattern: str) -> str:
    if value is None:
        return "-"
    return pattern.format(value)


# --- fleet metrics -----------------------------------------------------------------


def fleet_series(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``{"round", "kind", "model_version", "fleet"}`` of every round with them.

    The evaluation round (the final model's fleet metrics) comes last. The metrics
    a round carries are those of the model the round started from.
    """
    series: dict[int, dict[str, Any]] = {}
    for entry in document.get("rounds") or []:
        if entry.get("fleet"):
            series[int(entry["round"])] = {
                "round": int(entry["round"]),
                "kind": entry.get("kind", "training"),
                "model_version": entry.get("model_version", int(entry["round"]) - 1),
                "fleet": entry["fleet"],
            }
    evaluation = document.get("evaluation")
    if evaluation and evaluation.get("fleet"):
        series[int(evaluation["round"])] = {
            "round": int(evaluation["round"]),
            "kind": "evaluation",
            "model_version": evaluation.get("model_version"),
            "fleet": evaluation["fleet"],
        }
    return [series[number] for number in sorted(series)]


def attack_families(series: Sequence[Mapping[str, Any]]) -> list[str]:
    """The attack families named in the fleet metrics, in order of appearance."""
    families: dict[str, None] = {}
    for point in series:
        for name in point["fleet"]:
            prefix, _, family = str(name).partition(".")
            if family and prefix in ("threat_rate", "detection_rate"):
                families.setdefault(family)
    return list(families)


def _fleet_section(document: Mapping[str, Any]) -> str:
    series = fleet_series(document)
    if not series:
        return ""
    tested = any(
        entry.get("accuracy") is not None for entry in document.get("rounds") or []
    )
    source = (
        "Unlike the test-set metrics above, which the simulation measures on rows "
        "no agent holds, these figures come from the agents' own data"
        if tested
        else "These figures come from the agents' own data (an orchestrator has no "
        "test set)"
    )
    parts = [
        "<h2>Fleet metrics</h2>",
        _note(
            f"{source}: each agent counts how the model it started a round from "
            "does on its held-out rows (accuracy to FPR) and how many of its "
            "recent events it flags (threat rate), and the orchestrator decrypts "
            "only the sum of these encrypted counts across agents."
        ),
        _scroll(_fleet_table(series)),
    ]
    families = attack_families(series)
    if families:
        parts += [
            "<h3>By attack family</h3>",
            _note(
                "Detected: share of the recent events of that family that were "
                "flagged. Share of events: flagged events of that family among "
                "all recent events. A family with no events in a round has no "
                "detection rate."
            ),
            _scroll(_family_table(series, families)),
        ]
    return "\n".join(parts)


def _fleet_table(series: Sequence[Mapping[str, Any]]) -> str:
    header = "<th>round</th><th>model version</th>" + "".join(
        f"<th>{FLEET_LABELS[name]}</th>" for name in FLEET
    )
    lines = [f"<tr>{header}</tr>"]
    for point in series:
        cells = [str(point["round"]), _format(point["model_version"], "{}")]
        cells += [_format(point["fleet"].get(name), "{:.4f}") for name in FLEET]
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{''.join(lines)}</table>"


def _family_table(series: Sequence[Mapping[str, Any]], families: list[str]) -> str:
    header = "<th>round</th>" + "".join(
        f"<th>{html.escape(family)} detected</th>"
        f"<th>{html.escape(family)} share of events</th>"
        for family in families
    )
    lines = [f"<tr>{header}</tr>"]
    for point in series:
        fleet = point["fleet"]
        cells = [str(point["round"])]
        for family in families:
            cells.append(_format(fleet.get(f"detection_rate.{family}"), "{:.4f}"))
            cells.append(_format(fleet.get(f"threat_rate.{family}"), "{:.4f}"))
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{''.join(lines)}</table>"


# --- policies and actions ----------------------------------------------------------


ACTION_COLUMNS = (
    "round",
    "policy",
    "metric value",
    "threshold",
    "action",
    "outcome",
    "details",
)


def action_rows(
    decisions: Sequence[Mapping[str, Any]],
    directives: Sequence[Mapping[str, Any]],
    blocklist: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Every action of every fired policy, oldest first.

    ``decisions`` and ``directives`` are the audit listing as JSON (newest first,
    as ``GET /admin/actions`` and :class:`fedguard.response.audit.AuditStore`
    give them); ``blocklist`` maps action ids to the blocklist lines written. Each
    row names the round, the policy and its evidence, the action and its outcome
    with details: the log line, the webhook's status and attempts, the blocklist
    entry as written, or the agents' acknowledgements of a directive.
    """
    acks = {directive["action_id"]: directive["acks"] for directive in directives}
    rows = []
    for decision in reversed(decisions):
        for action in decision["actions"]:
            row = _action_row(decision, action)
            if action["action_id"] in blocklist:
                row["blocklist_entry"] = dict(blocklist[action["action_id"]])
            if action["action_id"] in acks:
                row["acks"] = acks[action["action_id"]]
            rows.append(row)
    return rows


def _action_row(
    decision: Mapping[str, Any], action: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "round": decision["round"],
        "model_version": decision["model_version"],
        "policy": decision["policy"],
        "severity": decision["severity"],
        "metric": decision["metric"],
        "value": decision["value"],
        "comparison": decision["comparison"],
        "threshold": decision["limit"],
        "baseline": decision["baseline"],
        "compared": decision["compared"],
        "dry_run": decision["dry_run"],
        "action": action["action"],
        "type": action["type"],
        "outcome": action["status"],
        "attempts": action["attempts"],
        "http_status": action["http_status"],
        "detail": action["detail"],
    }


def read_blocklist(path: Path) -> dict[str, dict[str, Any]]:
    """A blocklist file's entries by action id; truncated lines are skipped."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    entries = {}
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            entries[str(entry.get("action_id"))] = entry
    return entries


def format_actions_html(actions: Sequence[Mapping[str, Any]]) -> str:
    """One row per action of a fired policy, oldest first."""
    if not actions:
        return "<p>No policy fired in this run.</p>"
    header = "".join(f"<th>{label}</th>" for label in ACTION_COLUMNS)
    lines = [f"<tr>{header}</tr>"]
    for entry in actions:
        cells = (
            html.escape(str(entry.get("round"))),
            html.escape(_policy_label(entry)),
            html.escape(evidence(entry)),
            html.escape(_limit(entry)),
            html.escape(f"{entry.get('action')} ({entry.get('type')})"),
            html.escape(outcome(entry)),
            _details(entry),
        )
        lines.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return _scroll(f'<table class="actions">{"".join(lines)}</table>')


def actions_table(actions: Sequence[Mapping[str, Any]]) -> Any:
    """The same rows as a rich table for the terminal."""
    from rich.table import Table

    table = Table(title="policies fired and their actions")
    for header in ("round", "policy", "evidence", "action", "outcome"):
        table.add_column(header)
    for entry in actions:
        text = outcome(entry)
        if entry.get("acks") is not None:
            text += "; " + (_acks(entry["acks"], details=False) or "no acks yet")
        table.add_row(
            str(entry["round"]),
            _policy_label(entry),
            _short_evidence(entry),
            f"{entry['action']} ({entry['type']})",
            text,
        )
    return table


def _short_evidence(entry: Mapping[str, Any]) -> str:
    value, limit = float(entry["value"]), float(entry["threshold"])
    if entry.get("baseline") is None:
        return f"{entry['metric']} {value:.4f} {entry['comparison']} {limit:g}"
    return (
        f"{entry['metric']} {value:.4f}: change {float(entry['compared']):+.4f} "
        f"{entry['comparison']} {limit:+g}"
    )


def _policy_label(entry: Mapping[str, Any]) -> str:
    label = f"{entry.get('policy')} ({entry.get('severity')})"
    return label + (", dry run" if entry.get("dry_run") else "")


def evidence(entry: Mapping[str, Any]) -> str:
    """The metric's value and, for a rise policy, its change over the baseline."""
    text = f"{entry.get('metric')} = {float(entry.get('value', 0.0)):.4f}"
    if entry.get("baseline") is not None:
        text += (
            f", {float(entry.get('compared', 0.0)):+.4f} over the mean "
            f"{float(entry['baseline']):.4f} of previous rounds"
        )
    return text


def _limit(entry: Mapping[str, Any]) -> str:
    sign = "+" if entry.get("baseline") is not None else ""
    return f"{entry.get('comparison')} {float(entry.get('threshold', 0.0)):{sign}.4f}"


def outcome(entry: Mapping[str, Any]) -> str:
    """The action's status; attempts and HTTP status for a webhook."""
    text = str(entry.get("outcome"))
    if entry.get("type") == "webhook":
        text += f", {entry.get('attempts')} attempt(s)"
        if entry.get("http_status") is not None:
            text += f", HTTP {entry['http_status']}"
    return text


def _acks(acks: Sequence[Mapping[str, Any]], *, details: bool) -> str:
    return "; ".join(
        f"{ack['client_id']}: {ack['status']}"
        + (f" ({ack['detail']})" if details else "")
        for ack in acks
    )


def _details(entry: Mapping[str, Any]) -> str:
    """The log line, the blocklist entry, the directive's acks or the last error."""
    if "blocklist_entry" in entry:
        line = json.dumps(entry["blocklist_entry"], sort_keys=True)
        return f"<code>{html.escape(line)}</code>"
    detail = html.escape(str(entry.get("detail") or ""))
    if entry.get("type") == "log":
        return f"<code>{detail}</code>"
    acks = entry.get("acks")
    if acks is not None:
        applied = _acks(acks, details=True)
        detail += "<br>" + html.escape(applied or "not acknowledged yet")
    return detail


# --- plots -------------------------------------------------------------------------


def _plots(document: Mapping[str, Any]) -> str:
    sections = []
    for heading, figures in report_figures(document):
        sections.append(f"<h2>{html.escape(heading)}</h2>")
        sections += [_image(figure) for figure in figures]
    return "\n".join(sections)


def report_figures(document: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    """The report's matplotlib figures under their headings, in page order."""
    rounds: Sequence[Mapping[str, Any]] = document.get("rounds") or []
    if not rounds:
        return []
    series = fleet_series(document)
    tested = [entry for entry in rounds if entry.get("accuracy") is not None]

    figures = []
    if tested:
        quality = _quality_figure(tested, document.get("centralized"))
        figures.append(("Detection on the test set", [quality]))
    if series:
        fleet = [_fleet_figure(series)]
        if attack_families(series):
            fleet.append(_family_figure(series))
        figures.append(("Fleet metrics by round", fleet))
    if any(point["fleet"].get("threat_rate") is not None for point in series):
        threat = _threat_figure(series, document.get("actions") or [])
        figures.append(("Fleet threat rate and policies", [threat]))
    figures.append(("Cost per round", [_timing_figure(rounds), _bytes_figure(rounds)]))
    return figures


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(10, 3.6), dpi=100, layout="constrained")


def _legend_outside(axes: Any) -> None:
    # To the right of the axes, where it can never hide a point.
    axes.legend(
        loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
        fontsize="small", frameon=False,
    )  # fmt: skip


def _round_ticks(axes: Any, entries: Sequence[Mapping[str, Any]]) -> None:
    """One tick per round; the setup and evaluation rounds say what they are."""
    labels = [
        f"{entry['round']}\n{entry['kind']}"
        if entry.get("kind") in ("setup", "evaluation")
        else str(entry["round"])
        for entry in entries
    ]
    axes.set_xticks([entry["round"] for entry in entries], labels)
    axes.set_xlabel("round")


def _quality_figure(
    rounds: Sequence[Mapping[str, Any]], centralized: Mapping[str, Any] | None
) -> Any:
    figure = _figure()
    axes = figure.subplots(1, 2, width_ratios=(3, 2))
    numbers = [entry["round"] for entry in rounds]
    for name in QUALITY:
        values = [entry.get(name) for entry in rounds]
        if all(value is not None for value in values):
            axes[0].plot(numbers, values, marker="o", label=name)
    if centralized and centralized.get("f1") is not None:
        axes[0].axhline(centralized["f1"], color="grey", linestyle="--",
                        label="centralised F1")  # fmt: skip
    axes[0].set(ylabel="score", title="Test-set metrics")
    _round_ticks(axes[0], rounds)
    _legend_outside(axes[0])

    axes[1].plot(numbers, [entry["fpr"] for entry in rounds], marker="o", color="C3")
    axes[1].set(ylabel="false-positive rate", title="Test-set FPR")
    _round_ticks(axes[1], rounds)
    return figure


def _fleet_figure(series: Sequence[Mapping[str, Any]]) -> Any:
    figure = _figure()
    axes = figure.subplots()
    for name in FLEET:
        points = [(p["round"], p["fleet"][name]) for p in series if name in p["fleet"]]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, marker="o", label=FLEET_LABELS[name])
    axes.set(
        ylabel="rate",
        ylim=(-0.02, 1.02),
        title="Fleet metrics (agents' held-out rows and recent events, summed)",
    )
    _round_ticks(axes, series)
    _legend_outside(axes)
    return figure


def _family_figure(series: Sequence[Mapping[str, Any]]) -> Any:
    figure = _figure()
    axes = figure.subplots()
    for index, family in enumerate(attack_families(series)):
        color = f"C{index % 10}"
        for prefix, style, label in (
            ("detection_rate", "-", "detected"),
            ("threat_rate", ":", "share of events"),
        ):
            key = f"{prefix}.{family}"
            points = [
                (p["round"], p["fleet"][key]) for p in series if key in p["fleet"]
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, linestyle=style, marker="o", color=color,
                          label=f"{family} {label}")  # fmt: skip
    axes.set(
        ylabel="rate",
        ylim=(-0.02, 1.02),
        title="Fleet detection by attack family (recent events)",
    )
    _round_ticks(axes, series)
    _legend_outside(axes)
    return figure


def _threat_figure(
    series: Sequence[Mapping[str, Any]], actions: Sequence[Mapping[str, Any]]
) -> Any:
    figure = _figure()
    axes = figure.subplots()
    rates = {
        point["round"]: point["fleet"]["threat_rate"]
        for point in series
        if point["fleet"].get("threat_rate") is not None
    }
    axes.plot(list(rates), list(rates.values()), marker="o", label="threat rate")

    fired: dict[str, set[int]] = {}
    for action in actions:
        if action.get("round") in rates:
            fired.setdefault(str(action["policy"]), set()).add(int(action["round"]))
    # Hollow markers of shrinking size, so that policies firing in the same round
    # stay visible inside one another.
    for index, (policy, numbers) in enumerate(sorted(fired.items())):
        ordered = sorted(numbers)
        axes.scatter(
            ordered,
            [rates[n] for n in ordered],
            s=max(260 - 90 * index, 40),
            marker="os^Dv"[index % 5],
            facecolors="none",
            edgecolors=f"C{(index + 3) % 10}",
            linewidths=2,
            zorder=3,
            label=f"{policy} fired",
        )
    axes.set(
        ylabel="flagged / scored",
        title="Fleet threat rate of the recent events (from encrypted sums)",
        ylim=(0.0, 1.0),
    )
    _round_ticks(axes, [point for point in series if point["round"] in rates])
    _legend_outside(axes)
    return figure


def _timing_figure(rounds: Sequence[Mapping[str, Any]]) -> Any:
    figure = _figure()
    axes = figure.subplots()
    numbers = [entry["round"] for entry in rounds]
    bottom = [0.0] * len(rounds)
    for name in TIMINGS:
        values = [float(entry.get(name) or 0.0) for entry in rounds]
        label = name.replace("_seconds", "")
        axes.bar(numbers, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    walls = [entry.get("round_seconds") for entry in rounds]
    if any(wall is not None for wall in walls):
        axes.plot(numbers, [float(wall or 0.0) for wall in walls], color="black",
                  marker="o", label="round wall time")  # fmt: skip
    axes.set(
        ylabel="seconds",
        title="Time per round (agent means; aggregation and decryption: server)",
    )
    _round_ticks(axes, rounds)
    _legend_outside(axes)
    return figure


def _bytes_figure(rounds: Sequence[Mapping[str, Any]]) -> Any:
    figure = _figure()
    axes = figure.subplots()
    numbers = [entry["round"] for entry in rounds]
    uploaded = [int(entry.get("bytes_uploaded") or 0) for entry in rounds]
    axes.bar(numbers, uploaded, color="C2")
    axes.set(ylabel="bytes", title="Bytes uploaded per round")
    _round_ticks(axes, rounds)
    return figure


def _image(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'
