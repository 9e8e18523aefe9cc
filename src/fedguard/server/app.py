"""Running the orchestrator: start-up checks, socket, state lock, uvicorn.

Start-up goes from what changes nothing to what does: the whole configuration is
validated (transport, every section, the database URL), the socket is bound, then
the state directory is created and locked and only then the key, the admin token and
the database are created. A failure at any point leaves the state directory as it
was (see :mod:`fedguard.server.statedir`).

The server binds its socket itself, so that with ``port = 0`` the port the kernel
chose is known before serving; it writes the URL to ``endpoint.json`` in the state
directory for tools (``fedguard simulate``) that start it on a free port.

SIGTERM and SIGINT shut the server down gracefully (requests in flight finish, the
round driver stops, ``endpoint.json`` is removed) and ``serve`` returns normally, so
that the process exits with status 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

from fedguard.errors import ConfigError, FedguardError
from fedguard.security.tls import TLSConfig, check_transport, server_ssl_kwargs
from fedguard.server.config import ServerConfig
from fedguard.server.statedir import ENDPOINT_FILE as ENDPOINT_FILE
from fedguard.server.statedir import StateDirectory

if TYPE_CHECKING:
    from fedguard.server.orchestrator import Orchestrator

logger = logging.getLogger(__name__)

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class FederationStoppedError(FedguardError):
    """The round driver stopped the federation (too many failed rounds)."""

    http_status = 503


def tls_settings(config: ServerConfig, config_dir: Path | None) -> TLSConfig | None:
    """The ``[tls]`` section, relative paths taken from the config file's directory."""
    if not config.tls:
        return None
    tls = TLSConfig.from_mapping(config.tls, base_dir=config_dir)
    for name in ("cert_file", "key_file", "ca_file"):
        path = getattr(tls, name)
        if path is not None and path.is_dir():
            raise ConfigError(
                f"[tls] {name} must be a PEM file; {str(path)!r} is a directory"
            )
    return tls


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6 by the address)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
    except OSError as error:
        raise _cannot_listen(host, port, error.strerror) from None
    except UnicodeError:
        raise _cannot_listen(host, port, "not a valid host name") from None

    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise _cannot_listen(host, port, error.strerror) from None
    sock.set_inheritable(True)
    return sock


def _cannot_listen(host: str, port: int, reason: str | None) -> ConfigError:
    return ConfigError(f"server.host/port: cannot listen on {host}:{port}: {reason}")


def endpoint_url(sock: socket.socket, *, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def serve(
    config: ServerConfig, *, insecure_http: bool, config_dir: Path | None = None
) -> None:
    """Run the orchestrator until SIGINT or SIGTERM, or until it stops itself.

    Raises
    ------
    FederationStoppedError
        When the round driver stopped the federation; the server shut down first.
    """
    from fedguard.server.orchestrator import check_startup

    tls = tls_settings(config, config_dir)
    checked = check_startup(config)
    check_transport(tls, insecure_http=insecure_http)
    sock = bind_socket(config.server.host, config.server.port)
    state = StateDirectory(config.server.state_dir)
    try:
        state.acquire()
        orchestrator = _create_orchestrator(config, checked, state)
        _run(orchestrator, sock, tls)
    finally:
        sock.close()
        state.release()

    if orchestrator.driver.halted is not None:
        raise FederationStoppedError(
            "the federation stopped after too many failed attempts of one round; "
            "see the error above, revoke the suspicious clients and start again"
        )


def _create_orchestrator(
    config: ServerConfig, checked: Any, state: StateDirectory
) -> Orchestrator:
    from fedguard.server.orchestrator import Orchestrator

    try:
        return Orchestrator(config, checked=checked)
    except BaseException:
        state.rollback()
        raise


def _run(
    orchestrator: Orchestrator, sock: socket.socket, tls: TLSConfig | None
) -> None:
    from fedguard.server.api import create_app

    serves_tls = tls is not None and tls.serves_tls
    ssl: dict[str, Any] = server_ssl_kwargs(tls) if tls and serves_tls else {}
    server = GracefulServer(
        uvicorn.Config(
            create_app(orchestrator),
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            **ssl,
        )
    )
    orchestrator.driver.on_halt = lambda _reason: server.request_exit()

    state_dir = orchestrator.config.server.state_dir
    url = endpoint_url(sock, tls=serves_tls)
    _write_endpoint(state_dir, url)
    logger.info("orchestrator listening on %s", url)
    try:
        server.run(sockets=[sock])
    finally:
        (state_dir / ENDPOINT_FILE).unlink(missing_ok=True)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, ending ``run`` normally after SIGINT or SIGTERM.

    uvicorn re-raises a captured signal once it has shut down, which kills the
    process with that signal; here the graceful shutdown is the end of the story.
    A second SIGINT still forces the shutdown, as in uvicorn.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in SHUTDOWN_SIGNALS
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            logger.info("received %s; shutting down", signal.Signals(sig).name)
        self.handle_exit(sig, frame)

    def request_exit(self) -> None:
        """Shut down as after a signal (safe to call from any thread)."""
        self.should_exit = True


def _write_endpoint(state_dir: Path, url: str) -> None:
    path = state_dir / ENDPOINT_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"url": url, "pid": os.getpid()}) + "\n")
    os.replace(temporary, path)


def read_endpoint(state_dir: Path) -> dict[str, Any] | None:
    """The URL and process id a running server wrote, if any."""
    try:
        data = json.loads((state_dir / ENDPOINT_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
