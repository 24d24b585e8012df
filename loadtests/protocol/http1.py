"""HTTP/1.1 without sockets: request bytes, response heads, body framings.

Why not httpx / geventhttpclient / requests: a load user must see every socket
read as it happens (one ``recv`` -> one timestamp), and those libraries buffer
(``iter_content(1024)`` batches small lines; header time is reported as body
time).  So the clients own the socket and the read loop
(``loadtests.clients``), and this module only does the protocol: the request
bytes, the response head (fed raw reads by :class:`HeadReader`), and the body
framings (chunked / Content-Length / close-delimited), each fed the raw reads.
Nothing here touches a socket or a clock, as in h11.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from loadtests.protocol.errors import FramingError

HEAD_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 65536
USER_AGENT = "stream-latency-harness/0.1"


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


def merge_headers(defaults: Iterable[tuple[str, str]], overrides: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """Defaults, with any header the caller gives replacing it (names are case-insensitive)."""
    given = dict(overrides or {})
    taken = {name.lower() for name in given}
    merged = [(name, value) for name, value in defaults if name.lower() not in taken]
    merged.extend(given.items())
    return merged


def encode_request(method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes | None = None) -> bytes:
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
        raise FramingError(f"bad status line {status_line[:80]!r}")
    headers: dict[str, str] = {}
    last = None
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and last is not None:  # obsolete line folding
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise FramingError(f"bad header line {line[:80]!r}")
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
                    size = 0  # extensions etc.: the general path decides
                end = eol + 2 + size
                if size > 0 and len(data) == end + 2 and data[end] == 13 and data[end + 1] == 10:
                    return data[eol + 2 : end]
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
                        raise FramingError("chunk size line too long")
                    self._buf = data[pos:]
                    break
                line = data[pos:eol]
                semi = line.find(b";")  # chunk extensions are ignored
                if semi >= 0:
                    line = line[:semi]
                try:
                    remaining = int(line, 16)
                except ValueError:
                    raise FramingError(f"bad chunk size {bytes(line[:20])!r}") from None
                if remaining < 0:
                    raise FramingError("negative chunk size")
                pos = eol + 2
                state = _DATA if remaining else _TRAILER
            elif state == _DATA_CRLF:
                if n - pos < 2:
                    self._buf = data[pos:]
                    break
                if data[pos] != 13 or data[pos + 1] != 10:
                    raise FramingError("chunk data not followed by CRLF")
                pos += 2
                state = _SIZE
            else:  # _TRAILER: header lines until an empty one
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    if n - pos > MAX_HEAD_BYTES:
                        raise FramingError("chunked trailer too long")
                    self._buf = data[pos:]
                    break
                if eol == pos:
                    state = _DONE
                    self.done = True
                    self.leftover = data[pos + 2 :]
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
            raise FramingError(f"bad Content-Length {cl!r}")
        return LengthBody(int(values.pop()))
    return CloseDelimitedBody()


# --------------------------------------------------------------------------- response heads


class HeadReader:
    """Collects raw reads until a final response head is complete (1xx heads are skipped,
    except 101 when ``keep_switching``)."""

    __slots__ = ("_buf", "_keep_switching")

    def __init__(self, keep_switching: bool = True) -> None:
        self._buf = b""
        self._keep_switching = keep_switching

    def feed(self, data: bytes) -> tuple[ResponseHead, bytes] | None:
        """The head and the bytes after it once complete, else None (FramingError on garbage)."""
        buf = self._buf + data if self._buf else data
        while True:
            end = find_head_end(buf)
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise FramingError("response head too long")
                self._buf = buf
                return None
            head = parse_response_head(buf[: end - 4])
            buf = buf[end:]
            if 100 <= head.status < 200 and not (head.status == 101 and self._keep_switching):
                continue
            self._buf = b""
            return head, buf
