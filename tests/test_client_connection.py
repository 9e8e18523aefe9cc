"""The agent's HTTP client against real loopback servers: retries, errors, stops."""

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from fedguard.client.connection import (
    Connection,
    RetryPolicy,
    ServerUnreachableError,
    StopRequested,
)
from fedguard.errors import (
    AuthenticationError,
    ConfigError,
    ConflictError,
    NotFoundError,
)
from fedguard.security.tls import client_ssl_context, init_certificates

FAST = RetryPolicy(base=0.05, cap=0.2, retry_for=30.0)


class Handler(BaseHTTPRequestHandler):
    """Answers by path: /health 200, /busy 503 twice then 200, errors by status."""

    busy_left = 2

    def do_GET(self) -> None:
        if self.path == "/busy" and Handler.busy_left > 0:
            Handler.busy_left -= 1
            self._send(503, {"error": "busy"})
        elif self.path.startswith("/status/"):
            status = int(self.path.rsplit("/", 1)[1])
            self._send(status, {"error": f"answer {status}"})
        else:
            self._send(200, {"status": "ok"})

    def _send(self, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def running() -> Iterator[str]:
    Handler.busy_left = 2
    server = serve(0)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_waits_for_a_server_that_starts_late() -> None:
    port = free_port()
    late: list[ThreadingHTTPServer] = []
    timer = threading.Timer(0.5, lambda: late.append(serve(port)))
    timer.start()
    try:
        with Connection(f"http://127.0.0.1:{port}", retry=FAST) as connection:
            assert connection.health() == {"status": "ok"}
    finally:
        timer.join()
        for server in late:
            server.shutdown()
            server.server_close()


def test_gives_up_after_its_retry_budget() -> None:
    policy = RetryPolicy(base=0.05, cap=0.1, retry_for=0.5)

    with (
        Connection(f"http://127.0.0.1:{free_port()}", retry=policy) as connection,
        pytest.raises(ServerUnreachableError, match="did not answer GET /health"),
    ):
        connection.health()


def test_retries_service_unavailable(running: str) -> None:
    with Connection(running, retry=FAST) as connection:
        assert connection._json("GET", "/busy") == {"status": "ok"}

    assert Handler.busy_left == 0


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AuthenticationError), (404, NotFoundError), (409, ConflictError)],
)
def test_error_statuses_become_fedguard_errors(
    running: str, status: int, error: type[Exception]
) -> None:
    with (
        Connection(running, retry=FAST) as connection,
        pytest.raises(error, match=f"server answered {status}: answer {status}"),
    ):
        connection._json("GET", f"/status/{status}")


def test_a_stop_request_ends_the_wait() -> None:
    stop = threading.Event()
    policy = RetryPolicy(base=5.0, cap=5.0, retry_for=60.0)
    threading.Timer(0.2, stop.set).start()

    with (
        Connection(f"http://127.0.0.1:{free_port()}", retry=policy, stop=stop) as c,
        pytest.raises(StopRequested, match="interrupted while waiting"),
    ):
        c.health()


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0)

    delays = [policy.delay(attempt) for attempt in range(8)]

    assert 0.25 <= delays[0] <= 0.5
    assert all(2.0 <= delay <= 4.0 for delay in delays[3:])


def test_an_untrusted_certificate_fails_at_once(tmp_path: Path) -> None:
    served = init_certificates(tmp_path / "server-ca")
    foreign = init_certificates(tmp_path / "other-ca")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(served.server_cert, served.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    http = httpx.Client(base_url=url, verify=client_ssl_context(foreign.ca_cert))
    patient = RetryPolicy(base=5.0, cap=5.0, retry_for=300.0)

    try:
        with (
            Connection(url, retry=patient, client=http, ca_file=foreign.ca_cert) as c,
            pytest.raises(ConfigError, match="TLS certificate is not trusted"),
        ):
            c.health()
    finally:
        server.shutdown()
        server.server_close()
