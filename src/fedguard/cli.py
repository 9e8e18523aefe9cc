"""The ``fedguard`` command line.

Each subcommand lives in its own module under :mod:`fedguard.commands` and exposes
``register(app)``; this module only assembles them, sets up logging and turns
deliberate :class:`~fedguard.errors.FedguardError` failures into a one-line message
and a non-zero exit status instead of a traceback.
"""

import importlib
import sys
from typing import Annotated

import typer

from fedguard import __version__
from fedguard.errors import FedguardError
from fedguard.logs import configure_logging

# Modules under fedguard.commands, each registering one or more subcommands. They
# import their heavy dependencies inside the command bodies so ``--help`` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "bench",
    "certs",
    "clients",
    "datasets",
    "keys",
    "server",
    "train",
    "client",
    "actions",
    "score",
    "simulate",
    "report",
)

app = typer.Typer(
    name="fedguard",
    help="Privacy-preserving federated threat detection.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"fedguard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log detail.")
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True),
    ] = False,
) -> None:
    configure_logging(verbose, quiet=quiet)


for _name in COMMAND_MODULES:
    importlib.import_module(f"fedguard.commands.{_name}").register(app)


def main() -> None:
    """Entry point of the ``fedguard`` console script."""
    try:
        app()
    except FedguardError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
