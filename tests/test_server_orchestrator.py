"""Start-up checks of the orchestrator: everything validated, nothing created."""

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fedguard.errors import ConfigError
from fedguard.server.config import load_config
from fedguard.server.orchestrator import Orchestrator, check_startup
from fedguard.server.storage import check_database_url


def config_with(tmp_path: Path, **tables: Any) -> Any:
    """A plaintext configuration whose state directory does not exist yet."""
    config = load_config(
        overrides={
            "server.state_dir": tmp_path / "state",
            "federation.plaintext": True,
        }
    )
    return dataclasses.replace(config, **tables)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/", "'/' is a directory"),
        ("{tmp}", "is a directory"),
        ("{tmp}/file/blocklist.jsonl", "which is not a directory"),
    ],
)
def test_a_blocklist_file_the_server_cannot_append_to_is_refused(
    tmp_path: Path, path: str, message: str
) -> None:
    (tmp_path / "file").write_text("not a directory")
    actions = {"x": {"type": "blocklist", "path": path.format(tmp=tmp_path)}}

    with pytest.raises(ConfigError, match=rf"action 'x': field 'path' .*{message}"):
        check_startup(config_with(tmp_path, actions=actions))
    assert not (tmp_path / "state").exists()


def test_blocklist_files_in_a_state_dir_still_to_be_created_are_accepted(
    tmp_path: Path,
) -> None:
    actions = {
        "relative": {"type": "blocklist", "path": "exports/indicators.jsonl"},
        "absolute": {"type": "blocklist", "path": str(tmp_path / "new" / "b.jsonl")},
    }

    checked = check_startup(config_with(tmp_path, actions=actions))

    assert set(checked.response_config.actions) >= {"relative", "absolute"}
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"name": "p", "metric": "f1", "threshold": 0.5}, "comparison"),
        ({"name": "p", "comparison": ">", "threshold": 0.5}, "metric"),
        ({"metric": "f1", "comparison": ">", "threshold": 0.5}, "name"),
    ],
)
def test_a_policy_missing_a_field_says_it_is_required(
    tmp_path: Path, policy: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=rf"field '{field}' .*it is required"):
        check_startup(config_with(tmp_path, policies=(policy,)))


def test_auth_budgets_are_checked_before_anything_is_created(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth.client_burst must be"):
        check_startup(config_with(tmp_path, auth={"client_burst": -5}))
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchdriver://x", "unknown database driver 'nosuchdriver'"),
        ("mysql://u@127.0.0.1:1/db", "needs the Python module 'MySQLdb'"),
        ("sqlite:////nonexistent-fedguard/x.db", "does not exist; create it first"),
        ("sqlite:////", "names a directory"),
        ("postgresql+psycopg://u:hunter2@127.0.0.1:1/db", "cannot connect"),
        ("::::", "must be a SQLAlchemy URL"),
    ],
)
def test_database_urls_the_server_cannot_use(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        check_database_url(url)

    assert "hunter2" not in str(refused.value)


def test_the_sqlite_database_and_its_logs_are_private(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    (state_dir / "fedguard.db").touch(mode=0o644)
    config = load_config(
        overrides={"server.state_dir": state_dir, "federation.plaintext": True}
    )

    orchestrator = Orchestrator(config)
    orchestrator.store.set_fact("probe", {"written": True})
    with sqlite3.connect(state_dir / "fedguard.db") as reader:
        stored = reader.execute(
            "SELECT value FROM fg_federation WHERE name = 'probe'"
        ).fetchone()
        modes = {
            path.name: path.stat().st_mode & 0o777
            for path in state_dir.glob("fedguard.db*")
        }
    orchestrator.stop()

    assert json.loads(stored[0]) == {"written": True}
    assert set(modes) == {"fedguard.db", "fedguard.db-wal", "fedguard.db-shm"}
    assert set(modes.values()) == {0o600}
    assert state_dir.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        (
            {"dataset": "csv", "schema_file": "/nonexistent-fedguard/s.json"},
            "federation.schema_file: feature schema file .* does not exist",
        ),
        (
            {"dataset": "csv", "schema_file": "/"},
            "federation.schema_file must name a feature schema JSON file; '/' is a",
        ),
    ],
)
def test_schema_file_errors_name_the_setting(
    tmp_path: Path, tables: dict[str, str], message: str
) -> None:
    toml = tmp_path / "fedguard.toml"
    toml.write_text(
        "[federation]\n" + "".join(f'{k} = "{v}"\n' for k, v in tables.items())
    )
    config = load_config(toml, overrides={"server.state_dir": tmp_path / "state"})

    with pytest.raises(ConfigError, match=message):
        check_startup(config)


def test_a_schema_file_that_is_not_a_schema(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"name": "flows"}')
    toml = tmp_path / "fedguard.toml"
    toml.write_text(f'[federation]\ndataset = "csv"\nschema_file = "{schema}"\n')
    config = load_config(toml, overrides={"server.state_dir": tmp_path / "state"})

    with pytest.raises(ConfigError, match=r"federation.schema_file: feature schema"):
        check_startup(config)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[packing]\nclip = 1e12\n",
            r"packing.clip 1e\+12 with packing.scale_bits 32 and "
            r"packing.max_contributors 64 needs 79-bit slots",
        ),
        (
            "[setup]\nclip = 1e15\n",
            r"setup.clip 1e\+15 with setup.scale_bits 24 .* needs 81-bit slots",
        ),
    ],
)
def test_packing_errors_name_their_section(
    tmp_path: Path, toml: str, message: str
) -> None:
    path = tmp_path / "fedguard.toml"
    path.write_text(toml)

    with pytest.raises(ConfigError, match=message):
        check_startup(load_config(path))
