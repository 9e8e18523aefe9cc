"""What the agent checks in the federation it is asked to join."""

from pathlib import Path
from typing import Any

import pytest

from fedguard.client.agent import Agent, AgentSettings, read_federation
from fedguard.client.data import DataSource, load_local_data
from fedguard.crypto.keys import PrivateKey, save_private_key
from fedguard.data.schema import infer_schema
from fedguard.errors import ConfigError, KeyMismatchError
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
        with pytest.raises(ConfigError, match="needs columns the local data lacks"):
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
