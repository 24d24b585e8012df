"""A raw HTTP reader that shows how bytes really arrive (for the fake backend's tests).

``RawStream`` posts over a plain socket and yields each ``recv()`` separately
with its arrival time, de-chunked; it also tells whether the chunked body was
properly terminated (the disconnect fault must leave it unterminated).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class ChunkedDecoder:
    """Incremental HTTP/1.1 chunked-body decoder."""

    def __init__(self) -> None:
        self._buf = b""
        self._need = -1  # bytes left in the current chunk; -1 = reading a size line
        self.done = False  # the terminating zero-size chunk was seen

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        while not self.done:
            if self._need < 0:
                eol = self._buf.find(b"\r\n")
                if eol < 0:
                    break
                size = int(self._buf[:eol].split(b";")[0], 16)
                self._buf = self._buf[eol + 2 :]
                if size == 0:
                    self.done = True
                    break
                self._need = size
            if len(self._buf) < self._need + 2:
                take = min(self._need, len(self._buf))
                out += self._buf[:take]
                self._buf = self._buf[take:]
                self._need -= take
                break
            out += self._buf[: self._need]
            self._buf = self._buf[self._need + 2 :]
            self._need = -1
        return bytes(out)


@dataclass
class RawStream:
    """One POST over a plain socket; ``reads()`` yields ``(perf_counter, body bytes)`` per recv."""

    status: int
    headers: dict[str, str]  # lower-case names
    sock: socket.socket
    sent_at: float  # perf_counter right after the request was written
    _leftover: bytes = b""
    _decoder: ChunkedDecoder | None = None
    terminated: bool = False  # chunked body ended with its zero-size chunk
    reads_seen: int = field(default=0)

    @classmethod
    def post(
        cls, base_url: str, path: str, body: object, headers: Mapping[str, str] | None = None, timeout: float = 30.0
    ) -> RawStream:
        url = urlsplit(base_url)
        sock = socket.create_connection((url.hostname, url.port or 80), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = json.dumps(body).encode()
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {url.netloc}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            "Connection: close",
        ]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        sent_at = time.perf_counter()
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError("connection closed before response headers")
            data += more
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
        parsed = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        chunked = parsed.get("transfer-encoding", "").lower() == "chunked"
        return cls(int(status_line.split()[1]), parsed, sock, sent_at, rest, ChunkedDecoder() if chunked else None)

    def reads(self, bufsize: int = 1 << 20) -> Iterator[tuple[float, bytes]]:
        """Body bytes per socket read until the body ends or the server closes."""
        pending = self._leftover
        self._leftover = b""
        t = time.perf_counter()
        while True:
            if pending:
                piece = self._decoder.feed(pending) if self._decoder else pending
                self.reads_seen += 1
                if piece:
                    yield t, piece
                if self._decoder and self._decoder.done:
                    self.terminated = True
                    return
            try:
                pending = self.sock.recv(bufsize)
            except ConnectionResetError:
                return
            t = time.perf_counter()
            if not pending:
                return

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
