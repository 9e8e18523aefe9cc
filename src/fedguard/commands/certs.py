"""``fedguard certs``: a local certificate authority and the server's certificate."""

from pathlib import Path
from typing import Annotated

import typer

from fedguard.errors import ConfigError

certs_app = typer.Typer(
    help="Create the TLS certificates the server and its agents use.",
    no_args_is_help=True,
)

DirOption = Annotated[
    Path,
    typer.Option(
        "--dir", help="Directory for ca.pem, ca-key.pem, server.pem, server-key.pem."
    ),
]
HostnameOption = Annotated[
    list[str] | None,
    typer.Option(
        "--hostname",
        help="Extra DNS name or IP address agents use to reach the server "
        "(repeatable; localhost, 127.0.0.1 and ::1 are always included).",
    ),
]
DaysOption = Annotated[
    int, typer.Option("--days", help="Validity of the server certificate in days.")
]


@certs_app.command("init")
def init(
    directory: DirOption,
    hostname: HostnameOption = None,
    days: DaysOption = 397,
    ca_days: Annotated[
        int, typer.Option("--ca-days", help="Validity of the CA in days.")
    ] = 3650,
    key_type: Annotated[
        str, typer.Option("--key-type", help="'ec' (P-256) or 'rsa' (3072 bits).")
    ] = "ec",
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing files.")
    ] = False,
) -> None:
    """Create a local CA and a server certificate signed by it."""
    from fedguard.security.tls import init_certificates

    if key_type not in ("ec", "rsa"):
        raise ConfigError(f"--key-type must be 'ec' or 'rsa'; got {key_type!r}")
    paths = init_certificates(
        directory,
        hostnames=hostname or [],
        days=days,
        ca_days=ca_days,
        key_type="ec" if key_type == "ec" else "rsa",
        force=force,
    )

    typer.echo(f"created {paths.ca_cert}, {paths.server_cert} and their keys (0600)")
    _print_next_steps(paths.ca_cert, paths.server_cert, paths.server_key)


@certs_app.command("renew")
def renew(
    directory: DirOption,
    hostname: HostnameOption = None,
    days: DaysOption = 397,
) -> None:
    """Issue a new server certificate from the existing CA (agents keep ca.pem)."""
    from fedguard.security.tls import renew_server_certificate

    paths = renew_server_certificate(directory, hostnames=hostname or [], days=days)
    typer.echo(f"renewed {paths.server_cert}; restart the server to use it")


def _print_next_steps(ca_cert: Path, server_cert: Path, server_key: Path) -> None:
    typer.echo(
        "\nServer configuration:\n"
        "  [tls]\n"
        f'  cert_file = "{server_cert.resolve()}"\n'
        f'  key_file = "{server_key.resolve()}"\n'
        f'  ca_file = "{ca_cert.resolve()}"\n'
        f"\nGive agents {ca_cert.name} (public) as their CA file; keep "
        "ca-key.pem and server-key.pem private."
    )


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")
