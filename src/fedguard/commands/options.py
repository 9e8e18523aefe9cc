"""Options that several commands share, so they read the same everywhere.

``fedguard clients``, ``fedguard actions`` and ``fedguard report`` all open the
orchestrator's database; they find it the way ``fedguard server`` does: from
``--state-dir`` or ``--database-url``, or the server's environment variables.
"""

import typer

STATE_DIR = typer.Option(
    "--state-dir",
    envvar=["FEDGUARD_SERVER_STATE_DIR", "FEDGUARD_STATE_DIR"],
    help="The orchestrator's state directory.",
)
DATABASE_URL = typer.Option(
    "--database-url",
    envvar=["FEDGUARD_SERVER_DATABASE_URL", "FEDGUARD_DATABASE_URL"],
    help="The orchestrator's database URL (default: the SQLite file in --state-dir).",
)
