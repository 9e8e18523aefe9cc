"""``fedguard server`` as a process: start-up checks, the state lock, signals.

Every test runs the real command in a subprocess on 127.0.0.1 and looks at what
the process did: its exit status, its log and the files in its state directory.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fedguard.crypto.keys import PrivateKey, save_private_key
from fedguard.server.config import load_config
from fedguard.server.orchestrator import PRIVATE_KEY_FILE, Orchestrator

START_SECONDS = 60.0


class Server:
    """One ``fedguard server`` subprocess and its log."""

    def __init__(self, state_dir: Path, *args: str) -> None:
        self.state_dir = state_dir
        self.log_path = state_dir.parent / f"{state_dir.name}-{time.monotonic_ns()}.log"
        command = [sys.executable, "-m", "fedguard", "server", "--state-dir"]
        command += [str(state_dir), "--port", "0", "--insecure-http", *args]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # a list of arguments, no shell
                command, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def endpoint(self) -> dict[str, object]:
        """The endpoint file of this process, once it serves."""
        end = time.monotonic() + START_SECONDS
        while time.monotonic() < end:
            path = self.state_dir / "endpoint.json"
            if path.exists():
                data = json.loads(path.read_text())
                if data["pid"] == self.process.pid:
                    return dict(data)
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited:\n{self.log}")
            time.sleep(0.05)
        raise AssertionError("the server did not start")

    def wait(self) -> int:
        return self.process.wait(START_SECONDS)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(START_SECONDS)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def state_dir(tmp_path: Path, private_key_2048: PrivateKey) -> Path:
    """A state directory holding the session's key, so no key is generated."""
    path = tmp_path / "state"
    path.mkdir()
    save_private_key(private_key_2048, path / PRIVATE_KEY_FILE)
    return path


def listing(directory: Path) -> dict[str, tuple[int, int]] | None:
    """Name, size and modification time of every entry, or None if absent."""
    if not directory.exists():
        return None
    return {
        entry.name: (entry.stat().st_size, entry.stat().st_mtime_ns)
        for entry in directory.iterdir()
    }


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_gracefully_with_status_0(
    state_dir: Path, servers: list[Server], signal_number: int
) -> None:
    server = Server(state_dir)
    servers.append(server)
    url = str(server.endpoint()["url"])
    assert httpx.get(f"{url}/health").status_code == 200

    server.process.send_signal(signal_number)

    assert server.wait() == 0
    assert not (state_dir / "endpoint.json").exists()
    name = signal.Signals(signal_number).name
    assert f"received {name}; shutting down" in server.log
    assert "orchestrator stopped" in server.log and "Traceback" not in server.log


def test_a_second_server_on_the_same_state_dir_is_refused(
    state_dir: Path, servers: list[Server]
) -> None:
    first = Server(state_dir)
    servers.append(first)
    url = str(first.endpoint()["url"])
    before = listing(state_dir)

    second = Server(state_dir)
    servers.append(second)

    assert second.wait() == 2
    errors = [line for line in second.log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"(pid {first.process.pid})" in errors[0]
    assert "another fedguard server" in errors[0]
    assert listing(state_dir) == before
    assert httpx.get(f"{url}/health").status_code == 200


BAD_CONFIGURATIONS = [
    ("[auth]\nclient_burst = -5\n", [], "auth.client_burst"),
    ('[federation]\nkey_bits = "2048"\n', [], "federation.key_bits"),
    ('[server]\nport = "0"\n', [], "server.port"),
    ("[packing]\nscale_bits = 41\n", [], "packing.scale_bits must be"),
    ("[packing]\nclip = 1e12\n", [], "packing.clip 1e+12 with"),
    ('[server]\ndatabase_url = "nosuchdriver://x"\n', [], "unknown database driver"),
    ('[server]\ndatabase_url = "mysql://u@127.0.0.1:1/db"\n', [], "'MySQLdb'"),
    (
        '[server]\ndatabase_url = "sqlite:////nonexistent-fedguard/x.db"\n',
        [],
        "'/nonexistent-fedguard' does not exist",
    ),
    (
        '[server]\ndatabase_url = "postgresql+psycopg://u@127.0.0.1:1/db"\n',
        [],
        "cannot connect",
    ),
    ('[actions.x]\ntype = "blocklist"\npath = "/"\n', [], "'/' is a directory"),
    (
        '[[policies]]\nname = "p"\nmetric = "f1"\nthreshold = 0.5\n',
        [],
        "'comparison' must be one of ['>', '>=', '<', '<=']; it is required",
    ),
    ('[federation]\ndataset = "csv"\nschema_file = "/"\n', [], "is a directory"),
    (
        '[tls]\ncert_file = "/"\nkey_file = "/"\n',
        [],
        "[tls] cert_file must be a PEM file",
    ),
    ("", ["--host", "no-such-host.invalid"], "server.host/port"),
]


@pytest.mark.parametrize(("toml", "flags", "message"), BAD_CONFIGURATIONS)
def test_a_bad_configuration_stops_the_server_and_creates_nothing(
    tmp_path: Path, toml: str, flags: list[str], message: str
) -> None:
    config = tmp_path / "fedguard.toml"
    config.write_text(toml)
    state_dir = tmp_path / "new" / "state"
    command = [sys.executable, "-m", "fedguard", "server", "--state-dir"]
    command += [str(state_dir), "--port", "0", "--config", str(config), *flags]
    if "[tls]" not in toml:  # a TLS configuration refuses --insecure-http
        command.append("--insecure-http")

    done = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "new").exists()


def test_the_config_file_must_be_a_utf8_toml_file(tmp_path: Path) -> None:
    for path, message in [
        (tmp_path, "is a directory; --config takes a TOML file"),
        (tmp_path / "latin1.toml", "is not UTF-8 text"),
    ]:
        (tmp_path / "latin1.toml").write_bytes(b'[federation]\nname = "\xe9"\n')
        command = [sys.executable, "-m", "fedguard", "server", "--config", str(path)]
        command += ["--state-dir", str(tmp_path / "state"), "--insecure-http"]

        done = subprocess.run(command, capture_output=True, text=True, timeout=60)

        assert done.returncode == 2 and message in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()


def test_a_failure_after_the_first_file_leaves_the_state_dir_as_it_was(
    state_dir: Path,
) -> None:
    """The key in the state directory is 2048 bits; the configuration asks 3072."""
    config = state_dir.parent / "fedguard.toml"
    config.write_text("[federation]\nkey_bits = 3072\n")
    before = listing(state_dir)
    command = [sys.executable, "-m", "fedguard", "server", "--config", str(config)]
    command += ["--state-dir", str(state_dir), "--insecure-http", "--port", "0"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2 and "holds a 2048-bit key" in done.stderr
    assert listing(state_dir) == before


def test_a_new_state_dir_is_removed_when_the_database_refuses_the_federation(
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared.db"
    first = load_config(
        overrides={
            "server.state_dir": tmp_path / "first",
            "server.database_url": f"sqlite:///{shared}",
            "federation.plaintext": True,
        }
    )
    orchestrator = Orchestrator(first)
    orchestrator.stop()
    command = [sys.executable, "-m", "fedguard", "server", "--plaintext"]
    command += ["--state-dir", str(tmp_path / "second" / "state"), "--insecure-http"]
    command += ["--database-url", f"sqlite:///{shared}", "--dataset", "nsl-kdd"]
    command += ["--port", "0"]

    done = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2 and "holds another federation" in done.stderr
    assert not (tmp_path / "second").exists()


def test_state_files_are_private(state_dir: Path, servers: list[Server]) -> None:
    state_dir.chmod(0o755)
    server = Server(state_dir)
    servers.append(server)
    server.endpoint()
    server.process.send_signal(signal.SIGTERM)
    assert server.wait() == 0

    modes = {entry.name: entry.stat().st_mode & 0o777 for entry in state_dir.iterdir()}
    assert state_dir.stat().st_mode & 0o777 == 0o700
    for name in ("fedguard.db", "admin-token", PRIVATE_KEY_FILE, "server.lock"):
        assert modes[name] == 0o600, name
    for name in ("fedguard.db-wal", "fedguard.db-shm"):
        assert modes.get(name, 0o600) == 0o600, name


@pytest.mark.parametrize(
    ("min_clients", "expected"),
    [
        (1, ["decrypts that agent's update on its own", "fewer than 3 contributors"]),
        (2, ["fewer than 3 contributors"]),
        (3, []),
    ],
)
def test_a_small_min_clients_is_warned_about_at_start(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    min_clients: int,
    expected: list[str],
) -> None:
    config = load_config(
        overrides={
            "server.state_dir": tmp_path,
            "federation.plaintext": True,
            "federation.min_clients": min_clients,
        }
    )
    orchestrator = Orchestrator(config)
    with caplog.at_level(logging.WARNING, logger="fedguard.server.orchestrator"):
        orchestrator.start()
    orchestrator.stop()

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == len(expected)
    for warning, phrase in zip(warnings, expected, strict=True):
        assert f"federation.min_clients is {min_clients}" in warning
        assert phrase in warning


def test_the_state_lock_dies_with_a_killed_server(
    state_dir: Path, servers: list[Server]
) -> None:
    """A killed server leaves its files, but not its lock: the next start serves."""
    first = Server(state_dir)
    servers.append(first)
    first.endpoint()
    os.kill(first.process.pid, signal.SIGKILL)
    first.wait()

    second = Server(state_dir)
    servers.append(second)

    assert second.endpoint()["pid"] == second.process.pid
