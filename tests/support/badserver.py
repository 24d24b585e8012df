"""A purpose-built misbehaving backend for the fault matrix.

It produces what the fake backend cannot, because the fake backend is a
well-behaved FastAPI app: bytes that are not NDJSON, lines split at nasty
places, invalid UTF-8, a 10 MB line, a body that never ends or never starts,
a Socket.io server that never acks, acks with no listener, or streams before
its ack, and one that echoes the caller's credentials back in its errors.

NDJSON: ``POST /fault/<name>`` answers with the misbehaviour ``<name>``
(``NDJSON_FAULTS``), also under a longer path (``/fault/<name>/api/...``, so
a Locust run with ``--host <url>/fault/<name>`` gets it on every stream);
any other path (the product's endpoints included) is a 401 whose body
repeats the ``Authorization`` / ``X-Fingerprint-ID`` headers, and the fake
backend's measurement endpoints are 404s, as on a real backend.
Socket.io (websocket only, namespace ``/UserSession``): each emitted task
picks its misbehaviour with ``taskData["fault"]`` (``SIO_FAULTS``); a
CONNECT whose token starts with ``echo-`` is refused with a message that
repeats the token; under ``/quick-ping/socket.io/`` the server advertises a
1 s ping interval and 1 s ping timeout and then never pings.

Hostile cases (issue 15): bodies written as fast as the socket takes them,
decompression bombs, chunk sizes a browser refuses, redirects, 200
listeners, binary packets.

Every bad case first waits ``LEAD_S`` before misbehaving, so it lands while a
concurrent healthy stream is running.  Loopback only, port 0; one thread per
connection (``tests/_loopback.ScriptedServer``); everything a handler does is
bounded in time (``MAX_LIFETIME_S``) so a test can never hang on it.
"""

from __future__ import annotations

import functools
import gzip
import time
import zlib
from collections.abc import Callable
from typing import Final

import brotli
import orjson

from stream_harness.contract.protocol import MEASUREMENT_PREFIX
from tests.support.loopback import (
    LAST_CHUNK,
    Conn,
    Request,
    ScriptedServer,
    chunk,
    http_head,
    line,
    sio_event,
    ws_frame,
)

NAMESPACE: Final = "/UserSession"
#: Pause before the misbehaviour, so it overlaps a concurrent healthy stream.
LEAD_S: Final = 0.2
#: Nothing a handler does lasts longer than this (endless / silent cases).
MAX_LIFETIME_S: Final = 30.0
HUGE_LINE_BYTES: Final = 10 * 1024 * 1024
OPEN_PACKET: Final = '0{"sid":"bad-eio","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'
QUICK_PING_OPEN: Final = OPEN_PACKET.replace("25000", "1000").replace("20000", "1000")
#: What a decompression bomb expands to (zero bytes: no line ever ends).
BOMB_BYTES: Final = 1 << 30
#: The fast endless bodies: lines this long, written in blocks of this many bytes.
FAST_LINE_BYTES: Final = 2048
FAST_BLOCK_BYTES: Final = 256 * 1024
#: Chunk-size lines that are not 1*HEXDIG (RFC 9112) but that int(x, 16) would take.
BAD_CHUNK_SIZES: Final = {"0x": b"0x28", "plus": b"+28", "underscore": b"2_8", "space": b" 28"}
#: Listeners of the "many-listeners" Socket.io task.
MANY_LISTENERS: Final = 200


def _chunks(n: int, start: int = 0) -> bytes:
    return b"".join(line("chunk", {"text": f"c{i} "}) for i in range(start, start + n))


def _end() -> bytes:
    return line("end", {"reason": "complete"})


def _idle_until_client_leaves(conn: Conn) -> None:
    """Hold the connection open, sending nothing, until the client hangs up (bounded)."""
    conn.sock.settimeout(MAX_LIFETIME_S)
    try:
        while conn._fill():
            pass
    except OSError:
        pass


# --------------------------------------------------------------------------- NDJSON faults


def malformed_lines(conn: Conn) -> None:
    """Lines a browser's parser skips: not JSON, JSON that is not an object, blank lines."""
    body = (
        _chunks(2)
        + b"{not json at all\n"
        + b"[1, 2, 3]\n"
        + b'"a string"\n'
        + b"\n"
        + b'{"event": "chunk", "data": {"text": "cut"\n'
        + _chunks(2, start=2)
        + _end()
    )
    conn.send(http_head() + chunk(body) + LAST_CHUNK)


def split_lines(conn: Conn) -> None:
    """Every line split across TCP segments: inside the JSON, inside a UTF-8 character,
    inside the chunked framing's size line."""
    text = "smörgåsbord 😀 末"
    payload = _chunks(1) + line("chunk", {"text": text}) + _chunks(1, start=2) + _end()
    framed = chunk(payload) + LAST_CHUNK
    emoji = framed.index("😀".encode()) + 2  # the middle of the 4-byte character
    cuts = sorted({1, 3, 20, emoji, len(framed) - 30, len(framed) - 3})
    pieces = [framed[a:b] for a, b in zip([0, *cuts], [*cuts, len(framed)])]
    conn.send(http_head())
    time.sleep(LEAD_S)
    conn.send_pieces(pieces, gap=0.04)


def invalid_utf8(conn: Conn) -> None:
    """A chunk line whose text bytes are not UTF-8 (a browser's JSON.parse sees U+FFFD
    garbage and skips it; the load user counts it as malformed)."""
    bad = b'{"event": "chunk", "data": {"text": "caf\xe9 \xff\xfe"}}\n'
    conn.send(http_head() + chunk(_chunks(2)))
    time.sleep(LEAD_S)
    conn.send(chunk(bad + _chunks(2, start=2) + _end()) + LAST_CHUNK)


def huge_line(conn: Conn) -> None:
    """One 10 MB chunk line between ordinary ones (a runaway tool result)."""
    big = line("chunk", {"text": "x" * (HUGE_LINE_BYTES - 40)})
    conn.send(http_head() + chunk(_chunks(1)))
    time.sleep(LEAD_S)
    conn.send(chunk(big))
    conn.send(chunk(_chunks(1, start=1) + _end()) + LAST_CHUNK)


def endless(conn: Conn) -> None:
    """Chunks every 20 ms, never an end: only the stream timeout can stop it."""
    conn.send(http_head())
    conn.sock.settimeout(5.0)
    deadline = time.monotonic() + MAX_LIFETIME_S
    i = 0
    try:
        while time.monotonic() < deadline:
            conn.send(chunk(_chunks(1, start=i)))
            i += 1
            time.sleep(0.02)
    except OSError:
        return  # the client gave up: that is the point


def never_first_chunk(conn: Conn) -> None:
    """Headers and a status line, then silence: TTFC never comes."""
    conn.send(http_head() + chunk(line("status_update", {"status": "thinking"})))
    _idle_until_client_leaves(conn)


def never_responds(conn: Conn) -> None:
    """Reads the request and says nothing at all, not even a status line."""
    _idle_until_client_leaves(conn)


def gzip_whole_body(conn: Conn) -> None:
    """A gzip-encoded body sent in two halves (as a compressing proxy would)."""
    body = gzip.compress(_chunks(20) + _end())
    half = len(body) // 2
    conn.send(http_head(headers={"Content-Encoding": "gzip"}) + chunk(body[:half]))
    time.sleep(LEAD_S)
    conn.send(chunk(body[half:]) + LAST_CHUNK)


def healthy(conn: Conn) -> None:
    """Five chunks and an end, the way a well-behaved backend sends them."""
    conn.send(http_head() + chunk(_chunks(5) + _end()) + LAST_CHUNK)


def _as_fast_as_possible(conn: Conn, block: bytes) -> None:
    """Send ``block`` over and over, as fast as the client takes it, until it leaves (bounded)."""
    conn.sock.settimeout(5.0)
    deadline = time.monotonic() + MAX_LIFETIME_S
    try:
        while time.monotonic() < deadline:
            conn.send(block)
    except OSError:
        return


def _fast_block(event: str) -> bytes:
    filler = "x" * (FAST_LINE_BYTES - 60)
    one = line(event, {"text": filler})
    return chunk(one * (FAST_BLOCK_BYTES // len(one)))


def fast_endless(conn: Conn) -> None:
    """Chunk lines written as fast as the socket takes them, never an end."""
    conn.send(http_head())
    _as_fast_as_possible(conn, _fast_block("chunk"))


def fast_heartbeats(conn: Conn) -> None:
    """Heartbeat lines as fast as the socket takes them: never a chunk (TTFC never comes)."""
    conn.send(http_head())
    _as_fast_as_possible(conn, _fast_block("heartbeat"))


@functools.cache
def brotli_bomb() -> bytes:
    """A brotli body of a few KB that expands to ``BOMB_BYTES`` zero bytes."""
    coder = brotli.Compressor(quality=5)
    block = bytes(1 << 20)
    return b"".join([coder.process(block) for _ in range(BOMB_BYTES >> 20)]) + coder.finish()


@functools.cache
def gzip_bomb() -> bytes:
    """About 1 MB of gzip members that expand to ``BOMB_BYTES`` zero bytes."""
    coder = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    member = coder.compress(bytes(1 << 20)) + coder.flush()
    return member * (BOMB_BYTES >> 20)


def _bomb(conn: Conn, encoding: str, body: bytes) -> None:
    conn.sock.settimeout(5.0)
    try:
        conn.send(http_head(headers={"Content-Encoding": encoding}))
        for i in range(0, len(body), 65536):
            conn.send(chunk(body[i : i + 65536]))
        conn.send(LAST_CHUNK)
    except OSError:
        return  # the client gave up on it: that is the point
    _idle_until_client_leaves(conn)


def brotli_bomb_body(conn: Conn) -> None:
    _bomb(conn, "br", brotli_bomb())


def gzip_bomb_body(conn: Conn) -> None:
    _bomb(conn, "gzip", gzip_bomb())


def gzip_lines(conn: Conn) -> None:
    """An ordinary gzip-encoded stream: the bombs' baseline."""
    conn.send(http_head(headers={"Content-Encoding": "gzip"}) + chunk(gzip.compress(_chunks(20) + _end())) + LAST_CHUNK)


def _bad_chunk_size(size_line: bytes) -> Callable[[Conn], None]:
    def send(conn: Conn) -> None:
        """A good chunk, then (in the same write) a chunk whose size line a browser refuses."""
        body = _chunks(2, start=1) + _end()
        conn.send(http_head() + chunk(_chunks(1)) + size_line + b"\r\n" + body + b"\r\n" + LAST_CHUNK)
        _idle_until_client_leaves(conn)

    return send


def _redirect(status: int, location: str) -> Callable[[Conn], None]:
    def send(conn: Conn) -> None:
        body = b"moved"
        conn.send(
            b"HTTP/1.1 %d Redirect\r\nLocation: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (status, location.encode(), len(body), body)
        )

    return send


NDJSON_FAULTS: Final[dict[str, Callable[[Conn], None]]] = {
    "malformed-lines": malformed_lines,
    "split-lines": split_lines,
    "invalid-utf8": invalid_utf8,
    "huge-line": huge_line,
    "endless": endless,
    "never-first-chunk": never_first_chunk,
    "never-responds": never_responds,
    "gzip": gzip_whole_body,
    "healthy": healthy,
    "fast-endless": fast_endless,
    "fast-heartbeats": fast_heartbeats,
    "brotli-bomb": brotli_bomb_body,
    "gzip-bomb": gzip_bomb_body,
    "gzip-lines": gzip_lines,
    **{f"bad-chunk-size-{name}": _bad_chunk_size(size) for name, size in BAD_CHUNK_SIZES.items()},
    "redirect-307": _redirect(307, "/fault/healthy"),
    "redirect-308": _redirect(308, "/fault/healthy"),
    "redirect-loop": _redirect(307, "/fault/redirect-loop"),
}


def echo_credentials(conn: Conn, req: Request) -> None:
    """401 whose body repeats the credentials the client sent (a careless real backend)."""
    body = (
        f"rejected Authorization={req.headers.get('authorization', '')!r} "
        f"X-Fingerprint-ID={req.headers.get('x-fingerprint-id', '')!r}"
    ).encode()
    conn.send(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


# --------------------------------------------------------------------------- Socket.io faults


def _ack(ack_id: int, reply: object) -> bytes:
    return ws_frame(b"43" + NAMESPACE.encode() + b"," + str(ack_id).encode() + orjson.dumps([reply]))


def _listening(ack_id: int, name: str) -> bytes:
    return _ack(ack_id, {"response_listener_events": [name]})


def sio_no_ack(conn: Conn, ack_id: int, name: str) -> None:
    """The task is received and never acknowledged."""


def sio_empty_listeners(conn: Conn, ack_id: int, name: str) -> None:
    conn.send(_ack(ack_id, {"response_listener_events": []}))


def sio_chunks_before_ack(conn: Conn, ack_id: int, name: str) -> None:
    """Three chunks on the listener, then the ack naming it, then the rest."""
    conn.send(b"".join(sio_event(name, f"early-{i} ") for i in range(3)))
    time.sleep(LEAD_S)
    conn.send(_listening(ack_id, name) + sio_event(name, "late ") + sio_event(name, {"end": True}))


def sio_healthy(conn: Conn, ack_id: int, name: str) -> None:
    conn.send(
        _listening(ack_id, name)
        + b"".join(sio_event(name, f"c{i} ") for i in range(5))
        + sio_event(name, {"end": True})
    )


def sio_many_listeners(conn: Conn, ack_id: int, name: str) -> None:
    """``MANY_LISTENERS`` listeners, each with two chunks and an end (listeners past 127 included)."""
    names = [f"{name}-{i}" for i in range(MANY_LISTENERS)]
    frames = _ack(ack_id, {"response_listener_events": names})
    frames += b"".join(sio_event(n, f"{n} a ") + sio_event(n, f"{n} b ") for n in names)
    frames += b"".join(sio_event(n, {"end": True}) for n in names)
    conn.send(frames)


def sio_one_of_fifty(conn: Conn, ack_id: int, name: str) -> None:
    """50 listeners; one streams and ends, 49 never say a word."""
    names = [f"{name}-{i}" for i in range(50)]
    conn.send(
        _ack(ack_id, {"response_listener_events": names})
        + sio_event(names[7], "only one talks ")
        + sio_event(names[7], {"end": True})
    )


def _binary_event(name: str, attachment: bytes, namespace: str = NAMESPACE) -> bytes:
    placeholder = orjson.dumps([name, {"_placeholder": True, "num": 0}])
    return ws_frame(b"451-" + namespace.encode() + b"," + placeholder) + ws_frame(attachment, opcode=0x2)


def sio_binary(conn: Conn, ack_id: int, name: str) -> None:
    """A binary event (one attachment) between chunks, then a binary frame nobody announced."""
    conn.send(
        _listening(ack_id, name)
        + sio_event(name, "before ")
        + _binary_event(name, b"\x00\x01 raw bytes")
        + sio_event(name, "after ")
        + ws_frame(b"stray", opcode=0x2)
        + sio_event(name, {"end": True})
    )


def sio_binary_ack(conn: Conn, ack_id: int, name: str) -> None:
    """The ack itself is a binary ack (its reply carries an attachment)."""
    reply = orjson.dumps([{"response_listener_events": [name], "blob": {"_placeholder": True, "num": 0}}])
    conn.send(
        ws_frame(b"461-" + NAMESPACE.encode() + b"," + str(ack_id).encode() + reply)
        + ws_frame(b"attachment", opcode=0x2)
        + sio_event(name, "c0 ")
        + sio_event(name, {"end": True})
    )


def sio_then_silence(conn: Conn, ack_id: int, name: str) -> None:
    """One chunk, then nothing at all: no end, no ping."""
    conn.send(_listening(ack_id, name) + sio_event(name, "c0 "))


def sio_flood(conn: Conn, ack_id: int, name: str) -> None:
    """Chunk events as fast as the socket takes them, never an end."""
    conn.send(_listening(ack_id, name))
    _as_fast_as_possible(conn, sio_event(name, "x" * (FAST_LINE_BYTES - 60)) * (FAST_BLOCK_BYTES // FAST_LINE_BYTES))


SIO_FAULTS: Final[dict[str, Callable[[Conn, int, str], None]]] = {
    "no-ack": sio_no_ack,
    "empty-listeners": sio_empty_listeners,
    "chunks-before-ack": sio_chunks_before_ack,
    "healthy": sio_healthy,
    "many-listeners": sio_many_listeners,
    "one-of-fifty": sio_one_of_fifty,
    "binary": sio_binary,
    "binary-ack": sio_binary_ack,
    "then-silence": sio_then_silence,
    "flood": sio_flood,
}


# --------------------------------------------------------------------------- the server


class BadServer:
    """Loopback server speaking just enough HTTP/1.1 and Socket.io to misbehave on request."""

    def __init__(self) -> None:
        self.tasks: list[str] = []  # Socket.io faults run, in order
        self.server = ScriptedServer(self._handle)
        self.url = self.server.url

    def _handle(self, conn: Conn) -> None:
        conn.sock.settimeout(MAX_LIFETIME_S)
        while (req := conn.read_request()) is not None:  # keep-alive: a redirect's next hop comes here
            fault = req.target[7:].split("/", 1)[0] if req.target.startswith("/fault/") else ""
            if "/socket.io/" in req.target:
                self._socketio(conn, req, quick_ping=req.target.startswith("/quick-ping/"))
                return
            if fault in NDJSON_FAULTS:
                NDJSON_FAULTS[fault](conn)
                if not fault.startswith("redirect-"):
                    return
            elif req.target.startswith(MEASUREMENT_PREFIX):
                conn.send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")  # a real backend has none
            else:
                echo_credentials(conn, req)
                return

    def _socketio(self, conn: Conn, req: Request, quick_ping: bool = False) -> None:
        conn.accept_websocket(req)
        conn.send(ws_frame(QUICK_PING_OPEN if quick_ping else OPEN_PACKET))
        hello = conn.recv_text()
        if hello is None:
            return
        auth = orjson.loads(hello[len(b"40" + NAMESPACE.encode() + b",") :] or b"null")
        token = auth.get("token", "") if isinstance(auth, dict) else ""
        if isinstance(token, str) and token.startswith("echo-"):
            message = orjson.dumps({"message": f"invalid token {token}"})
            conn.send(ws_frame(b"44" + NAMESPACE.encode() + b"," + message))
            return
        conn.send(ws_frame('40/UserSession,{"sid":"bad-sio"}'))
        n = 0
        while True:
            text = conn.recv_text()
            if text is None:
                return
            if not text.startswith(b"42" + NAMESPACE.encode() + b","):
                continue  # pongs, disconnect packets
            rest = text[len(b"42" + NAMESPACE.encode() + b",") :]
            digits = len(rest) - len(rest.lstrip(b"0123456789"))
            ack_id, args = int(rest[:digits]), orjson.loads(rest[digits:])
            task_data = args[1].get("taskData", {}) if len(args) > 1 and isinstance(args[1], dict) else {}
            fault = str(task_data.get("fault", "healthy"))
            self.tasks.append(fault)
            n += 1
            SIO_FAULTS[fault](conn, ack_id, f"bad-task-{n}")

    @property
    def requests(self) -> list[Request]:
        """Every HTTP request received so far (headers included)."""
        return self.server.requests

    @property
    def product_requests(self) -> list[Request]:
        """The requests a load user sent to the product's endpoints (not the fake backend's measurement ones)."""
        return [r for r in self.server.requests if not r.target.startswith(MEASUREMENT_PREFIX)]

    def count(self, prefix: str) -> int:
        """Requests so far whose target starts with ``prefix``."""
        return sum(1 for r in self.server.requests if r.target.startswith(prefix))

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> BadServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)
