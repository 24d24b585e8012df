"""Sockets for the protocol clients: connect (+ TLS), read a response head, one-shot requests.

Sockets come from gevent explicitly: the clients run inside Locust's gevent
hub, and explicit gevent sockets keep them cooperative even in a process that
was not monkey-patched (tests, benchmarks).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

import gevent
from gevent import select as gselect
from gevent import socket as gsocket
from gevent import ssl as gssl

from loadtests.protocol.errors import FramingError
from loadtests.protocol.http1 import (
    USER_AGENT,
    HeadReader,
    Origin,
    ResponseHead,
    encode_request,
    framing_for,
    merge_headers,
)
from stream_harness.contract.protocol import CANCEL_PATH

RECV_SIZE = 65536
#: A read loop hands the gevent hub a turn after this much work without one.
#: A ``recv`` that finds data waiting returns without switching greenlets, so
#: a peer that sends fast enough would otherwise keep timers, the other users
#: and the self-check from running at all.  Checked against the time a loop
#: takes after each read anyway; ``gevent.sleep(0)`` only when it is spent.
YIELD_AFTER_S: Final = 0.005


#: The sleep of a turn.  Not ``gevent.sleep(0)``: that only queues a callback,
#: and gevent runs up to 50 callbacks in a row before it looks at its timers
#: again, so a loop that yields that way every 5 ms still starves timers for
#: 250 ms.  A timer wakes up through the event loop's next iteration, after
#: the I/O, timers and callbacks already due.
_TURN_S: Final = 1e-6


def take_turn() -> float:
    """Let every other ready greenlet and due timer run; the time to yield again by.

    A timer due meanwhile (a phase deadline) raises in the caller from here.
    """
    gevent.sleep(_TURN_S)
    return time.perf_counter() + YIELD_AFTER_S


def make_ssl_context(verify: bool, ca_file: str | None = None) -> gssl.SSLContext:
    """A client TLS context speaking HTTP/1.1 only.

    ``ca_file`` (PEM) replaces the system's trust store, like curl's
    ``--cacert``: a private CA or a self-signed certificate.  ``verify=False``
    skips verification (``--insecure``).  A bad ``ca_file`` raises OSError or
    ssl.SSLError.
    """
    ctx = gssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = gssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def connect_error_text(exc: BaseException) -> str:
    """One line naming why a connection failed; a TLS failure says so in OpenSSL's words,
    e.g. ``TLS: certificate verify failed: self-signed certificate``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None)  # OpenSSL's code, e.g. WRONG_VERSION_NUMBER
        return f"TLS: {reason.replace('_', ' ').lower()}" if reason else f"TLS: {exc}"
    return f"{type(exc).__name__}: {exc}"


def open_connection(origin: Origin, timeout: float, ssl_context: gssl.SSLContext | None = None) -> gsocket.socket:
    """TCP connect (+ TLS handshake) within ``timeout``; raises OSError on failure."""
    sock = gsocket.create_connection((origin.host, origin.port), timeout=timeout)
    try:
        sock.setsockopt(gsocket.IPPROTO_TCP, gsocket.TCP_NODELAY, 1)
        if origin.is_tls:
            ctx = ssl_context if ssl_context is not None else make_ssl_context(True)
            sock = ctx.wrap_socket(sock, server_hostname=origin.host)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(slots=True)
class SimpleResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def recv_head(
    sock: gsocket.socket, deadline: float, buf: bytes = b"", skip_informational: bool = True
) -> tuple[ResponseHead, bytes]:
    """Read until a full response head is in; returns it and the bytes after it.

    Raises ``socket.timeout`` past ``deadline`` (a ``time.monotonic()`` value),
    FramingError on garbage, ConnectionError on EOF.
    """
    reader = HeadReader(keep_switching=skip_informational)
    found = reader.feed(buf)
    yield_at = time.perf_counter() + YIELD_AFTER_S
    while found is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise gsocket.timeout("timed out waiting for the response head")
        sock.settimeout(remaining)
        data = sock.recv(RECV_SIZE)
        if not data:
            raise ConnectionError("connection closed before the response head")
        found = reader.feed(data)
        if time.perf_counter() >= yield_at:
            yield_at = take_turn()
    return found


def simple_request(
    origin: Origin,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
    ssl_context: gssl.SSLContext | None = None,
    max_body: int = 64 * 1024 * 1024,
) -> SimpleResponse:
    """One request on a fresh connection (``Connection: close``), body read whole.

    For the small side requests (cancel, emit times), where timing does not
    matter.  The whole exchange is bounded by ``timeout``.  Raises OSError,
    FramingError.
    """
    deadline = time.monotonic() + timeout
    defaults = [
        ("Host", origin.host_header),
        ("User-Agent", USER_AGENT),
        ("Accept", "*/*"),
        ("Accept-Encoding", "identity"),
        ("Connection", "close"),
    ]
    if body is not None:
        defaults += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    request = encode_request(method, origin.target(path), merge_headers(defaults, headers), body)
    sock = open_connection(origin, timeout, ssl_context)
    try:
        sock.sendall(request)
        head, rest = recv_head(sock, deadline)
        framing = framing_for(head, method)
        parts = [framing.feed(rest)] if rest else []
        size = len(parts[0]) if parts else 0
        yield_at = time.perf_counter() + YIELD_AFTER_S
        while not framing.done:
            if time.perf_counter() >= yield_at:
                yield_at = take_turn()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise gsocket.timeout("timed out reading the response body")
            sock.settimeout(remaining)
            data = sock.recv(RECV_SIZE)
            if not data:
                if framing.clean_at_eof:
                    break
                raise ConnectionError("connection closed inside the response body")
            chunk = framing.feed(data)
            size += len(chunk)
            if size > max_body:
                raise FramingError("response body too large")
            parts.append(chunk)
        return SimpleResponse(head.status, head.headers, b"".join(parts))
    finally:
        sock.close()


def post_cancel(
    origin: Origin,
    request_id: str,
    headers: Mapping[str, str],
    *,
    timeout: float,
    ssl_context: gssl.SSLContext | None = None,
) -> int:
    """POST /api/ai/cancel/{request_id} on a fresh HTTP/1.1 connection; the HTTP status, 0 if unreachable."""
    try:
        response = simple_request(
            origin,
            "POST",
            CANCEL_PATH.format(request_id=quote(request_id, safe="")),
            headers=headers,
            body=b"",
            timeout=timeout,
            ssl_context=ssl_context,
        )
    except (OSError, FramingError):
        return 0
    return response.status


def data_waiting(sock: gsocket.socket, *, unpollable: bool) -> bool:
    """Bytes (or an EOF) nobody has read from ``sock`` yet, without blocking; ``unpollable`` if it can't be polled."""
    if getattr(sock, "pending", None) and sock.pending():
        return True
    try:
        readable, _, _ = gselect.select([sock], [], [], 0)
    except (OSError, ValueError):
        return unpollable
    return bool(readable)
