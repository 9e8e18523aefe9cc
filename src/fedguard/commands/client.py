"""``fedguard client``: run one cloud agent."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

logger = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    app.command("client")(client)


def client(
    server: Annotated[
        str, typer.Option("--server", help="Orchestrator URL, https://host:port.")
    ],
    state_dir: Annotated[
        Path,
        typer.Option("--state-dir", help="Where the agent keeps its credential."),
    ] = Path("fedguard-agent"),
    name: Annotated[
        str | None, typer.Option("--name", help="Name (default: cloud-INDEX).")
    ] = None,
    enrollment_token: Annotated[
        str | None,
        typer.Option(
            "--enrollment-token",
            envvar="FEDGUARD_ENROLLMENT_TOKEN",
            help="Single-use token from `fedguard clients enroll` (first run only).",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option("--ca-file", help="CA certificate the server's TLS chains to."),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option("--insecure-http", help="Allow a plain http:// server URL."),
    ] = False,
    fingerprint: Annotated[
        str | None,
        typer.Option("--fingerprint", help="Expected public key fingerprint (hex)."),
    ] = None,
    dataset: Annotated[
        str, typer.Option("--dataset", help="nsl-kdd, synthetic or csv.")
    ] = "synthetic",
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="NSL-KDD directory.")
    ] = None,
    data_file: Annotated[
        str | None,
        typer.Option("--data-file", help="NSL-KDD file name, or the CSV file."),
    ] = None,
    mapping: Annotated[
        Path | None, typer.Option("--mapping", help="Column mapping (TOML), csv.")
    ] = None,
    partition: Annotated[
        str,
        typer.Option("--partition", help="iid, dirichlet:ALPHA or by-family."),
    ] = "iid",
    clients: Annotated[
        int, typer.Option("--clients", help="Parts the dataset is split into.")
    ] = 1,
    index: Annotated[
        int | None, typer.Option("--index", help="This agent's part (0-based).")
    ] = None,
    cloud: Annotated[
        int | None,
        typer.Option("--cloud", help="Synthetic cloud number (same as --index)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Partition/data seed.")] = 0,
    rows: Annotated[
        int, typer.Option("--rows", help="Synthetic rows of this cloud.")
    ] = 20_000,
    holdout: Annotated[
        float, typer.Option("--holdout", help="Share of rows held out.")
    ] = 0.1,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", help="Seconds between polls.")
    ] = 0.5,
    encryption_workers: Annotated[
        int,
        typer.Option("--encryption-workers", help="Encryption processes (1: inline)."),
    ] = 1,
    retry_for: Annotated[
        float,
        typer.Option(
            "--retry-for", help="Seconds to keep retrying an unreachable server."
        ),
    ] = 120.0,
    attack_burst: Annotated[
        list[str] | None,
        typer.Option(
            "--attack-burst",
            help="ROUND or ROUND:COUNT: add COUNT attack events (default: 3 times "
            "the round's events) to the events scored in ROUND. Repeatable; for "
            "tests and demonstrations.",
        ),
    ] = None,
) -> None:
    """Run a cloud agent: enroll, then train, encrypt and upload every round."""
    from fedguard.client.agent import Agent, AgentSettings
    from fedguard.client.connection import RetryPolicy
    from fedguard.client.data import DataSource, Partition, load_local_data
    from fedguard.client.events import AttackBurst
    from fedguard.errors import ConfigError

    if index is not None and cloud is not None and index != cloud:
        raise ConfigError(f"--index ({index}) and --cloud ({cloud}) disagree")
    position = index if index is not None else (cloud or 0)
    source = DataSource(
        dataset=dataset,
        index=position,
        clients=max(clients, position + 1) if dataset == "synthetic" else clients,
        seed=seed,
        data_dir=data_dir,
        data_file=data_file,
        mapping_file=mapping,
        partition=Partition.parse(partition),
        rows=rows,
        holdout=holdout,
        bursts=tuple(AttackBurst.parse(text) for text in attack_burst or ()),
    )
    settings = AgentSettings(
        server_url=server,
        state_dir=state_dir,
        name=name or f"cloud-{position}",
        index=position,
        enrollment_token=enrollment_token,
        ca_file=ca_file,
        insecure_http=insecure_http,
        fingerprint=fingerprint,
        poll_interval=poll_interval,
        encryption_workers=encryption_workers,
        retry=RetryPolicy(retry_for=retry_for),
    )
    stop = threading.Event()
    _stop_on_signals(stop)
    agent = Agent(settings, load_local_data(source), stop=stop)
    agent.run()


def _stop_on_signals(stop: threading.Event) -> None:
    """First SIGINT/SIGTERM: finish the current step and exit; second: at once."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        logger.info("%s received; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
