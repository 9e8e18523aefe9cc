"""What the agent checks in the federation it is asked to join.

The checks before enrollment run against a real orchestrator served over loopback
HTTP: a refused agent must leave its single-use token unspent and the server with
no new client.
"""

import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fedguard.client.agent import Agent, AgentSettings, read_federation
from fedguard.client.connection import RetryPolicy
from fedguard.client.data import DataSource, LocalData, load_local_data
from fedguard.crypto.keys import PrivateKey, save_private_key
from fedguard.data.schema import infer_schema
from fedguard.errors import ConfigError, KeyMismatchError
from fedguard.security.agent import credential_path
from fedguard.server.api import create_app
from fedguard.server.config import load_config
from fedguard.server.orchestrator import PRIVATE_KEY_FILE, Orchestrator


def published(tmp_path: Path, private_key: PrivateKey, dataset: str) -> dict[str, Any]:
    """``GET /federation`` as a real orchestrator would answer it."""
    save_private_key(private_key, tmp_path / PRIVATE_KEY_FILE)
    config = load_config(
        overrides={"server.state_dir": tmp_path, "federation.dataset": dataset}
    )
    orchestrator = Orchestrator(config)
    try:
        return orchestrator.federation_info().model_dump(mode="json")
    finally:
        orchestrator.stop()


def test_federation_is_decoded_and_its_key_checked(
    tmp_path: Path, private_key_2048: PrivateKey
) -> None:
    info = published(tmp_path, private_key_2048, "synthetic")

    federation = read_federation(info, pinned=private_key_2048.public_key.fingerprint)

    assert federation.public_key == private_key_2048.public_key
    assert set(federation.packings) == {"update", "statistics", "metrics"}
    assert federation.spec.num_parameters == info["model"]["n_params"]
    assert (
        federation.packings["update"].ciphertexts_for(
            info["packing"]["update"]["length"]
        )
        == info["packing"]["update"]["ciphertexts"]
    )


def test_a_pinned_fingerprint_must_match(
    tmp_path: Path, private_key_2048: PrivateKey
) -> None:
    info = published(tmp_path, private_key_2048, "synthetic")

    with pytest.raises(KeyMismatchError, match="fingerprint mismatch"):
        read_federation(info, pinned="ab" * 32)


def test_a_tampered_public_key_is_refused(
    tmp_path: Path, private_key_2048: PrivateKey
) -> None:
    info = published(tmp_path, private_key_2048, "synthetic")
    info["public_key"]["hs"] = format(int(info["public_key"]["hs"], 16) + 2, "x")

    with pytest.raises(KeyMismatchError):
        read_federation(info, pinned=None)


def test_local_data_must_have_the_federation_columns(
    tmp_path: Path, private_key_2048: PrivateKey
) -> None:
    info = published(tmp_path, private_key_2048, "nsl-kdd")
    federation = read_federation(info, pinned=None)
    local = load_local_data(DataSource("synthetic", rows=200))
    settings = AgentSettings(
        server_url="https://127.0.0.1:1", state_dir=tmp_path / "agent", name="cloud-0"
    )
    agent = Agent(settings, local)

    try:
        with pytest.raises(ConfigError, match=r"needs columns the local data \("):
            agent._check_schema(federation.schema)
    finally:
        agent.close()


def test_plain_http_needs_an_explicit_switch(tmp_path: Path) -> None:
    local = load_local_data(DataSource("synthetic", rows=200))
    settings = AgentSettings(
        server_url="http://127.0.0.1:1", state_dir=tmp_path, name="cloud-0"
    )

    with pytest.raises(ConfigError, match="plain HTTP"):
        Agent(settings, local)


def test_a_csv_federation_publishes_its_schema_file(
    tmp_path: Path, private_key_2048: PrivateKey
) -> None:
    data = tmp_path / "flows.csv"
    data.write_text(
        "bytes,proto,verdict\n"
        + "".join(
            f"{i * 7},{'tcp' if i % 2 else 'udp'},{'bad' if i % 4 else 'ok'}\n"
            for i in range(40)
        )
    )
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('label_column = "verdict"\nnormal_values = ["ok"]\n'
                       'categorical_columns = ["proto"]\n')  # fmt: skip
    local = load_local_data(
        DataSource("csv", data_file=str(data), mapping_file=mapping)
    )
    schema_file = tmp_path / "schema.json"
    infer_schema(local.train, name="flows").fit(local.train).save(schema_file)
    config = load_config(
        overrides={
            "server.state_dir": tmp_path / "state",
            "federation.dataset": "csv",
            "federation.schema_file": str(schema_file),
        }
    )
    (tmp_path / "state").mkdir()
    save_private_key(private_key_2048, tmp_path / "state" / PRIVATE_KEY_FILE)
    orchestrator = Orchestrator(config)
    try:
        info = orchestrator.federation_info().model_dump(mode="json")
    finally:
        orchestrator.stop()

    federation = read_federation(info, pinned=None)
    assert federation.schema.numeric_columns == ("bytes",)
    assert not federation.schema.is_fitted  # the setup round fits it
    assert federation.layout.families == ()


@dataclass
class Served:
    url: str
    orchestrator: Orchestrator
    private_key: PrivateKey

    def token(self) -> str:
        return self.orchestrator.credentials.issue_enrollment_token().token

    def spent_tokens(self) -> int:
        tokens = self.orchestrator.credentials.list_enrollment_tokens()
        return sum(token.used_at is not None for token in tokens)

    def clients(self) -> int:
        return len(self.orchestrator.credentials.list_clients())


def serve(
    root: Path,
    private_key: PrivateKey,
    loopback_server: Callable[..., str],
    **overrides: Any,
) -> Served:
    root.mkdir(parents=True, exist_ok=True)
    if not overrides.get("federation.plaintext"):
        save_private_key(private_key, root / PRIVATE_KEY_FILE)
    config = load_config(overrides={"server.state_dir": root, **overrides})
    orchestrator = Orchestrator(config)
    return Served(loopback_server(create_app(orchestrator)), orchestrator, private_key)


@pytest.fixture
def served(
    tmp_path: Path,
    private_key_2048: PrivateKey,
    loopback_server: Callable[..., str],
) -> Iterator[Served]:
    yield serve(
        tmp_path / "server",
        private_key_2048,
        loopback_server,
        **{"federation.dataset": "nsl-kdd", "federation.wait_for_clients": 5},
    )


def join(served: Served, state_dir: Path, local: LocalData, **settings: Any) -> Agent:
    """An agent that has joined, or raised what stopped it (closed either way)."""
    agent = Agent(
        AgentSettings(
            server_url=served.url,
            state_dir=state_dir,
            name="cloud-0",
            enrollment_token=served.token(),
            insecure_http=True,
            retry=RetryPolicy(retry_for=5.0),
            **settings,
        ),
        local,
    )
    try:
        agent._join()
    finally:
        agent.close()
    return agent


@pytest.fixture(scope="module")
def nsl_kdd_rows(nsl_kdd_dir: Path) -> LocalData:
    source = DataSource(
        "nsl-kdd", data_dir=nsl_kdd_dir, data_file="KDDTest+.txt", clients=20
    )
    return load_local_data(source)


def test_a_wrong_pin_stops_the_agent_before_it_enrolls(
    served: Served, tmp_path: Path, nsl_kdd_rows: LocalData
) -> None:
    with pytest.raises(KeyMismatchError, match="fingerprint mismatch"):
        join(served, tmp_path / "agent", nsl_kdd_rows, fingerprint="ab" * 32)

    assert (served.spent_tokens(), served.clients()) == (0, 0)
    assert not credential_path(tmp_path / "agent").exists()


def test_data_without_the_schema_columns_stops_the_agent_before_it_enrolls(
    served: Served, tmp_path: Path
) -> None:
    synthetic = load_local_data(DataSource("synthetic", rows=200))

    with pytest.raises(
        ConfigError,
        match=r"the nsl-kdd federation 'fedguard' needs columns the local data "
        r"\(.*\) lacks: .*dst_bytes",
    ):
        join(served, tmp_path / "agent", synthetic)

    assert (served.spent_tokens(), served.clients()) == (0, 0)


def test_a_pin_refuses_a_plaintext_federation_before_enrolling(
    tmp_path: Path, private_key_2048: PrivateKey, loopback_server: Callable[..., str]
) -> None:
    plaintext = serve(
        tmp_path / "server",
        private_key_2048,
        loopback_server,
        **{"federation.plaintext": True, "federation.wait_for_clients": 5},
    )
    local = load_local_data(DataSource("synthetic", rows=200))
    pin = private_key_2048.public_key.fingerprint

    with pytest.raises(KeyMismatchError, match="plaintext baseline without a key"):
        join(plaintext, tmp_path / "agent", local, fingerprint=pin)

    assert (plaintext.spent_tokens(), plaintext.clients()) == (0, 0)


def test_an_agent_that_passes_the_checks_enrolls_into_a_private_directory(
    served: Served, tmp_path: Path, nsl_kdd_rows: LocalData
) -> None:
    pin = served.private_key.public_key.fingerprint.upper()

    agent = join(served, tmp_path / "agent" / "cloud-0", nsl_kdd_rows, fingerprint=pin)

    assert agent.federation is not None and agent.federation.public_key is not None
    assert (served.spent_tokens(), served.clients()) == (1, 1)
    assert (tmp_path / "agent" / "cloud-0").stat().st_mode & 0o777 == 0o700
    assert credential_path(tmp_path / "agent" / "cloud-0").stat().st_mode & 0o777 == (
        0o600
    )


def test_a_file_without_rows_stops_fedguard_client_before_it_contacts_anyone(
    served: Served, tmp_path: Path
) -> None:
    data = tmp_path / "flows.csv"
    data.write_text("bytes,verdict\n")
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('label_column = "verdict"\nattack_values = ["bad"]\n')
    token = served.token()

    done = subprocess.run(
        [sys.executable, "-m", "fedguard", "client", "--server", served.url,
         "--insecure-http", "--state-dir", str(tmp_path / "agent"),
         "--dataset", "csv", "--data-file", str(data), "--mapping", str(mapping),
         "--enrollment-token", token],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip

    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"error: data file {data} has no data rows, only a header"
    )
    assert (served.spent_tokens(), served.clients()) == (0, 0)
    assert not (tmp_path / "agent").exists()
