"""NSL-KDD detection quality: scikit-learn, fedguard centralised, plaintext FedAvg.

Trains on KDDTrain+ and evaluates on KDDTest+ with the same features (the fitted
NSL-KDD schema) and prints, side by side, accuracy, precision, recall, F1, ROC-AUC,
false-positive rate and training seconds for:

* scikit-learn's ``LogisticRegression`` (lbfgs, default C = 1.0);
* the same with ``C = 1 / (l2 · rows)``, i.e. exactly fedguard's objective;
* fedguard centralised training with the library defaults;
* plaintext FedAvg with the library defaults over ``--clients`` clients, IID and
  Dirichlet(``--alpha``) over the labels, with the largest |update| seen.

Run: ``.venv/bin/python benchmarks/bench_learning.py --data-dir ../shared/data/nsl-kdd``
(add ``--json`` for one JSON object). scikit-learn is a development dependency.
"""

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedguard.data import (
    dirichlet_partition,
    iid_partition,
    load_nsl_kdd_split,
    nsl_kdd_schema,
)
from fedguard.learning import (
    FederatedConfig,
    ModelSpec,
    TrainingConfig,
    evaluate,
    predict_proba,
    run_fedavg,
    train_centralized,
)

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPOSITORY.parent / "shared" / "data" / "nsl-kdd"

Row = dict[str, Any]


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    train, test = load_nsl_kdd_split(args.data_dir)
    schema = nsl_kdd_schema().fit(train)
    train_x, test_x = schema.transform(train), schema.transform(test)
    train_y, test_y = train.labels, test.labels
    load_seconds = time.perf_counter() - started

    spec = ModelSpec(schema.n_features)
    rows = [
        sklearn_row("scikit-learn LR, C=1.0", 1.0, train_x, train_y),
        sklearn_row(
            "scikit-learn LR, same L2",
            1.0 / (TrainingConfig().l2 * len(train_y)),
            train_x,
            train_y,
        ),
        timed("fedguard centralised", lambda: centralised(spec, train_x, train_y)),
    ]
    for strategy in ("iid", "dirichlet"):
        rows.append(federated_row(spec, strategy, args, train_x, train_y))
    for row in rows:
        row.update(evaluate(test_y, row.pop("scores")(test_x)).to_dict())

    report(rows, args, load_seconds, train_x.shape)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=FederatedConfig().rounds)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0, help="partition seed")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args()


def sklearn_row(name: str, c: float, train_x: Any, train_y: Any) -> Row:
    from sklearn.linear_model import LogisticRegression

    def fit() -> Callable[[Any], Any]:
        model = LogisticRegression(C=c, max_iter=5_000).fit(train_x, train_y)
        return lambda x: model.predict_proba(x)[:, 1]

    return timed(name, fit)


def centralised(spec: ModelSpec, train_x: Any, train_y: Any) -> Callable[[Any], Any]:
    model = train_centralized(spec, train_x, train_y)
    return lambda x: predict_proba(spec, model.parameters, x)


def federated_row(
    spec: ModelSpec,
    strategy: str,
    args: argparse.Namespace,
    train_x: Any,
    train_y: Any,
) -> Row:
    if strategy == "iid":
        parts = iid_partition(len(train_y), args.clients, seed=args.seed)
        name = f"FedAvg IID, {args.clients} clients"
    else:
        parts = dirichlet_partition(
            train_y, args.clients, alpha=args.alpha, seed=args.seed
        )
        name = f"FedAvg Dirichlet α={args.alpha}, {args.clients} clients"
    clients = [(train_x[p], train_y[p]) for p in parts]
    outcome: dict[str, float] = {}

    def fit() -> Callable[[Any], Any]:
        result = run_fedavg(spec, clients, FederatedConfig(rounds=args.rounds))
        outcome["max_abs_delta"] = result.max_abs_delta
        return lambda x: predict_proba(spec, result.parameters, x)

    row = timed(name, fit)
    row["max_abs_delta"] = outcome["max_abs_delta"]
    row["client_rows"] = [len(p) for p in parts]
    return row


def timed(name: str, fit: Callable[[], Callable[[Any], Any]]) -> Row:
    started = time.perf_counter()
    scores = fit()
    return {"name": name, "seconds": time.perf_counter() - started, "scores": scores}


def report(
    rows: list[Row],
    args: argparse.Namespace,
    load_seconds: float,
    shape: tuple[int, ...],
) -> None:
    central_f1 = rows[2]["f1"]
    gaps = {
        "centralised_vs_sklearn_f1": central_f1 - rows[0]["f1"],
        "iid_vs_centralised_f1": rows[3]["f1"] - central_f1,
        "dirichlet_vs_centralised_f1": rows[4]["f1"] - central_f1,
    }
    if args.json:
        summary = {"rows": rows, "gaps": gaps, "load_seconds": load_seconds}
        print(json.dumps(summary, default=float))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"KDDTrain+ → KDDTest+ ({shape[0]:,} training rows, {shape[1]} "
        f"features; FedAvg: {args.rounds} rounds)"
    )
    for column in ("model", "accuracy", "precision", "recall", "F1", "ROC-AUC",
                   "FPR", "seconds", "max |Δ|"):  # fmt: skip
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        metrics = ("accuracy", "precision", "recall", "f1", "roc_auc", "fpr")
        delta = row.get("max_abs_delta")
        table.add_row(
            row["name"],
            *(f"{row[m]:.4f}" for m in metrics),
            f"{row['seconds']:.2f}",
            "" if delta is None else f"{delta:.3f}",
        )
    console = Console(width=max(Console().width, 120))
    console.print(table)
    console.print(f"loading and schema fitting: {load_seconds:.2f} s")
    for name, value in gaps.items():
        console.print(f"{name}: {value:+.4f}")


if __name__ == "__main__":
    main()
