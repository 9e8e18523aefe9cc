"""``fedguard clients``: enrollment tokens and client credentials.

These commands work on the orchestrator's database directly (the SQLite file in the
state directory, or ``--database-url``), so they work whether or not the server is
running. They find the database the way ``fedguard server`` does: ``--state-dir``
(default ``fedguard-state``) or ``FEDGUARD_SERVER_STATE_DIR``, and
``--database-url`` or ``FEDGUARD_SERVER_DATABASE_URL``; the older
``FEDGUARD_STATE_DIR`` and ``FEDGUARD_DATABASE_URL`` are read after those. They
never create a database: a mistyped state directory is an error, not a new empty
federation. Secrets are printed once, to standard output, and never stored.
"""

import datetime
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedguard.commands.options import DATABASE_URL, STATE_DIR
from fedguard.errors import ConfigError, InputError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from fedguard.security.credentials import CredentialStore

clients_app = typer.Typer(
    help="Enroll agents, list and revoke their credentials.", no_args_is_help=True
)

DEFAULT_STATE_DIR = Path("fedguard-state")  # the server's default state_dir
DATABASE_FILE = "fedguard.db"

StateDirOption = Annotated[Path, STATE_DIR]
DatabaseOption = Annotated[str | None, DATABASE_URL]

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


@contextmanager
def open_store(
    state_dir: Path, database_url: str | None
) -> Iterator["CredentialStore"]:
    """The credential store of an existing orchestrator database; creates nothing.

    Database failures (an unknown URL scheme, an unreachable server) become one
    :class:`ConfigError` line naming the database, its password hidden.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from fedguard.security.credentials import CredentialStore

    where = str(state_dir / DATABASE_FILE)
    try:
        if database_url:
            where = _hide_password(database_url)
        engine = _orchestrator_engine(state_dir, database_url or None)
    except SQLAlchemyError as error:
        raise ConfigError(f"cannot open database {where}: {_reason(error)}") from None

    store = CredentialStore(engine)
    try:
        yield store
    except SQLAlchemyError as error:
        raise ConfigError(f"database {where}: {_reason(error)}") from None
    finally:
        store.close()


def _orchestrator_engine(state_dir: Path, database_url: str | None) -> "Engine":
    """An engine on the server's database, refused unless it holds one."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from fedguard.security.credentials import SECURITY_TABLES
    from fedguard.server.storage import open_engine, sqlite_url

    if database_url is None:
        database = state_dir / DATABASE_FILE
        if not database.is_file():
            raise InputError(
                f"no orchestrator database at {database}; pass the server's "
                "--state-dir or --database-url"
            )
        database_url = sqlite_url(state_dir)

    url = make_url(database_url)
    # Connecting to a missing SQLite file would create an empty one.
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        raise InputError(
            f"no orchestrator database at {url.database or 'an in-memory database'}; "
            "pass the server's --state-dir or --database-url"
        )
    engine = open_engine(database_url)
    missing = set(SECURITY_TABLES) - set(inspect(engine).get_table_names())
    if missing:
        engine.dispose()
        raise InputError(
            f"{_hide_password(database_url)} holds no orchestrator database (no "
            f"{sorted(missing)[0]} table); start `fedguard server` with it first"
        )
    return engine


def _hide_password(database_url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(database_url[:80])


def _reason(error: Exception) -> str:
    """The first line of what the database driver said."""
    reason = str(getattr(error, "orig", None) or error).strip()
    return reason.splitlines()[0] if reason else type(error).__name__


@clients_app.command("enroll")
def enroll(
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
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
    with open_store(state_dir, database_url) as store:
        issued = store.issue_enrollment_token(name=name, expires_in=lifetime)

    typer.echo(
        f"enrollment token {issued.token_id} for {name or 'a new client'}, single "
        f"use, valid until {issued.expires_at:%Y-%m-%d %H:%M:%S} UTC:",
        err=True,
    )
    typer.echo(issued.token)


@clients_app.command("list")
def list_clients(
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    database_url: DatabaseOption = None,
    tokens: Annotated[
        bool, typer.Option("--tokens", help="List enrollment tokens instead.")
    ] = False,
) -> None:
    """List enrolled clients (or enrollment tokens); secrets are never shown."""
    from rich.console import Console
    from rich.table import Table

    with open_store(state_dir, database_url) as store:
        listed_tokens = store.list_enrollment_tokens() if tokens else []
        listed_clients = [] if tokens else store.list_clients()

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
    state_dir: StateDirOption = DEFAULT_STATE_DIR,
    database_url: DatabaseOption = None,
) -> None:
    """Revoke a client's credential; its next request is refused."""
    with open_store(state_dir, database_url) as store:
        record = store.revoke(client_id)
    typer.echo(f"revoked {record.client_id} at {_when(record.revoked_at)}")


def _when(moment: datetime.datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def register(app: typer.Typer) -> None:
    app.add_typer(clients_app, name="clients")
