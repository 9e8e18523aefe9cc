"""The exceptions fedguard raises on purpose.

One small hierarchy: every class carries the HTTP status the server answers with, so
that the API maps errors in one place and a remote caller never sees a stack trace.
Messages say what was wrong, what is accepted and, where it helps, how to fix it.
Authentication and decryption failures deliberately say nothing more.
"""


class FedguardError(Exception):
    """Base class of all deliberate fedguard errors."""

    http_status = 400


class ConfigError(FedguardError):
    """A setting, option or configuration file is invalid."""


class InputError(FedguardError):
    """Data handed to fedguard (a vector, a file, a request) is invalid."""


class DataFormatError(InputError):
    """A data file has a malformed row or column."""


class CryptoError(FedguardError):
    """A key, ciphertext or plaintext violates the scheme's requirements."""


class KeyMismatchError(CryptoError):
    """Something was made for a different public key (fingerprint mismatch)."""


class FrameError(InputError):
    """A binary wire frame is malformed, truncated, oversized or of another version."""


class CapacityError(InputError):
    """More contributors or values than the packing parameters allow."""


class NotFoundError(FedguardError):
    """The named client, round or model version does not exist."""

    http_status = 404


class ConflictError(FedguardError):
    """The request contradicts state already stored (closed round, other bytes)."""

    http_status = 409


class AuthenticationError(FedguardError):
    """Missing or invalid credentials. The message never says which part failed."""

    http_status = 401


class PermissionDeniedError(FedguardError):
    """Valid credentials that do not allow this action."""

    http_status = 403


class PayloadTooLargeError(InputError):
    """A request body exceeds the limit derived from the federation."""

    http_status = 413


class RateLimitedError(FedguardError):
    """Too many requests from one client in the current window."""

    http_status = 429
