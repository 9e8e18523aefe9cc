"""``fedguard score`` on real NSL-KDD events and on a mapped CSV."""

import csv
import gzip
import json
import logging
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from fedguard.cli import app
from fedguard.commands.score import (
    SavedModel,
    load_model_file,
    read_event_csv,
    save_model_file,
)
from fedguard.data import (
    Dataset,
    FeatureSchema,
    load_nsl_kdd,
    nsl_kdd_schema,
    synthetic_schema,
    synthetic_split,
)
from fedguard.errors import DataFormatError, InputError
from fedguard.learning import ModelSpec, TrainingConfig, train_centralized
from fedguard.security.tls import client_ssl_context

NSL_KDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "nsl-kdd"
TEST_EVENTS = NSL_KDD / "KDDTest+.txt"


def _train(train: Dataset, schema_name: str) -> SavedModel:
    schema = nsl_kdd_schema() if schema_name == "nsl-kdd" else synthetic_schema()
    fitted = schema.fit(train)
    spec = ModelSpec(n_features=fitted.n_features)
    config = TrainingConfig(epochs=2, batch_size=256, learning_rate=0.1, seed=3)
    update = train_centralized(spec, fitted.transform(train), train.labels, config)
    return SavedModel(spec, fitted, update.parameters, model_version=4)


@pytest.fixture(scope="module")
def nsl_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SavedModel]:
    model = _train(load_nsl_kdd(NSL_KDD / "KDDTrain+_20Percent.txt"), "nsl-kdd")
    path = tmp_path_factory.mktemp("model") / "model.json"
    save_model_file(path, model)
    return path, model


@pytest.fixture(scope="module")
def synthetic_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    train, test = synthetic_split(4000, 600, seed=11)
    path = tmp_path_factory.mktemp("model") / "synthetic.json"
    save_model_file(path, _train(train, "synthetic"))
    return path, test


def _fedguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedguard", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _write_csv(path: Path, dataset: Dataset, renames: dict[str, str]) -> None:
    header = [*dataset.numeric_columns, *dataset.categorical_columns, "kind", "note"]
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow([renames.get(name, name) for name in header])
        for index in range(len(dataset)):
            writer.writerow(
                [
                    *(repr(float(v)) for v in dataset.numeric[index]),
                    *dataset.categorical[index],
                    dataset.attack_types[index],
                    "free text, ignored",
                ]
            )


def test_a_saved_model_loads_back_bit_for_bit(
    nsl_model: tuple[Path, SavedModel],
) -> None:
    path, model = nsl_model

    loaded = load_model_file(path)

    assert loaded.spec == model.spec and loaded.model_version == 4
    assert loaded.schema.to_dict() == model.schema.to_dict()
    assert loaded.parameters.tobytes() == model.parameters.tobytes()


def test_a_tampered_model_file_is_refused(
    nsl_model: tuple[Path, SavedModel], tmp_path: Path
) -> None:
    document = json.loads(nsl_model[0].read_text())
    document["params"] = document["params"][:-8] + "AAAAAAA="
    (tmp_path / "bad.json").write_text(json.dumps(document))

    with pytest.raises(InputError, match="do not match params_sha256"):
        load_model_file(tmp_path / "bad.json")
    with pytest.raises(InputError, match="does not exist"):
        load_model_file(tmp_path / "missing.json")


def test_scoring_nsl_kdd_writes_the_alerts_of_the_model(
    nsl_model: tuple[Path, SavedModel], tmp_path: Path
) -> None:
    path, model = nsl_model
    alerts = tmp_path / "out" / "alerts.jsonl"

    done = _fedguard(
        "score", str(TEST_EVENTS), "--model", str(path), "-o", str(alerts), "--json"
    )

    assert done.returncode == 0, done.stderr
    events = load_nsl_kdd(TEST_EVENTS)
    scores = model.score(events)
    expected_rows = (np.flatnonzero(scores >= 0.5) + 1).tolist()
    records = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert [r["row"] for r in records] == expected_rows
    assert {r["verdict"] for r in records} == {"alert"}
    assert all(r["score"] >= 0.5 for r in records)
    assert stat.S_IMODE(alerts.stat().st_mode) == 0o600

    summary = json.loads(done.stdout)
    assert summary["rows"] == len(events) == 22544
    assert summary["alerts"] == len(records) and summary["model_version"] == 4
    # Real data: most alerts should be real attacks.
    attacks = sum(r["label"] != "normal" for r in records)
    assert attacks / len(records) > 0.7


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """Undo the log set-up the CLI does, which points at the runner's closed streams."""
    logger = logging.getLogger("fedguard")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved


@pytest.mark.usefixtures("cli_logging")
def test_all_rows_and_standard_output(nsl_model: tuple[Path, SavedModel]) -> None:
    path, model = nsl_model
    events = NSL_KDD / "KDDTrain+_20Percent.txt"

    result = CliRunner().invoke(
        app, ["score", str(events), "--model", str(path), "--all", "--threshold", "0.9"]
    )

    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert len(records) == 25192
    scores = model.score(load_nsl_kdd(events))
    verdicts = np.array([r["verdict"] == "alert" for r in records])
    assert (verdicts == (scores >= 0.9)).all()


def test_a_mapped_csv_is_scored_with_its_labels(
    synthetic_model: tuple[Path, Dataset], tmp_path: Path
) -> None:
    path, test = synthetic_model
    events, alerts = tmp_path / "events.csv", tmp_path / "alerts.jsonl"
    _write_csv(events, test, {"bytes_out": "BytesOut", "service": "Service"})

    done = _fedguard(
        "score",
        str(events),
        "--model",
        str(path),
        "--format",
        "csv",
        "--map",
        "BytesOut=bytes_out, Service=service",
        "--label-column",
        "kind",
        "-o",
        str(alerts),
        "--json",
    )

    assert done.returncode == 0, done.stderr
    scores = load_model_file(path).score(test)
    records = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert [r["row"] for r in records] == (np.flatnonzero(scores >= 0.5) + 1).tolist()
    assert [r["label"] for r in records] == [
        str(test.attack_types[r["row"] - 1]) for r in records
    ]
    assert json.loads(done.stdout)["rows"] == len(test)


def test_csv_errors_name_the_line_and_column(
    synthetic_model: tuple[Path, Dataset], tmp_path: Path
) -> None:
    path, test = synthetic_model
    schema = load_model_file(path).schema
    events = tmp_path / "events.csv"
    _write_csv(events, test.subset(np.arange(5)), {})
    lines = events.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "lots", 1)
    events.write_text("\n".join(lines) + "\n")

    with pytest.raises(
        DataFormatError, match=r"events\.csv, line 4, column \d+ \(bytes_out\).*'lots'"
    ):
        read_event_csv(events, schema)
    dataset, labels = read_event_csv(events, schema, skip_malformed=True)
    assert (len(dataset), dataset.skipped_rows, labels) == (4, 1, None)

    with pytest.raises(DataFormatError, match=r"lacks columns \['duration'\].*--map"):
        read_event_csv(events, schema, renames={"duration": "time"})


@pytest.mark.slow
def test_the_model_is_fetched_from_a_running_orchestrator(tmp_path: Path) -> None:
    # A real federation leaves a fitted schema and model version 1 in its state.
    out = tmp_path / "run"
    simulated = _fedguard(
        "simulate",
        "--clients",
        "2",
        "--rounds",
        "1",
        "--rows",
        "600",
        "--out",
        str(out),
    )
    assert simulated.returncode == 0, simulated.stderr

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fedguard",
            "server",
            "--config",
            str(out / "server.toml"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = _wait_for_endpoint(out / "server" / "endpoint.json", server)
        _, test = synthetic_split(50, 200, seed=5)
        events, saved = tmp_path / "events.csv", tmp_path / "fetched.json"
        _write_csv(events, test, {})
        common = ["score", str(events), "--format", "csv", "--server", url,
                  "--ca-file", str(out / "certs" / "ca.pem"), "--json",
                  "-o", str(tmp_path / "alerts.jsonl")]  # fmt: skip
        as_agent = _fedguard(
            *common, "--state-dir", str(out / "agents" / "cloud-0"),
            "--save-model", str(saved),
        )  # fmt: skip
        as_operator = _fedguard(
            *common, "--admin-token-file", str(out / "server" / "admin-token")
        )
        anonymous = _fedguard(*common)
        stranger = _fedguard(*common, "--state-dir", str(tmp_path / "stranger"))
        revoked_dir = out / "agents" / "cloud-1"
        revoked_id = json.loads((revoked_dir / "credential.json").read_text())
        _fedguard("clients", "revoke", revoked_id["client_id"],
                  "--state-dir", str(out / "server"))  # fmt: skip
        revoked = _fedguard(*common, "--state-dir", str(revoked_dir))
        plain = _fedguard(
            *common[:5], url.replace("https://", "http://"),
            "--state-dir", str(out / "agents" / "cloud-0"),
        )  # fmt: skip
        with httpx.Client(
            base_url=url, verify=client_ssl_context(out / "certs" / "ca.pem")
        ) as http:
            refused = [http.get(path).status_code for path in ("/model", "/federation")]
    finally:
        server.terminate()
        server.wait(timeout=60)

    assert as_agent.returncode == 0, as_agent.stderr
    model = load_model_file(saved)
    assert model.model_version == 1 and model.schema.is_fitted
    scores = model.score(test)
    assert json.loads(as_agent.stdout)["alerts"] == int(np.sum(scores >= 0.5))
    assert as_operator.returncode == 0, as_operator.stderr
    assert json.loads(as_operator.stdout)["alerts"] == int(np.sum(scores >= 0.5))

    assert anonymous.returncode == 2
    assert "--server needs exactly one credential" in anonymous.stderr
    assert stranger.returncode == 2
    assert "no agent credential in" in stranger.stderr
    assert revoked.returncode == 2
    assert "server answered 401: invalid credentials" in revoked.stderr
    assert plain.returncode == 2
    assert "is plain HTTP; use https://" in plain.stderr
    assert refused == [401, 401]


def _wait_for_endpoint(path: Path, server: subprocess.Popen[bytes]) -> str:
    """The URL the server wrote once listening (a bounded wait, not a timing test)."""
    for _ in range(600):
        try:
            endpoint = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            endpoint = {}
        if endpoint.get("pid") == server.pid:
            return str(endpoint["url"])
        assert server.poll() is None, "the server exited"
        time.sleep(0.1)
    raise AssertionError("the server did not report its endpoint")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--threshold", "1.5"],
            r"--threshold must be a number in \(0, 1\]; got '1.5'",
        ),
        (["--format", "parquet"], "--format must be one of nsl-kdd, csv"),
        (
            ["--server", "http://127.0.0.1:9"],
            "exactly one of --model FILE and --server",
        ),
        (
            ["--state-dir", "agent"],
            "--state-dir and --admin-token-file only apply with --server",
        ),
        (["--map", "a=b"], "--map and --label-column only apply with --format csv"),
    ],
)
def test_option_errors_are_one_line(
    nsl_model: tuple[Path, SavedModel], args: list[str], message: str
) -> None:
    done = _fedguard("score", str(TEST_EVENTS), "--model", str(nsl_model[0]), *args)

    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert re.search(message, done.stderr), done.stderr


def _bad_model_files(nsl_model: tuple[Path, SavedModel], root: Path) -> list[Path]:
    document = json.loads(nsl_model[0].read_text())
    schema_null = root / "schema-null.json"
    schema_null.write_text(json.dumps({**document, "schema": None}))
    bad_spec = root / "bad-spec.json"
    bad_spec.write_text(json.dumps({**document, "spec": {"kind": "mlp"}}))
    directory = root / "a-directory.json"
    directory.mkdir()
    return [schema_null, bad_spec, directory]


def test_bad_model_files_are_one_line_errors_naming_the_file(
    nsl_model: tuple[Path, SavedModel], tmp_path: Path
) -> None:
    for path in _bad_model_files(nsl_model, tmp_path):
        done = _fedguard("score", str(TEST_EVENTS), "--model", str(path))

        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and str(path) in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def _bad_event_files(root: Path, schema: FeatureSchema) -> dict[str, tuple[Path, str]]:
    """Event files the CSV reader must refuse, with the message expected."""
    columns = [*schema.numeric_columns, *schema.categorical_columns]
    good = ",".join("tcp" if c in schema.categorical_columns else "1" for c in columns)
    bytes_at = columns.index("bytes_out")

    def row(bytes_out: str) -> str:
        cells = good.split(",")
        cells[bytes_at] = bytes_out
        return ",".join(cells) + "\n"

    header = ",".join(columns) + "\n"
    big = root / "big-field.csv"
    big.write_text(header + row(f'"{"1" * 200_000}"'))
    truncated = root / "events.csv.gz"
    truncated.write_bytes(gzip.compress((header + row("2") * 500).encode())[:-30])
    underscore = root / "underscore.csv"
    underscore.write_text(header + row("2") + row("1_000"))
    huge_cell = root / "huge-cell.csv"
    huge_cell.write_text(header + row("7" * 1_000_000 + "z"))
    column = rf"column {bytes_at + 1} \(bytes_out\)"
    return {
        "field limit": (
            big,
            r"big-field\.csv, line 2: a field is longer than the limit",
        ),
        "truncated gzip": (truncated, r"events\.csv\.gz is not a valid gzip file"),
        "underscore": (underscore, rf"underscore\.csv, line 3, {column}: .*'1_000'"),
        "huge cell": (huge_cell, rf"huge-cell\.csv, line 2, {column}: .*'7{{40}}'…$"),
    }


def test_bad_event_files_are_one_line_errors(
    synthetic_model: tuple[Path, Dataset], tmp_path: Path
) -> None:
    schema = load_model_file(synthetic_model[0]).schema
    for name, (events, message) in _bad_event_files(tmp_path, schema).items():
        done = _fedguard(
            "score", str(events), "--model", str(synthetic_model[0]), "--format", "csv"
        )

        assert done.returncode == 2, (name, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (name, done.stderr[:500])
        assert re.search(message, done.stderr.strip()), (name, done.stderr[:500])
