"""``fedguard keys``: create a key pair ahead of time and show fingerprints.

The orchestrator creates its key pair on first start; these commands exist for
operators who want to create it beforehand (on a machine of their choice) and to read
the fingerprint they hand to agents for pinning (``fedguard client --fingerprint``).
No command here ever prints a secret.
"""

import json
from pathlib import Path
from typing import Annotated

import typer

from fedguard.errors import ConfigError

keys_app = typer.Typer(
    help="Create Paillier key pairs and show their fingerprints.",
    no_args_is_help=True,
)

PRIVATE_KEY_FILE = "private-key.json"
PUBLIC_KEY_FILE = "public-key.json"


@keys_app.command("generate")
def generate(
    directory: Annotated[
        Path,
        typer.Option("--dir", help="Where private-key.json and public-key.json go."),
    ],
    bits: Annotated[int, typer.Option("--bits", help="2048, 3072 or 4096.")] = 2048,
    force: Annotated[
        bool, typer.Option("--force", help="Replace existing keys.")
    ] = False,
) -> None:
    """Generate a key pair: the private key 0600, the public key beside it.

    To use it, generate it into the orchestrator's state directory before its
    first start.
    """
    from fedguard.crypto.keys import (
        generate_private_key,
        save_private_key,
        save_public_key,
    )

    private_path = directory / PRIVATE_KEY_FILE
    if private_path.exists() and not force:
        raise ConfigError(
            f"{private_path} already exists; pass --force to replace it (agents "
            "enrolled under the old key will have to join a new federation)"
        )

    private_key = generate_private_key(bits)
    save_private_key(private_key, private_path)
    save_public_key(private_key.public_key, directory / PUBLIC_KEY_FILE)
    typer.echo(f"wrote {private_path} (0600) and {directory / PUBLIC_KEY_FILE}")
    typer.echo(f"fingerprint: {private_key.public_key.fingerprint}")


@keys_app.command("show")
def show(
    path: Annotated[Path, typer.Argument(help="A private or public key file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a key's size and fingerprint (never its secret parts)."""
    from fedguard.crypto.keys import load_private_key, load_public_key

    kind = _key_file_kind(path)
    if kind == "private":
        public_key = load_private_key(path).public_key
    else:
        public_key = load_public_key(path)

    if as_json:
        summary = {"kind": kind, "bits": public_key.bits}
        typer.echo(json.dumps({**summary, "fingerprint": public_key.fingerprint}))
    else:
        typer.echo(f"{kind} key, {public_key.bits} bits")
        typer.echo(f"fingerprint: {public_key.fingerprint}")


def _key_file_kind(path: Path) -> str:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"key file {str(path)!r} does not exist") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{str(path)!r} is not a fedguard key file") from error

    kinds = {"fedguard-private-key": "private", "fedguard-public-key": "public"}
    if not isinstance(document, dict) or document.get("format") not in kinds:
        raise ConfigError(
            f"{str(path)!r} is not a fedguard key file (accepted: the private or "
            "public key files written by fedguard)"
        )
    return kinds[document["format"]]


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
