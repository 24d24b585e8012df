"""Tiny loopback servers that send exact bytes, for the clients' protocol-edge tests.

Each accepted connection runs a test-supplied ``handler(conn)`` in its own
thread; the handler reads the request and writes precisely the bytes (and the
pauses between them) the test is about: chunk framing split at nasty places, a
UTF-8 character split across reads, truncated bodies, websocket frames split
or packed together.  Loopback only, port 0, everything stops on ``close()``.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Conn:
    """One accepted connection, with helpers to read requests and write exact bytes."""

    sock: socket.socket
    server: ScriptedServer
    buf: bytes = b""
    requests: list[Request] = field(default_factory=list)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_request(self) -> Request | None:
        """The next request on this connection, or None if the client closed it."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return None
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not self._fill():
                return None
        body, self.buf = self.buf[:length], self.buf[length:]
        req = Request(method, target, headers, body)
        self.requests.append(req)
        self.server.requests.append(req)
        return req

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_pieces(self, pieces: list[bytes], gap: float = 0.03) -> None:
        """Each piece in its own TCP segment, ``gap`` seconds apart (separate client reads)."""
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(gap)
            self.sock.sendall(piece)

    def abort(self) -> None:
        """Drop the connection with a RST (no FIN), like a crashed proxy."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.sock.close()

    # ------------------------------------------------------------------ websocket
    def accept_websocket(self, req: Request) -> None:
        key = req.headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        self.send(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )

    def recv_frame(self) -> tuple[int, bytes] | None:
        """One client frame (unmasked), or None on EOF."""
        while True:
            if len(self.buf) >= 2:
                b1 = self.buf[1]
                length = b1 & 0x7F
                pos = 2
                if length == 126:
                    length, pos = int.from_bytes(self.buf[2:4], "big"), 4
                elif length == 127:
                    length, pos = int.from_bytes(self.buf[2:10], "big"), 10
                if b1 & 0x80:
                    pos += 4
                if len(self.buf) >= pos + length:
                    payload = self.buf[pos : pos + length]
                    if b1 & 0x80:
                        key = self.buf[pos - 4 : pos]
                        payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
                    opcode = self.buf[0] & 0x0F
                    self.buf = self.buf[pos + length :]
                    return opcode, payload
            if not self._fill():
                return None

    def recv_text(self) -> bytes | None:
        """Next text frame's payload (pongs to our pings are skipped)."""
        while True:
            frame = self.recv_frame()
            if frame is None:
                return None
            if frame[0] == 0x1:
                return frame[1]


def ws_frame(payload: bytes | str, opcode: int = 0x1, fin: bool = True) -> bytes:
    """An unmasked server frame."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def sio_event(listener: str, message, namespace: str = "/UserSession") -> bytes:
    """The websocket frame of one Socket.IO EVENT on ``listener``."""
    return ws_frame(b"42" + namespace.encode() + b"," + orjson.dumps([listener, message]))


def http_head(status: int = 200, headers: dict[str, str] | None = None, chunked: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "Content-Type: application/x-ndjson"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


LAST_CHUNK = b"0\r\n\r\n"


def line(event: str, data=None, **extra) -> bytes:
    return orjson.dumps({"event": event, "data": data if data is not None else {}, **extra}) + b"\n"


class ScriptedServer:
    """Accept loop on 127.0.0.1:0; every connection is handed to ``handler`` in a thread."""

    def __init__(self, handler: Callable[[Conn], None], tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.port = self.listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.connections = 0
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(Conn(sock, self),), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: Conn) -> None:
        try:
            if self.tls is not None:
                conn.sock = self.tls.wrap_socket(conn.sock, server_side=True)
            self.handler(conn)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        except Exception:
            self.errors.append(traceback.format_exc())
        finally:
            try:
                conn.sock.close()
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        try:
            self.listener.close()
        except OSError:
            pass
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        assert not self.errors, "server handler failed:\n" + "\n".join(self.errors)


def free_port() -> int:
    """A loopback port nothing listens on (for connect-failure tests)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
