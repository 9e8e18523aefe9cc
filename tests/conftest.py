"""Fixtures shared by the whole suite."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedguard.crypto.keys import (
    PrivateKey,
    generate_private_key,
    save_private_key,
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


class WebhookReceiver:
    """A real HTTP server on loopback that records webhook deliveries.

    ``statuses`` are answered in turn (the last one repeats); while ``gate`` is
    clear, requests wait for it (at most 30 s) before answering.
    """

    def __init__(self, statuses: list[int]) -> None:
        import http.server
        import threading

        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.arrived = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append((dict(self.headers.items()), body))
                receiver.arrived.set()
                receiver.gate.wait(timeout=30)
                turn = min(len(receiver.requests), len(receiver.statuses))
                status = receiver.statuses[turn - 1]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=30)


@pytest.fixture
def webhook_receiver() -> Iterator[Callable[..., WebhookReceiver]]:
    """Start loopback webhook receivers answering the given statuses."""
    started: list[WebhookReceiver] = []

    def start(*statuses: int) -> WebhookReceiver:
        receiver = WebhookReceiver(list(statuses) or [200])
        started.append(receiver)
        return receiver

    yield start

    for receiver in started:
        receiver.close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nobody listens on: the port was bound, then released."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/hook"


# --- NSL-KDD (read from ../shared/data, never copied into the repository) ---

NSL_KDD_DIR = SHARED_DATA / "nsl-kdd"
NSL_KDD_FILES = ("KDDTrain+.txt.gz", "KDDTest+.txt", "KDDTrain+_20Percent.txt")


@pytest.fixture(scope="session")
def nsl_kdd_dir() -> Path:
    """The shared NSL-KDD directory; its tests skip only if the files are absent."""
    missing = [name for name in NSL_KDD_FILES if not (NSL_KDD_DIR / name).is_file()]
    if missing:
        pytest.skip(
            f"NSL-KDD data not available: {', '.join(missing)} missing in {NSL_KDD_DIR}"
        )
    return NSL_KDD_DIR


@pytest.fixture(scope="session")
def kdd_train(nsl_kdd_dir: Path) -> Any:
    """KDDTrain+ parsed once per session (with attack families)."""
    from fedguard.data import load_nsl_kdd

    return load_nsl_kdd(nsl_kdd_dir / "KDDTrain+.txt.gz", families=True)


@pytest.fixture(scope="session")
def kdd_test(nsl_kdd_dir: Path) -> Any:
    """KDDTest+ parsed once per session (with attack families)."""
    from fedguard.data import load_nsl_kdd

    return load_nsl_kdd(nsl_kdd_dir / "KDDTest+.txt", families=True)


@pytest.fixture(scope="session")
def kdd_matrices(kdd_train: Any, kdd_test: Any) -> Any:
    """``(schema, X_train, y_train, X_test, y_test)`` with the fitted NSL-KDD schema."""
    from fedguard.data import nsl_kdd_schema

    schema = nsl_kdd_schema().fit(kdd_train)
    return (
        schema,
        schema.transform(kdd_train),
        kdd_train.labels,
        schema.transform(kdd_test),
        kdd_test.labels,
    )


@pytest.fixture
def key_file(tmp_path: Path, private_key_2048: PrivateKey) -> Path:
    """The session's 2048-bit key in a file, for servers started as subprocesses."""
    path = tmp_path / "federation-key.json"
    save_private_key(private_key_2048, path)
    return path
