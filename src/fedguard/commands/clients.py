"""``fedguard clients``: enrollment tokens and client credentials.

These commands work on the orchestrator's database directly (the SQLite file in the
state directory, or ``--database-url``), so they work whether or not the server is
running. Secrets are printed once, to standard output, and never stored.
"""

import datetime
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedguard.errors import ConfigError

if TYPE_CHECKING:
    from fedguard.security.credentials import CredentialStore

clients_app = typer.Typer(
    help="Enroll agents, list and revoke their credentials.", no_args_is_help=True
)

StateDirOption = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="FEDGUARD_STATE_DIR",
        help="The server's state directory.",
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="FEDGUARD_DATABASE_URL",
        help="Database URL (default: the SQLite file in the state directory).",
    ),
]

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> datetime.timedelta:
    """``90s``, ``30m``, ``1h`` or ``7d`` as a timedelta."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(
            "expires-in must be a number followed by s, m, h or d (e.g. 1h); "
            f"got {text!r}"
        )
    amount, unit = match.groups()
    return datetime.timedelta(**{_UNITS[unit]: int(amount)})


def open_store(state_dir: Path, database_url: str | None) -> "CredentialStore":
    """The credential store of the server whose state is in ``state_dir``."""
    from fedguard.security.credentials import CredentialStore
    from fedguard.server.storage import open_engine, sqlite_url

    if database_url is None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = CredentialStore(open_engine(database_url or sqlite_url(state_dir)))
    store.create_tables()
    return store


@clients_app.command("enroll")
def enroll(
    state_dir: StateDirOption,
    database_url: DatabaseOption = None,
    expires_in: Annotated[
        str, typer.Option("--expires-in", help="Token lifetime: 30m, 1h, 7d, ...")
    ] = "1h",
    name: Annotated[
        str | None, typer.Option("--name", help="Label of the client to enroll.")
    ] = None,
) -> None:
    """Issue a single-use enrollment token for one agent (printed on stdout)."""
    lifetime = parse_duration(expires_in)
    store = open_store(state_dir, database_url)
    try:
        issued = store.issue_enrollment_token(name=name, expires_in=lifetime)
    finally:
        store.close()

    typer.echo(
        f"enrollment token {issued.token_id} for {name or 'a new client'}, single "
        f"use, valid until {issued.expires_at:%Y-%m-%d %H:%M:%S} UTC:",
        err=True,
    )
    typer.echo(issued.token)


@clients_app.command("list")
def list_clients(
    state_dir: StateDirOption,
    database_url: DatabaseOption = None,
    tokens: Annotated[
        bool, typer.Option("--tokens", help="List enrollment tokens instead.")
    ] = False,
) -> None:
    """List enrolled clients (or enrollment tokens); secrets are never shown."""
    from rich.console import Console
    from rich.table import Table

    store = open_store(state_dir, database_url)
    try:
        listed_tokens = store.list_enrollment_tokens() if tokens else []
        listed_clients = [] if tokens else store.list_clients()
    finally:
        store.close()

    if tokens:
        table = Table("token_id", "name", "expires", "used", "client_id")
        for token in listed_tokens:
            table.add_row(
                token.token_id,
                token.name or "",
                _when(token.expires_at),
                _when(token.used_at),
                token.client_id or "",
            )
    else:
        table = Table("client_id", "name", "enrolled", "revoked")
        for client in listed_clients:
            table.add_row(
                client.client_id,
                client.name or "",
                _when(client.created_at),
                _when(client.revoked_at),
            )
    Console(width=120).print(table)


@clients_app.command("revoke")
def revoke(
    client_id: Annotated[str, typer.Argument(help="The client_id to revoke.")],
    state_dir: StateDirOption,
    database_url: DatabaseOption = None,
) -> None:
    """Revoke a client's credential; its next request is refused."""
    store = open_store(state_dir, database_url)
    try:
        record = store.revoke(client_id)
    finally:
        store.close()
    typer.echo(f"revoked {record.client_id} at {_when(record.revoked_at)}")


def _when(moment: datetime.datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def register(app: typer.Typer) -> None:
    app.add_typer(clients_app, name="clients")
