"""The HTTP/1.1 arithmetic the load clients need, and nothing more.

Why not httpx / geventhttpclient / requests: a load user must see every socket
read as it happens (one ``recv`` -> one timestamp), and those libraries buffer
(``iter_content(1024)`` batches small lines; header time is reported as body
time).  So the clients own the socket and the read loop, and this module only
does the protocol parts: the request bytes, the response head, and the body
framings (chunked / Content-Length / close-delimited), each fed the raw reads.

Sockets come from gevent explicitly: the clients run inside Locust's gevent hub,
and explicit gevent sockets keep them cooperative even in a process that was
not monkey-patched (tests, benchmarks).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Mapping
from urllib.parse import urlsplit

from gevent import socket as gsocket
from gevent import ssl as gssl

HEAD_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 65536
RECV_SIZE = 65536
USER_AGENT = "stream-latency-harness/0.1"


class ProtocolError(Exception):
    """The peer broke HTTP/1.1 framing (as opposed to a network failure)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host, port and an optional path prefix."""

    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def is_tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.is_tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    def target(self, path: str) -> str:
        """Request target for ``path`` under the base URL's path prefix."""
        if not path.startswith("/"):
            path = "/" + path
        return self.base_path + path


def parse_base_url(url: str) -> Origin:
    """``http(s)://host[:port][/prefix]`` -> Origin; ValueError on anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Origin(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))


def make_ssl_context(verify: bool) -> gssl.SSLContext:
    """A client TLS context speaking HTTP/1.1 only; ``verify=False`` for self-signed staging."""
    ctx = gssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = gssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def open_connection(origin: Origin, timeout: float,
                    ssl_context: gssl.SSLContext | None = None) -> gsocket.socket:
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


def merge_headers(defaults: Iterable[tuple[str, str]],
                  overrides: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """Defaults, with any header the caller gives replacing it (names are case-insensitive)."""
    given = dict(overrides or {})
    taken = {name.lower() for name in given}
    merged = [(name, value) for name, value in defaults if name.lower() not in taken]
    merged.extend(given.items())
    return merged


def encode_request(method: str, target: str, headers: Iterable[tuple[str, str]],
                   body: bytes | None = None) -> bytes:
    """Request line + headers (+ body); refuses CR/LF in names or values."""
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers:
        value = str(value)
        if any(c in name or c in value for c in "\r\n") or ":" in name:
            raise ValueError(f"invalid header {name!r}")
        lines.append(f"{name}: {value}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head


@dataclass(slots=True)
class ResponseHead:
    """Status line and headers (names lower-cased; repeated headers joined with ", ")."""

    version: str
    status: int
    reason: str
    headers: dict[str, str]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


def find_head_end(buf: bytes) -> int:
    """Offset just past the blank line ending a response head, or -1 if not there yet."""
    i = buf.find(HEAD_END)
    return -1 if i < 0 else i + 4


def parse_response_head(raw: bytes) -> ResponseHead:
    """Parse ``raw`` (status line and header lines, with or without the blank line)."""
    text = raw.decode("latin-1")
    lines = text.split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {status_line[:80]!r}")
    headers: dict[str, str] = {}
    last = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and last is not None:   # obsolete line folding
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line[:80]!r}")
        last = name.lower()
        value = value.strip()
        headers[last] = f"{headers[last]}, {value}" if last in headers else value
    return ResponseHead(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers)


# --------------------------------------------------------------------------- body framings
# Each framing is fed raw reads and returns the payload bytes they carry.
# ``done`` = the framing says the body is complete; ``leftover`` = bytes after it;
# ``clean_at_eof`` = whether a connection close right now is a proper body end.

class LengthBody:
    """Content-Length framing."""

    __slots__ = ("done", "leftover", "_remaining")

    def __init__(self, length: int) -> None:
        self._remaining = length
        self.done = length == 0
        self.leftover = b""

    def feed(self, data: bytes) -> bytes:
        if self.done:
            self.leftover += data
            return b""
        if len(data) < self._remaining:
            self._remaining -= len(data)
            return data
        take, self._remaining = self._remaining, 0
        self.done = True
        self.leftover = data[take:]
        return data[:take]

    @property
    def clean_at_eof(self) -> bool:
        return self.done


class CloseDelimitedBody:
    """No length, no chunking: the body ends when the server closes the connection."""

    __slots__ = ("done", "leftover")

    def __init__(self) -> None:
        self.done = False
        self.leftover = b""

    def feed(self, data: bytes) -> bytes:
        return data

    @property
    def clean_at_eof(self) -> bool:
        return True


_SIZE, _DATA, _DATA_CRLF, _TRAILER, _DONE = range(5)


class ChunkedBody:
    """``Transfer-Encoding: chunked`` decoder; any byte may be split across reads."""

    __slots__ = ("done", "leftover", "_buf", "_state", "_remaining")

    def __init__(self) -> None:
        self.done = False
        self.leftover = b""
        self._buf = b""
        self._state = _SIZE
        self._remaining = 0

    @property
    def clean_at_eof(self) -> bool:
        return self.done

    def feed(self, data: bytes) -> bytes:
        if self._buf:
            data = self._buf + data
            self._buf = b""
        state = self._state
        if state == _DONE:
            self.leftover += data
            return b""
        if state == _SIZE:
            # Fast path: the read is exactly one whole chunk (a streaming
            # server's usual write), e.g. b"1a\r\n<26 bytes>\r\n".
            eol = data.find(b"\r\n", 0, 18)
            if eol > 0:
                try:
                    size = int(data[:eol], 16)
                except ValueError:
                    size = 0                      # extensions etc.: the general path decides
                end = eol + 2 + size
                if size > 0 and len(data) == end + 2 and data[end] == 13 and data[end + 1] == 10:
                    return data[eol + 2:end]
        remaining = self._remaining
        out: list[bytes] = []
        pos = 0
        n = len(data)
        while pos < n:
            if state == _DATA:
                end = pos + remaining
                if end <= n:
                    out.append(data[pos:end])
                    pos = end
                    remaining = 0
                    state = _DATA_CRLF
                else:
                    out.append(data[pos:] if pos else data)
                    remaining -= n - pos
                    pos = n
            elif state == _SIZE:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > 1024:
                        raise ProtocolError("chunk size line too long")
                    self._buf = data[pos:]
                    break
                line = data[pos:eol]
                semi = line.find(b";")          # chunk extensions are ignored
                if semi >= 0:
                    line = line[:semi]
                try:
                    remaining = int(line, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {bytes(line[:20])!r}") from None
                if remaining < 0:
                    raise ProtocolError("negative chunk size")
                pos = eol + 2
                state = _DATA if remaining else _TRAILER
            elif state == _DATA_CRLF:
                if n - pos < 2:
                    self._buf = data[pos:]
                    break
                if data[pos] != 13 or data[pos + 1] != 10:
                    raise ProtocolError("chunk data not followed by CRLF")
                pos += 2
                state = _SIZE
            else:  # _TRAILER: header lines until an empty one
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > MAX_HEAD_BYTES:
                        raise ProtocolError("chunked trailer too long")
                    self._buf = data[pos:]
                    break
                if eol == pos:
                    state = _DONE
                    self.done = True
                    self.leftover = data[pos + 2:]
                    break
                pos = eol + 2
        self._state = state
        self._remaining = remaining
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)


BodyFraming = LengthBody | CloseDelimitedBody | ChunkedBody


def framing_for(head: ResponseHead, method: str) -> BodyFraming:
    """Pick the body framing RFC 9112 section 6.3 prescribes for this response."""
    if method == "HEAD" or 100 <= head.status < 200 or head.status in (204, 304):
        return LengthBody(0)
    te = head.get("transfer-encoding")
    if te is not None:
        if te.split(",")[-1].strip().lower() == "chunked":
            return ChunkedBody()
        return CloseDelimitedBody()
    cl = head.get("content-length")
    if cl is not None:
        values = {v.strip() for v in cl.split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise ProtocolError(f"bad Content-Length {cl!r}")
        return LengthBody(int(values.pop()))
    return CloseDelimitedBody()


# --------------------------------------------------------------------------- one-shot requests

@dataclass(slots=True)
class SimpleResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def recv_head(sock: gsocket.socket, deadline: float, buf: bytes = b"",
              skip_informational: bool = True) -> tuple[ResponseHead, bytes]:
    """Read until a full response head is in; returns it and the bytes after it.

    Raises ``socket.timeout`` past ``deadline`` (a ``time.monotonic()`` value),
    ProtocolError on garbage, ConnectionError on EOF.
    """
    while True:
        end = find_head_end(buf)
        if end >= 0:
            head = parse_response_head(buf[:end - 4])
            buf = buf[end:]
            if skip_informational and 100 <= head.status < 200 and head.status != 101:
                continue
            return head, buf
        if len(buf) > MAX_HEAD_BYTES:
            raise ProtocolError("response head too long")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise gsocket.timeout("timed out waiting for the response head")
        sock.settimeout(remaining)
        data = sock.recv(RECV_SIZE)
        if not data:
            raise ConnectionError("connection closed before the response head")
        buf += data


def simple_request(origin: Origin, method: str, path: str, *,
                   headers: Mapping[str, str] | None = None, body: bytes | None = None,
                   timeout: float = 10.0, ssl_context: gssl.SSLContext | None = None,
                   max_body: int = 64 * 1024 * 1024) -> SimpleResponse:
    """One request on a fresh connection (``Connection: close``), body read whole.

    For the small side requests (cancel, emit times), where timing does not
    matter.  The whole exchange is bounded by ``timeout``.  Raises OSError,
    ProtocolError.
    """
    deadline = time.monotonic() + timeout
    defaults = [("Host", origin.host_header), ("User-Agent", USER_AGENT), ("Accept", "*/*"),
                ("Accept-Encoding", "identity"), ("Connection", "close")]
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
        while not framing.done:
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
                raise ProtocolError("response body too large")
            parts.append(chunk)
        return SimpleResponse(head.status, head.headers, b"".join(parts))
    finally:
        sock.close()
