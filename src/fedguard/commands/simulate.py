"""``fedguard simulate``: a real server and N agent processes on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from fedguard.simulate import SimulationResult, SimulationSettings


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)


def simulate(
    dataset: Annotated[
        str, typer.Option("--dataset", help="synthetic or nsl-kdd.")
    ] = "synthetic",
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="NSL-KDD directory.")
    ] = None,
    train_file: Annotated[
        str, typer.Option("--train-file", help="NSL-KDD training file.")
    ] = "KDDTrain+.txt",
    clients: Annotated[int, typer.Option("--clients", help="Agent processes.")] = 3,
    rounds: Annotated[int, typer.Option("--rounds", help="Training rounds.")] = 5,
    partition: Annotated[
        str,
        typer.Option("--partition", help="iid, dirichlet:ALPHA or by-family."),
    ] = "iid",
    seed: Annotated[int, typer.Option("--seed", help="Data and partition seed.")] = 0,
    plaintext: Annotated[
        bool,
        typer.Option("--plaintext", help="Same federation without encryption."),
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path(
        "fedguard-run"
    ),
    min_clients: Annotated[
        int | None,
        typer.Option("--min-clients", help="Fewest contributions (default: all)."),
    ] = None,
    rows: Annotated[
        int, typer.Option("--rows", help="Synthetic rows per cloud.")
    ] = 20_000,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="Server database (default: SQLite)."),
    ] = None,
    attack_burst: Annotated[
        list[str] | None,
        typer.Option(
            "--attack-burst",
            help="AGENT:ROUND or AGENT:ROUND:COUNT: agent AGENT (0-based) adds "
            "COUNT attack events (default: 3 times its events of that round) to "
            "the events it scores in ROUND, so that a threat-rate policy fires. "
            "Repeatable.",
        ),
    ] = None,
) -> None:
    """Run a whole federation locally and write metrics.json and report.html."""
    from fedguard.simulate import AgentBurst, SimulationSettings

    settings = SimulationSettings(
        dataset=dataset,
        data_dir=data_dir,
        train_file=train_file,
        clients=clients,
        rounds=rounds,
        partition=partition,
        seed=seed,
        plaintext=plaintext,
        out_dir=out,
        min_clients=min_clients,
        rows_per_cloud=rows,
        database_url=database_url,
        attack_bursts=tuple(AgentBurst.parse(text) for text in attack_burst or ()),
    )
    result = _with_progress(settings)
    _print_rounds(result)
    _print_actions(result)
    _console().print(
        f"wrote {result.out_dir / 'metrics.json'} and {result.out_dir / 'report.html'} "
        f"({result.wall_seconds:.1f} s)"
    )


def _with_progress(settings: SimulationSettings) -> SimulationResult:
    """Run the simulation behind a progress bar of closed rounds."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fedguard.simulate import run_simulation

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rounds"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("starting", total=settings.rounds)

        def report(stage: str, done: int, total: int) -> None:
            progress.update(task, description=stage, completed=done, total=total)

        return run_simulation(settings, report)


def _print_rounds(result: SimulationResult) -> None:
    from rich.table import Table

    mode = "plaintext" if result.settings["plaintext"] else "encrypted"
    table = Table(title=f"fedguard simulate: {result.settings['dataset']}, {mode}")
    for header in ("round", "clients", "accuracy", "precision", "recall", "F1"):
        table.add_column(header, justify="right")
    for header in ("ROC-AUC", "FPR", "threat", "round s", "train s", "encrypt s"):
        table.add_column(header, justify="right")
    table.add_column("bytes", justify="right")
    for entry in result.rounds:
        table.add_row(
            str(entry.round),
            str(entry.clients),
            f"{entry.accuracy:.4f}",
            f"{entry.precision:.4f}",
            f"{entry.recall:.4f}",
            f"{entry.f1:.4f}",
            "-" if entry.roc_auc is None else f"{entry.roc_auc:.4f}",
            f"{entry.fpr:.4f}",
            "-" if entry.threat_rate is None else f"{entry.threat_rate:.4f}",
            f"{entry.round_seconds:.2f}",
            f"{entry.training_seconds:.3f}",
            f"{entry.encryption_seconds:.3f}",
            f"{entry.bytes_uploaded:,}",
        )
    console = _console()
    console.print(table)
    if result.centralized is not None:
        console.print(
            f"centralised baseline ({result.centralized['epochs']} epochs on "
            f"{result.centralized['rows']:,} rows): F1 "
            f"{result.centralized['f1']:.4f}, accuracy "
            f"{result.centralized['accuracy']:.4f}"
        )


def _print_actions(result: SimulationResult) -> None:
    """The policies that fired and what their actions did."""
    from rich.table import Table

    console = _console()
    if not result.actions:
        console.print("no policy fired")
        return
    table = Table(title="policies fired and their actions")
    for header in ("round", "policy", "evidence", "action", "outcome"):
        table.add_column(header)
    for entry in result.actions:
        evidence = (
            f"{entry['metric']} {entry['value']:.4f} {entry['comparison']} "
            f"{entry['threshold']:g}"
        )
        if entry["baseline"] is not None:
            evidence = (
                f"{entry['metric']} {entry['value']:.4f}: change "
                f"{entry['compared']:+.4f} {entry['comparison']} "
                f"{entry['threshold']:+g}"
            )
        table.add_row(
            str(entry["round"]),
            entry["policy"],
            evidence,
            f"{entry['action']} ({entry['type']})",
            entry["outcome"],
        )
    console.print(table)


def _console() -> Any:
    from rich.console import Console

    # Wide enough for every column even when the output is not a terminal.
    return Console(width=None if Console().is_terminal else 140)
