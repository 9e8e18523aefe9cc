"""``fedguard keys`` as an operator runs it: real subprocesses, real key files."""

import json
import stat
import subprocess
import sys
from pathlib import Path

from fedguard.crypto.keys import load_private_key


def _fedguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedguard", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_generate_then_show_gives_the_same_fingerprint(tmp_path: Path) -> None:
    generated = _fedguard("keys", "generate", "--dir", str(tmp_path))
    shown_private = _fedguard(
        "keys", "show", str(tmp_path / "private-key.json"), "--json"
    )
    shown_public = _fedguard(
        "keys", "show", str(tmp_path / "public-key.json"), "--json"
    )

    assert generated.returncode == 0, generated.stderr
    private_key = load_private_key(tmp_path / "private-key.json")
    fingerprint = private_key.public_key.fingerprint
    assert f"fingerprint: {fingerprint}" in generated.stdout
    assert json.loads(shown_private.stdout) == {
        "kind": "private",
        "bits": 2048,
        "fingerprint": fingerprint,
    }
    assert json.loads(shown_public.stdout)["fingerprint"] == fingerprint
    assert stat.S_IMODE((tmp_path / "private-key.json").stat().st_mode) == 0o600
    everything = generated.stdout + generated.stderr + shown_private.stdout
    assert format(private_key.p, "x") not in everything


def test_existing_keys_are_not_replaced_without_force(tmp_path: Path) -> None:
    _fedguard("keys", "generate", "--dir", str(tmp_path))
    before = (tmp_path / "private-key.json").read_bytes()

    again = _fedguard("keys", "generate", "--dir", str(tmp_path))

    assert again.returncode == 2
    assert "already exists; pass --force" in again.stderr
    assert (tmp_path / "private-key.json").read_bytes() == before


def test_show_refuses_other_files_in_one_line(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"format": "something-else"}')

    missing = _fedguard("keys", "show", str(tmp_path / "absent.json"))
    foreign = _fedguard("keys", "show", str(other))

    assert missing.returncode == foreign.returncode == 2
    assert "does not exist" in missing.stderr
    assert "is not a fedguard key file" in foreign.stderr
    assert "Traceback" not in missing.stderr + foreign.stderr


def test_small_key_sizes_are_refused(tmp_path: Path) -> None:
    result = _fedguard("keys", "generate", "--dir", str(tmp_path), "--bits", "1024")

    assert result.returncode == 2
    assert "key size must be one of 2048, 3072, 4096 bits; got 1024" in result.stderr
    assert not (tmp_path / "private-key.json").exists()
