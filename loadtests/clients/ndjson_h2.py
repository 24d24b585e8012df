"""NDJSON stream client over HTTP/2: several users' streams on one connection, every socket read timed.

A browser multiplexes its streams to one origin over one HTTP/2 connection;
so do these users.  The load process keeps an :class:`H2Pool` per origin
(:func:`shared_pool`); each connection carries up to
``streams_per_connection`` streams at once (and never more than the server's
``SETTINGS_MAX_CONCURRENT_STREAMS``), and a new connection is opened when all
are full.

Timing is the HTTP/1.1 client's (``loadtests.clients.ndjson``), per stream:
one reader greenlet per connection does one ``recv``, takes one
``time.perf_counter()``, hands the bytes to ``h2`` and delivers every frame of
that read to its stream, where DATA is decoded (Content-Encoding), split
into lines and recorded, all with that read's time.  A stream's read index
counts the socket reads that carried something for it (its HEADERS
included), from 0.  Received data is acknowledged at once, with Chromium's
window sizes (``loadtests.protocol.http2``), so flow control stalls what it
would stall in a browser and no more.

Connections speak ``h2`` over TLS (ALPN; a server that does not agree is a
``connect`` failure naming what it offered) and HTTP/2 with prior knowledge
over plain ``http://``.  Deadlines (first chunk, stream, the grace after
``end``) are kept by the waiting user greenlet, as in the Socket.io client:
no timer per read.  A stream that times out or whose user is stopped is
reset (``RST_STREAM CANCEL``); the connection goes on for the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import gevent
import orjson
from gevent import GreenletExit
from gevent import ssl as gssl
from gevent.event import Event
from gevent.lock import Semaphore
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import H2Error

from loadtests.clients.connection import (
    RECV_SIZE,
    YIELD_AFTER_S,
    connect_error_text,
    open_connection,
    post_cancel,
    take_turn,
)
from loadtests.clients.errors import ClientError
from loadtests.clients.outcome import END_GRACE_S, conclude_ndjson, cut_failure, expiry_failure, http_error_detail
from loadtests.protocol.content import (
    READ_OUTPUT_LIMIT,
    STREAM_OUTPUT_LIMIT,
    ContentDecoder,
    ContentDecodingError,
    make_content_decoder,
)
from loadtests.protocol.http1 import USER_AGENT, Origin, parse_base_url
from loadtests.protocol.http2 import new_client_connection, request_headers, response_status
from loadtests.protocol.lines import LineSplitter
from loadtests.protocol.ndjson_events import EventLines
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import ErrorKind
from stream_harness.contract.protocol import PROMISED_CHUNKS_HEADER, REQUEST_ID_HEADER

NAN = math.nan
#: Streams per connection unless told otherwise (a browser's usual fan-out per origin).
DEFAULT_STREAMS_PER_CONNECTION = 6
#: How much of a non-2xx body is kept for the failure detail.
ERROR_BODY_LIMIT = 64 * 1024
HTTP_VERSION = "2"


class NoHttp2Error(ClientError):
    """The server would not speak HTTP/2 on this connection."""


def h2_ssl_context(
    verify_tls: bool, ca_file: str | None = None, alpn: tuple[str, ...] = ("h2", "http/1.1")
) -> gssl.SSLContext:
    """A client TLS context offering ``h2`` first in ALPN, as a browser does (``alpn``).

    The settings of ``connection.make_ssl_context``: the system's trust store,
    or only the certificates of ``ca_file`` (``--ca-file``); no verification
    with ``verify_tls=False`` (``--insecure``).  Built from gevent's own
    ``SSLContext``: ``gssl.create_default_context`` is the standard library's
    function, whose sockets block the whole process where gevent did not patch
    ``ssl`` (tests, benchmarks), and a reader greenlet blocked in ``recv``
    would stall every stream of the connection.
    """
    ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.load_default_certs()
    if not verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = gssl.CERT_NONE
    ctx.set_alpn_protocols(list(alpn))  # a browser offers both; a connection that is not h2 is refused after
    return ctx


# =========================================================================== one stream


class _Stream:
    """One request/response on a connection; its frames are delivered by the connection's reader."""

    __slots__ = (
        "record",
        "t0",
        "stream_id",
        "reads",
        "last_read",
        "last_ms",
        "splitter",
        "decoder",
        "lines",
        "status",
        "request_id",
        "error_body",
        "failure",
        "finished",
        "got_chunk",
        "first_chunk_ms",
        "end_seen",
        "wakeup",
        "limits",
    )

    def __init__(
        self, record: StreamRecord, limits: tuple[int, int] = (READ_OUTPUT_LIMIT, STREAM_OUTPUT_LIMIT)
    ) -> None:
        self.record = record
        self.limits = limits  # (decoded bytes per step, per stream)
        self.t0 = NAN
        self.stream_id = 0
        self.reads = 0  # socket reads that carried something for this stream
        self.last_read = 0  # the connection's number of the last such read
        self.last_ms = NAN  # arrival of the latest frame (ms since request sent)
        self.splitter = LineSplitter()
        self.decoder: ContentDecoder | None = None
        self.lines = EventLines(
            record.add_event, NAN, on_first_chunk=self._first_chunk, on_end=self._end_seen, on_error=self._error_event
        )
        self.status = 0
        self.request_id: str | None = None
        self.error_body: list[bytes] | None = None  # collecting a non-2xx body
        self.failure: tuple[str, str] | None = None  # the first fault seen by the reader
        self.finished = False  # END_STREAM, reset or the connection lost
        self.got_chunk = False
        self.first_chunk_ms = NAN
        self.end_seen = False
        self.wakeup = Event()

    def _read_index(self, read_no: int) -> int:
        if read_no != self.last_read:
            self.last_read = read_no
            self.reads += 1
        return self.reads - 1

    # -- delivered by the reader greenlet ------------------------------------------
    def on_head(self, headers: list[tuple[bytes, bytes]], now: float, read_no: int) -> None:
        self._read_index(read_no)
        record = self.record
        self.last_ms = (now - self.t0) * 1000.0
        status, head = response_status(headers)
        self.status = status
        record.time_to_headers_ms = self.last_ms
        record.http_status = status
        record.content_encoding = head.get("content-encoding", "")
        self.request_id = head.get(REQUEST_ID_HEADER)
        promised = head.get(PROMISED_CHUNKS_HEADER)
        if promised is not None and promised.strip().isdigit():
            record.expected_chunks = int(promised)
        if not 200 <= status < 300:
            self.error_body = []
            return
        try:
            read_limit, stream_limit = self.limits
            self.decoder = make_content_decoder(
                head.get("content-encoding"), read_limit=read_limit, stream_limit=stream_limit
            )
        except ContentDecodingError as exc:
            self.fault(ErrorKind.MALFORMED, str(exc))

    def on_data(self, data: bytes, now: float, read_no: int) -> None:
        read = self._read_index(read_no)
        t_ms = (now - self.t0) * 1000.0
        self.last_ms = t_ms
        if self.failure is not None:
            return
        if self.error_body is not None:
            if sum(map(len, self.error_body)) < ERROR_BODY_LIMIT:
                self.error_body.append(data)
            return
        decoder = self.decoder
        if decoder is None:
            lines = self.splitter.feed(data)
            if lines:
                self.lines.feed(lines, t_ms, read)
            return
        try:
            out = decoder.decompress(data)
            while True:  # in budget-sized pieces, the hub getting its turns between them
                if out:
                    lines = self.splitter.feed(out)
                    if lines:
                        self.lines.feed(lines, t_ms, read)
                if not decoder.pending or self.failure is not None:
                    return
                take_turn()
                out = decoder.decompress(b"")
        except ContentDecodingError as exc:
            self.fault(ErrorKind.MALFORMED, str(exc))

    def _first_chunk(self, t_ms: float) -> None:
        self.got_chunk = True
        self.first_chunk_ms = t_ms
        self.wakeup.set()

    def _end_seen(self, t_ms: float) -> None:
        self.end_seen = True
        self.wakeup.set()

    def _error_event(self, detail: str) -> None:
        self.record.fail(ErrorKind.STREAM_ERROR_EVENT, detail)

    def on_end(self) -> None:
        """END_STREAM: the body is complete."""
        if self.failure is None and self.error_body is None:
            rest = self.splitter.take_rest()
            if rest:
                self.lines.feed([rest], self.last_ms, max(self.reads - 1, 0))
            if self.decoder is not None:
                try:
                    self.decoder.finish()
                except ContentDecodingError as exc:
                    self.fault(ErrorKind.MALFORMED, str(exc))
        self.finish()

    def fault(self, kind: str, detail: str) -> None:
        if self.failure is None:
            self.failure = (kind, detail)

    def finish(self) -> None:
        self.finished = True
        self.wakeup.set()

    def lose(self, detail: str) -> None:
        """The stream was reset or its connection went away."""
        if not self.finished:
            self.fault(*cut_failure(self.lines, detail))
            self.finish()


# =========================================================================== one connection


class _Connection:
    """One HTTP/2 connection: its socket, its ``h2`` state, its reader and the streams on it."""

    def __init__(self, sock: Any, limit: int) -> None:
        self.sock = sock
        self.h2 = new_client_connection()
        self.limit = limit
        self.streams: dict[int, _Stream] = {}
        self.reserved = 0  # slots promised to users about to start a stream
        self.usable = True  # false after GOAWAY or loss: no new streams
        self.reads = 0
        self._send_lock = Semaphore()
        self._pending_body: dict[int, bytes] = {}
        with self._send_lock:
            sock.sendall(self.h2.data_to_send())
        self.reader: gevent.Greenlet | None = gevent.spawn(self._read_loop)

    @property
    def free(self) -> int:
        """New streams this connection takes now."""
        if not self.usable:
            return 0
        allowed = min(self.limit, self.h2.remote_settings.max_concurrent_streams)
        return allowed - self.reserved

    # -- user side ---------------------------------------------------------------
    def start(self, stream: _Stream, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Send HEADERS (+ DATA); raises OSError when the connection is gone."""
        if not self.usable:
            raise ConnectionError("the HTTP/2 connection was closed")
        with self._send_lock:
            try:
                stream_id = self.h2.get_next_available_stream_id()
                self.h2.send_headers(stream_id, headers, end_stream=not body)
            except H2Error as exc:
                raise ConnectionError(f"HTTP/2: {exc}") from None
            stream.stream_id = stream_id
            self.streams[stream_id] = stream
            if body:
                self._pending_body[stream_id] = body
                self._send_body(stream_id)
            self.sock.sendall(self.h2.data_to_send())

    def reset(self, stream: _Stream) -> None:
        """Cancel ``stream`` (timed out or its user stopped); the connection stays."""
        if self.streams.pop(stream.stream_id, None) is None:
            return
        self._pending_body.pop(stream.stream_id, None)
        try:
            with self._send_lock:
                self.h2.reset_stream(stream.stream_id, ErrorCodes.CANCEL)
                self.sock.sendall(self.h2.data_to_send())
        except (H2Error, OSError):
            pass

    def close(self) -> None:
        self.usable = False
        reader, self.reader = self.reader, None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=True, timeout=2.0)
        self._lost("connection closed by the client")

    # -- reader side ---------------------------------------------------------------
    def _send_body(self, stream_id: int) -> None:
        """As much of a request body as the flow-control windows allow (send lock held)."""
        body = self._pending_body.get(stream_id)
        if body is None:
            return
        window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
        while body and window > 0:
            piece, body = body[:window], body[window:]
            self.h2.send_data(stream_id, piece, end_stream=not body)
            window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
        if body:
            self._pending_body[stream_id] = body
        else:
            del self._pending_body[stream_id]

    def _read_loop(self) -> None:
        detail = "server closed the connection"
        recv = self.sock.recv
        receive = self.h2.receive_data
        ack = self.h2.acknowledge_received_data
        streams = self.streams
        perf = time.perf_counter
        killed = False
        yield_at = perf() + YIELD_AFTER_S
        try:
            while True:
                data = recv(RECV_SIZE)
                now = perf()
                if not data:
                    return
                if now >= yield_at:  # a peer that always has data must not keep the hub from the others
                    yield_at = take_turn()
                self.reads += 1
                read_no = self.reads
                try:
                    events = receive(data)
                except H2Error as exc:
                    detail = f"HTTP/2 protocol error: {exc}"
                    return
                consumed: dict[int, int] = {}
                for event in events:
                    if isinstance(event, DataReceived):
                        if event.flow_controlled_length:
                            consumed[event.stream_id] = consumed.get(event.stream_id, 0) + event.flow_controlled_length
                        stream = streams.get(event.stream_id)
                        if stream is not None:
                            stream.on_data(event.data, now, read_no)
                    elif isinstance(event, ResponseReceived):
                        stream = streams.get(event.stream_id)
                        if stream is not None:
                            stream.on_head(event.headers, now, read_no)
                    elif isinstance(event, StreamEnded):
                        stream = streams.pop(event.stream_id, None)
                        if stream is not None:
                            stream.on_end()
                    elif isinstance(event, StreamReset):
                        stream = streams.pop(event.stream_id, None)
                        self._pending_body.pop(event.stream_id, None)
                        if stream is not None:
                            stream.lose(f"stream reset by the server ({_code_name(event.error_code)})")
                    elif isinstance(event, ConnectionTerminated):
                        self._on_goaway(event)
                for stream_id, size in consumed.items():  # the data is ours now: open the windows again
                    try:
                        ack(size, stream_id)
                    except H2Error:  # the stream was reset meanwhile
                        pass
                if self._pending_body:
                    for stream_id in list(self._pending_body):
                        self._send_body(stream_id)
                out = self.h2.data_to_send()
                if out:
                    with self._send_lock:
                        self.sock.sendall(out)
                if not self.usable and not streams:
                    detail = "GOAWAY from the server"
                    return
        except OSError as exc:
            detail = f"{type(exc).__name__}: {exc}"
        except GreenletExit:
            killed = True
            raise
        finally:
            if not killed:
                self.reader = None
                self._lost(detail)

    def _on_goaway(self, event: ConnectionTerminated) -> None:
        """No new streams; the ones the server will not process are lost now."""
        self.usable = False
        last = event.last_stream_id if event.last_stream_id is not None else 0
        why = f"GOAWAY from the server ({_code_name(event.error_code)})"
        for stream_id in [s for s in self.streams if s > last]:
            self.streams.pop(stream_id).lose(why)

    def _lost(self, detail: str) -> None:
        self.usable = False
        sock = self.sock
        try:
            sock.close()
        except OSError:
            pass
        streams = list(self.streams.values())
        self.streams.clear()
        self._pending_body.clear()
        for stream in streams:
            stream.lose(detail)


def _code_name(code: object) -> str:
    return getattr(code, "name", str(code))


# =========================================================================== the pool


class H2Pool:
    """HTTP/2 connections of one load process to one origin, shared by its NDJSON users."""

    def __init__(
        self,
        base_url: str,
        *,
        streams_per_connection: int = DEFAULT_STREAMS_PER_CONNECTION,
        connect_timeout: float = 10.0,
        verify_tls: bool = True,
        ca_file: str | None = None,
    ) -> None:
        if streams_per_connection < 1:
            raise ValueError("streams_per_connection must be >= 1")
        self.origin: Origin = parse_base_url(base_url)
        self.streams_per_connection = streams_per_connection
        self.connect_timeout = connect_timeout
        self.verify_tls = verify_tls
        self.ca_file = ca_file
        self._ssl = h2_ssl_context(verify_tls, ca_file) if self.origin.is_tls else None
        self._side_ssl = h2_ssl_context(verify_tls, ca_file, ("http/1.1",)) if self.origin.is_tls else None
        self.connections: list[_Connection] = []
        self._opening = Semaphore()
        self.users = 0

    def acquire(self) -> _Connection:
        """A connection with a free stream slot, reserved for the caller (opens one if needed).

        Raises OSError (connect, TLS) or ClientError (no HTTP/2 agreed).
        """
        with self._opening:
            self.connections = [c for c in self.connections if c.usable or c.reserved]
            for conn in self.connections:
                if conn.free > 0:
                    conn.reserved += 1
                    return conn
            conn = self._open()
            self.connections.append(conn)
            conn.reserved += 1
            return conn

    def release(self, conn: _Connection) -> None:
        conn.reserved -= 1
        if not conn.usable and conn.reserved <= 0 and conn in self.connections:
            self.connections.remove(conn)
            conn.close()

    def _open(self) -> _Connection:
        sock = open_connection(self.origin, self.connect_timeout, self._ssl)
        try:
            if self._ssl is not None:
                agreed = sock.selected_alpn_protocol()
                if agreed != "h2":
                    chose = agreed or "nothing"
                    raise NoHttp2Error(f"the server did not agree to HTTP/2 in TLS ALPN (it chose {chose})")
            sock.settimeout(self.connect_timeout)
            conn = _Connection(sock, self.streams_per_connection)
            sock.settimeout(None)  # deadlines are the waiting users'
            return conn
        except BaseException:
            sock.close()
            raise

    def cancel(self, request_id: str, headers: Mapping[str, str]) -> int:
        """POST /api/ai/cancel/{request_id} on a separate HTTP/1.1 connection; HTTP status, 0 if unreachable."""
        return post_cancel(self.origin, request_id, headers, timeout=self.connect_timeout, ssl_context=self._side_ssl)

    def close(self) -> None:
        connections, self.connections = self.connections, []
        for conn in connections:
            conn.close()


_POOLS: dict[tuple[str, int, bool, str | None], H2Pool] = {}


def shared_pool(
    base_url: str,
    *,
    streams_per_connection: int = DEFAULT_STREAMS_PER_CONNECTION,
    verify_tls: bool = True,
    ca_file: str | None = None,
) -> H2Pool:
    """This process's pool for ``base_url`` with these settings (created on first use)."""
    key = (base_url, streams_per_connection, verify_tls, ca_file)
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = H2Pool(
            base_url, streams_per_connection=streams_per_connection, verify_tls=verify_tls, ca_file=ca_file
        )
    return pool


# =========================================================================== the client


class H2NdjsonClient:
    """One user's NDJSON streams over a shared :class:`H2Pool` (the HTTP/1.1 client's interface)."""

    last_request_id: str | None

    def __init__(
        self,
        base_url: str,
        *,
        accept_encoding: str = "gzip, deflate, br",
        streams_per_connection: int = DEFAULT_STREAMS_PER_CONNECTION,
        verify_tls: bool = True,
        ca_file: str | None = None,
        decoded_read_limit: int = READ_OUTPUT_LIMIT,
        decoded_stream_limit: int = STREAM_OUTPUT_LIMIT,
        pool: H2Pool | None = None,
    ) -> None:
        self.pool = pool or shared_pool(
            base_url, streams_per_connection=streams_per_connection, verify_tls=verify_tls, ca_file=ca_file
        )
        self.pool.users += 1
        self._accept_encoding = accept_encoding
        self._limits = (decoded_read_limit, decoded_stream_limit)
        self._closed = False
        self.last_request_id = None

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
        """POST and read the NDJSON body to its end over HTTP/2, filling ``record``.

        The same contract as ``NdjsonClient.stream``: never raises for
        network or stream faults (they go into ``record.error``); a killed
        greenlet resets the stream, marks the record ``stopped`` and re-raises.
        """
        origin = self.pool.origin
        payload = orjson.dumps(body)
        defaults = [
            ("user-agent", USER_AGENT),
            ("accept", "*/*"),
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
        ]
        if self._accept_encoding:
            defaults.append(("accept-encoding", self._accept_encoding))
        request = request_headers("POST", origin.scheme, origin.host_header, origin.target(path), defaults, headers)
        record.http_version = HTTP_VERSION
        stream = _Stream(record, self._limits)
        stream.t0 = record.t0 = time.perf_counter()
        record.started_at = time.time()
        conn = self._send(stream, request, payload)
        if conn is None:
            return
        try:
            self._wait(stream, conn, first_chunk_timeout, stream_timeout)
        except BaseException as exc:
            conn.reset(stream)
            if isinstance(exc, Exception):
                record.fail(ErrorKind.DISCONNECT, f"client error: {exc!r}"[:200])
            else:
                record.fail(ErrorKind.STOPPED, type(exc).__name__)
            self._close_record(stream)
            raise
        finally:
            self.pool.release(conn)
        self.last_request_id = stream.request_id
        self._conclude(stream)

    def _send(self, stream: _Stream, request: list[tuple[bytes, bytes]], payload: bytes) -> _Connection | None:
        """Start the stream on a pooled connection; None (the record failed) when none takes it.

        A connection that went away between its reservation and the send (a
        GOAWAY, an idle close) is replaced once, as a browser retries a
        request the server never saw.
        """
        record = stream.record
        for attempt in (0, 1):
            try:
                conn = self.pool.acquire()
            except (OSError, ClientError) as exc:
                record.fail(ErrorKind.CONNECT, connect_error_text(exc))
                break
            try:
                # t0 just before the request goes out: a first chunk can never look earlier than it came
                stream.t0 = record.t0 = time.perf_counter()
                record.started_at = stream.lines.started_at = time.time()
                conn.start(stream, request, payload)
                return conn
            except OSError as exc:
                self.pool.release(conn)
                if attempt == 0 and not stream.stream_id:
                    continue
                record.fail(ErrorKind.CONNECT, f"sending the request failed: {exc}")
                break
            except BaseException:
                self.pool.release(conn)
                raise
        self._close_record(stream)
        return None

    def _wait(self, stream: _Stream, conn: _Connection, first_chunk_timeout: float, stream_timeout: float) -> None:
        """Sleep until the reader finishes the stream or the phase's deadline passes."""
        t0 = stream.t0
        stream_deadline = t0 + stream_timeout
        end_deadline = math.inf
        while not stream.finished:
            if stream.first_chunk_ms > first_chunk_timeout * 1000.0:  # came late, before we woke up
                conn.reset(stream)
                stream.got_chunk = False
                self._expired(stream, first_chunk_timeout, stream_timeout, time.perf_counter())
                return
            if stream.end_seen and end_deadline == math.inf:
                end_deadline = time.perf_counter() + END_GRACE_S
            if stream.end_seen:
                deadline = min(stream_deadline, end_deadline)
            elif stream.got_chunk:
                deadline = stream_deadline
            else:
                deadline = min(stream_deadline, t0 + first_chunk_timeout)
            now = time.perf_counter()
            if now >= deadline:
                conn.reset(stream)
                self._expired(stream, first_chunk_timeout, stream_timeout, now)
                return
            stream.wakeup.clear()
            stream.wakeup.wait(deadline - now)

    @staticmethod
    def _expired(stream: _Stream, first_chunk_timeout: float, stream_timeout: float, now: float) -> None:
        stream.fault(
            *expiry_failure(
                stream.lines,
                in_end_grace=stream.lines.ended,
                waiting_first_chunk=not stream.got_chunk and first_chunk_timeout <= stream_timeout,
                first_chunk_timeout=first_chunk_timeout,
                stream_timeout=stream_timeout,
            )
        )
        stream.last_ms = (now - stream.t0) * 1000.0
        stream.finish()

    def _conclude(self, stream: _Stream) -> None:
        """The record's outcome once the stream is over (the rules of ``conclude_ndjson``)."""
        http_error = None
        if stream.error_body is not None:
            http_error = http_error_detail(stream.status, b"".join(stream.error_body))
        conclude_ndjson(
            stream.record, stream.lines, failure=stream.failure, http_error=http_error, last_ms=stream.last_ms
        )
        self._close_record(stream)

    @staticmethod
    def _close_record(stream: _Stream) -> None:
        record = stream.record
        if math.isnan(record.duration_ms) and not math.isnan(stream.t0):
            record.duration_ms = (time.perf_counter() - stream.t0) * 1000.0
        record.n_reads = stream.reads
        record.malformed_lines = stream.lines.malformed + stream.splitter.dropped
        stream.lines.drop_hooks()

    def cancel(self, request_id: str, headers: Mapping[str, str]) -> int:
        return self.pool.cancel(request_id, headers)

    def close(self) -> None:
        """This user is done; the last user of the pool closes its connections."""
        if self._closed:
            return
        self._closed = True
        self.pool.users -= 1
        if self.pool.users <= 0:
            self.pool.close()
