"""``fedguard actions``: the response engine's audit log.

Lists the policies that fired, newest first, with every action they asked for and
its outcome, and the directives queued for agents with who acknowledged them. Reads
the orchestrator's database (the SQLite file in the state directory unless
``--database-url`` names another) and never writes to it.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedguard.commands.options import DATABASE_URL, STATE_DIR
from fedguard.errors import ConfigError, InputError

if TYPE_CHECKING:
    from fedguard.response.audit import DecisionRecord, DirectiveRecord

DEFAULT_LIMIT = 50


def register(app: typer.Typer) -> None:
    """Add the ``actions`` command to ``app``."""
    app.command("actions")(actions)


def actions(
    state_dir: Annotated[Path, STATE_DIR] = Path("fedguard-state"),
    database_url: Annotated[str | None, DATABASE_URL] = None,
    limit: Annotated[
        int, typer.Option("--limit", help="Newest decisions and directives shown.")
    ] = DEFAULT_LIMIT,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Only decisions of this policy.")
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object.")
    ] = False,
) -> None:
    """List policy decisions, their actions' outcomes and agent directives."""
    if not 1 <= limit <= 1000:
        raise ConfigError(f"--limit must be in [1, 1000]; got {limit}")
    decisions, directives = read_audit(state_dir, database_url, limit, policy)

    if json_output:
        _print_json(decisions, directives)
        return
    _print_tables(decisions, directives)


def read_audit(
    state_dir: Path, database_url: str | None, limit: int, policy: str | None = None
) -> tuple[list["DecisionRecord"], list["DirectiveRecord"]]:
    """Decisions and directives from the orchestrator's database (read only)."""
    from sqlalchemy import inspect

    from fedguard.response.audit import AuditStore, DecisionRow, DirectiveRow
    from fedguard.server.storage import open_engine, sqlite_url

    if not database_url:
        database = state_dir / "fedguard.db"
        if not database.is_file():
            raise InputError(
                f"no orchestrator database at {database}; pass the server's "
                "--state-dir or --database-url"
            )
        database_url = sqlite_url(state_dir)

    engine = open_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        audit = AuditStore(engine)
        decisions = (
            audit.list_decisions(limit=limit, policy=policy)
            if DecisionRow.__tablename__ in tables
            else []
        )
        directives = (
            audit.list_directives(limit=limit)
            if DirectiveRow.__tablename__ in tables
            else []
        )
    finally:
        engine.dispose()
    return decisions, directives


def _print_json(
    decisions: list["DecisionRecord"], directives: list["DirectiveRecord"]
) -> None:
    import json

    document: dict[str, Any] = {
        "decisions": [d.model_dump(mode="json") for d in decisions],
        "directives": [d.model_dump(mode="json") for d in directives],
    }
    typer.echo(json.dumps(document, indent=2))


def _print_tables(
    decisions: list["DecisionRecord"], directives: list["DirectiveRecord"]
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not decisions:
        console.print("no policy has fired yet")
    else:
        table = Table(title="policy decisions and actions (newest first)")
        for column in ("time (UTC)", "round", "policy", "severity", "evidence"):
            table.add_column(column)
        table.add_column("action")
        table.add_column("outcome")
        for decision in decisions:
            _add_decision(table, decision)
        console.print(table)

    if directives:
        console.print(_directive_table(directives))


def _add_decision(table: Any, decision: "DecisionRecord") -> None:
    if decision.baseline is None:
        evidence = (
            f"{decision.metric} {decision.value:.4f} {decision.comparison} "
            f"{decision.limit:g}"
        )
    else:
        evidence = (
            f"{decision.metric} {decision.value:.4f}: change "
            f"{decision.compared:+.4f} {decision.comparison} {decision.limit:+g} "
            f"over mean {decision.baseline:.4f}"
        )
    rows = decision.actions or []
    first = [
        decision.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        str(decision.round),
        decision.policy + (" (dry run)" if decision.dry_run else ""),
        decision.severity,
        evidence,
    ]
    if not rows:
        table.add_row(*first, "-", "no actions")
        return
    for index, action in enumerate(rows):
        cells = first if index == 0 else [""] * len(first)
        table.add_row(*cells, f"{action.action} ({action.type})", _outcome(action))


def _outcome(action: Any) -> str:
    text = action.status
    if action.attempts > 1 or action.http_status is not None:
        text += f", {action.attempts} attempt(s)"
    if action.http_status is not None:
        text += f", HTTP {action.http_status}"
    elif action.detail and action.status == "failed":
        text += f", {action.detail}"
    return str(text)


def _directive_table(directives: list["DirectiveRecord"]) -> Any:
    from rich.table import Table

    table = Table(title="agent directives (newest first)")
    for column in ("created (UTC)", "round", "policy", "handler", "params", "target"):
        table.add_column(column)
    table.add_column("acknowledged by")
    for directive in directives:
        params = ", ".join(f"{k}={v}" for k, v in sorted(directive.params.items()))
        acks = ", ".join(f"{a.client_id}: {a.status}" for a in directive.acks)
        table.add_row(
            directive.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(directive.round),
            directive.policy,
            directive.handler,
            params,
            "all agents" if directive.target is None else ", ".join(directive.target),
            acks or "pending",
        )
    return table
