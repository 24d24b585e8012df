"""Run an ASGI app on a loopback port and announce it: uvicorn, or Hypercorn for HTTP/2.

Shared by ``python -m fake_backend`` and the benchmark's bare baselines, so
both run on the identical server stack (uvloop + httptools, websockets-sansio)
and print the same ready line that ``fake_backend.process`` waits for.

``--http2`` serves with Hypercorn instead (uvicorn speaks HTTP/1.1 only):
HTTP/1.1 and HTTP/2 on one port, HTTP/2 by prior knowledge on plain TCP
(``h2c``) and by ALPN over TLS, websockets (Socket.io) over HTTP/1.1 as before.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass
from typing import Any

import uvicorn
import uvloop

from fake_backend.faults import install_log_filter

READY_PREFIX = "fake_backend listening on "


def bind(host: str, port: int) -> socket.socket:
    """A bound socket; port 0 picks a free port (raises OSError when taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A PEM certificate (chain) and its private key: the server speaks https and wss."""

    certfile: str
    keyfile: str


def base_url(sock: socket.socket, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def _serve(app: Any, sock: socket.socket, log_level: str, tls: TLSFiles | None) -> None:
    config = uvicorn.Config(
        app,
        http="httptools",
        ws="websockets-sansio",
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=2,
        backlog=2048,
        ssl_certfile=tls.certfile if tls else None,
        ssl_keyfile=tls.keyfile if tls else None,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            serving.result()  # startup failed: uvicorn already logged why
            sys.exit(1)
        await asyncio.sleep(0.005)
    print(READY_PREFIX + base_url(sock, tls is not None), flush=True)
    await serving


def serve(app: Any, sock: socket.socket, log_level: str = "warning", tls: TLSFiles | None = None) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's graceful shutdown, 2 s for open streams)."""
    install_log_filter()
    uvloop.run(_serve(app, sock, log_level, tls))


def serve_http2(app: Any, sock: socket.socket, log_level: str = "warning", tls: TLSFiles | None = None) -> None:
    """Serve with Hypercorn (HTTP/1.1 + HTTP/2) until SIGINT/SIGTERM (2 s grace for open streams).

    With ``tls`` the port speaks TLS (ALPN ``h2``, ``http/1.1``).  A certificate
    that does not load fails here (OSError), before the ready line.
    """
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    install_log_filter()
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.loglevel = log_level.upper()
    config.accesslog = None
    config.graceful_timeout = 2.0
    config.backlog = 2048
    if tls is not None:
        config.certfile, config.keyfile = tls.certfile, tls.keyfile
        config.create_ssl_context()  # raises for an unusable certificate or key
    sock.listen(config.backlog)  # connections queue from now on; Hypercorn accepts them
    print(READY_PREFIX + base_url(sock, tls is not None), flush=True)
    uvloop.run(hypercorn_serve(app, config))
