"""``fedguard report``: how a federation is doing, from its orchestrator's database.

``fedguard report --state-dir DIR`` reads the orchestrator's database (the SQLite
file in the state directory unless ``--database-url`` names another) and prints a
table of rounds with the fleet metrics the agents reported, encrypted, in each
round, and the policies that fired with their actions' outcomes. It writes the
same HTML report as ``fedguard simulate`` (:mod:`fedguard.report`), without the
test-set sections: an orchestrator has no test set. It opens the database
read-only (SQLite ``mode=ro``, a read-only PostgreSQL transaction), so it can run
beside a live server.

``fedguard report --metrics RUN/metrics.json`` renders a simulation's report again
from its ``metrics.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedguard.commands.options import DATABASE_URL, STATE_DIR
from fedguard.errors import ConfigError, InputError
from fedguard.report import action_rows, actions_table, read_blocklist, write_report

if TYPE_CHECKING:
    from pydantic import BaseModel
    from sqlalchemy import Engine

    from fedguard.server.repository import Store
    from fedguard.server.storage import RoundRecord

DATABASE_FILE = "fedguard.db"
DEFAULT_OUT = Path("report.html")
# The audit listing is read in pages of the largest size it allows, at most this
# many rows in all.
_AUDIT_PAGE = 1000
_AUDIT_MAX_ROWS = 100_000


def register(app: typer.Typer) -> None:
    """Add the ``report`` command to ``app``."""
    app.command("report")(report)


def report(
    context: typer.Context,
    state_dir: Annotated[Path | None, STATE_DIR] = None,
    database_url: Annotated[str | None, DATABASE_URL] = None,
    metrics: Annotated[
        Path | None,
        typer.Option(
            "--metrics",
            help="Render a simulation's report from its metrics.json (or run "
            "directory) instead of reading a database.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="HTML file to write (default: report.html; with --metrics, "
            "report.html beside metrics.json).",
        ),
    ] = None,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print the report's data as one JSON object."),
    ] = False,
) -> None:
    """Report on a federation: rounds, fleet metrics, policies and actions."""
    if metrics is not None:
        _refuse_database_options(context)
        if json_output:
            raise ConfigError("--json reads a database; --metrics is JSON already")
        _render_metrics_file(metrics, out)
        return
    if state_dir is None and not database_url:
        raise ConfigError(
            "pass the orchestrator's --state-dir DIR (or --database-url URL), or "
            "--metrics FILE of a simulation"
        )

    target = _checked_out(out or DEFAULT_OUT)
    document = read_federation(state_dir, database_url)
    write_report(document, target)
    if json_output:
        typer.echo(json.dumps(document, indent=2))
        typer.echo(f"wrote {target}", err=True)
        return
    _print_tables(document)
    _console().print(f"wrote {target}")


def _refuse_database_options(context: typer.Context) -> None:
    """``--metrics`` with a database named on the command line is ambiguous.

    The same options coming from ``FEDGUARD_*`` environment variables are only
    defaults of a shell and are ignored.
    """
    for name, option in (
        ("state_dir", "--state-dir"),
        ("database_url", "--database-url"),
    ):
        source = context.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            raise ConfigError(
                f"--metrics renders a simulation's file; it cannot be combined "
                f"with {option}"
            )


def _checked_out(path: Path) -> Path:
    if not path.parent.is_dir():
        raise ConfigError(f"--out directory {path.parent} does not exist")
    if path.is_dir():
        raise ConfigError(f"--out must be a file name; {path} is a directory")
    return path


# --- a simulation's metrics.json -------------------------------------------------


def _render_metrics_file(path: Path, out: Path | None) -> None:
    document = read_metrics_file(path)
    source = path / "metrics.json" if path.is_dir() else path
    target = _checked_out(out or source.with_name("report.html"))
    write_report(document, target)
    _console().print(f"wrote {target}")


def read_metrics_file(path: Path) -> dict[str, Any]:
    """A simulation's ``metrics.json`` (``path`` may be its run directory)."""
    if path.is_dir():
        path = path / "metrics.json"
    try:
        document: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--metrics {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"--metrics {path} is not JSON: {error}") from None

    rounds = document.get("rounds") if isinstance(document, dict) else None
    if not isinstance(rounds, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("round"), int)
        for entry in rounds
    ):
        raise InputError(
            f"--metrics {path} is not the metrics.json of a fedguard simulation "
            "(it needs a list of rounds, each with its round number)"
        )
    return dict(document)


# --- the orchestrator's database -------------------------------------------------


def read_federation(state_dir: Path | None, database_url: str | None) -> dict[str, Any]:
    """The report document of the federation in an orchestrator's database.

    Rounds as the orchestrator recorded them, the fleet metrics of each round,
    and every action of every fired policy (:func:`fedguard.report.action_rows`).
    Raises :class:`InputError` when there is no orchestrator database to read;
    nothing is created or written.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from fedguard.server.repository import Store

    engine, where = _open_read_only(state_dir, database_url)
    try:
        _check_tables(engine, where)
        store = Store(engine)
        document = _federation_document(store, where)
        decisions, directives = _audit_listing(engine)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        raise InputError(
            f"cannot read the orchestrator database at {where}: {reason}"
        ) from None
    finally:
        engine.dispose()

    document["actions"] = _action_rows(decisions, directives, state_dir)
    return document


def _open_read_only(
    state_dir: Path | None, database_url: str | None
) -> tuple[Engine, str]:
    """An engine that cannot write, and how to name the database in messages."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not database_url:
        assert state_dir is not None
        if not state_dir.is_dir():
            raise InputError(f"--state-dir {state_dir} does not exist")
        return _sqlite_read_only(state_dir / DATABASE_FILE), str(state_dir)

    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ConfigError("--database-url is not a SQLAlchemy URL") from None
    if url.get_backend_name() == "sqlite":
        return _sqlite_read_only(Path(url.database or "")), str(url.database)
    where = url.render_as_string(hide_password=True)
    engine = create_engine(url, pool_pre_ping=True)
    if url.get_backend_name() == "postgresql":
        engine = engine.execution_options(postgresql_readonly=True)
    return engine, where


def _sqlite_read_only(path: Path) -> Engine:
    """SQLite opened so that the library itself refuses every write."""
    import sqlite3
    from urllib.parse import quote

    from sqlalchemy import create_engine

    if not path.is_file():
        raise InputError(
            f"no orchestrator database at {path}; pass the server's --state-dir "
            "or --database-url"
        )
    # Without a -wal file no process has the database open (the server keeps
    # one while it runs): read the file as it is and create nothing beside it.
    # Otherwise read the server's committed transactions through its WAL, which
    # needs the -shm index SQLite keeps next to the file.
    running = path.with_name(path.name + "-wal").exists()
    mode = "mode=ro" if running else "immutable=1"
    uri = f"file:{quote(str(path.resolve()))}?{mode}"
    return create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, timeout=30)
    )


def _check_tables(engine: Engine, where: str) -> None:
    from sqlalchemy import inspect

    from fedguard.server.storage import FederationRecord, RoundRecord

    tables = set(inspect(engine).get_table_names())
    for record in (RoundRecord, FederationRecord):
        if record.__tablename__ not in tables:
            raise InputError(
                f"{where} holds no orchestrator database (no table "
                f"{record.__tablename__}); pass the server's --state-dir or "
                "--database-url"
            )


def _federation_document(store: Store, where: str) -> dict[str, Any]:
    from fedguard.server.orchestrator import FEDERATION_FACT, PLAINTEXT_FINGERPRINT
    from fedguard.server.rounds import FINISHED_FACT

    identity = store.get_fact(FEDERATION_FACT) or {}
    fingerprint = identity.get("fingerprint")
    plaintext = fingerprint == PLAINTEXT_FINGERPRINT
    mode = "plaintext baseline (no encryption)" if plaintext else "encrypted"
    rounds = [_round_entry(store, record) for record in store.rounds()]
    closed = [r for r in rounds if r["kind"] == "training" and r["state"] == "closed"]

    if store.get_fact(FINISHED_FACT):
        status = "finished"
    elif rounds:
        status = f"round {rounds[-1]['round']} {rounds[-1]['state']}"
    else:
        status = "waiting for agents"
    settings = {
        "dataset": identity.get("dataset"),
        "mode": mode,
        "model parameters": identity.get("n_params"),
        "agents": store.count_clients(),
        "training rounds closed": len(closed),
        "status": status,
        "database": where,
    }
    evaluation = [r for r in rounds if r["kind"] == "evaluation" and r["fleet"]]
    return {
        "title": f"fedguard federation: {identity.get('dataset', '?')}, {mode}",
        "source": "orchestrator",
        "settings": settings,
        "fingerprint": fingerprint,
        "rounds": rounds,
        "evaluation": evaluation[-1] if evaluation else None,
    }


def _round_entry(store: Store, record: RoundRecord) -> dict[str, Any]:
    """One round as the orchestrator recorded it.

    ``fleet`` holds the fleet metrics the agents reported in this round, which
    are those of the model version the round started from.
    """
    from statistics import fmean

    timings = store.timings(record.round_id)
    fleet = None
    if record.state == "closed" and record.kind != "setup" and record.model_version:
        fact = store.get_fact(f"fleet_metrics/{record.model_version}")
        fleet = fact["metrics"] if fact else None
    closed_at = record.closed_at
    delivered = store.submissions(record.round_id)

    def mean(name: str) -> float | None:
        values = [float(getattr(timing, name)) for timing in timings]
        return fmean(values) if values else None

    return {
        "round": record.round_id,
        "kind": record.kind,
        "state": record.state,
        "model_version": record.model_version,
        "clients": record.contributors if closed_at else len(delivered),
        "opened_at": _timestamp(record.opened_at),
        "closed_at": _timestamp(closed_at) if closed_at else None,
        "round_seconds": (
            (closed_at - record.opened_at).total_seconds() if closed_at else None
        ),
        "training_seconds": mean("training_seconds"),
        "encryption_seconds": mean("encryption_seconds"),
        "upload_seconds": mean("upload_seconds"),
        "aggregation_seconds": record.aggregation_seconds,
        "decryption_seconds": record.decryption_seconds,
        "bytes_uploaded": store.update_bytes(record.round_id),
        "fleet": fleet,
        "threat_rate": fleet.get("threat_rate") if fleet else None,
    }


def _timestamp(moment: Any) -> str:
    return str(moment.strftime("%Y-%m-%d %H:%M:%S"))


def _audit_listing(engine: Engine) -> tuple[list[Any], list[Any]]:
    """Every decision and directive of the audit log, as JSON, newest first."""
    from sqlalchemy import inspect

    from fedguard.response.audit import AuditStore, DecisionRow, DirectiveRow

    tables = set(inspect(engine).get_table_names())
    audit = AuditStore(engine)
    decisions, directives = [], []
    if DecisionRow.__tablename__ in tables:
        decisions = _every_page(audit.list_decisions)
    if DirectiveRow.__tablename__ in tables:
        directives = _every_page(audit.list_directives)
    return decisions, directives


def _every_page(fetch: Callable[..., Sequence[BaseModel]]) -> list[Any]:
    rows: list[Any] = []
    for offset in range(0, _AUDIT_MAX_ROWS, _AUDIT_PAGE):
        page = fetch(limit=_AUDIT_PAGE, offset=offset)
        rows += [record.model_dump(mode="json") for record in page]
        if len(page) < _AUDIT_PAGE:
            break
    return rows


def _action_rows(
    decisions: list[Any], directives: list[Any], state_dir: Path | None
) -> list[dict[str, Any]]:
    """Action rows with the blocklist entries found in the state directory."""
    from fedguard.response.actions import DEFAULT_BLOCKLIST

    blocklist: dict[str, Any] = {}
    if state_dir is not None:
        # A blocklist action's detail names its file ("appended to NAME").
        names = {DEFAULT_BLOCKLIST} | {
            action["detail"].removeprefix("appended to ")
            for decision in decisions
            for action in decision["actions"]
            if action["type"] == "blocklist"
            and action["detail"].startswith("appended to ")
        }
        for name in sorted(names):
            blocklist |= read_blocklist(state_dir / Path(name).name)
    return action_rows(decisions, directives, blocklist)


# --- the terminal ----------------------------------------------------------------


def _print_tables(document: dict[str, Any]) -> None:
    console = _console()
    settings = document["settings"]
    console.print(_rounds_table(document))
    console.print(
        f"{settings['status']}: {settings['training rounds closed']} training "
        f"rounds closed, {settings['agents']} agents"
    )
    if document["actions"]:
        console.print(actions_table(document["actions"]))
    else:
        console.print("no policy has fired")


_ROUND_COLUMNS = (
    ("accuracy", "accuracy"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("fpr", "FPR"),
    ("threat_rate", "threat"),
)


def _rounds_table(document: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(
        title=document["title"],
        caption="accuracy to threat: fleet metrics of the model version the "
        "round started from (model), summed from the agents' encrypted counts",
    )
    table.add_column("round", justify="right")
    table.add_column("kind", no_wrap=True)
    table.add_column("clients", justify="right")
    table.add_column("model", justify="right")
    for _, header in _ROUND_COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("closed at (UTC)", no_wrap=True)
    table.add_column("aggregate s", justify="right")
    table.add_column("decrypt s", justify="right")

    for entry in document["rounds"]:
        fleet = entry["fleet"] or {}
        table.add_row(
            str(entry["round"]),
            entry["kind"],
            str(entry["clients"]),
            str(entry["model_version"]),
            *(_number(fleet.get(key), "{:.4f}") for key, _ in _ROUND_COLUMNS),
            _closing(entry),
            _number(entry["aggregation_seconds"], "{:.4f}"),
            _number(entry["decryption_seconds"], "{:.4f}"),
        )
    return table


def _closing(entry: dict[str, Any]) -> str:
    """When the round closed, or its state if it did not simply close."""
    if entry["state"] == "closed":
        return str(entry["closed_at"])
    return " ".join(text for text in (entry["state"], entry["closed_at"]) if text)


def _number(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _console() -> Any:
    from rich.console import Console

    # Wide enough for every column even when the output is not a terminal.
    return Console(width=None if Console().is_terminal else 160)
