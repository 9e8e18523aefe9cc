"""``fedguard datasets``: list, verify and fetch the public datasets by checksum."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedguard.errors import ConfigError, InputError

if TYPE_CHECKING:
    from fedguard.data.catalog import KnownFile

datasets_app = typer.Typer(
    help="List, verify and fetch public datasets (checked by SHA-256).",
    no_args_is_help=True,
)

DatasetArgument = Annotated[str, typer.Argument(help="Dataset name: nsl-kdd.")]


@datasets_app.command("list")
def list_files() -> None:
    """Show the files fedguard knows, with their sizes and checksums."""
    from rich.console import Console
    from rich.table import Table

    from fedguard.data.catalog import KNOWN_FILES

    table = Table(title="datasets fedguard verifies")
    for column in ("dataset", "file", "rows", "bytes", "SHA-256"):
        table.add_column(column, overflow="fold")
    for known in KNOWN_FILES:
        table.add_row(
            known.dataset,
            known.name,
            f"{known.rows:,}",
            f"{known.size:,}",
            known.sha256,
        )
    Console().print(table)


@datasets_app.command("verify")
def verify(
    dataset: DatasetArgument,
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Directory to check.")],
) -> None:
    """Check every known file present in DIR (plain or .gz) against its checksum."""
    from fedguard.data.catalog import known_files, verify_file

    found = 0
    for known in known_files(dataset):
        path = _present(data_dir, known.name)
        if path is None:
            typer.echo(f"absent   {known.name}")
            continue
        verify_file(path, known)
        found += 1
        typer.echo(f"verified {path.name}")

    if not found:
        raise InputError(f"no {dataset} file found in {data_dir}")


def _present(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


@datasets_app.command("fetch")
def fetch(
    dataset: DatasetArgument,
    base_url: Annotated[
        str,
        typer.Option("--base-url", help="Mirror URL that holds the dataset's files."),
    ],
    directory: Annotated[Path, typer.Option("--dir", help="Where to put the files.")],
    file: Annotated[
        list[str] | None,
        typer.Option("--file", help="Only this file (repeatable; default: all)."),
    ] = None,
) -> None:
    """Download the dataset's files from a mirror, keeping only verified ones."""
    import httpx

    from fedguard.data.catalog import fetch_file, known_files

    if not base_url.startswith(("https://", "http://")):
        raise ConfigError(f"--base-url must be an http(s) URL; got {base_url!r}")
    chosen = _choose(known_files(dataset), file or [])

    with httpx.Client(timeout=60.0, follow_redirects=True) as client:
        for known in chosen:
            path = fetch_file(client, base_url, known, directory)
            typer.echo(f"fetched and verified {path}")


def _choose(files: tuple["KnownFile", ...], names: list[str]) -> list["KnownFile"]:
    if not names:
        return list(files)
    by_name = {known.name: known for known in files}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ConfigError(
            f"--file must be one of {', '.join(by_name)}; got {', '.join(unknown)}"
        )
    return [by_name[name] for name in names]


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
