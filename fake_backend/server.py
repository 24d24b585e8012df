"""Run an ASGI app with uvicorn on a loopback port and announce it.

Shared by ``python -m fake_backend`` and the benchmark's bare baselines, so
both run on the identical server stack (uvloop + httptools, websockets-sansio)
and print the same ready line that ``fake_backend.testing`` waits for.
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
