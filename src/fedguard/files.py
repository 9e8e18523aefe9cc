"""Files written atomically, and files that hold secrets.

Secrets (private keys, tokens, credentials) are written mode 0600 through a
temporary file in the same directory, so a reader sees the old or the new content
and never a partial one, and the secret is never readable by others, even briefly.
"""

import os
import tempfile
from pathlib import Path

from fedguard.errors import ConfigError


def write_file_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Replace ``path`` with ``data``, ending with permissions ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600; the mode is widened only after writing.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_secret_file(path: Path, data: bytes) -> None:
    """Write a secret, readable and writable by its owner only (0600)."""
    write_file_atomically(path, data, mode=0o600)


def read_secret_file(path: Path) -> bytes:
    """Read a secret, refusing a file that other users can read or write.

    A secret that others could read must be treated as leaked, and one that others
    could write could have been replaced; either way the fix is the operator's.
    """
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"{path} is accessible to other users (mode {mode:04o}); it holds a "
            f"secret and must be 0600: run `chmod 600 {path}`"
        )
    return path.read_bytes()
