"""``fedguard score``: score a local event file with the global model, write alerts.

An agent (or an analyst) scores its own events with the current global model, without
sending them anywhere. The model comes from a saved model file or from the
orchestrator (``GET /federation`` for the fitted feature schema, ``GET /model`` for
the parameters). The orchestrator serves both to members only: the download
authenticates with an enrolled agent's credential (``--state-dir`` of the agent) or
with the operator's admin token (``--admin-token-file``), over TLS checked against
``--ca-file``; plain HTTP needs ``--insecure-http``.

Alerts are written as JSON lines, one per event scoring at or above ``--threshold``
(every event with ``--all``)::

    {"row": 17, "score": 0.973412, "verdict": "alert", "label": "neptune"}

``row`` is the event's 1-based position among the data rows of the file (header
excluded), ``verdict`` is ``alert`` or ``pass`` and ``label`` appears when the file
has labels. The output file is written to a temporary file, made 0600 and moved
into place, so a reader never sees half of it.

Saved model file
----------------
A JSON object (``fedguard-model`` version 1)::

    {
      "format": "fedguard-model",
      "version": 1,
      "model_version": 12,
      "spec": {"kind": "logistic_regression", "n_features": 122},
      "schema": { ...fitted FeatureSchema.to_dict()... },
      "params": "<base64 of the parameters as little-endian float64>",
      "params_sha256": "<hex SHA-256 of those bytes>"
    }

The parameters travel as raw IEEE-754 bytes so that a saved model scores exactly
like the original; the digest catches a truncated or edited file.
"""

import base64
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TextIO

import numpy as np
import typer
from numpy.typing import NDArray

from fedguard.errors import ConfigError, DataFormatError, FedguardError, InputError
from fedguard.files import write_secret_file

if TYPE_CHECKING:
    from fedguard.data import Dataset, FeatureSchema
    from fedguard.learning import ModelSpec

MODEL_FILE_FORMAT = "fedguard-model"
MODEL_FILE_VERSION = 1
DEFAULT_THRESHOLD = "0.5"
FORMATS = ("nsl-kdd", "csv")

_FLOAT = np.dtype("<f8")
# An interactive command: give up on an unreachable server sooner than an agent.
_FETCH_RETRY_SECONDS = 10.0


@dataclass(frozen=True, eq=False)
class SavedModel:
    """Everything needed to score events: model shape, fitted schema, parameters."""

    spec: "ModelSpec"
    schema: "FeatureSchema"
    parameters: NDArray[np.float64]
    model_version: int = 0

    def __post_init__(self) -> None:
        if not self.schema.is_fitted:
            raise InputError(f"model schema {self.schema.name!r} is not fitted")
        if self.schema.n_features != self.spec.n_features:
            raise InputError(
                f"model expects {self.spec.n_features} features; its schema "
                f"{self.schema.name!r} makes {self.schema.n_features}"
            )
        if self.parameters.shape != (self.spec.num_parameters,):
            raise InputError(
                f"model needs {self.spec.num_parameters} parameters; "
                f"got {self.parameters.size}"
            )

    def score(self, dataset: "Dataset") -> NDArray[np.float64]:
        """Attack probability of every row of ``dataset``."""
        from fedguard.learning import predict_proba

        return predict_proba(self.spec, self.parameters, self.schema.transform(dataset))


def save_model_file(path: Path, model: SavedModel) -> None:
    """Write ``model`` in the saved model format (see the module docstring)."""
    raw = np.ascontiguousarray(model.parameters, dtype=_FLOAT).tobytes()
    document = {
        "format": MODEL_FILE_FORMAT,
        "version": MODEL_FILE_VERSION,
        "model_version": model.model_version,
        "spec": model.spec.to_dict(),
        "schema": model.schema.to_dict(),
        "params": base64.b64encode(raw).decode("ascii"),
        "params_sha256": hashlib.sha256(raw).hexdigest(),
    }
    write_secret_file(path, (json.dumps(document, indent=2) + "\n").encode())


def load_model_file(path: Path) -> SavedModel:
    """Read a saved model file, checking its format and parameter digest."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"model file {path} does not exist") from None
    except OSError as error:
        raise InputError(f"cannot read model file {path}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"model file {path} is not JSON: {error}") from None
    if not isinstance(document, dict) or (
        document.get("format"),
        document.get("version"),
    ) != (MODEL_FILE_FORMAT, MODEL_FILE_VERSION):
        raise InputError(
            f"model file {path} must be format {MODEL_FILE_FORMAT!r} version "
            f"{MODEL_FILE_VERSION}"
        )
    return _model_from_document(path, document)


def _model_from_document(path: Path, document: dict[str, Any]) -> SavedModel:
    from fedguard.data import FeatureSchema
    from fedguard.learning import ModelSpec

    for key in ("spec", "schema"):
        if not isinstance(document.get(key), dict):
            found = json.dumps(document.get(key))
            raise InputError(
                f"model file {path} is malformed: {key!r} must be a JSON object; "
                f"got {found[:40]}{'…' if len(found) > 40 else ''}"
            )
    try:
        raw = base64.b64decode(document["params"], validate=True)
        digest = str(document["params_sha256"])
        spec = ModelSpec.from_dict(document["spec"])
        schema = FeatureSchema.from_dict(document["schema"])
        version = int(document["model_version"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"model file {path} is malformed: {error!r}") from None
    except FedguardError as error:
        raise InputError(f"model file {path}: {error}") from None
    if hashlib.sha256(raw).hexdigest() != digest or len(raw) % _FLOAT.itemsize:
        raise InputError(f"model file {path}: parameters do not match params_sha256")

    parameters = np.frombuffer(raw, dtype=_FLOAT).astype(np.float64)
    try:
        return SavedModel(spec, schema, parameters, version)
    except InputError as error:
        raise InputError(f"model file {path}: {error}") from None


def fetch_model(
    server: str,
    bearer_token: str,
    ca_file: Path | None = None,
    *,
    insecure_http: bool = False,
) -> SavedModel:
    """The orchestrator's latest global model and fitted schema, over HTTPS.

    ``bearer_token`` is a client credential (``<client_id>.<secret>``) or the admin
    token; the server answers members only. ``ca_file`` is the CA the server's
    certificate must chain to (the system store without it); an ``http://`` URL is
    refused unless ``insecure_http``.
    """
    import httpx

    from fedguard.client.connection import Connection, RetryPolicy
    from fedguard.data import FeatureSchema
    from fedguard.learning import ModelSpec
    from fedguard.security.tls import check_server_url, client_ssl_context
    from fedguard.server.wire import decode_model

    check_server_url(server, insecure_http=insecure_http)
    verify: Any = True
    if server.lower().startswith("https://"):
        verify = client_ssl_context(ca_file)
    http = httpx.Client(
        base_url=server.rstrip("/"),
        timeout=60.0,
        verify=verify,
        headers={"Authorization": f"Bearer {bearer_token}"},
    )
    retry = RetryPolicy(retry_for=_FETCH_RETRY_SECONDS)
    with Connection(server, client=http, ca_file=ca_file, retry=retry) as connection:
        info = connection.federation()
        version, parameters = decode_model(connection.model())

    if info.get("fitted_schema") is None:
        raise InputError(
            f"the orchestrator at {server} has no fitted feature schema yet; "
            "score after its setup round"
        )
    spec = ModelSpec.from_dict(info["model"])
    schema = FeatureSchema.from_dict(info["fitted_schema"])
    return SavedModel(spec, schema, np.asarray(parameters, np.float64), version)


def register(app: typer.Typer) -> None:
    """Add the ``score`` command to ``app``."""
    app.command("score")(score)


def score(
    events: Annotated[Path, typer.Argument(help="Event file to score.")],
    model: Annotated[
        Path | None, typer.Option("--model", help="Saved model file (JSON).")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option("--server", help="Orchestrator URL to fetch the model from."),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option("--ca-file", help="CA certificate the server's TLS chains to."),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="With --server: an enrolled agent's state directory; its "
            "credential.json authenticates the download.",
        ),
    ] = None,
    admin_token_file: Annotated[
        Path | None,
        typer.Option(
            "--admin-token-file",
            help="With --server: the orchestrator's admin-token file; authenticates "
            "the download as the operator.",
        ),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option("--insecure-http", help="Allow a plain http:// server URL."),
    ] = False,
    save_model: Annotated[
        Path | None,
        typer.Option("--save-model", help="Also save the model used to this file."),
    ] = None,
    event_format: Annotated[
        str, typer.Option("--format", help="nsl-kdd, or csv with a header row.")
    ] = "nsl-kdd",
    rename: Annotated[
        str | None,
        typer.Option(
            "--map",
            help="CSV columns to rename to schema names: FILE_NAME=SCHEMA_NAME,...",
        ),
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option("--label-column", help="CSV column copied into alerts."),
    ] = None,
    threshold: Annotated[
        str, typer.Option(metavar="FLOAT", help="Alert at or above this score.")
    ] = DEFAULT_THRESHOLD,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Alerts file (default: standard output)."),
    ] = None,
    all_rows: Annotated[
        bool, typer.Option("--all", help="Write every event, not only alerts.")
    ] = False,
    skip_malformed: Annotated[
        bool, typer.Option(help="Skip malformed rows instead of failing.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
) -> None:
    """Score local events with the global model and write alerts as JSON lines."""
    limit = _threshold(threshold)
    if event_format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}")
    if event_format != "csv" and (rename or label_column):
        raise ConfigError("--map and --label-column only apply with --format csv")

    source = ModelSource(
        model, server, ca_file, state_dir, admin_token_file, insecure_http
    )
    saved = source.load()
    if save_model is not None:
        save_model_file(save_model, saved)
    dataset, labels = _load_events(
        events, event_format, saved.schema, rename, label_column, skip_malformed
    )
    scores = saved.score(dataset)

    records = alert_records(scores, limit, labels=labels, all_rows=all_rows)
    written = write_alerts(output, records)
    summary = {
        "events": str(events),
        "rows": int(scores.size),
        "alerts": int(np.sum(scores >= limit)),
        "written": written,
        "threshold": limit,
        "model_version": saved.model_version,
        "skipped_rows": dataset.skipped_rows,
        "output": str(output) if output is not None else "-",
    }
    _print_summary(summary, json_output=json_output, to_stderr=output is None)


def alert_records(
    scores: NDArray[np.float64],
    threshold: float,
    *,
    labels: Sequence[str] | None = None,
    all_rows: bool = False,
) -> Iterator[dict[str, Any]]:
    """The JSON-line records for ``scores`` (alerts only unless ``all_rows``)."""
    for index, value in enumerate(scores.tolist()):
        alert = value >= threshold
        if not (alert or all_rows):
            continue
        record: dict[str, Any] = {
            "row": index + 1,
            "score": round(value, 6),
            "verdict": "alert" if alert else "pass",
        }
        if labels is not None:
            record["label"] = labels[index]
        yield record


def write_alerts(output: Path | None, records: Iterator[dict[str, Any]]) -> int:
    """Write ``records`` as JSON lines to ``output`` (or standard output)."""
    if output is None:
        return _write_lines(typer.get_text_stream("stdout"), records)

    output.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=output.parent, prefix=".alerts-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            count = _write_lines(stream, records)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count


def _write_lines(stream: TextIO, records: Iterator[dict[str, Any]]) -> int:
    count = 0
    for record in records:
        stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        count += 1
    return count


@dataclass(frozen=True)
class ModelSource:
    """Where ``score`` takes its model from: a file, or a server and a credential."""

    model: Path | None
    server: str | None
    ca_file: Path | None = None
    state_dir: Path | None = None
    admin_token_file: Path | None = None
    insecure_http: bool = False

    def load(self) -> SavedModel:
        if (self.model is None) == (self.server is None):
            raise ConfigError(
                "give exactly one of --model FILE and --server URL; got "
                + ("both" if self.model else "neither")
            )
        if self.model is not None:
            if self.state_dir or self.admin_token_file:
                raise ConfigError(
                    "--state-dir and --admin-token-file only apply with --server"
                )
            return load_model_file(self.model)

        assert self.server is not None
        return fetch_model(
            self.server,
            self.bearer_token(),
            self.ca_file,
            insecure_http=self.insecure_http,
        )

    def bearer_token(self) -> str:
        """The credential that authenticates the download."""
        from fedguard.files import read_secret_file
        from fedguard.security.agent import credential_path, load_agent_credential

        if (self.state_dir is None) == (self.admin_token_file is None):
            raise ConfigError(
                "--server needs exactly one credential: --state-dir DIR of an "
                "enrolled agent or --admin-token-file FILE; got "
                + ("both" if self.state_dir else "neither")
            )
        if self.state_dir is not None:
            credential = load_agent_credential(self.state_dir)
            if credential is None:
                raise ConfigError(
                    f"no agent credential in {credential_path(self.state_dir)}; "
                    "enroll the agent first (fedguard client --enrollment-token)"
                )
            return credential.bearer_token

        assert self.admin_token_file is not None
        try:
            return read_secret_file(self.admin_token_file).decode().strip()
        except FileNotFoundError:
            raise ConfigError(
                f"admin token file {self.admin_token_file} does not exist; it is "
                "admin-token in the server's state directory"
            ) from None


def _load_events(
    path: Path,
    event_format: str,
    schema: "FeatureSchema",
    rename: str | None,
    label_column: str | None,
    skip_malformed: bool,
) -> tuple["Dataset", list[str] | None]:
    if event_format == "nsl-kdd":
        from fedguard.data import load_nsl_kdd

        dataset = load_nsl_kdd(path, on_error="skip" if skip_malformed else "raise")
        return dataset, [str(label) for label in dataset.attack_types]

    return read_event_csv(
        path,
        schema,
        renames=_renames(rename),
        label_column=label_column,
        skip_malformed=skip_malformed,
    )


def read_event_csv(
    path: Path,
    schema: "FeatureSchema",
    *,
    renames: dict[str, str] | None = None,
    label_column: str | None = None,
    skip_malformed: bool = False,
) -> tuple["Dataset", list[str] | None]:
    """Read the schema's columns from a CSV with a header row; labels are optional.

    Columns are matched by name after ``renames`` (file name -> schema name); other
    columns are ignored. Returns the events and, with ``label_column``, its values.
    The file goes through the same reader as the training loaders: plain or gzip,
    the same errors naming the file, line and column, and no limit on the file's
    size beyond memory.
    """
    from fedguard.data._tabular import parse_columns, read_text, split_records

    source = str(path)
    on_error: Literal["raise", "skip"] = "skip" if skip_malformed else "raise"
    records = split_records(
        read_text(path),
        source,
        expected_columns=None,
        has_header=True,
        on_error=on_error,
    )
    renames = renames or {}
    header = [renames.get(name, name) for name in records.header or ()]
    positions = _column_positions(path, header, schema, label_column)

    text_columns = list(schema.categorical_columns)
    if label_column is not None:
        text_columns.append(label_column)
    parsed = parse_columns(
        records,
        numeric=[positions[name] for name in schema.numeric_columns],
        text=[positions[name] for name in text_columns],
        names=header,
        source=source,
        on_error=on_error,
    )
    categorical = parsed.text[: len(schema.categorical_columns)]
    labels = None
    if label_column is not None:
        labels = [str(value) for value in parsed.text[-1]]
    return _dataset(path, schema, parsed.numeric, categorical, parsed.skipped), labels


def _column_positions(
    path: Path,
    header: Sequence[str],
    schema: "FeatureSchema",
    label_column: str | None,
) -> dict[str, int]:
    from fedguard.data._tabular import quote_names

    wanted = [*schema.numeric_columns, *schema.categorical_columns]
    if label_column is not None:
        wanted.append(label_column)
    missing = [name for name in wanted if name not in header]
    if missing:
        raise DataFormatError(
            f"{path}: the header lacks columns [{quote_names(missing)}] needed by "
            f"schema {schema.name!r} (rename file columns with --map "
            f"FILE_NAME=SCHEMA_NAME); the file has {quote_names(header)}"
        )
    twice = sorted({name for name in wanted if header.count(name) > 1})
    if twice:
        raise DataFormatError(
            f"{path}: the header names a column the schema needs more than once: "
            f"{quote_names(twice)}"
        )
    return {name: header.index(name) for name in wanted}


def _dataset(
    path: Path,
    schema: "FeatureSchema",
    numeric: NDArray[np.float64],
    categorical: list[NDArray[np.str_]],
    skipped: int,
) -> "Dataset":
    from fedguard.data import NORMAL, Dataset
    from fedguard.data.dataset import string_matrix

    rows = len(numeric)
    return Dataset(
        numeric_columns=schema.numeric_columns,
        numeric=numeric,
        categorical_columns=schema.categorical_columns,
        categorical=string_matrix(categorical, rows),
        # Unlabelled events: the target is unknown and unused when scoring.
        labels=np.zeros(rows, dtype=np.int8),
        attack_types=np.full(rows, NORMAL, dtype=np.str_),
        name=path.name,
        skipped_rows=skipped,
    )


def _renames(value: str | None) -> dict[str, str]:
    renames: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        source, separator, target = item.partition("=")
        if not separator or not source.strip() or not target.strip():
            raise ConfigError(
                f"--map must be FILE_NAME=SCHEMA_NAME pairs separated by commas; "
                f"got {item!r}"
            )
        renames[source.strip()] = target.strip()
    return renames


def _threshold(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0.0 < number <= 1.0:
        raise ConfigError(f"--threshold must be a number in (0, 1]; got {value!r}")
    return number


def _print_summary(
    summary: dict[str, Any], *, json_output: bool, to_stderr: bool
) -> None:
    if json_output:
        typer.echo(json.dumps(summary), err=to_stderr)
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fedguard score: {Path(summary['events']).name}")
    table.add_column("field")
    table.add_column("value", justify="right")
    rate = summary["alerts"] / summary["rows"] if summary["rows"] else 0.0
    table.add_row("events scored", f"{summary['rows']:,}")
    table.add_row("alerts", f"{summary['alerts']:,} ({rate:.1%})")
    table.add_row("threshold", f"{summary['threshold']:g}")
    table.add_row("model version", str(summary["model_version"]))
    table.add_row("skipped rows", f"{summary['skipped_rows']:,}")
    table.add_row("alerts file", summary["output"])
    Console(stderr=to_stderr).print(table)
