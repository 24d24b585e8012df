"""Differential tests: our HTTP/1.1 response parsing against h11's, on the same bytes.

Hypothesis builds responses from a grammar that mixes the valid with the
malformed (status lines, header lines, framing headers, chunk-size lines,
chunk data, trailers, line endings), may cut them short and may close the
connection after them, and feeds them in random splits to our sans-IO
``HeadReader`` + body framing and to ``h11.Connection(h11.CLIENT)`` after a
POST.  Both must give the same response (status, reason, headers, body,
complete or not) or both must reject it.

Where we choose to differ from h11, the grammar does not go (each is
documented where the client makes the choice): ``Transfer-Encoding`` other
than exactly ``chunked`` (h11 refuses what RFC 9112 allows, e.g.
``gzip, chunked``), framing headers inside a trailer section or folded into
by an obsolete continuation line, ``101`` responses, heads over 16 KiB.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from loadtests.protocol.errors import FramingError
from loadtests.protocol.http1 import ChunkedBody, HeadReader, framing_for

ERROR = ("error",)

# --------------------------------------------------------------------------- the two parsers


@dataclass(frozen=True)
class Response:
    version: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # framing headers left out: h11 rewrites them
    body: bytes
    complete: bool


_FRAMING_HEADERS = {"content-length", "transfer-encoding"}


def _headers(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    joined: dict[str, str] = {}
    for name, value in pairs:
        if name not in _FRAMING_HEADERS:
            joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return tuple(sorted(joined.items()))


def ours(pieces: list[bytes], eof: bool) -> Response | tuple[str] | None:
    """Our parse of the pieces: a Response, ERROR, or None (the head is not complete yet)."""
    reader = HeadReader()
    head = framing = None
    body: list[bytes] = []
    try:
        for piece in pieces:
            if head is None:
                found = reader.feed(piece)
                if found is None:
                    continue
                head, piece = found
                framing = framing_for(head, "POST")
            if piece and not framing.done:
                body.append(framing.feed(piece))
    except FramingError:
        return ERROR
    if head is None:
        return ERROR if eof else None
    complete = framing.done or (eof and framing.clean_at_eof)
    if eof and not complete:
        return ERROR  # a body cut short by the close
    return Response(
        head.version.removeprefix("HTTP/"),
        head.status,
        head.reason,
        _headers(list(head.headers.items())),
        b"".join(body),
        complete,
    )


def theirs(pieces: list[bytes], eof: bool) -> Response | tuple[str] | None:
    """h11's parse of the same pieces, after a POST, in the same shape."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x"), ("Content-Length", "2")]))
    conn.send(h11.Data(data=b"{}"))
    conn.send(h11.EndOfMessage())
    response = None
    body: list[bytes] = []
    try:
        for piece in [*(p for p in pieces if p), *([b""] if eof else [])]:
            conn.receive_data(piece)  # b"": the connection closed
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                if isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    return _h11_response(response, body, complete=True)
                elif isinstance(event, h11.ConnectionClosed):
                    return ERROR
    except h11.RemoteProtocolError:
        return ERROR
    if response is None:
        return None
    return _h11_response(response, body, complete=False)


def _h11_response(response: h11.Response | None, body: list[bytes], complete: bool) -> Response:
    assert response is not None
    pairs = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in response.headers]
    return Response(
        response.http_version.decode("ascii"),
        response.status_code,
        bytes(response.reason).decode("latin-1"),
        _headers(pairs),
        b"".join(body),
        complete,
    )


# --------------------------------------------------------------------------- the grammar
# Each response is either well-formed or "hostile": only a hostile one draws
# from the malformed alternatives (at any of its parts), so that enough
# responses get far enough for what follows a part to be tested too.

GOOD_STATUS = ["200", "201", "204", "206", "299", "304", "404", "500", "599", "999"]
GOOD_REASONS = ["", " ", " OK", " Not Found", " ok\ttab", " caf\xe9", " x\x01y"]
BAD_STATUS_LINES = [
    b"HTTP/1.1 20",
    b"HTTP/1.1 2000 OK",
    b"HTTP/1.1 2x0 OK",
    b"http/1.1 200 OK",
    b"HTTP/1 200 OK",
    b"HTTP/1.1  200 OK",
    b" HTTP/1.1 200 OK",
    b"HTTP/1.1 099 Low",
    b"HTTP/1.1 \xb200 OK",
    b"HTTP/1.1 200 O\x00K",
    b"HTTP/1.1 200 O\rK",
    b"HTTP/1.1\t200 OK",
    b"",
]
GOOD_HEADERS = [
    b"X-A: b",
    b"x-a: c",
    b"Server:   gunicorn  ",
    b"X-Empty:",
    b"X-Tab:\tv\t",
    b"X-Ctl: a\x01b",
    b"X-Latin: caf\xe9",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Content-Encoding: gzip",
    b"X-Weird: !#$%&'*+-.^_`|~",
]
BAD_HEADERS = [
    b"Bad Name: x",
    b"X-A : b",
    b"NoColon",
    b": novalue",
    b"X-\x00: a",
    b"X-A: a\x00b",
    b"X-A: a\rb",
    b"X-A: a\x0bb",
    b"\xe9: v",
]
FOLDS = [b" folded", b"\tfolded too", b"  "]
GOOD_SIZE_LINES = ["{:x}", "{:X}", "{:04x}", "{:x};ext", "{:x};a=b;c", "{:x} ", "{:x}\t", "{:x};\x00"]
BAD_SIZE_LINES = ["0x{:x}", "+{:x}", " {:x}", "{:x} ;ext", "{:x}_0", "-{:x}", "{:x}g", ""]
GOOD_TRAILERS = [b"X-Trailer: yes", b"x-t:"]
BAD_TRAILERS = [b"Bad Trailer", b"X-T: a\x00"]


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    hostile = draw(st.booleans())

    def pick(good: list, bad: list) -> object:
        return draw(st.sampled_from(good + bad if hostile else good))

    def eol() -> bytes:
        return draw(st.sampled_from([b"\r\n", b"\n"]))

    head = b""
    if draw(st.integers(0, 4)) == 0:
        head += b"HTTP/1.1 100 Continue" + eol() + eol()
    if hostile and draw(st.integers(0, 3)) == 0:
        head += draw(st.sampled_from(BAD_STATUS_LINES)) + eol()
    else:
        version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
        head += (
            f"{version} {draw(st.sampled_from(GOOD_STATUS))}{draw(st.sampled_from(GOOD_REASONS))}".encode("latin-1")
            + eol()
        )
    lines: list[bytes] = []
    for _ in range(draw(st.integers(0, 3))):
        lines.append(pick(GOOD_HEADERS, BAD_HEADERS))
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.sampled_from(FOLDS)))
    framing = draw(
        st.sampled_from(["chunked", "length", "close"] + (["wrong length", "two lengths"] if hostile else []))
    )
    if framing == "chunked":
        body = b""
        for _ in range(draw(st.integers(0, 3))):
            data = draw(st.binary(min_size=1, max_size=12))
            declared = len(data) + pick([0], [0, -1, 1])
            body += pick(GOOD_SIZE_LINES, BAD_SIZE_LINES).format(max(declared, 0)).encode("latin-1") + b"\r\n"
            body += data + pick([b"\r\n"], [b"\r\n", b"\n", b"XY", b"\r"])
        if draw(st.integers(0, 4)):
            body += b"0\r\n"
            for _ in range(draw(st.integers(0, 2))):
                body += pick(GOOD_TRAILERS, BAD_TRAILERS) + eol()
            body += eol()
        lines.append(draw(st.sampled_from([b"Transfer-Encoding: chunked", b"transfer-encoding:  Chunked "])))
        if draw(st.booleans()):
            lines.append(b"Content-Length: 3")  # Transfer-Encoding wins
    else:
        body = draw(st.binary(max_size=20))
        n = len(body)
        value = {
            "length": draw(st.sampled_from([f"{n}", f" {n}", f"{n}, {n}", f"0{n}"])),
            "wrong length": draw(st.sampled_from([f"{n + 1}", f"{n}, {n + 1}", f"+{n}", f"{n}.0", f"0x{n:x}", ""])),
            "two lengths": f"{n}",
            "close": None,
        }[framing]
        if value is not None:
            lines.append(f"Content-Length: {value}".encode())
        if framing == "two lengths":
            lines.append(draw(st.sampled_from([f"Content-Length: {n}", f"Content-Length: {n + 2}"])).encode())
    for i in draw(st.permutations(range(len(lines)))):
        head += lines[i] + eol()
    return head + eol() + body


def _fold_only_after_plain_headers(raw: bytes) -> bool:
    """A continuation line may not land on a framing header (see the module docstring)."""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    for before, line in zip(lines, lines[1:]):
        if line[:1] in (b" ", b"\t") and before.lower().startswith((b"content-length", b"transfer-encoding")):
            return False
    return True


@st.composite
def feeds(draw: st.DrawFn) -> tuple[list[bytes], bool]:
    raw = draw(responses())
    if draw(st.integers(0, 3)) == 0:
        raw = raw[: draw(st.integers(0, len(raw)))]  # cut short
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)])]
    return [p for p in pieces if p] or [raw], draw(st.booleans())


# --------------------------------------------------------------------------- the properties


def _same(pieces: list[bytes], eof: bool) -> None:
    raw = b"".join(pieces)
    mine, reference = ours(pieces, eof), theirs(pieces, eof)
    assert mine == reference, f"{raw!r} (eof={eof}): ours {mine}, h11 {reference}"
    event("rejected" if mine == ERROR else "head not complete" if mine is None else f"complete={mine.complete}")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feeds())
@example(([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x28\r\n" + b"x" * 40 + b"\r\n0\r\n\r\n"], True))
@example(([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+28\r\n" + b"x" * 40 + b"\r\n0\r\n\r\n"], True))
@example(([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2_8\r\n" + b"x" * 40 + b"\r\n0\r\n\r\n"], True))
@example(([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 28\r\n" + b"x" * 40 + b"\r\n0\r\n\r\n"], True))
@example(([b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi"], False))
def test_responses_parse_as_h11_parses_them(feed: tuple[list[bytes], bool]):
    pieces, eof = feed
    assume(_fold_only_after_plain_headers(b"".join(pieces)))
    _same(pieces, eof)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_random_bytes_are_rejected_or_read_as_h11_reads_them(noise: bytes, eof: bool):
    for raw in (noise, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + noise):
        if _fold_only_after_plain_headers(raw):
            _same([raw], eof)


@pytest.mark.parametrize("size", [b"0x28", b"+28", b"2_8", b" 28", b"28 ;x", b"-28", b""])
def test_chunk_sizes_a_browser_refuses_fail_with_the_chunks_before_them_kept(size: bytes):
    body = ChunkedBody()
    with pytest.raises(FramingError, match="bad chunk size line") as info:
        body.feed(b"5\r\nhello\r\n" + size + b"\r\n" + b"x" * 40 + b"\r\n")
    assert info.value.payload == b"hello"
