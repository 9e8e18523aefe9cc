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
    """Run the simulation behind progress bars on standard error.

    One bar counts the training rounds; the steps before and after them (loading
    the test set, reading the audit log, training the centralised baseline) get a
    line each. If the run fails, the bars are erased so that the error is the only
    thing the command prints.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fedguard.simulate import run_simulation

    settings.check_data_files()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
    )
    progress = Progress(*columns, console=Console(stderr=True))
    bars = _ProgressBars(progress)
    progress.start()
    try:
        result = run_simulation(settings, bars)
    except BaseException:
        # Progress.stop would print the bars (and a blank line without a
        # terminal); stopping the live display as transient erases them.
        progress.live.transient = True
        progress.live.stop()
        raise
    bars.finish()
    progress.stop()
    return result


class _ProgressBars:
    """A run's progress drawn with rich: a bar of rounds and one line per step.

    Implements :class:`fedguard.simulate.Progress`.
    """

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.step_task: Any = None
        self.rounds_task: Any = None

    def step(self, description: str) -> None:
        self.finish()
        self.step_task = self.progress.add_task(description, total=None, count="")

    def rounds(self, description: str, closed: int, total: int) -> None:
        self.finish()
        if self.rounds_task is None:
            self.rounds_task = self.progress.add_task(description, count="")
        self.progress.update(
            self.rounds_task,
            description=description,
            completed=closed,
            total=total,
            count=f"{closed}/{total} rounds",
        )

    def finish(self) -> None:
        """Mark the current step done."""
        if self.step_task is not None:
            self.progress.update(self.step_task, total=1, completed=1)
            self.step_task = None


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
        central = result.centralized
        console.print(
            f"centralised baseline on the same {central['rows']:,} training rows "
            f"the agents hold ({central['epochs']} epochs; their held-out rows "
            f"excluded): F1 {central['f1']:.4f}, accuracy {central['accuracy']:.4f}"
        )


def _print_actions(result: SimulationResult) -> None:
    """The policies that fired and what their actions did."""
    from fedguard.report import actions_table

    console = _console()
    if not result.actions:
        console.print("no policy fired")
        return
    console.print(actions_table(result.actions))


def _console() -> Any:
    from rich.console import Console

    # Wide enough for every column even when the output is not a terminal.
    return Console(width=None if Console().is_terminal else 140)
