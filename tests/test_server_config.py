"""Orchestrator configuration: precedence, validation and pass-through sections."""

from pathlib import Path

import pytest

from fedguard.errors import ConfigError
from fedguard.server.config import DEFAULT_MAX_EXAMPLES, load_config, start_clients


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fedguard.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    config = load_config()

    assert config.server.host == "127.0.0.1"
    assert config.federation.min_clients == 2
    assert config.federation.max_examples == DEFAULT_MAX_EXAMPLES
    assert config.federation.key_bits == 2048
    assert start_clients(config.federation) == 2


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "[federation]\nmin_clients = 3\nrounds = 7\n")
    env = {"FEDGUARD_FEDERATION_MIN_CLIENTS": "4", "FEDGUARD_SERVER_PORT": "9000"}

    from_file = load_config(path)
    from_env = load_config(path, env=env)
    from_flags = load_config(path, env=env, overrides={"federation.min_clients": 5})

    assert from_file.federation.min_clients == 3
    assert from_env.federation.min_clients == 4
    assert from_env.server.port == 9000
    assert from_flags.federation.min_clients == 5
    assert from_flags.federation.rounds == 7


def test_absent_flags_do_not_override(tmp_path: Path) -> None:
    path = write(tmp_path, "[federation]\nrounds = 9\n")

    config = load_config(path, overrides={"federation.rounds": None})

    assert config.federation.rounds == 9


def test_shared_state_dir_variables() -> None:
    env = {"FEDGUARD_STATE_DIR": "/srv/fg", "FEDGUARD_DATABASE_URL": "sqlite://"}

    config = load_config(env=env)

    assert config.server.state_dir == Path("/srv/fg")
    assert config.server.database_url == "sqlite://"


def test_other_fedguard_variables_are_ignored() -> None:
    config = load_config(env={"FEDGUARD_ENROLLMENT_TOKEN": "x", "HOME": "/root"})

    assert config.federation.rounds == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[federation]\nmin_clients = 0\n",
            r"federation.min_clients must be an integer in \[1, 100000\]; got 0 \(from",
        ),
        (
            "[packing]\nclip = -1.0\n",
            r"packing.clip must be a number in \[1e-09, 1e\+12\]; got -1.0",
        ),
        (
            "[federation]\nkey_bits = 1024\n",
            r"federation.key_bits must be one of 2048, 3072, 4096; got 1024",
        ),
        (
            "[federation]\nplaintext = 'maybe'\n",
            r"federation.plaintext must be true or false; got 'maybe'",
        ),
        ("[federation]\nrounds = 2.5\n", r"federation.rounds must be an integer"),
        (
            "[training]\nclass_weight = 'heavy'\n",
            r"training.class_weight must be one of 'none', 'balanced'",
        ),
    ],
)
def test_invalid_values_name_setting_range_and_value(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_invalid_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="from FEDGUARD_SERVER_PORT"):
        load_config(env={"FEDGUARD_SERVER_PORT": "eighty"})


def test_invalid_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"got 0 \(from --min-clients\)"):
        load_config(overrides={"federation.min_clients": 0})


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[fedration\]"):
        load_config(write(tmp_path, "[fedration]\nrounds = 3\n"))


def test_unknown_key_lists_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting federation.round .*rounds"):
        load_config(write(tmp_path, "[federation]\nround = 3\n"))


def test_unknown_variable_of_a_known_section_is_refused() -> None:
    with pytest.raises(
        ConfigError, match="unknown variable FEDGUARD_FEDERATION_ROUND;"
    ):
        load_config(env={"FEDGUARD_FEDERATION_ROUND": "3"})


def test_min_clients_cannot_exceed_capacity(tmp_path: Path) -> None:
    text = "[federation]\nmin_clients = 10\n[packing]\nmax_contributors = 4\n"

    with pytest.raises(ConfigError, match=r"min_clients must be <= .*\(4\); got 10"):
        load_config(write(tmp_path, text))


def test_other_layers_sections_are_kept_raw(tmp_path: Path) -> None:
    text = """
[[policies]]
name = "high-threat"
metric = "threat_rate"

[actions.log]
kind = "log"

[tls]
cert_file = "server.pem"

[auth]
anything = 1
"""
    config = load_config(write(tmp_path, text))

    assert config.policies == ({"name": "high-threat", "metric": "threat_rate"},)
    assert config.actions == {"log": {"kind": "log"}}
    assert config.tls == {"cert_file": "server.pem"}
    assert config.auth == {"anything": 1}


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"fedguard.toml"):
        load_config(write(tmp_path, "[federation\n"))


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Path("/nonexistent/fedguard.toml"))


def test_csv_federation_needs_a_schema_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="schema_file must be set when, and only"):
        load_config(write(tmp_path, '[federation]\ndataset = "csv"\n'))

    config = load_config(
        write(tmp_path, '[federation]\ndataset = "csv"\nschema_file = "s.json"\n')
    )
    assert config.federation.schema_file == str(tmp_path / "s.json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[federation]\nkey_bits = "2048"\n', r"federation.key_bits .*; got '2048'"),
        ('[server]\nport = "0"\n', r"server.port must be an integer .*; got '0'"),
        ('[federation]\nround_deadline = "60"\n', r"federation.round_deadline"),
        ('[federation]\nplaintext = "true"\n', r"federation.plaintext"),
        ("[federation]\nname = 5\n", r"federation.name must be a string; got 5"),
    ],
)
def test_toml_values_must_have_the_settings_type(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_environment_variables_and_flags_are_parsed_from_text(tmp_path: Path) -> None:
    env = {"FEDGUARD_FEDERATION_KEY_BITS": "3072", "FEDGUARD_SERVER_PORT": "0"}

    config = load_config(
        write(tmp_path, "[federation]\nround_deadline = 60\n"),
        env=env,
        overrides={"federation.plaintext": "yes"},
    )

    assert (config.federation.key_bits, config.server.port) == (3072, 0)
    assert config.federation.round_deadline == 60.0 and config.federation.plaintext


def test_a_bad_value_is_refused_even_when_a_flag_overrides_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server.port .*from .*fedguard.toml"):
        load_config(
            write(tmp_path, '[server]\nport = "0"\n'), overrides={"server.port": 0}
        )


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_key_bits_accepts_every_size_the_crypto_core_supports(
    tmp_path: Path, bits: int
) -> None:
    config = load_config(write(tmp_path, f"[federation]\nkey_bits = {bits}\n"))

    assert config.federation.key_bits == bits


@pytest.mark.parametrize("section", ["packing", "setup"])
@pytest.mark.parametrize("scale_bits", [0, 41])
def test_scale_bits_are_those_the_packing_codec_accepts(
    tmp_path: Path, section: str, scale_bits: int
) -> None:
    text = f"[{section}]\nscale_bits = {scale_bits}\n"

    with pytest.raises(
        ConfigError, match=rf"{section}.scale_bits must be an integer in \[1, 40\]"
    ):
        load_config(write(tmp_path, text))


def test_max_failed_attempts_defaults_to_3_and_is_bounded(tmp_path: Path) -> None:
    assert load_config().federation.max_failed_attempts == 3
    with pytest.raises(ConfigError, match=r"federation.max_failed_attempts .*\[1, "):
        load_config(write(tmp_path, "[federation]\nmax_failed_attempts = 0\n"))


def test_unreadable_configuration_files(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[federation]\nname = "caf\xe9"\n')

    with pytest.raises(ConfigError, match="is a directory; --config takes a TOML"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="is not UTF-8 text, as TOML requires"):
        load_config(latin1)


def test_a_toml_error_quotes_the_offending_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 3.*: 'port = 2'$"):
        load_config(write(tmp_path, "[server]\nport = 1\nport = 2\n"))


def test_relative_paths_in_the_file_start_at_its_directory(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nstate_dir = "state"\n[federation]\ndataset = "csv"\n'
        'schema_file = "schema.json"\n',
    )

    config = load_config(path)
    from_flag = load_config(path, overrides={"server.state_dir": "other"})

    assert config.server.state_dir == tmp_path / "state"
    assert config.federation.schema_file == str(tmp_path / "schema.json")
    # Flags and environment variables keep their meaning: the working directory.
    assert from_flag.server.state_dir == Path("other")
