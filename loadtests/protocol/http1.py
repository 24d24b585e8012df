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

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from loadtests.protocol.errors import FramingError

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


def resolve_location(origin: Origin, target: str, location: str) -> tuple[Origin, str]:
    """Where a redirect from ``target`` on ``origin`` leads: (origin, request target).

    ValueError when ``location`` is not an http(s) URL (relative or absolute).
    """
    here = f"{origin.scheme}://{origin.host_header}{target}"
    parts = urlsplit(urljoin(here, location.strip()))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"redirect to {location[:80]!r}, not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(parts.scheme, parts.hostname, port, ""), path


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


# --------------------------------------------------------------------------- response heads
# The grammar is RFC 9112's, read as strictly as h11 reads it (the parsers'
# differential tests feed both the same bytes): a status line of
# ``HTTP/<d>.<d> <3 digits>[ <reason>]``, token header names with the colon
# right after them, no NUL or stray CR in values, obsolete line folding
# joined with one space, and lines ending in CRLF or a bare LF (as browsers
# and h11 accept).

_STATUS_LINE = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ((?:[ \t]|[^\x00\s])*))?")
_HEADER_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*")
_FOLD = re.compile(rb"[ \t]+")
#: The blank line ending a head (or a chunked body's trailer section).
_BLANK_LINE = re.compile(rb"\n\r?\n")
_CONTENT_LENGTH = re.compile(r"[0-9]{1,20}")


def find_head_end(buf: bytes) -> int:
    """Offset just past the blank line ending a head (or trailer section), or -1 if not there yet.

    A section that is empty (``buf`` starts with the blank line) ends after it.
    """
    if buf[:1] == b"\n":
        return 1
    if buf[:2] == b"\r\n":
        return 2
    match = _BLANK_LINE.search(buf)
    return -1 if match is None else match.end()


def _lines(raw: bytes) -> list[bytes]:
    """The lines of a head, each without its CRLF / LF, without the closing blank line(s)."""
    lines = [line[:-1] if line.endswith(b"\r") else line for line in raw.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def parse_header_lines(lines: list[bytes]) -> dict[str, str]:
    """Header (or trailer) lines -> {lower-case name: value}; repeated names joined with ", "."""
    folded: list[bytes] = []
    for line in lines:
        fold = _FOLD.match(line)
        if fold is None:
            folded.append(line)
        elif not folded:
            raise FramingError(f"continuation line at the start of the headers: {line[:80]!r}")
        else:
            folded[-1] += b" " + line[fold.end() :]
    headers: dict[str, str] = {}
    for line in folded:
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            raise FramingError(f"bad header line {line[:80]!r}")
        name = match[1].decode("latin-1").lower()
        value = match[2].decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def parse_response_head(raw: bytes) -> ResponseHead:
    """Parse ``raw`` (status line and header lines, with or without the blank line)."""
    lines = _lines(raw)
    if not lines:
        raise FramingError("no status line")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise FramingError(f"bad status line {lines[0][:80]!r}")
    status = int(match[2])
    if status < 100:
        raise FramingError(f"bad status code {status:03d}")
    reason = (match[3] or b"").decode("latin-1")
    return ResponseHead(f"HTTP/{match[1].decode('ascii')}", status, reason, parse_header_lines(lines[1:]))


# --------------------------------------------------------------------------- body framings
# Each framing is fed raw reads and returns the payload bytes they carry.
# ``done`` = the framing says the body is complete; ``leftover`` = bytes after it;
# ``clean_at_eof`` = whether a connection close right now is a proper body end.
# A FramingError carries the payload that came before the fault in the same
# read (``payload``): a chunk in the read that also has a bad size line is
# not lost.


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
#: chunk-size = 1*HEXDIG (h11's bound of 20 digits), then chunk extensions
#: (ignored) and trailing blanks (tolerated, as h11 and servers in the wild do).
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\n]*)?[ \t]*")
_HEX_DIGITS = b"0123456789abcdefABCDEF"
MAX_CHUNK_SIZE_LINE = 1024


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
            if eol > 0 and not data[:eol].translate(None, _HEX_DIGITS):
                size = int(data[:eol], 16)
                end = eol + 2 + size
                if size > 0 and len(data) == end + 2 and data[end] == 13 and data[end + 1] == 10:
                    return data[eol + 2 : end]
        out: list[bytes] = []
        try:
            self._parse(data, out)
        except FramingError as exc:
            exc.payload = b"".join(out)
            raise
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    def _parse(self, data: bytes, out: list[bytes]) -> None:
        state = self._state
        remaining = self._remaining
        pos = 0
        n = len(data)
        try:
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
                        if n - pos > MAX_CHUNK_SIZE_LINE:
                            raise FramingError("chunk size line too long")
                        self._buf = data[pos:]
                        break
                    match = _CHUNK_SIZE_LINE.fullmatch(data, pos, eol)
                    if match is None:
                        raise FramingError(f"bad chunk size line {bytes(data[pos : min(eol, pos + 20)])!r}")
                    remaining = int(match[1], 16)
                    pos = eol + 2
                    state = _DATA if remaining else _TRAILER
                elif state == _DATA_CRLF:
                    if n - pos < 2:
                        if data[pos] != 13:
                            raise FramingError("chunk data not followed by CRLF")
                        self._buf = data[pos:]
                        break
                    if data[pos] != 13 or data[pos + 1] != 10:
                        raise FramingError("chunk data not followed by CRLF")
                    pos += 2
                    state = _SIZE
                else:  # _TRAILER: header lines up to a blank line, as in a head
                    rest = data[pos:] if pos else data
                    end = find_head_end(rest)
                    if end < 0:
                        if len(rest) > MAX_HEAD_BYTES:
                            raise FramingError("chunked trailer too long")
                        self._buf = rest
                        break
                    parse_header_lines(_lines(rest[:end]))
                    state = _DONE
                    self.done = True
                    self.leftover = rest[end:]
                    break
        finally:
            self._state = state
            self._remaining = remaining


BodyFraming = LengthBody | CloseDelimitedBody | ChunkedBody


def framing_for(head: ResponseHead, method: str) -> BodyFraming:
    """Pick the body framing RFC 9112 section 6.3 prescribes for this response.

    Framing conflicts a browser refuses are FramingErrors: Content-Length
    values that disagree or are not a plain number (whatever else the
    response says about its body).
    """
    length = _content_length(head.get("content-length"))
    if method == "HEAD" or 100 <= head.status < 200 or head.status in (204, 304):
        return LengthBody(0)
    te = head.get("transfer-encoding")
    if te is not None:
        if te.split(",")[-1].strip().lower() == "chunked":
            return ChunkedBody()
        return CloseDelimitedBody()
    if length is not None:
        return LengthBody(length)
    return CloseDelimitedBody()


def _content_length(value: str | None) -> int | None:
    if value is None:
        return None
    values = {v.strip() for v in value.split(",")}
    if len(values) != 1 or not _CONTENT_LENGTH.fullmatch(next(iter(values))):
        raise FramingError(f"bad Content-Length {value[:80]!r}")
    return int(values.pop())


class HeadReader:
    """Collects raw reads until a final response head is complete (1xx heads are skipped,
    except 101 when ``keep_switching``)."""

    __slots__ = ("_buf", "_keep_switching", "heads")

    def __init__(self, keep_switching: bool = True) -> None:
        self._buf = b""
        self._keep_switching = keep_switching
        self.heads = 0  # heads parsed so far, interim (1xx) ones included

    def feed(self, data: bytes) -> tuple[ResponseHead, bytes] | None:
        """The head and the bytes after it once complete, else None (FramingError on garbage)."""
        buf = self._buf + data if self._buf else data
        while True:
            end = find_head_end(buf)
            if end < 0:
                if buf and buf[0] < 0x21:
                    raise FramingError(f"not a status line: {buf[:40]!r}")
                if len(buf) > MAX_HEAD_BYTES:
                    raise FramingError("response head too long")
                self._buf = buf
                return None
            head = parse_response_head(buf[:end])
            self.heads += 1
            buf = buf[end:]
            if 100 <= head.status < 200 and not (head.status == 101 and self._keep_switching):
                continue
            self._buf = b""
            return head, buf
