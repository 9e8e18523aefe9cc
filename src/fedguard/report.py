"""A self-contained HTML report of a simulated federation.

The page holds the settings, a table of rounds, the policies that fired with every
action's outcome (the log line, the webhook's answer, the blocklist entry, the
agents' acknowledgements of a directive), and plots of the detection metrics, the
fleet's threat rate and the time and bytes each round cost. Plots are drawn with
matplotlib's Agg backend (no display needed) and embedded as base64 PNG, so the
file can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

QUALITY = ("accuracy", "precision", "recall", "f1", "roc_auc")
TIMINGS = (
    "training_seconds",
    "encryption_seconds",
    "upload_seconds",
    "aggregation_seconds",
    "decryption_seconds",
)
TABLE_COLUMNS = (
    ("round", "round", "{}"),
    ("clients", "clients", "{}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("precision", "precision", "{:.4f}"),
    ("recall", "recall", "{:.4f}"),
    ("f1", "F1", "{:.4f}"),
    ("roc_auc", "ROC-AUC", "{:.4f}"),
    ("fpr", "FPR", "{:.4f}"),
    ("threat_rate", "fleet threat rate", "{:.4f}"),
    ("round_seconds", "round s", "{:.2f}"),
    ("training_seconds", "train s", "{:.3f}"),
    ("encryption_seconds", "encrypt s", "{:.3f}"),
    ("upload_seconds", "upload s", "{:.3f}"),
    ("aggregation_seconds", "aggregate s", "{:.4f}"),
    ("decryption_seconds", "decrypt s", "{:.4f}"),
    ("bytes_uploaded", "bytes", "{:,}"),
)


def write_report(metrics: Mapping[str, Any], path: Path) -> None:
    """Write the HTML report of a run's ``metrics.json`` document to ``path``."""
    path.write_text(render_report(metrics), encoding="utf-8")


def render_report(metrics: Mapping[str, Any]) -> str:
    rounds: Sequence[Mapping[str, Any]] = metrics.get("rounds") or []
    settings: Mapping[str, Any] = metrics.get("settings") or {}
    mode = "plaintext baseline" if settings.get("plaintext") else "encrypted"
    title = f"fedguard simulation: {settings.get('dataset', '?')}, {mode}"

    actions: Sequence[Mapping[str, Any]] = metrics.get("actions") or []
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        _settings_table(metrics),
        _comparison(metrics),
        "<h2>Rounds</h2>",
        format_rounds_html(rounds),
        "<h2>Policies and actions</h2>",
        format_actions_html(actions),
    ]
    if rounds:
        sections += [
            "<h2>Detection on the test set</h2>",
            _image(_quality_plot(rounds, metrics.get("centralized"))),
        ]
        if any(entry.get("threat_rate") is not None for entry in rounds):
            sections += [
                "<h2>Fleet threat rate</h2>",
                _image(_threat_plot(rounds, actions)),
            ]
        sections += [
            "<h2>Cost per round</h2>",
            _image(_timing_plot(rounds)),
            _image(_bytes_plot(rounds)),
        ]
    body = "\n".join(sections)
    return _PAGE.format(title=html.escape(title), body=body)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }}
table.actions td {{ text-align: left; vertical-align: top; }}
code {{ white-space: pre-wrap; word-break: break-all; }}
img {{ max-width: 100%; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def _settings_table(metrics: Mapping[str, Any]) -> str:
    settings = dict(metrics.get("settings") or {})
    settings["fingerprint"] = str(metrics.get("fingerprint", ""))[:16]
    settings["wall seconds"] = f"{float(metrics.get('wall_seconds', 0.0)):.1f}"
    rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in settings.items()
    )
    return f"<h2>Settings</h2><table>{rows}</table>"


def _comparison(metrics: Mapping[str, Any]) -> str:
    final, centralized = metrics.get("final"), metrics.get("centralized")
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
        f"<table>{header}</tr>{''.join(rows)}</table>"
    )


def format_rounds_html(rounds: Sequence[Mapping[str, Any]]) -> str:
    header = "".join(f"<th>{label}</th>" for _, label, _ in TABLE_COLUMNS)
    lines = [f"<tr>{header}</tr>"]
    for entry in rounds:
        cells = "".join(
            f"<td>{html.escape(_format(entry.get(key), pattern))}</td>"
            for key, _, pattern in TABLE_COLUMNS
        )
        lines.append(f"<tr>{cells}</tr>")
    return f"<table>{''.join(lines)}</table>"


ACTION_COLUMNS = (
    "round",
    "policy",
    "metric value",
    "threshold",
    "action",
    "outcome",
    "details",
)


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
            html.escape(_evidence(entry)),
            html.escape(_limit(entry)),
            html.escape(f"{entry.get('action')} ({entry.get('type')})"),
            html.escape(_outcome(entry)),
            _details(entry),
        )
        lines.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f'<table class="actions">{"".join(lines)}</table>'


def _policy_label(entry: Mapping[str, Any]) -> str:
    label = f"{entry.get('policy')} ({entry.get('severity')})"
    return label + (", dry run" if entry.get("dry_run") else "")


def _evidence(entry: Mapping[str, Any]) -> str:
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


def _outcome(entry: Mapping[str, Any]) -> str:
    text = str(entry.get("outcome"))
    if entry.get("type") == "webhook":
        text += f", {entry.get('attempts')} attempt(s)"
        if entry.get("http_status") is not None:
            text += f", HTTP {entry['http_status']}"
    return text


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
        applied = "; ".join(
            f"{ack['client_id']}: {ack['status']} ({ack['detail']})" for ack in acks
        )
        detail += "<br>" + html.escape(applied or "not acknowledged yet")
    return detail


def _format(value: Any, pattern: str) -> str:
    if value is None:
        return "-"
    return pattern.format(value)


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(8, 3.6), dpi=100, layout="constrained")


def _quality_plot(
    rounds: Sequence[Mapping[str, Any]], centralized: Mapping[str, Any] | None
) -> bytes:
    figure = _figure()
    axes = figure.subplots(1, 2)
    numbers = [entry["round"] for entry in rounds]
    for name in QUALITY:
        values = [entry.get(name) for entry in rounds]
        if all(value is not None for value in values):
            axes[0].plot(numbers, values, marker="o", label=name)
    if centralized and centralized.get("f1") is not None:
        axes[0].axhline(centralized["f1"], color="grey", linestyle="--",
                        label="centralised F1")  # fmt: skip
    axes[0].set(xlabel="round", ylabel="score", title="Test-set metrics")
    axes[0].legend(fontsize="small")

    axes[1].plot(numbers, [entry["fpr"] for entry in rounds], marker="o", color="C3")
    axes[1].set(xlabel="round", ylabel="false-positive rate", title="FPR")
    return _png(figure)


def _threat_plot(
    rounds: Sequence[Mapping[str, Any]], actions: Sequence[Mapping[str, Any]]
) -> bytes:
    figure = _figure()
    axes = figure.subplots()
    rates = {
        entry["round"]: entry["threat_rate"]
        for entry in rounds
        if entry.get("threat_rate") is not None
    }
    axes.plot(list(rates), list(rates.values()), marker="o", label="threat rate")

    fired: dict[int, set[str]] = {}
    for action in actions:
        if action.get("round") in rates:
            fired.setdefault(action["round"], set()).add(str(action["policy"]))
    if fired:
        numbers = sorted(fired)
        axes.scatter(numbers, [rates[n] for n in numbers], s=120, color="C3",
                     zorder=3, label="policy fired")  # fmt: skip
        for number in numbers:
            label = ", ".join(sorted(fired[number]))
            axes.annotate(label, (number, rates[number]), textcoords="offset points",
                          xytext=(8, -4), fontsize="small")  # fmt: skip
    axes.set(
        xlabel="round",
        ylabel="flagged / scored",
        title="Fleet threat rate of the recent events (from encrypted sums)",
        xticks=list(rates),
        ylim=(0.0, 1.0),
    )
    axes.legend(fontsize="small")
    return _png(figure)


def _timing_plot(rounds: Sequence[Mapping[str, Any]]) -> bytes:
    figure = _figure()
    axes = figure.subplots()
    numbers = [entry["round"] for entry in rounds]
    bottom = [0.0] * len(rounds)
    for name in TIMINGS:
        values = [float(entry.get(name) or 0.0) for entry in rounds]
        label = name.replace("_seconds", "")
        axes.bar(numbers, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    walls = [float(entry.get("round_seconds") or 0.0) for entry in rounds]
    axes.plot(numbers, walls, color="black", marker="o", label="round wall time")
    axes.set(
        xlabel="round",
        ylabel="seconds",
        title="Time per round (agent means; aggregation and decryption: server)",
    )
    axes.legend(fontsize="small")
    return _png(figure)


def _bytes_plot(rounds: Sequence[Mapping[str, Any]]) -> bytes:
    figure = _figure()
    axes = figure.subplots()
    numbers = [entry["round"] for entry in rounds]
    axes.bar(numbers, [entry["bytes_uploaded"] for entry in rounds], color="C2")
    axes.set(xlabel="round", ylabel="bytes", title="Bytes uploaded per round")
    return _png(figure)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _image(png: bytes) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{encoded}">'
