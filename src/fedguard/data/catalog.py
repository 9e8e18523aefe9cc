"""The public datasets fedguard knows by checksum, and verified downloads of them.

fedguard never downloads anything on its own. ``fedguard datasets fetch`` is an
explicit operator action: it takes a base URL (a mirror the operator trusts, since the
dataset's publisher asks users to register), streams each file, checks its size and
SHA-256 against the values below before keeping it, and writes it atomically, so a
partial or altered download never reaches the data directory.

Checksums are of the uncompressed files; a ``.gz`` copy is verified by decompressing
it on the fly.
"""

import gzip
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from fedguard.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class KnownFile:
    """One file of a dataset with the size and SHA-256 of its uncompressed bytes."""

    dataset: str
    name: str
    size: int
    sha256: str
    rows: int


# NSL-KDD (M. Tavallaee, E. Bagheri, W. Lu, A. Ghorbani, "A Detailed Analysis of the
# KDD CUP 99 Data Set", IEEE CISDA 2009), files of the original UNB archive.
KNOWN_FILES = (
    KnownFile(
        "nsl-kdd",
        "KDDTrain+.txt",
        19_109_424,
        "1b86d2f957b33082081bba410fe129b475efebcc13c9014c3f447c8271aadf95",
        125_973,
    ),
    KnownFile(
        "nsl-kdd",
        "KDDTest+.txt",
        3_441_513,
        "fa46b0935342616aa83b7c2578db355b6a7aaabbc492248172c7a1e8b7ab8f84",
        22_544,
    ),
    KnownFile(
        "nsl-kdd",
        "KDDTrain+_20Percent.txt",
        3_822_033,
        "7ea86479faab5ca2190b7f18b4982fb058ce5bf2b46e0e1017d0d9ef90f9c16e",
        25_192,
    ),
)


def known_files(dataset: str) -> tuple[KnownFile, ...]:
    """The files fedguard knows for ``dataset``; refuses an unknown name."""
    files = tuple(f for f in KNOWN_FILES if f.dataset == dataset)
    if not files:
        names = sorted({f.dataset for f in KNOWN_FILES})
        raise ConfigError(f"dataset must be one of {', '.join(names)}; got {dataset!r}")
    return files


def _read_chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(_CHUNK):
        yield chunk


def _digest(chunks: Iterable[bytes]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file's content, decompressing a ``.gz`` file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            return _digest(_read_chunks(stream))  # type: ignore[arg-type]
    except (OSError, EOFError) as error:
        raise InputError(f"cannot read {path}: {error}") from error


def verify_file(path: Path, known: KnownFile) -> None:
    """Raise :class:`InputError` unless ``path`` holds exactly the known file."""
    size, sha256 = file_digest(path)
    if (size, sha256) != (known.size, known.sha256):
        raise InputError(
            f"{path} is not the published {known.name}: {size:,} bytes with SHA-256 "
            f"{sha256[:16]}…, expected {known.size:,} bytes with {known.sha256[:16]}…"
        )


def fetch_file(
    client: httpx.Client, base_url: str, known: KnownFile, directory: Path
) -> Path:
    """Download ``known`` from ``base_url`` into ``directory``, verified, atomically."""
    url = base_url.rstrip("/") + "/" + known.name
    directory.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{known.name}.")
    try:
        with os.fdopen(descriptor, "wb") as output:
            size, sha256 = _stream_to(client, url, known, output)
        if (size, sha256) != (known.size, known.sha256):
            raise InputError(
                f"download of {url} does not match the published {known.name} "
                f"(SHA-256 {sha256[:16]}…, expected {known.sha256[:16]}…); "
                "nothing was kept"
            )
        target = directory / known.name
        os.replace(temporary, target)
        return target
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _stream_to(
    client: httpx.Client, url: str, known: KnownFile, output: BinaryIO
) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise InputError(f"{url} answered HTTP {response.status_code}")
            for chunk in response.iter_bytes(_CHUNK):
                size += len(chunk)
                if size > known.size:
                    raise InputError(
                        f"{url} sent more than the {known.size:,} bytes of "
                        f"{known.name}; nothing was kept"
                    )
                digest.update(chunk)
                output.write(chunk)
    except httpx.HTTPError as error:
        raise InputError(f"cannot download {url}: {error}") from error
    output.flush()
    os.fsync(output.fileno())
    return size, digest.hexdigest()
