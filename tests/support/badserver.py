"""A purpose-built misbehaving backend for the fault matrix.

It produces what the fake backend cannot, because the fake backend is a
well-behaved FastAPI app: bytes that are not NDJSON, lines split at nasty
places, invalid UTF-8, a 10 MB line, a body that never ends or never starts,
a Socket.io server that never acks, acks with no listener, or streams before
its ack, and one that echoes the caller's credentials back in its errors.

NDJSON: ``POST /fault/<name>`` answers with the misbehaviour ``<name>``
(``NDJSON_FAULTS``); any other path (the product's endpoints included) is a
401 whose body repeats the ``Authorization`` / ``X-Fingerprint-ID`` headers.
Socket.io (websocket only, namespace ``/UserSession``): each emitted task
picks its misbehaviour with ``taskData["fault"]`` (``SIO_FAULTS``); a
CONNECT whose token starts with ``echo-`` is refused with a message that
repeats the token.

Every bad case first waits ``LEAD_S`` before misbehaving, so it lands while a
concurrent healthy stream is running.  Loopback only, port 0; one thread per
connection (``tests/_loopback.ScriptedServer``); everything a handler does is
bounded in time (``MAX_LIFETIME_S``) so a test can never hang on it.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from typing import Final

import orjson

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


NDJSON_FAULTS: Final[dict[str, Callable[[Conn], None]]] = {
    "malformed-lines": malformed_lines,
    "split-lines": split_lines,
    "invalid-utf8": invalid_utf8,
    "huge-line": huge_line,
    "endless": endless,
    "never-first-chunk": never_first_chunk,
    "never-responds": never_responds,
    "gzip": gzip_whole_body,
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


SIO_FAULTS: Final[dict[str, Callable[[Conn, int, str], None]]] = {
    "no-ack": sio_no_ack,
    "empty-listeners": sio_empty_listeners,
    "chunks-before-ack": sio_chunks_before_ack,
    "healthy": sio_healthy,
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
        req = conn.read_request()
        if req is None:
            return
        if req.target.startswith("/socket.io/"):
            self._socketio(conn, req)
        elif req.target.startswith("/fault/") and req.target[7:] in NDJSON_FAULTS:
            NDJSON_FAULTS[req.target[7:]](conn)
        elif req.target.startswith("/api/_harness/emit-times/"):
            conn.send(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        else:
            echo_credentials(conn, req)

    def _socketio(self, conn: Conn, req: Request) -> None:
        conn.accept_websocket(req)
        conn.send(ws_frame(OPEN_PACKET))
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

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> BadServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)
