"""Formats, generation and hashing of fedguard's bearer secrets.

Three kinds of secret exist, each 32 bytes from :mod:`secrets` (43 URL-safe base64
characters):

- an enrollment token ``<token_id>.<secret>``, single use, issued by the operator;
- a client credential ``<client_id>.<secret>``, what an agent sends on every request;
- the admin token, a bare secret kept in the server's state directory.

The server stores SHA-256 digests only. A slow password hash (scrypt, Argon2) exists
to make guessing low-entropy passwords expensive; these secrets have 256 bits of
entropy, so an attacker holding the digests still has nothing to guess, and a fast
hash keeps per-request authentication cheap (a slow hash on every upload would itself
be a way to exhaust the server). Each kind is hashed under its own label, so a
digest of one kind can never be accepted as another. The identifier before the dot
locates the stored digest; the secret is then compared in constant time.
"""

import hashlib
import re
import secrets
from typing import Literal

SecretKind = Literal["enrollment", "client", "admin"]

SECRET_BYTES = 32

# Patterns in the dialect shared by Python, pydantic and OpenAPI: anchored, no
# look-around. Python callers use re.fullmatch so a trailing newline never passes.
SECRET_PATTERN = r"^[A-Za-z0-9_-]{43}$"  # noqa: S105
TOKEN_ID_PATTERN = r"^[0-9a-f]{16}$"  # noqa: S105
CLIENT_ID_PATTERN = r"^c-[0-9a-f]{16}$"
ENROLLMENT_TOKEN_PATTERN = r"^[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$"  # noqa: S105
CREDENTIAL_PATTERN = r"^c-[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

_SECRET = re.compile(SECRET_PATTERN.strip("^$"))
_TOKEN_ID = re.compile(TOKEN_ID_PATTERN.strip("^$"))
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN.strip("^$"))
_NAME = re.compile(NAME_PATTERN.strip("^$"))


def new_secret() -> str:
    """32 random bytes as URL-safe base64 without padding (43 characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def new_token_id() -> str:
    """The public identifier of an enrollment token."""
    return secrets.token_hex(8)


def new_client_id() -> str:
    """A fresh client_id; random, so that it reveals nothing about the cloud."""
    return f"c-{secrets.token_hex(8)}"


def digest(kind: SecretKind, secret: str) -> str:
    """The SHA-256 digest stored for ``secret``, as 64 hex characters."""
    return hashlib.sha256(f"fedguard-{kind}-v1\x00{secret}".encode()).hexdigest()


def is_secret(value: str) -> bool:
    """Whether ``value`` has the shape of a generated secret."""
    return _SECRET.fullmatch(value) is not None


def is_client_id(value: str) -> bool:
    """Whether ``value`` has the shape of a client_id."""
    return _CLIENT_ID.fullmatch(value) is not None


def is_name(value: str) -> bool:
    """Whether ``value`` is an acceptable client name (a label for operators)."""
    return _NAME.fullmatch(value) is not None


def split_enrollment_token(token: str) -> tuple[str, str] | None:
    """``(token_id, secret)`` of a well-formed enrollment token, else None."""
    token_id, _, secret = token.partition(".")
    if _TOKEN_ID.fullmatch(token_id) and is_secret(secret):
        return token_id, secret
    return None


def split_credential(credential: str) -> tuple[str, str] | None:
    """``(client_id, secret)`` of a well-formed client credential, else None."""
    client_id, _, secret = credential.partition(".")
    if is_client_id(client_id) and is_secret(secret):
        return client_id, secret
    return None
