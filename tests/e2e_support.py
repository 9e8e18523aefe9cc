"""Helpers of the end-to-end tests that drive real server and agent processes."""

import time
from collections.abc import Callable
from typing import Any

from fedguard.simulate import ServerHandle

# Bound on every wait for a process or a round: generous, since the machine is shared.
WAIT = 120.0


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    """Poll ``condition`` until it returns something true; fail after ``WAIT``."""
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished(server: ServerHandle) -> bool:
    """Whether the server reports the federation finished."""
    with server.http() as http:
        return bool(http.get("/health").json()["finished"])
