"""``fedguard server``: run the orchestrator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("server")(server)


def server(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML configuration file."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="Key, admin token and SQLite database."),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="TCP port (0: any free port).")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="SQLAlchemy URL, e.g. PostgreSQL."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Feature schema: synthetic or nsl-kdd."),
    ] = None,
    rounds: Annotated[
        int | None, typer.Option("--rounds", help="Training rounds.")
    ] = None,
    min_clients: Annotated[
        int | None,
        typer.Option("--min-clients", help="Fewest contributions decrypted."),
    ] = None,
    wait_for_clients: Annotated[
        int | None,
        typer.Option("--wait-for-clients", help="Enrollments before round 0."),
    ] = None,
    round_deadline: Annotated[
        float | None,
        typer.Option("--round-deadline", help="Seconds a round stays open."),
    ] = None,
    max_examples: Annotated[
        int | None,
        typer.Option("--max-examples", help="Examples for a full weight of 1."),
    ] = None,
    plaintext: Annotated[
        bool | None,
        typer.Option(
            "--plaintext/--encrypted",
            help="Baseline without encryption (agents send plain floats).",
        ),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(
            "--insecure-http",
            help="Serve plain HTTP without TLS (trusted loopback or tests only).",
        ),
    ] = False,
) -> None:
    """Run the orchestrator: key pair, rounds, aggregation and the HTTP API.

    Settings come from the TOML file, then FEDGUARD_* environment variables, then
    these flags (later wins). See docs/configuration.md.
    """
    from fedguard.server.app import serve
    from fedguard.server.config import load_config

    overrides = {
        "server.state_dir": state_dir,
        "server.host": host,
        "server.port": port,
        "server.database_url": database_url,
        "federation.dataset": dataset,
        "federation.rounds": rounds,
        "federation.min_clients": min_clients,
        "federation.wait_for_clients": wait_for_clients,
        "federation.round_deadline": round_deadline,
        "federation.max_examples": max_examples,
        "federation.plaintext": plaintext,
    }
    settings = load_config(config, env=os.environ, overrides=overrides)
    config_dir = config.resolve().parent if config is not None else None
    serve(settings, insecure_http=insecure_http, config_dir=config_dir)
