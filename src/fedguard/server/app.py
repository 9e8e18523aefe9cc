"""Running the orchestrator: transport checks, socket, uvicorn.

The server binds its socket itself, so that with ``port = 0`` the port the kernel
chose is known before serving; it writes the URL to ``endpoint.json`` in the state
directory for tools (``fedguard simulate``) that start it on a free port.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

from fedguard.errors import ConfigError
from fedguard.security.tls import TLSConfig, check_transport, server_ssl_kwargs
from fedguard.server.config import ServerConfig

logger = logging.getLogger(__name__)

ENDPOINT_FILE = "endpoint.json"


def tls_settings(config: ServerConfig, config_dir: Path | None) -> TLSConfig | None:
    """The ``[tls]`` section, relative paths taken from the config file's directory."""
    if not config.tls:
        return None
    return TLSConfig.from_mapping(config.tls, base_dir=config_dir)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6 by the address)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        raise ConfigError(
            f"server.host/port: cannot listen on {host}:{port}: {error.strerror}"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def endpoint_url(sock: socket.socket, *, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}"


def serve(
    config: ServerConfig, *, insecure_http: bool, config_dir: Path | None = None
) -> None:
    """Run the orchestrator until SIGINT or SIGTERM."""
    import uvicorn

    from fedguard.server.api import create_app
    from fedguard.server.orchestrator import Orchestrator

    tls = tls_settings(config, config_dir)
    check_transport(tls, insecure_http=insecure_http)
    orchestrator = Orchestrator(config)
    app = create_app(orchestrator)

    sock = bind_socket(config.server.host, config.server.port)
    serves_tls = tls is not None and tls.serves_tls
    url = endpoint_url(sock, tls=serves_tls)
    _write_endpoint(config.server.state_dir, url)
    logger.info("orchestrator listening on %s", url)

    ssl: dict[str, Any] = server_ssl_kwargs(tls) if tls and serves_tls else {}
    uvicorn_config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        **ssl,
    )
    try:
        uvicorn.Server(uvicorn_config).run(sockets=[sock])
    finally:
        sock.close()
        (config.server.state_dir / ENDPOINT_FILE).unlink(missing_ok=True)


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
