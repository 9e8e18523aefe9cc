"""A self-contained HTML report of a simulated federation.

The page holds the settings, a table of rounds and plots of the detection metrics
and of the time and bytes each round cost. Plots are drawn with matplotlib's Agg
backend (no display needed) and embedded as base64 PNG, so the file can be mailed
or archived on its own.
"""

from __future__ import annotations

import base64
import html
import io
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

    sections = [
        f"<h1>{html.escape(title)}</h1>",
        _settings_table(metrics),
        _comparison(metrics),
        "<h2>Rounds</h2>",
        format_rounds_html(rounds),
    ]
    if rounds:
        sections += [
            "<h2>Detection on the test set</h2>",
            _image(_quality_plot(rounds, metrics.get("centralized"))),
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
