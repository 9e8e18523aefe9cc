"""Durable, atomic appends of JSON lines to files that only the owner may read.

Used for the blocklist and the agent's quarantine file. Each record is written with
one ``write`` on a descriptor opened with ``O_APPEND`` and then ``fsync``-ed, so that
on a local file system concurrent appends from threads or processes never interleave
and a record is on disk when the call returns. A lock per path serialises the threads
of one process, so even a short write (which POSIX allows but Linux does not produce
for regular files) cannot be interleaved by them. A crash in the middle of a write
can leave a truncated last line; readers should skip a final line that does not
parse. Values JSON cannot represent (NumPy scalars, paths) are written as plain
numbers or strings.
"""

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

_FILE_MODE = 0o600
_DIR_MODE = 0o700

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def append_json_line(path: Path, record: Mapping[str, object]) -> None:
    """Append ``record`` as one JSON line to ``path`` (created 0600 if needed)."""
    append_json_lines(path, [record])


def append_json_lines(path: Path, records: Sequence[Mapping[str, object]]) -> None:
    """Append ``records`` in one write, so that they land together or not at all."""
    if not records:
        return
    lines = [
        json.dumps(r, sort_keys=True, separators=(",", ":"), default=_plain)
        for r in records
    ]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)

    with _lock_for(path):
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        descriptor = os.open(path, flags, _FILE_MODE)
        try:
            # A file created earlier by another tool may have wider permissions.
            os.fchmod(descriptor, _FILE_MODE)
            _write_all(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _plain(value: object) -> object:
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(descriptor, view)
        view = view[written:]


def _lock_for(path: Path) -> threading.Lock:
    key = path.resolve()
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())
