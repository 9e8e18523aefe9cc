"""The server's state directory: checked first, locked while serving, undone on error.

``fedguard server`` validates its whole configuration before it creates anything, and
a start-up that fails after that point leaves the state directory exactly as it was:
:meth:`StateDirectory.rollback` removes every entry the failed start created, and the
directory itself (with any parents) if it did not exist.

While a server runs it holds an exclusive ``flock`` on ``server.lock`` in the
directory, so that a second server on the same state (two writers of one key and one
database) is refused at once. The lock dies with the process, however it ends; the
file stays, because removing a lock file that another process may just have opened
would let two servers lock two different files.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path

from fedguard.errors import ConfigError

logger = logging.getLogger(__name__)

LOCK_FILE = "server.lock"
ENDPOINT_FILE = "endpoint.json"


def check_state_dir(path: Path) -> None:
    """Refuse a state directory that is a file or lies under one; create nothing."""
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"server.state_dir must be a directory; {str(path)!r} is a file"
        )
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise ConfigError(
                    f"server.state_dir {str(path)!r} lies under {str(ancestor)!r}, "
                    "which is not a directory"
                )
            return


class StateDirectory:
    """Create and lock the state directory; undo a start-up that failed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._created_dirs: list[Path] = []
        # The entries found before this start, once known; nothing else is removed.
        self._existing: set[str] | None = None
        self._lock: int | None = None

    def acquire(self) -> None:
        """Create the directory (0700) if needed and take the server lock."""
        self._create()
        try:
            self._existing = set(os.listdir(self.path))
            self._take_lock()
            self.path.chmod(0o700)
        except BaseException:
            if self._lock is None and self._existing is not None:
                self._existing.add(LOCK_FILE)  # another server's lock: keep it
            self.rollback()
            raise

    def rollback(self) -> None:
        """Remove what this start created, then the directories it created."""
        self.release()
        if self._existing is not None and self.path.is_dir():
            for name in sorted(set(os.listdir(self.path)) - self._existing):
                entry = self.path / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        for directory in reversed(self._created_dirs):
            try:
                directory.rmdir()
            except OSError:
                break
        self._created_dirs.clear()

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    def _create(self) -> None:
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        try:
            for directory in reversed(missing):
                directory.mkdir(mode=0o700)
                self._created_dirs.append(directory)
        except OSError as error:
            self.rollback()
            raise ConfigError(
                f"server.state_dir {str(self.path)!r} cannot be created: "
                f"{error.strerror}"
            ) from None

    def _take_lock(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            descriptor = os.open(self.path / LOCK_FILE, flags, 0o600)
        except OSError as error:
            raise ConfigError(
                f"server.state_dir {str(self.path)!r} is not writable: {error.strerror}"
            ) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise ConfigError(self._busy_message()) from None
        self._lock = descriptor

    def _busy_message(self) -> str:
        owner = "another fedguard server"
        pid = _endpoint_pid(self.path)
        if pid is not None:
            owner += f" (pid {pid})"
        return (
            f"{owner} is running on the state directory {str(self.path)!r}; stop "
            "it first, or give this server another --state-dir"
        )


def _endpoint_pid(state_dir: Path) -> int | None:
    try:
        data = json.loads((state_dir / ENDPOINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    return pid if isinstance(pid, int) else None
