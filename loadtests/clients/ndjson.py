"""NDJSON stream client for the load users: every socket read timed, every line recorded.

One ``recv`` per read, stamped with ``time.perf_counter()`` before anything is
parsed; lines are split on bytes across reads (a read may end inside a line or
inside a UTF-8 character) and each line completed by a read gets that read's
time and index.  Nothing is buffered to a size (the FastHttpUser
``iter_content(1024)`` trap), body time is not confused with header time, and
a stream that ends early is classified, never passed off as complete.

Runs under gevent (Locust); one client per simulated user, one stream at a
time, the connection kept alive between streams like a browser's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from urllib.parse import quote

import gevent
import orjson
from gevent import select as gselect
from gevent import socket as gsocket

from loadtests.clients.connection import (
    RECV_SIZE,
    connect_error_text,
    make_ssl_context,
    open_connection,
    simple_request,
)
from loadtests.clients.errors import ClientError
from loadtests.protocol.content import ContentDecoder, ContentDecodingError, make_content_decoder
from loadtests.protocol.errors import FramingError
from loadtests.protocol.http1 import (
    USER_AGENT,
    BodyFraming,
    HeadReader,
    ResponseHead,
    encode_request,
    framing_for,
    merge_headers,
    parse_base_url,
)
from loadtests.protocol.lines import LineSplitter
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import EVENT_CODE_BY_NAME
from stream_harness.contract.protocol import CANCEL_PATH, PROMISED_CHUNKS_HEADER, REQUEST_ID_HEADER
from stream_harness.contract.schema import CHUNK, END, ERROR, NO_SEQ, OTHER

NAN = math.nan
#: After ``end``, how long the body's own terminator may take before the stream
#: counts as cut (a proxy that drops the last chunk of a chunked body is a bug).
END_GRACE_S = 2.0
#: How much of a non-2xx body is read (for the failure detail) before giving up on it.
ERROR_BODY_LIMIT = 64 * 1024
MAX_SEQ = 0x7FFFFFFF
#: Placeholder until a stream has its connection (never read from).
_NO_SOCKET: gsocket.socket = gsocket.socket()
_NO_SOCKET.close()


class _Expired(ClientError):
    """The current deadline (first chunk / stream / end grace) passed.

    Thrown into the reading greenlet by one gevent timer per phase rather than
    by a socket timeout: a socket timeout arms and disarms a timer on every
    blocking read, which at one line per read was a third of the client's CPU.
    """


class _Retry(ClientError):
    """A reused keep-alive connection turned out dead before any response byte."""


class NdjsonClient:
    """POSTs NDJSON stream requests and fills a StreamRecord per stream."""

    last_request_id: str | None

    def __init__(
        self,
        base_url: str,
        *,
        accept_encoding: str = "gzip, deflate, br",
        connect_timeout: float = 10.0,
        verify_tls: bool = True,
        ca_file: str | None = None,
    ) -> None:
        self._origin = parse_base_url(base_url)
        self._accept_encoding = accept_encoding
        self._connect_timeout = connect_timeout
        self._ssl = make_ssl_context(verify_tls, ca_file) if self._origin.is_tls else None
        self._sock: gsocket.socket | None = None
        self.last_request_id = None

    # ------------------------------------------------------------------ public API
    def stream(
        self,
        record: StreamRecord,
        path: str,
        body: dict,
        headers: Mapping[str, str],
        *,
        first_chunk_timeout: float,
        stream_timeout: float,
    ) -> None:
        """POST and read the NDJSON body to its end, filling ``record``.

        Never raises for network or stream faults: they are classified into
        ``record.error`` (stream_harness.contract.kinds.ErrorKind).  If the greenlet is
        killed mid-stream, the socket is closed, the record marked ``stopped``
        and the exception re-raised.

        Read indexes count every socket read of the response from 0, the
        read(s) carrying the response head included; ``first_chunk_timeout``
        runs until the first ``chunk`` line (the TTFC definition), not the
        first byte.  An ``end`` whose reason starts with "cancel" makes the
        stream ``cancelled`` (not ``short_stream``).
        """
        payload = orjson.dumps(body)
        defaults = [
            ("Host", self._origin.host_header),
            ("User-Agent", USER_AGENT),
            ("Accept", "*/*"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
        ]
        if self._accept_encoding:
            defaults.append(("Accept-Encoding", self._accept_encoding))
        request = encode_request("POST", self._origin.target(path), merge_headers(defaults, headers), payload)
        run = _StreamRun(self, record, first_chunk_timeout, stream_timeout)
        try:
            run.execute(request)
        except BaseException as exc:
            # GreenletExit (Locust stopping the user), an outer gevent.Timeout, or a bug.
            self._drop_connection()
            run.set_duration_now()
            if isinstance(exc, Exception):
                record.fail("disconnect", f"client error: {exc!r}"[:200])
            else:
                record.fail("stopped", type(exc).__name__)
            raise

    def cancel(self, request_id: str, headers: Mapping[str, str]) -> int:
        """POST /api/ai/cancel/{request_id} on a separate connection; HTTP status, 0 if unreachable."""
        try:
            response = simple_request(
                self._origin,
                "POST",
                CANCEL_PATH.format(request_id=quote(request_id, safe="")),
                headers=headers,
                body=b"",
                timeout=self._connect_timeout,
                ssl_context=self._ssl,
            )
        except (OSError, FramingError):
            return 0
        return response.status

    def close(self) -> None:
        self._drop_connection()

    # ------------------------------------------------------------------ connection reuse
    def _checkout(self) -> tuple[gsocket.socket, bool]:
        """The kept-alive connection if it is still usable, else a new one (OSError if none)."""
        sock = self._sock
        if sock is not None:
            if _idle_connection_usable(sock):
                return sock, True
            self._drop_connection()
        self._sock = open_connection(self._origin, self._connect_timeout, self._ssl)
        return self._sock, False

    def _drop_connection(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _idle_connection_usable(sock) -> bool:
    """An idle keep-alive socket that is readable was closed (or sent junk) by the server."""
    if getattr(sock, "pending", None) and sock.pending():
        return False
    try:
        readable, _, _ = gselect.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class _StreamRun:
    """State of one POST: deadlines, counters, and the read loop."""

    def __init__(
        self, client: NdjsonClient, record: StreamRecord, first_chunk_timeout: float, stream_timeout: float
    ) -> None:
        self.client = client
        self.record = record
        self.first_chunk_timeout = first_chunk_timeout
        self.stream_timeout = stream_timeout
        self.sock: gsocket.socket = _NO_SOCKET
        self.t0 = NAN
        self.now = NAN
        self.reads = 0
        self.n_chunks = 0
        self.malformed = 0
        self.ended = False
        self.end_ms = NAN
        self.cancelled = False
        self.splitter = LineSplitter()
        self.first_chunk_deadline = self.stream_deadline = self.deadline = math.inf
        self.timer: gevent.Timeout | None = None

    # ------------------------------------------------------------------ orchestration
    def execute(self, request: bytes) -> None:
        try:
            self._execute(request)
        finally:
            self.disarm()

    def arm(self, deadline: float) -> None:
        """Bound the current phase by ``deadline`` (a perf_counter value): one timer, not one per read."""
        self.disarm()
        self.deadline = deadline
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise _Expired
        self.timer = gevent.Timeout(remaining, _Expired)
        self.timer.start()

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.close()
            self.timer = None

    def _execute(self, request: bytes) -> None:
        record = self.record
        client = self.client
        for attempt in (0, 1):
            self.t0 = time.perf_counter()
            record.t0 = self.t0
            record.started_at = time.time()
            try:
                sock, reused = client._checkout()
            except OSError as exc:
                self.finish_failed("connect", connect_error_text(exc))
                return
            self.sock = sock
            try:
                sock.settimeout(client._connect_timeout)
                sock.sendall(request)
            except OSError as exc:
                client._drop_connection()
                if reused and attempt == 0:
                    continue
                self.finish_failed("connect", f"sending the request failed: {exc}")
                return
            self.t0 = time.perf_counter()
            record.t0 = self.t0
            record.started_at = time.time()
            self.stream_deadline = self.t0 + self.stream_timeout
            self.first_chunk_deadline = self.t0 + self.first_chunk_timeout
            try:
                sock.settimeout(None)  # deadlines come from self.timer
                self.arm(min(self.first_chunk_deadline, self.stream_deadline))
                self.read_response(may_retry=reused and attempt == 0)
            except _Expired:
                self.on_expired()
            except _Retry:
                client._drop_connection()
                continue
            return

    def read_response(self, may_retry: bool) -> None:
        record = self.record
        try:
            head, rest = self.read_head(may_retry)
        except _Expired:
            self.on_expired()
            return
        except _Retry:
            raise
        except FramingError as exc:
            self.finish_failed("malformed", str(exc), drop=True)
            return
        except OSError as exc:
            self.finish_failed("disconnect", f"before the response head: {exc}", drop=True)
            return

        record.time_to_headers_ms = (self.now - self.t0) * 1000.0
        record.http_status = head.status
        record.content_encoding = head.get("content-encoding", "") or ""
        self.client.last_request_id = head.get(REQUEST_ID_HEADER)
        promised = head.get(PROMISED_CHUNKS_HEADER)
        if promised is not None and promised.strip().isdigit():
            record.expected_chunks = int(promised)
        try:
            framing = framing_for(head, "POST")
        except FramingError as exc:
            self.finish_failed("malformed", str(exc), drop=True)
            return
        if not 200 <= head.status < 300:
            self.read_error_body(head, framing, rest)
            return
        try:
            decoder = make_content_decoder(head.get("content-encoding"))
        except ContentDecodingError as exc:
            self.finish_failed("malformed", str(exc), drop=True)
            return
        try:
            clean = self.read_body(framing, decoder, rest)
        except _Expired:
            self.on_expired()
            return
        except FramingError as exc:
            self.finish_failed("malformed", f"bad chunked framing: {exc}", drop=True)
            return
        except ContentDecodingError as exc:
            self.finish_failed("malformed", str(exc), drop=True)
            return
        except OSError as exc:
            self.on_cut(f"{type(exc).__name__}: {exc}")
            return
        if not clean:
            self.on_cut("connection closed")
            return
        self.on_clean_end(head, framing, decoder)

    # ------------------------------------------------------------------ reading
    def recv(self) -> bytes:
        """One socket read (the phase timer may throw _Expired in), stamped right after it returns."""
        data = self.sock.recv(RECV_SIZE)
        self.now = time.perf_counter()
        if data:
            self.reads += 1
        return data

    def read_head(self, may_retry: bool) -> tuple[ResponseHead, bytes]:
        reader = HeadReader()
        while True:
            try:
                data = self.recv()
            except OSError:
                if may_retry and not self.reads:
                    raise _Retry from None
                raise
            if not data:
                if may_retry and not self.reads:
                    raise _Retry
                raise ConnectionError("connection closed before the response head")
            found = reader.feed(data)
            if found is not None:
                return found

    def read_body(self, framing: BodyFraming, decoder: ContentDecoder | None, data: bytes) -> bool:
        """Read to the body's end; True if it ended cleanly (framing complete / clean EOF).

        The hot loop: one recv, one timestamp, then framing -> decoding ->
        line splitting -> one ``add_event`` per line.  ``data`` (bytes that
        came with the head) belongs to the read that completed the head.
        """
        feed = framing.feed
        decompress = decoder.decompress if decoder is not None else None
        split = self.splitter.feed
        on_lines = self.on_lines
        recv = self.sock.recv
        perf = time.perf_counter
        now = self.now
        read_idx = self.reads - 1
        while True:
            if data:
                payload = feed(data)
                if payload and decompress is not None:
                    payload = decompress(payload)
                if payload:
                    lines = split(payload)
                    if lines:
                        on_lines(lines, now, read_idx)
            if framing.done:
                return True
            data = recv(RECV_SIZE)  # the phase timer may throw _Expired in
            now = perf()
            self.now = now
            if not data:
                return framing.clean_at_eof
            read_idx += 1
            self.reads = read_idx + 1

    def on_lines(self, lines: list[bytes], now: float, read_idx: int) -> None:
        """Record the events completed by one read (all get that read's time and index)."""
        t_ms = (now - self.t0) * 1000.0
        started_at = self.record.started_at
        add = self.record.add_event
        loads = orjson.loads
        kind_of = EVENT_CODE_BY_NAME.get
        for line in lines:
            try:
                obj = loads(line)
            except orjson.JSONDecodeError:
                if line.strip():
                    self.malformed += 1
                continue
            if type(obj) is not dict:
                self.malformed += 1
                continue
            event = obj.get("event")
            kind = kind_of(event, OTHER) if type(event) is str else OTHER
            seq = obj.get("seq", NO_SEQ)
            if type(seq) is not int or seq < 0 or seq > MAX_SEQ:
                seq = NO_SEQ
            ts = obj.get("ts")
            add(kind, t_ms, read_idx, seq, (ts - started_at) * 1000.0 if type(ts) is float or type(ts) is int else NAN)
            if kind == CHUNK:
                self.n_chunks += 1
                if self.n_chunks == 1 and self.stream_deadline != self.deadline:
                    self.arm(self.stream_deadline)
            elif kind == END:
                self.on_end_event(obj, now, t_ms)
            elif kind == ERROR:
                self.on_error_event(obj)

    def on_end_event(self, obj: dict, now: float, t_ms: float) -> None:
        if self.ended:
            return
        self.ended = True
        self.end_ms = t_ms
        self.arm(min(self.stream_deadline, now + END_GRACE_S))
        data = obj.get("data")
        reason = data.get("reason") if type(data) is dict else None
        if type(reason) is str and reason.lower().startswith("cancel"):
            self.cancelled = True

    def on_error_event(self, obj: dict) -> None:
        data = obj.get("data")
        if type(data) is dict:
            detail = f"{data.get('error_type', 'error')}: {data.get('message', '')}"
        else:
            detail = "error event"
        self.record.fail("stream_error_event", detail[:200])

    def read_error_body(self, head: ResponseHead, framing: BodyFraming, data: bytes) -> None:
        """Non-2xx: keep a snippet of the body for the detail, and the connection if cheap."""
        parts: list[bytes] = []
        size = 0
        clean = False
        try:
            while True:
                if data:
                    chunk = framing.feed(data)
                    parts.append(chunk)
                    size += len(chunk)
                if framing.done:
                    clean = True
                    break
                if size > ERROR_BODY_LIMIT:
                    break
                data = self.recv()
                if not data:
                    break
        except (_Expired, OSError, FramingError):
            pass
        snippet = b"".join(parts)[:200].decode("utf-8", "replace").strip()
        detail = f"HTTP {head.status}" + (f": {snippet}" if snippet else "")
        reusable = clean and head.keep_alive and not framing.leftover and not head.get("content-encoding")
        self.finish_failed("http_status", detail, drop=not reusable)

    # ------------------------------------------------------------------ outcomes
    def set_duration_now(self) -> None:
        record = self.record
        if math.isnan(record.duration_ms) and not math.isnan(self.t0):
            record.duration_ms = (time.perf_counter() - self.t0) * 1000.0
        record.n_reads = self.reads
        record.malformed_lines = self.malformed + self.splitter.dropped

    def finish_failed(self, kind: str, detail: str, drop: bool = False) -> None:
        if drop:
            self.client._drop_connection()
        self.record.fail(kind, detail)
        self.set_duration_now()

    def on_expired(self) -> None:
        self.client._drop_connection()
        if self.ended:
            self.record.fail("disconnect", f"body not terminated within {END_GRACE_S:g} s after end")
            self.record.duration_ms = self.end_ms
        elif self.n_chunks == 0 and self.first_chunk_deadline <= self.stream_deadline:
            self.record.fail("timeout", f"no chunk within first_chunk_timeout={self.first_chunk_timeout:g} s")
        else:
            self.record.fail(
                "timeout", f"stream not done within stream_timeout={self.stream_timeout:g} s ({self.n_chunks} chunks)"
            )
        self.set_duration_now()

    def on_cut(self, how: str) -> None:
        self.client._drop_connection()
        if self.ended:
            self.record.fail("disconnect", f"body not terminated after end ({how})")
            self.record.duration_ms = self.end_ms
        else:
            self.record.fail("disconnect", f"{how} before end, after {self.n_chunks} chunks")
        self.set_duration_now()

    def on_clean_end(self, head: ResponseHead, framing: BodyFraming, decoder: ContentDecoder | None) -> None:
        record = self.record
        rest = self.splitter.take_rest()
        if rest:
            self.on_lines([rest], self.now, self.reads - 1)
        if decoder is not None:
            try:
                decoder.finish()
            except ContentDecodingError as exc:
                record.fail("malformed", str(exc))
        if not (framing.done and head.keep_alive and not framing.leftover):
            self.client._drop_connection()
        if not self.ended:
            record.fail("missing_end", f"body ended without an end line after {self.n_chunks} chunks")
        elif self.cancelled:
            if record.error is None:
                record.status = "cancelled"
        elif record.expected_chunks >= 0 and self.n_chunks < record.expected_chunks:
            record.fail("short_stream", f"{self.n_chunks} of {record.expected_chunks} chunks")
        if record.error is None and not self.cancelled:
            record.status = "completed"
        record.duration_ms = self.end_ms if self.ended else (self.now - self.t0) * 1000.0
        self.set_duration_now()
