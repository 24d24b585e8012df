"""An nginx edge on loopback: TLS and HTTP/2 in front of the fake backend, as a CDN or load balancer is.

Debian's nginx (``make nginx`` installs it), started by the test with a
generated config and a self-signed certificate (``tests.support.tls``), one
``server`` per profile on its own port:

- ``passthrough``: every byte passed on as it comes (``proxy_buffering off``,
  no compression): what a well-configured streaming edge does;
- ``buffering``: ``proxy_buffering on`` and gzip for the JSON types, the two
  edge settings that hold streamed bodies;
- ``http1-only``: pass-through, but HTTP/1.1 only (ALPN offers no ``h2``).

Clients speak HTTP/2 (ALPN ``h2``) or HTTP/1.1 to nginx; nginx speaks
HTTP/1.1 with keep-alive to the backend and passes websocket upgrades
(Socket.io), with the client's ``Host`` and ``X-Forwarded-Proto``: a
browser's websocket carries an ``Origin`` that python-engineio checks
against them (a proxy that rewrites ``Host`` gets the browser a 403).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from tests.support.loopback import free_port
from tests.support.tls import self_signed_certificate

NGINX: Final = Path("/usr/sbin/nginx")
#: profile -> (speaks HTTP/2, location directives)
PROFILES: Final = {
    "passthrough": (
        True,
        """
            proxy_buffering off;
            gzip off;""",
    ),
    "buffering": (
        True,
        """
            proxy_buffering on;
            gzip on;
            gzip_proxied any;
            gzip_types application/x-ndjson application/json;""",
    ),
    "http1-only": (False, "\n            proxy_buffering off;"),
}

CONFIG: Final = """\
daemon off;
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream backend {{ server {upstream}; keepalive 32; }}
{servers}
}}
"""
SERVER: Final = """\
    server {{
        listen 127.0.0.1:{port} ssl{http2};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 300s;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;{profile}
        }}
    }}
"""


@dataclass(frozen=True)
class Edge:
    """A running nginx: the https base URL of each profile and the certificate to trust."""

    urls: dict[str, str]
    ca_file: Path
    directory: Path

    def log_tail(self) -> str:
        try:
            return (self.directory / "error.log").read_text()[-2000:]
        except OSError:
            return ""


def available() -> bool:
    return NGINX.exists() and os.access(NGINX, os.X_OK)


@contextmanager
def start_edge(upstream_url: str, directory: Path, profiles: Iterable[str] = tuple(PROFILES)) -> Iterator[Edge]:
    """nginx in front of ``upstream_url`` (an http:// base URL) until the block ends."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed_certificate(directory, "edge")
    upstream = urlsplit(upstream_url).netloc
    ports = {name: free_port() for name in profiles}
    servers = "".join(
        SERVER.format(
            port=port, http2=" http2" if PROFILES[name][0] else "", cert=cert, key=key, profile=PROFILES[name][1]
        )
        for name, port in ports.items()
    )
    user = "user root root;" if os.geteuid() == 0 else ""  # workers can read what the test wrote
    config = directory / "nginx.conf"
    config.write_text(CONFIG.format(user=user, dir=directory, upstream=upstream, servers=servers))
    process = subprocess.Popen(
        [str(NGINX), "-c", str(config), "-e", str(directory / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    edge = Edge({name: f"https://127.0.0.1:{port}" for name, port in ports.items()}, cert, directory)
    try:
        deadline = time.monotonic() + 15
        for port in ports.values():
            while not _listening(port):
                if process.poll() is not None:
                    err = process.stderr.read() if process.stderr else ""
                    raise RuntimeError(f"nginx exited {process.returncode}: {err}")
                assert time.monotonic() < deadline, f"nginx did not listen on {port}: {edge.log_tail()}"
                time.sleep(0.05)
        yield edge
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
