"""Request body caps, enforced before the body is read.

An update frame has a fixed size once the federation is fixed: a header and one
ciphertext of ``2 * key_bits`` bits per packed value group. :func:`max_upload_bytes`
computes it; :class:`BodySizeLimitMiddleware` refuses anything larger with HTTP 413,
first from the declared ``Content-Length`` (nothing is read), then by counting the
bytes of a streamed body (reading stops at the first byte over the cap), so that a
client can never make the server buffer more than the cap.
"""

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedguard.errors import ConfigError, PayloadTooLargeError

logger = logging.getLogger(__name__)

# JSON requests (enrollment, admin, metrics) are small; 64 KiB leaves ample room.
DEFAULT_MAX_BODY_BYTES = 64 * 1024

BodyLimit = int | Callable[[str, str], int]


def ciphertext_bytes(key_bits: int) -> int:
    """Bytes of one fixed-width Paillier ciphertext (an element of Z*_{n^2})."""
    if key_bits < 1:
        raise ConfigError(f"key_bits must be >= 1; got {key_bits}")
    return (2 * key_bits + 7) // 8


def max_upload_bytes(key_bits: int, ciphertexts: int, header_bytes: int) -> int:
    """The exact size of an update frame: ``header_bytes`` plus ``ciphertexts``
    fixed-width ciphertexts for a ``key_bits``-bit modulus."""
    if ciphertexts < 1:
        raise ConfigError(f"ciphertexts must be >= 1; got {ciphertexts}")
    if header_bytes < 0:
        raise ConfigError(f"header_bytes must be >= 0; got {header_bytes}")
    return header_bytes + ciphertexts * ciphertext_bytes(key_bits)


class _BodyTooLargeError(PayloadTooLargeError):
    """Raised into the application when a streamed body passes the cap."""


class BodySizeLimitMiddleware:
    """ASGI middleware answering 413 to any request body larger than its cap.

    ``max_bytes`` is one cap for every request or a callable ``(method, path) ->
    cap`` consulted per request, so the upload route can follow the federation's
    current key size while JSON routes keep a small cap.
    """

    def __init__(self, app: ASGIApp, max_bytes: BodyLimit = DEFAULT_MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    def _cap(self, scope: Scope) -> int:
        if callable(self.max_bytes):
            return self.max_bytes(scope["method"], scope["path"])
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        cap = self._cap(scope)
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await _refuse(send, scope, cap, f"{declared} bytes")
            return

        await _LimitedRequest(self.app, cap).run(scope, receive, send)


class _LimitedRequest:
    """One request whose streamed body is counted against ``cap``."""

    def __init__(self, app: ASGIApp, cap: int) -> None:
        self.app = app
        self.cap = cap
        self.received = 0
        self.exceeded = False
        self.response_started = False
        self._over = f"more than {cap} bytes"

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.cap:
                    self.exceeded = True
                    raise _BodyTooLargeError(_message(self.cap, self._over))
            return message

        async def guarded_send(message: Message) -> None:
            # Once over the cap, whatever the application answers (its handling of
            # the exception, possibly a 400 or 500) is replaced by the 413 below.
            if self.exceeded:
                return
            self.response_started = True
            await send(message)

        with contextlib.suppress(_BodyTooLargeError):
            await self.app(scope, limited_receive, guarded_send)

        if self.exceeded and not self.response_started:
            await _refuse(send, scope, self.cap, self._over)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _message(cap: int, received: str) -> str:
    return f"request body must be at most {cap} bytes; got {received}"


async def _refuse(send: Send, scope: Scope, cap: int, received: str) -> None:
    logger.debug(
        "refused %s %s: body over %d bytes", scope["method"], scope["path"], cap
    )
    body = json.dumps({"error": _message(cap, received)}).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        # The rest of an oversized body is never read; the connection cannot be
        # reused for another request.
        (b"connection", b"close"),
    ]
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": PayloadTooLargeError.http_status,
        "headers": headers,
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
