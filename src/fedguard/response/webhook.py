"""Signed webhook delivery with bounded retries.

Every delivery is an HTTP POST of a JSON body (``Content-Type: application/json``)
with three headers:

``X-Fedguard-Timestamp``
    Unix time in whole seconds at which this attempt was signed.
``X-Fedguard-Signature``
    ``sha256=`` followed by the lower-case hex HMAC-SHA256, keyed with the shared
    secret, of the bytes ``<timestamp> "." <body>``: the decimal timestamp exactly as
    sent in the header, one full stop, then the exact body bytes.
``X-Fedguard-Delivery``
    The action id; the same on every retry, so a receiver can drop duplicates.

A receiver recomputes the HMAC over the raw body it received, compares it in constant
time and rejects timestamps more than a few minutes from its own clock; a captured
request then cannot be replayed later, and a changed timestamp breaks the signature.
:func:`verify_signature` does exactly that.

A delivery succeeds on any 2xx answer. Connection failures, timeouts and the answers
408, 425, 429 and 5xx are retried up to ``retries`` times, waiting ``backoff``,
``2 * backoff``, ``4 * backoff`` … seconds (each capped at ``max_backoff``); any other
answer, including redirects (which would send the signed body elsewhere), fails at
once. The URL is never logged: chat webhooks carry their credential in the path.
"""

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Fedguard-Signature"
TIMESTAMP_HEADER = "X-Fedguard-Timestamp"
DELIVERY_HEADER = "X-Fedguard-Delivery"
SIGNATURE_PREFIX = "sha256="
DEFAULT_TOLERANCE = 300

_RETRIED_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class DeliveryResult:
    """How one webhook delivery ended."""

    delivered: bool
    attempts: int
    status_code: int | None
    detail: str


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``X-Fedguard-Signature`` value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode("ascii") + b"." + body
    digest = hmac.new(secret, message, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    secret: bytes,
    body: bytes,
    timestamp_header: str | None,
    signature_header: str | None,
    *,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> bool:
    """Whether a received request is authentic and fresh (receiver side)."""
    if not timestamp_header or not signature_header:
        return False
    if not timestamp_header.isascii() or not timestamp_header.isdigit():
        return False

    timestamp = int(timestamp_header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False

    expected = sign(secret, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature_header.encode())


def deliver(
    client: httpx.Client,
    url: str,
    body: bytes,
    secret: bytes,
    *,
    delivery_id: str,
    retries: int,
    backoff: float,
    max_backoff: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> DeliveryResult:
    """POST ``body`` to ``url``, retrying transient failures at most ``retries`` times.

    The request timeout is the one configured on ``client``.
    """
    host = urlsplit(url).hostname or "?"
    result = DeliveryResult(False, 0, None, "not attempted")
    for attempt in range(1, retries + 2):
        if attempt > 1:
            sleep(min(max_backoff, backoff * 2 ** (attempt - 2)))

        result, retry = _attempt(client, url, body, secret, delivery_id, attempt, clock)
        if not retry:
            break
        logger.debug(
            "webhook %s to %s: attempt %d failed (%s)",
            delivery_id,
            host,
            attempt,
            result.detail,
        )
    return result


def _attempt(
    client: httpx.Client,
    url: str,
    body: bytes,
    secret: bytes,
    delivery_id: str,
    attempt: int,
    clock: Callable[[], float],
) -> tuple[DeliveryResult, bool]:
    timestamp = int(clock())
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        DELIVERY_HEADER: delivery_id,
    }
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.TransportError as error:
        return DeliveryResult(False, attempt, None, type(error).__name__), True

    status = response.status_code
    if 200 <= status < 300:
        return DeliveryResult(True, attempt, status, f"HTTP {status}"), False
    retry = status >= 500 or status in _RETRIED_STATUSES
    return DeliveryResult(False, attempt, status, f"HTTP {status}"), retry
