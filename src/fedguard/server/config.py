"""Orchestrator configuration: one TOML file, ``FEDGUARD_*`` variables, CLI flags.

Later layers win: the TOML file is overridden by the environment, which is overridden
by command-line flags. Every setting is declared once in :data:`SECTIONS` with its
type, default and accepted range, so that each source is validated the same way and an
error names the setting, the accepted range, the value received and where it came from::

    federation.min_clients must be an integer in [1, 1000]; got 0 (from --min-clients)

Environment variables are named ``FEDGUARD_<SECTION>_<KEY>`` in upper case, for
example ``FEDGUARD_FEDERATION_MIN_CLIENTS=3`` or ``FEDGUARD_SERVER_PORT=8750``.
``FEDGUARD_STATE_DIR`` and ``FEDGUARD_DATABASE_URL``, shared with the other
server-side commands (``fedguard clients``), set the server's state directory and
database too.

The sections ``[[policies]]``, ``[actions.*]``, ``[tls]`` and ``[auth]`` belong to the
response engine and the security layer. They are kept as raw tables here and parsed by
those layers; this module only checks that they are tables.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedguard.errors import ConfigError

ENV_PREFIX = "FEDGUARD_"
DEFAULT_PORT = 8750

# The default cap on examples per client in the weight rule
# w = min(num_examples, max_examples) / max_examples. Ten thousand rows lets a small
# cloud count fully while one very large cloud cannot outweigh many ordinary ones.
DEFAULT_MAX_EXAMPLES = 10_000

# The packing codec quantizes with at most 40 fraction bits (slots are assembled in
# 64-bit integers); at least one is needed for a weight of 1/2 to survive rounding.
MAX_SCALE_BITS = 40


@dataclass(frozen=True)
class Setting:
    """One configurable value: its type, default and accepted range."""

    key: str
    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str | int, ...] = ()
    help: str = ""

    def describe_range(self) -> str:
        if self.choices:
            return "one of " + ", ".join(
                repr(choice) if isinstance(choice, str) else str(choice)
                for choice in self.choices
            )
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "a string"
        noun = "an integer" if self.kind is int else "a number"
        low, high = self._fmt(self.low), self._fmt(self.high)
        if self.low is not None and self.high is not None:
            return f"{noun} in [{low}, {high}]"
        if self.low is not None:
            return f"{noun} >= {low}"
        return noun

    def _fmt(self, number: float | None) -> str:
        if number is None:
            return ""
        return str(int(number)) if self.kind is int else f"{number:g}"


SECTIONS: dict[str, tuple[Setting, ...]] = {
    "server": (
        Setting("host", str, "127.0.0.1", help="address the HTTP API binds to"),
        Setting("port", int, DEFAULT_PORT, 0, 65535, help="TCP port (0: any free)"),
        Setting("state_dir", str, "fedguard-state", help="key, database, run files"),
        Setting("database_url", str, "", help="SQLAlchemy URL; empty: SQLite file"),
        Setting("aggregation_workers", int, 2, 1, 64, help="threads for decryption"),
    ),
    "federation": (
        Setting("name", str, "fedguard", help="shown to agents and in reports"),
        Setting(
            "dataset",
            str,
            "synthetic",
            choices=("synthetic", "nsl-kdd", "csv"),
            help="feature schema agents must train on",
        ),
        Setting("schema_file", str, "", help="feature schema JSON, dataset 'csv'"),
        Setting("rounds", int, 5, 1, 100_000, help="training rounds after setup"),
        Setting("min_clients", int, 2, 1, 100_000, help="fewest updates decrypted"),
        Setting(
            "wait_for_clients",
            int,
            0,
            0,
            100_000,
            help="registrations before the setup round opens; 0: min_clients",
        ),
        Setting("round_deadline", float, 300.0, 0.5, 86_400.0, help="seconds"),
        Setting("server_lr", float, 1.0, 1e-6, 100.0, help="global += lr * mean"),
        Setting("max_examples", int, DEFAULT_MAX_EXAMPLES, 1, 1 << 40),
        Setting("key_bits", int, 2048, choices=(2048, 3072, 4096)),
        Setting("plaintext", bool, False, help="baseline without encryption"),
        Setting(
            "max_failed_attempts",
            int,
            3,
            1,
            100,
            help="failed attempts of a round in a row before the federation stops",
        ),
    ),
    "packing": (
        Setting("clip", float, 4.0, 1e-9, 1e12, help="update values clipped to ±clip"),
        Setting(
            "scale_bits", int, 32, 1, MAX_SCALE_BITS, help="fixed-point fraction bits"
        ),
        Setting("max_contributors", int, 64, 1, 100_000, help="guard-bit capacity"),
    ),
    "setup": (
        Setting("clip", float, 1.0e6, 1e-9, 1e15, help="feature statistics bound"),
        Setting("scale_bits", int, 24, 1, MAX_SCALE_BITS),
    ),
    "training": (
        Setting("epochs", int, 1, 1, 10_000, help="local epochs per round"),
        Setting("batch_size", int, 64, 1, 1 << 24),
        Setting("learning_rate", float, 0.05, 1e-9, 100.0),
        Setting("l2", float, 1e-4, 0.0, 100.0, help="L2 penalty"),
        Setting("class_weight", str, "none", choices=("none", "balanced")),
        Setting("seed", int, 0, 0, 2**32 - 1, help="base of the shuffling seeds"),
    ),
}

# Tables owned by other layers: kept raw and handed to their parsers.
PASSTHROUGH_TABLES = ("actions", "tls", "auth")
PASSTHROUGH_ARRAYS = ("policies",)


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    state_dir: Path
    database_url: str
    aggregation_workers: int


@dataclass(frozen=True)
class FederationSettings:
    name: str
    dataset: str
    schema_file: str
    rounds: int
    min_clients: int
    wait_for_clients: int
    round_deadline: float
    server_lr: float
    max_examples: int
    key_bits: int
    plaintext: bool
    max_failed_attempts: int


@dataclass(frozen=True)
class PackingSettings:
    clip: float
    scale_bits: int
    max_contributors: int


@dataclass(frozen=True)
class SetupSettings:
    clip: float
    scale_bits: int


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    l2: float
    class_weight: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "l2": self.l2,
            "class_weight": self.class_weight,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class ServerConfig:
    """The validated configuration of one orchestrator."""

    server: ServerSettings
    federation: FederationSettings
    packing: PackingSettings
    setup: SetupSettings
    training: TrainingSettings
    policies: tuple[dict[str, Any], ...] = ()
    actions: dict[str, Any] = field(default_factory=dict)
    tls: dict[str, Any] = field(default_factory=dict)
    auth: dict[str, Any] = field(default_factory=dict)


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """Read, merge and validate the orchestrator configuration.

    Parameters
    ----------
    path:
        TOML file, or ``None`` for defaults only.
    env:
        Environment to read ``FEDGUARD_*`` variables from (normally ``os.environ``).
    overrides:
        Values from command-line flags, keyed ``"section.key"``; ``None`` values are
        ignored so that absent flags do not override anything.
    """
    document = _read_toml(path) if path is not None else {}
    if path is not None:
        _anchor_relative_paths(document, path.parent)
    extras = _split_passthrough(document, source=str(path))
    layers = _defaults()
    _merge_toml(layers, document, source=str(path))
    _merge_env(layers, env or {})
    _merge_overrides(layers, overrides or {})

    # Every source is checked, not only the one that wins: a bad value in the file
    # is an error even while a flag overrides it.
    values = {
        section: {
            setting.key: [
                _coerce(section, setting, *layer)
                for layer in layers[section][setting.key]
            ][-1]
            for setting in settings
        }
        for section, settings in SECTIONS.items()
    }
    config = _build(values, extras)
    _check_consistency(config)
    return config


# Paths a configuration file names, read from the file's directory like [tls] files,
# so that a server started from elsewhere finds the same state and schema.
_FILE_RELATIVE_PATHS = (("server", "state_dir"), ("federation", "schema_file"))


def _anchor_relative_paths(document: dict[str, Any], base: Path) -> None:
    for section, key in _FILE_RELATIVE_PATHS:
        table = document.get(section)
        if not isinstance(table, dict):
            continue
        value = table.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            table[key] = str(base / value)


def _read_toml(path: Path) -> dict[str, Any]:
    name = repr(str(path))
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {name} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(
            f"configuration file {name} is a directory; --config takes a TOML file"
        ) from None
    except OSError as error:
        raise ConfigError(
            f"configuration file {name} cannot be read: {error.strerror}"
        ) from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"configuration file {name} is not UTF-8 text, as TOML requires: "
            f"byte {error.start} cannot be decoded"
        ) from None
    except tomllib.TOMLDecodeError as error:
        quoted = _quote_line(path, error)
        raise ConfigError(
            f"configuration file {name}: invalid TOML: {error}{quoted}"
        ) from None


def _quote_line(path: Path, error: tomllib.TOMLDecodeError) -> str:
    """The offending line of a TOML error, so that the message names the setting."""
    found = re.search(r"at line (\d+)", str(error))
    if found is None:
        return ""
    lines = path.read_text(encoding="utf-8").splitlines()
    number = int(found.group(1))
    return f": {lines[number - 1].strip()!r}" if 0 < number <= len(lines) else ""


def _split_passthrough(document: dict[str, Any], *, source: str) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    for name in PASSTHROUGH_TABLES:
        value = document.pop(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] in {source} must be a table; got {value!r}")
        extras[name] = value
    for name in PASSTHROUGH_ARRAYS:
        value = document.pop(name, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(
                f"{name} in {source} must be an array of tables ([[{name}]]); "
                f"got {value!r}"
            )
        extras[name] = tuple(value)
    return extras


# Each setting's values from the default to the last source, each with where it
# came from and whether that source has types: a TOML value must already have the
# setting's type, while environment variables and flags are text and are parsed.
Layers = dict[str, dict[str, list[tuple[Any, str, bool]]]]


def _defaults() -> Layers:
    return {
        section: {
            setting.key: [(setting.default, "default", True)] for setting in settings
        }
        for section, settings in SECTIONS.items()
    }


def _merge_toml(layers: Layers, document: Mapping[str, Any], *, source: str) -> None:
    known = sorted([*SECTIONS, *PASSTHROUGH_TABLES, *PASSTHROUGH_ARRAYS])
    for section, table in document.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"unknown section [{section}] in {source}; "
                f"known sections: {', '.join(known)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] in {source} must be a table; got {table!r}")
        for key, value in table.items():
            if key not in layers[section]:
                accepted = ", ".join(s.key for s in SECTIONS[section])
                raise ConfigError(
                    f"unknown setting {section}.{key} in {source}; "
                    f"[{section}] accepts: {accepted}"
                )
            layers[section][key].append((value, source, True))


# Variables shared with other server-side commands, read before the sectioned ones.
ENV_ALIASES = {
    "FEDGUARD_STATE_DIR": ("server", "state_dir"),
    "FEDGUARD_DATABASE_URL": ("server", "database_url"),
}


def _merge_env(layers: Layers, env: Mapping[str, str]) -> None:
    for name, (alias_section, alias_key) in ENV_ALIASES.items():
        if name in env:
            layers[alias_section][alias_key].append((env[name], name, False))

    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_ALIASES:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            # Other FEDGUARD_* variables (the client's, the security layer's) are not
            # orchestrator settings.
            continue
        key = rest[len(section) + 1 :]
        if key not in layers[section]:
            accepted = ", ".join(
                f"{ENV_PREFIX}{section.upper()}_{s.key.upper()}"
                for s in SECTIONS[section]
            )
            raise ConfigError(f"unknown variable {name}; accepted: {accepted}")
        layers[section][key].append((value, name, False))


def _merge_overrides(layers: Layers, overrides: Mapping[str, Any]) -> None:
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if section not in layers or key not in layers[section]:
            raise ConfigError(f"unknown setting {dotted!r}")
        flag = "--" + key.replace("_", "-")
        layers[section][key].append((value, flag, False))


def _coerce(
    section: str, setting: Setting, value: Any, source: str, typed: bool
) -> Any:
    """Convert ``value`` to the setting's type and check its range.

    A value from a typed source (the TOML file) must have the setting's type
    already: ``port = "8750"`` is refused like ``port = "abc"``.
    """
    name = f"{section}.{setting.key}"
    problem = f"{name} must be {setting.describe_range()}; got {value!r}"
    where = f" (from {source})" if source != "default" else ""
    try:
        if typed:
            _check_type(setting, value)
        converted = _convert(setting, value)
    except (TypeError, ValueError):
        raise ConfigError(problem + where) from None

    if setting.choices and converted not in setting.choices:
        raise ConfigError(problem + where)
    if isinstance(converted, int | float) and not isinstance(converted, bool):
        if not math.isfinite(converted):
            raise ConfigError(problem + where)
        if setting.low is not None and converted < setting.low:
            raise ConfigError(problem + where)
        if setting.high is not None and converted > setting.high:
            raise ConfigError(problem + where)
    return converted


def _check_type(setting: Setting, value: Any) -> None:
    """Refuse a value whose type is not the setting's (an int serves for a float)."""
    if setting.kind is float:
        accepted: tuple[type, ...] = (int, float)
    elif setting.kind is str:
        accepted = (str, Path)
    else:
        accepted = (setting.kind,)
    if isinstance(value, bool) and setting.kind is not bool:
        raise TypeError(value)
    if not isinstance(value, accepted):
        raise TypeError(value)


def _convert(setting: Setting, value: Any) -> Any:
    if setting.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.lower()]
        raise ValueError(value)
    if setting.kind is int:
        if isinstance(value, bool | float):
            raise TypeError(value)
        return int(value)
    if setting.kind is float:
        if isinstance(value, bool):
            raise TypeError(value)
        return float(value)
    if not isinstance(value, str | Path):
        raise TypeError(value)
    return str(value)


_BOOL_WORDS = {
    "true": True,
    "yes": True,
    "1": True,
    "false": False,
    "no": False,
    "0": False,
}


def _build(values: dict[str, dict[str, Any]], extras: dict[str, Any]) -> ServerConfig:
    server = dict(values["server"])
    server["state_dir"] = Path(server["state_dir"])
    return ServerConfig(
        server=ServerSettings(**server),
        federation=FederationSettings(**values["federation"]),
        packing=PackingSettings(**values["packing"]),
        setup=SetupSettings(**values["setup"]),
        training=TrainingSettings(**values["training"]),
        policies=extras["policies"],
        actions=extras["actions"],
        tls=extras["tls"],
        auth=extras["auth"],
    )


def _check_consistency(config: ServerConfig) -> None:
    federation = config.federation
    if (federation.dataset == "csv") != bool(federation.schema_file):
        raise ConfigError(
            "federation.schema_file must be set when, and only when, "
            f"federation.dataset is 'csv'; got dataset {federation.dataset!r} and "
            f"schema_file {federation.schema_file!r}"
        )
    capacity = config.packing.max_contributors
    if federation.min_clients > capacity:
        raise ConfigError(
            f"federation.min_clients must be <= packing.max_contributors "
            f"({capacity}); got {federation.min_clients}"
        )
    if federation.wait_for_clients > capacity:
        raise ConfigError(
            f"federation.wait_for_clients must be <= packing.max_contributors "
            f"({capacity}); got {federation.wait_for_clients}"
        )


def start_clients(federation: FederationSettings) -> int:
    """How many registrations the setup round waits for."""
    return federation.wait_for_clients or federation.min_clients
