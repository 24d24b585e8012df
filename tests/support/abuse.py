"""Raw-socket abuse of a backend: what no well-behaved client sends.

Used by ``make soak`` (bench/soak.py) in the background of a load run and by
the fault-matrix test of the backend (tests/test_faults_backend.py):
oversized bodies, connections opened and dropped half-way (FIN or RST),
and slow consumers (a stream or a Socket.io task asked for, then never read).
Plain blocking sockets with timeouts; loopback targets only by convention
of the callers.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable
from urllib.parse import urlsplit

from loadtests.protocol.engineio import encode_connect, encode_event
from loadtests.protocol.http1 import encode_request
from loadtests.protocol.websocket import OP_TEXT, encode_frame, handshake_headers, new_key

CHAT = "/api/ai/chat/unified"
WEBSOCKET_PATH = "/socket.io/?EIO=4&transport=websocket"

Address = tuple[str, int]


def address(url: str) -> Address:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def connect(addr: Address, *, rcvbuf: int | None = None, timeout: float = 10.0) -> socket.socket:
    """A TCP connection; a tiny ``rcvbuf`` makes the server's writes stall sooner."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    try:
        sock.connect(addr)
    except OSError:
        sock.close()
        raise
    return sock


def reset(sock: socket.socket) -> None:
    """Close with a RST (no FIN), like a crashed client."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    """Read until ``marker`` shows up, the peer closes, or ``limit`` bytes came."""
    data = b""
    while marker not in data and len(data) < limit:
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data


def chat_request(addr: Address, harness: dict) -> bytes:
    """The bytes of one NDJSON chat stream request."""
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "harness": harness}).encode()
    return encode_request(
        "POST",
        CHAT,
        [("Host", f"{addr[0]}:{addr[1]}"), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        body,
    )


def socketio_task(addr: Address, harness: dict, *, rcvbuf: int | None = None) -> socket.socket:
    """A raw websocket Socket.io session that has emitted one task (and reads nothing more)."""
    sock = connect(addr, rcvbuf=rcvbuf)
    try:
        sock.sendall(encode_request("GET", WEBSOCKET_PATH, handshake_headers(f"{addr[0]}:{addr[1]}", new_key())))
        read_until(sock, b'"pingTimeout"')
        sock.sendall(encode_frame(OP_TEXT, encode_connect("/UserSession", {"token": "abuse"})))
        read_until(sock, b"40/UserSession,")
        sock.sendall(
            encode_frame(
                OP_TEXT,
                encode_event(
                    "/UserSession", ["chat_service", {"taskName": "direct_chat", "taskData": {"harness": harness}}], 1
                ),
            )
        )
    except BaseException:
        sock.close()
        raise
    return sock


def slow_consumers(addr: Address, harness: dict, count: int) -> list[socket.socket]:
    """``count`` NDJSON streams and ``count`` Socket.io tasks that are then never read.

    The caller holds the sockets open as long as it likes and closes them.
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = connect(addr, rcvbuf=4096)
            socks.append(sock)
            sock.sendall(chat_request(addr, harness))
            socks.append(socketio_task(addr, harness, rcvbuf=4096))
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def oversized_body(addr: Address, declared_bytes: int = 200 * 2**20, send_mb: int = 50) -> tuple[bytes, int]:
    """POST declaring a huge body and keep sending: (response head, MB the server took before hanging up)."""
    sock = connect(addr)
    try:
        sock.sendall(
            encode_request(
                "POST",
                CHAT,
                [("Host", "x"), ("Content-Type", "application/json"), ("Content-Length", str(declared_bytes))],
            )
        )
        head = read_until(sock, b"\r\n\r\n")
        sent = 0
        try:
            for _ in range(send_mb):
                sock.sendall(b"x" * 2**20)
                sent += 1
        except OSError:
            pass
        return head, sent
    finally:
        sock.close()


def churn_ways(addr: Address, stream_harness: dict) -> list[Callable[[socket.socket], None]]:
    """Ways to half-use a connection; the fourth asks for a whole stream."""
    stream = chat_request(addr, stream_harness)
    upgrade = encode_request("GET", WEBSOCKET_PATH, handshake_headers("x", new_key()))
    return [
        lambda s: None,  # connect, say nothing
        lambda s: s.sendall(stream[:25]),  # half a request line
        lambda s: s.sendall(stream[:-10]),  # half a body
        lambda s: s.sendall(stream),  # a whole stream request
        lambda s: s.sendall(upgrade),  # a websocket upgrade
    ]


STREAM_WAY = 3  # index of the way that starts a stream


def open_connections(addr: Address, count: int, stream_harness: dict) -> list[socket.socket]:
    """``count`` connections, each half-used one of the ``churn_ways`` in turn (the caller drops them)."""
    ways = churn_ways(addr, stream_harness)
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            sock = connect(addr)
            socks.append(sock)
            ways[i % len(ways)](sock)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def drop_connections(socks: list[socket.socket]) -> None:
    """Half with a FIN, half with a RST."""
    for i, sock in enumerate(socks):
        try:
            if i % 2:
                reset(sock)
            else:
                sock.close()
        except OSError:
            sock.close()
