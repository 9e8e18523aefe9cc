"""``fedguard certs`` as a user runs it: a real subprocess."""

import subprocess
import sys
from pathlib import Path

from cryptography import x509

FEDGUARD = [sys.executable, "-m", "fedguard"]


def fedguard(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FEDGUARD, *arguments], capture_output=True, text=True, timeout=120
    )


def test_init_creates_certificates_and_prints_the_tls_section(tmp_path: Path) -> None:
    directory = tmp_path / "certs"

    result = fedguard(
        "certs", "init", "--dir", str(directory), "--hostname", "fg.example.test"
    )

    assert result.returncode == 0, result.stderr
    assert "[tls]" in result.stdout
    assert f'cert_file = "{directory / "server.pem"}"' in result.stdout
    assert (directory / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    assert (directory / "server-key.pem").stat().st_mode & 0o777 == 0o600
    certificate = x509.load_pem_x509_certificate(
        (directory / "server.pem").read_bytes()
    )
    names = certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    assert names == ["localhost", "fg.example.test"]


def test_init_refuses_to_overwrite_then_force_replaces(tmp_path: Path) -> None:
    fedguard("certs", "init", "--dir", str(tmp_path))
    before = (tmp_path / "ca.pem").read_bytes()

    refused = fedguard("certs", "init", "--dir", str(tmp_path))
    forced = fedguard("certs", "init", "--dir", str(tmp_path), "--force")

    assert refused.returncode == 2
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith("error: refusing to overwrite existing")
    )
    assert "--force" in refused.stderr
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "ca.pem").read_bytes() != before


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    key_type = fedguard("certs", "init", "--dir", str(tmp_path), "--key-type", "dsa")
    days = fedguard("certs", "init", "--dir", str(tmp_path), "--days", "0")

    assert key_type.returncode == 2
    assert "error: --key-type must be 'ec' or 'rsa'; got 'dsa'" in key_type.stderr
    assert "error: days must be between 1 and 3650; got 0" in days.stderr
    assert list(tmp_path.iterdir()) == []


def test_renew_reissues_from_the_same_ca(tmp_path: Path) -> None:
    fedguard("certs", "init", "--dir", str(tmp_path))
    ca_before = (tmp_path / "ca.pem").read_bytes()
    server_before = (tmp_path / "server.pem").read_bytes()

    result = fedguard("certs", "renew", "--dir", str(tmp_path), "--days", "30")

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    assert (tmp_path / "server.pem").read_bytes() != server_before


def test_renew_without_a_ca_says_what_to_run(tmp_path: Path) -> None:
    result = fedguard("certs", "renew", "--dir", str(tmp_path))

    assert result.returncode == 2
    assert "ca.pem does not exist" in result.stderr
