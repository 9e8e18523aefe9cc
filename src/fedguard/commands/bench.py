"""``fedguard bench``: throughput of the crypto core beside python-paillier."""

import json
from typing import Annotated

import typer

from fedguard.errors import ConfigError

# (figure, attribute, python-paillier attribute, target, format)
_ROWS = (
    (
        "encrypt",
        "encrypt_values_per_s",
        "phe_encrypt_values_per_s",
        ">= 250,000",
        ",.0f",
    ),
    (
        "encrypt, precomputed",
        "encrypt_precomputed_values_per_s",
        None,
        "",
        ",.0f",
    ),
    ("encrypt, 1 worker", "encrypt_values_per_s_one_worker", None, "", ",.0f"),
    ("aggregate", "aggregate_values_per_s", None, ">= 5,000,000", ",.0f"),
    (
        "decrypt",
        "decrypt_values_per_s",
        "phe_decrypt_values_per_s",
        ">= 50,000",
        ",.0f",
    ),
    ("wire bytes/value", "wire_bytes_per_value", None, "<= 6", ".2f"),
    ("scaling N/1 workers", "thread_scaling", None, ">= 1.8", ".2f"),
)

# One ciphertext (2 x key bytes) per value, as python-paillier sends them.
_PHE_WIRE = {"wire_bytes_per_value": lambda bits: bits // 4}


def bench(
    values: Annotated[int, typer.Option(help="Values per update.")] = 100_000,
    key_bits: Annotated[
        int, typer.Option(help="Modulus size: 2048, 3072 or 4096.")
    ] = 2048,
    contributors: Annotated[int, typer.Option(help="Updates summed per round.")] = 10,
    workers: Annotated[
        int, typer.Option(help="Encryption workers (0: one per available core).")
    ] = 0,
    phe_subsample: Annotated[
        int, typer.Option(help="Values timed with python-paillier.")
    ] = 200,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object.")
    ] = False,
) -> None:
    """Measure encryption, aggregation and decryption of one federated round."""
    from fedguard.benchmarking import run_crypto_benchmark

    _check_options(values, contributors, workers, phe_subsample)
    result = run_crypto_benchmark(
        values=values,
        key_bits=key_bits,
        contributors=contributors,
        workers=workers or None,
        phe_subsample=phe_subsample,
    )

    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_table(result.to_dict())


def _check_options(values: int, contributors: int, workers: int, phe: int) -> None:
    if values < 1:
        raise ConfigError(f"--values must be >= 1; got {values}")
    if contributors < 2:
        raise ConfigError(f"--contributors must be >= 2; got {contributors}")
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0 (0: all cores); got {workers}")
    if not 1 <= phe <= values:
        raise ConfigError(f"--phe-subsample must be in [1, --values]; got {phe}")


def _print_table(figures: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"fedguard crypto, {figures['key_bits']}-bit key, {figures['values']:,} "
            f"values x {figures['contributors']} contributors, "
            f"{figures['threads']} workers"
        )
    )
    for column in ("figure", "fedguard", "phe", "gain", "target"):
        table.add_column(
            column, justify="left" if column == "figure" else "right", no_wrap=True
        )

    for label, name, phe_name, target, fmt in _ROWS:
        ours = figures[name]
        theirs = figures[phe_name] if phe_name else None
        if name in _PHE_WIRE:
            theirs = _PHE_WIRE[name](int(figures["key_bits"]))
        ratio = _ratio(name, ours, theirs)
        shown = format(theirs, fmt) if theirs is not None else ""
        table.add_row(label, format(ours, fmt), shown, ratio, target)

    Console().print(table)
    Console().print(
        "Rates in values per second. phe: python-paillier, timed on "
        f"{figures['phe_subsample']} values, one ciphertext per value, same primes, "
        "same run."
    )


def _ratio(name: str, ours: float, theirs: float | None) -> str:
    if theirs is None:
        return ""
    better = theirs / ours if name == "wire_bytes_per_value" else ours / theirs
    return f"{better:,.0f}x"


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
