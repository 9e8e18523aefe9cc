"""``fedguard datasets``: checksums of the real files and verified downloads.

Downloads come from a plain HTTP server the test starts on 127.0.0.1, serving copies
of the shared NSL-KDD files from a temporary directory.
"""

import functools
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TEST_FILE = "KDDTest+.txt"


def _fedguard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedguard", *args],
        capture_output=True,
        text=True,
        check=False,
    )


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP mirror serving the files of ``tmp_path / 'mirror'``."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


def test_shared_files_match_their_published_checksums(nsl_kdd_dir: Path) -> None:
    result = _fedguard("datasets", "verify", "nsl-kdd", "--data-dir", str(nsl_kdd_dir))

    assert result.returncode == 0, result.stderr
    assert "verified KDDTest+.txt" in result.stdout
    assert "verified KDDTrain+.txt.gz" in result.stdout


def test_an_altered_file_fails_verification(nsl_kdd_dir: Path, tmp_path: Path) -> None:
    altered = tmp_path / TEST_FILE
    data = bytearray((nsl_kdd_dir / TEST_FILE).read_bytes())
    data[100] ^= 1
    altered.write_bytes(bytes(data))

    result = _fedguard("datasets", "verify", "nsl-kdd", "--data-dir", str(tmp_path))

    assert result.returncode == 2
    assert f"{altered} is not the published {TEST_FILE}" in result.stderr


def test_fetch_keeps_a_verified_copy(
    nsl_kdd_dir: Path, mirror: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = mirror
    shutil.copy(nsl_kdd_dir / TEST_FILE, root / TEST_FILE)
    target = tmp_path / "data"

    result = _fedguard(
        "datasets",
        "fetch",
        "nsl-kdd",
        "--base-url",
        url,
        "--dir",
        str(target),
        "--file",
        TEST_FILE,
    )

    assert result.returncode == 0, result.stderr
    assert (target / TEST_FILE).read_bytes() == (nsl_kdd_dir / TEST_FILE).read_bytes()
    assert sorted(p.name for p in target.iterdir()) == [TEST_FILE]


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend", "missing"])
def test_fetch_keeps_nothing_that_fails(
    nsl_kdd_dir: Path, mirror: tuple[str, Path], tmp_path: Path, damage: str
) -> None:
    url, root = mirror
    data = (nsl_kdd_dir / TEST_FILE).read_bytes()
    served = {
        "flip": data[:10] + bytes([data[10] ^ 1]) + data[11:],
        "truncate": data[:-100],
        "extend": data + b"extra row\n",
    }
    if damage in served:
        (root / TEST_FILE).write_bytes(served[damage])
    target = tmp_path / "data"

    result = _fedguard(
        "datasets",
        "fetch",
        "nsl-kdd",
        "--base-url",
        url,
        "--dir",
        str(target),
        "--file",
        TEST_FILE,
    )

    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert not target.exists() or list(target.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["fetch", "nsl-kdd", "--base-url", "ftp://x", "--dir", "d"],
            "--base-url must",
        ),
        (
            ["fetch", "kdd99", "--base-url", "http://127.0.0.1:9", "--dir", "d"],
            "dataset must be one of nsl-kdd; got 'kdd99'",
        ),
        (
            [
                "fetch",
                "nsl-kdd",
                "--base-url",
                "http://127.0.0.1:9",
                "--dir",
                "d",
                "--file",
                "x.txt",
            ],
            "--file must be one of",
        ),
    ],
)
def test_bad_options_are_named(args: list[str], message: str) -> None:
    result = _fedguard("datasets", *args)

    assert result.returncode == 2
    assert message in result.stderr
