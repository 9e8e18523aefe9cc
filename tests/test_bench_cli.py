"""``fedguard bench`` as a user runs it: a real subprocess."""

import json
import subprocess
import sys

import pytest

REQUIRED_KEYS = {
    "key_bits",
    "values",
    "threads",
    "encrypt_values_per_s",
    "aggregate_values_per_s",
    "decrypt_values_per_s",
    "wire_bytes_per_value",
    "phe_encrypt_values_per_s",
    "phe_decrypt_values_per_s",
    "thread_scaling",
}


def _fedguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedguard", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_bench_json_has_every_figure() -> None:
    result = _fedguard(
        "bench",
        "--values",
        "3000",
        "--contributors",
        "3",
        "--phe-subsample",
        "5",
        "--json",
    )

    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures.keys() >= REQUIRED_KEYS
    assert figures["key_bits"] == 2048 and figures["values"] == 3000
    assert 0 < figures["wire_bytes_per_value"] < 512
    for name in REQUIRED_KEYS - {
        "key_bits",
        "values",
        "threads",
        "wire_bytes_per_value",
    }:
        assert figures[name] > 0, name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--contributors", "1"], "--contributors must be >= 2; got 1"),
        (
            ["--key-bits", "1024"],
            "key size must be one of 2048, 3072, 4096 bits; got 1024",
        ),
        (["--values", "0"], "--values must be >= 1; got 0"),
    ],
)
def test_bench_refuses_bad_options_in_one_line(args: list[str], message: str) -> None:
    result = _fedguard("bench", *args)

    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"


def test_version_through_python_dash_m() -> None:
    result = _fedguard("--version")

    assert result.returncode == 0
    assert result.stdout.startswith("fedguard ")
