"""``fedguard train``: centralised training and evaluation, one cloud's baseline.

Trains the logistic-regression threat model on one dataset (NSL-KDD, the synthetic
events or any labelled flow CSV) and evaluates it on a test set. Numbers are parsed
here rather than by the option parser so that every bad value gets the same
one-line error naming the option, what is accepted and what was received.

Training data must hold both classes: a model that never saw an attack (or never
saw normal traffic) is useless, so such data is refused with the label values it
holds. ``--save-model FILE`` writes the trained model in the saved-model format of
``fedguard score --model`` (see :mod:`fedguard.commands.score`).
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from fedguard.errors import ConfigError, InputError

if TYPE_CHECKING:
    from fedguard.data import Dataset, FeatureSchema

logger = logging.getLogger(__name__)

DATASETS = ("nsl-kdd", "synthetic")
CLASS_WEIGHTS = ("none", "balanced")
DEFAULT_TEST_FRACTION = "0.2"


@dataclass(frozen=True)
class TrainRequest:
    """Validated options of one ``fedguard train`` run."""

    dataset: str | None
    data_dir: Path | None
    csv: Path | None
    test_csv: Path | None
    label_column: str | None
    attack_values: tuple[str, ...]
    normal_values: tuple[str, ...]
    categorical: tuple[str, ...]
    drop: tuple[str, ...]
    test_fraction: float
    rows: int
    test_rows: int
    epochs: int
    batch_size: int
    learning_rate: float
    l2: float
    class_weight: Literal["none", "balanced"]
    seed: int
    on_error: Literal["raise", "skip"]
    save_model: Path | None = None


def register(app: typer.Typer) -> None:
    """Add the ``train`` command to ``app``."""
    app.command("train")(train)


def train(
    dataset: Annotated[
        str | None,
        typer.Option(metavar="nsl-kdd|synthetic", help="Built-in dataset."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Directory with KDDTrain+ and KDDTest+ (for nsl-kdd)."),
    ] = None,
    csv: Annotated[
        Path | None, typer.Option(help="Training flow CSV with a header row.")
    ] = None,
    test_csv: Annotated[
        Path | None, typer.Option(help="Test CSV (default: hold out --test-fraction).")
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help="CSV column holding the label.")
    ] = None,
    attack_values: Annotated[
        str | None, typer.Option(help="Comma-separated label values meaning attack.")
    ] = None,
    normal_values: Annotated[
        str | None, typer.Option(help="Comma-separated label values meaning normal.")
    ] = None,
    categorical: Annotated[
        str | None, typer.Option(help="Comma-separated categorical CSV columns.")
    ] = None,
    drop: Annotated[
        str | None, typer.Option(help="Comma-separated CSV columns to ignore.")
    ] = None,
    test_fraction: Annotated[
        str, typer.Option(metavar="FLOAT", help="Share held out without --test-csv.")
    ] = DEFAULT_TEST_FRACTION,
    rows: Annotated[
        str, typer.Option(metavar="INTEGER", help="Synthetic training rows.")
    ] = "20000",
    test_rows: Annotated[
        str, typer.Option(metavar="INTEGER", help="Synthetic test rows.")
    ] = "5000",
    epochs: Annotated[
        str, typer.Option(metavar="INTEGER", help="Passes over the training rows.")
    ] = "10",
    batch_size: Annotated[
        str, typer.Option(metavar="INTEGER", help="Rows per gradient step.")
    ] = "64",
    learning_rate: Annotated[
        str, typer.Option(metavar="FLOAT", help="Gradient step size.")
    ] = "0.05",
    l2: Annotated[str, typer.Option(metavar="FLOAT", help="L2 penalty.")] = "0.0001",
    class_weight: Annotated[
        str,
        typer.Option(
            metavar="none|balanced", help="balanced: weight by inverse class frequency."
        ),
    ] = "none",
    seed: Annotated[
        str, typer.Option(metavar="INTEGER", help="Seed of data and shuffling.")
    ] = "0",
    skip_malformed: Annotated[
        bool, typer.Option(help="Skip malformed rows instead of failing.")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object.")
    ] = False,
    save_model: Annotated[
        Path | None,
        typer.Option(
            "--save-model",
            metavar="FILE",
            help="Save the trained model for `fedguard score --model FILE`.",
        ),
    ] = None,
) -> None:
    """Train the threat model centrally on one dataset and evaluate it."""
    request = TrainRequest(
        dataset=_choice("--dataset", dataset, DATASETS),
        data_dir=data_dir,
        csv=csv,
        test_csv=test_csv,
        label_column=label_column,
        attack_values=_names(attack_values),
        normal_values=_names(normal_values),
        categorical=_names(categorical),
        drop=_names(drop),
        test_fraction=_number("--test-fraction", test_fraction, 0.0, 1.0),
        rows=_integer("--rows", rows, 1),
        test_rows=_integer("--test-rows", test_rows, 1),
        epochs=_integer("--epochs", epochs, 1),
        batch_size=_integer("--batch-size", batch_size, 1),
        learning_rate=_number("--learning-rate", learning_rate, 0.0, None),
        l2=_number("--l2", l2, 0.0, None, inclusive=True),
        class_weight="balanced" if class_weight == "balanced" else "none",
        seed=_integer("--seed", seed, 0),
        on_error="skip" if skip_malformed else "raise",
        save_model=save_model,
    )
    _choice("--class-weight", class_weight, CLASS_WEIGHTS)
    csv_options = {
        "--test-csv": test_csv,
        "--label-column": label_column,
        "--attack-values": attack_values,
        "--normal-values": normal_values,
        "--categorical": categorical,
        "--drop": drop,
        "--test-fraction": None if test_fraction == DEFAULT_TEST_FRACTION else "",
    }
    _check_sources(request, [name for name, v in csv_options.items() if v is not None])
    result = run_training(request)
    _print(result, json_output=json_output)


def run_training(request: TrainRequest) -> dict[str, Any]:
    """Load, fit the schema, train, evaluate; return the figures to print."""
    from fedguard.learning import (
        ModelSpec,
        TrainingConfig,
        evaluate,
        predict_proba,
        train_centralized,
    )

    train_set, test_set, schema = _load(request)
    _check_classes(train_set, request)
    started = time.perf_counter()
    fitted = schema.fit(train_set)
    features = fitted.transform(train_set)
    spec = ModelSpec(n_features=fitted.n_features)
    config = TrainingConfig(
        epochs=request.epochs,
        batch_size=request.batch_size,
        learning_rate=request.learning_rate,
        l2=request.l2,
        class_weight=request.class_weight,
        seed=request.seed,
    )
    model = train_centralized(spec, features, train_set.labels, config)
    seconds = time.perf_counter() - started
    logger.info("trained on %d rows in %.2f s", len(train_set), seconds)

    scores = predict_proba(spec, model.parameters, fitted.transform(test_set))
    metrics = evaluate(test_set.labels, scores)
    result = metrics.to_dict() | {
        "dataset": schema.name,
        "train_rows": len(train_set),
        "test_rows": len(test_set),
        "features": fitted.n_features,
        "skipped_rows": train_set.skipped_rows + test_set.skipped_rows,
        "train_seconds": round(seconds, 3),
    }
    if request.save_model is not None:
        from fedguard.commands.score import SavedModel, save_model_file

        save_model_file(request.save_model, SavedModel(spec, fitted, model.parameters))
        logger.info("saved the model to %s", request.save_model)
        result["model_file"] = str(request.save_model)
    return result


def _check_classes(train_set: "Dataset", request: TrainRequest) -> None:
    """Refuse training rows of a single class, which no model can learn from."""
    if train_set.num_attacks and train_set.num_normal:
        return

    only = "normal" if train_set.num_normal else "attacks"
    held_out = ""
    if request.csv is not None and request.test_csv is None:
        held_out = f" left after holding out --test-fraction {request.test_fraction}"
    raise InputError(
        f"the {len(train_set):,} training rows{held_out} are all {only}; a model "
        "needs both attacks and normal traffic to learn from (use more data, or "
        "--test-csv for the test rows)"
    )


def _load(request: TrainRequest) -> tuple["Dataset", "Dataset", "FeatureSchema"]:
    from fedguard.data import (
        load_nsl_kdd_split,
        nsl_kdd_schema,
        synthetic_schema,
        synthetic_split,
    )

    if request.dataset == "nsl-kdd":
        if request.data_dir is None:
            raise ConfigError("--dataset nsl-kdd needs --data-dir DIR; got none")
        train_set, test_set = load_nsl_kdd_split(
            request.data_dir, on_error=request.on_error
        )
        return train_set, test_set, nsl_kdd_schema()
    if request.dataset == "synthetic":
        train_set, test_set = synthetic_split(
            request.rows, request.test_rows, seed=request.seed
        )
        return train_set, test_set, synthetic_schema()
    return _load_csv(request)


def _load_csv(request: TrainRequest) -> tuple["Dataset", "Dataset", "FeatureSchema"]:
    from fedguard.data import CsvMapping, check_labels, infer_schema, load_flow_csv

    assert request.csv is not None  # checked by _check_sources
    if request.label_column is None:
        raise ConfigError("--csv needs --label-column NAME; got none")
    mapping = CsvMapping(
        label_column=request.label_column,
        attack_values=request.attack_values,
        normal_values=request.normal_values,
        categorical_columns=request.categorical,
        drop_columns=request.drop,
    )
    data = load_flow_csv(request.csv, mapping, on_error=request.on_error)
    check_labels(data, mapping, str(request.csv), both_classes=True)

    if request.test_csv is not None:
        train_set = data
        test_set = load_flow_csv(request.test_csv, mapping, on_error=request.on_error)
        if len(test_set) == 0:
            raise InputError(f"{request.test_csv} has no data rows, only a header")
        if test_set.numeric_columns != train_set.numeric_columns:
            raise ConfigError(
                f"--test-csv must have the numeric columns of --csv "
                f"({', '.join(train_set.numeric_columns)}); "
                f"got {', '.join(test_set.numeric_columns)}"
            )
    else:
        train_set, test_set = _hold_out(data, request.test_fraction, request.seed)
    return train_set, test_set, infer_schema(train_set, name=request.csv.name)


def _hold_out(
    data: "Dataset", fraction: float, seed: int
) -> tuple["Dataset", "Dataset"]:
    """A seeded split into training rows and ``fraction`` of held-out test rows."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(data))
    held_out = max(1, round(len(data) * fraction))
    if held_out >= len(data):
        raise ConfigError(
            f"--test-fraction leaves no training rows out of {len(data)}; "
            f"got {fraction}"
        )
    return data.subset(order[held_out:]), data.subset(order[:held_out])


def _check_sources(request: TrainRequest, csv_options_given: list[str]) -> None:
    """Exactly one data source, and only the options that apply to it."""
    if (request.dataset is None) == (request.csv is None):
        raise ConfigError(
            "give exactly one of --dataset (nsl-kdd, synthetic) and --csv FILE; got "
            + ("both" if request.dataset else "neither")
        )
    if request.dataset is not None and csv_options_given:
        raise ConfigError(
            f"{csv_options_given[0]} only applies with --csv; got --dataset "
            f"{request.dataset}"
        )
    if request.csv is not None and not (request.attack_values or request.normal_values):
        raise ConfigError(
            "--csv needs --attack-values V1,V2 or --normal-values V1,V2; got neither"
        )
    if request.attack_values and request.normal_values:
        raise ConfigError("give --attack-values or --normal-values, not both")


def _print(result: dict[str, Any], *, json_output: bool) -> None:
    if json_output:
        import json

        typer.echo(json.dumps(result))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fedguard train: {result['dataset']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "fpr"):
        # ROC-AUC is undefined when the test rows hold one class only.
        value = result[key]
        table.add_row(key, "n/a" if value is None else f"{value:.4f}")
    for key in ("train_rows", "test_rows", "features", "skipped_rows"):
        table.add_row(key, f"{result[key]:,}")
    table.add_row("train_seconds", f"{result['train_seconds']:.2f}")
    if "model_file" in result:
        table.add_row("model saved to", result["model_file"])
    Console().print(table)


def _names(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _choice(option: str, value: str | None, accepted: tuple[str, ...]) -> str | None:
    if value is not None and value not in accepted:
        raise ConfigError(
            f"{option} must be one of {', '.join(accepted)}; got {value!r}"
        )
    return value


def _integer(option: str, value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(
            f"{option} must be an integer >= {minimum}; got {value!r}"
        ) from None
    if number < minimum:
        raise ConfigError(f"{option} must be an integer >= {minimum}; got {number}")
    return number


def _number(
    option: str,
    value: str,
    low: float,
    high: float | None,
    *,
    inclusive: bool = False,
) -> float:
    accepted = f"a number {'>=' if inclusive else '>'} {low}"
    if high is not None:
        accepted = f"a number in ({low}, {high})"
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{option} must be {accepted}; got {value!r}") from None
    above = number >= low if inclusive else number > low
    below = high is None or number < high
    if not (above and below and number == number and abs(number) != float("inf")):
        raise ConfigError(f"{option} must be {accepted}; got {value!r}")
    return number
