"""Fixtures shared by the whole suite."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedguard.crypto.keys import (
    PrivateKey,
    generate_private_key,
    unsafe_small_keys_for_tests,
)

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_DATA = REPOSITORY.parent / "shared" / "data"

# Small moduli make property tests of the arithmetic fast; they are never used
# where security matters and need the explicit test-only switch.
SMALL_KEY_BITS = 512


@pytest.fixture(scope="session")
def private_key_2048() -> PrivateKey:
    """One real-size key for the whole session: generating one costs ~0.1-1 s."""
    return generate_private_key(2048)


@pytest.fixture(scope="session")
def small_private_key() -> PrivateKey:
    with unsafe_small_keys_for_tests():
        return generate_private_key(SMALL_KEY_BITS)


@pytest.fixture
def small_keys_allowed() -> Iterator[None]:
    with unsafe_small_keys_for_tests():
        yield


@pytest.fixture
def loopback_server() -> Iterator[Callable[..., str]]:
    """Serve ASGI apps with uvicorn on 127.0.0.1 in threads; returns ``start``.

    ``start(app, **uvicorn_options)`` binds a free port, waits until the server
    accepts connections and returns its base URL (``https://`` when ``ssl_certfile``
    is given). Every server started is stopped when the test ends.
    """
    import socket
    import threading
    import time

    import uvicorn

    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: Any, **options: Any) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, log_level="warning", **options)
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        thread.start()
        started.append((server, thread))

        # A bounded wait for start-up, not a timing assertion.
        for _ in range(3000):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.01)
        assert server.started, "uvicorn did not start"
        scheme = "https" if options.get("ssl_certfile") else "http"
        return f"{scheme}://127.0.0.1:{port}"

    yield start

    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=30)
