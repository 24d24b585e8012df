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

import gevent
import orjson
from gevent import socket as gsocket

from loadtests.clients.connection import (
    RECV_SIZE,
    YIELD_AFTER_S,
    connect_error_text,
    data_waiting,
    make_ssl_context,
    open_connection,
    post_cancel,
    take_turn,
)
from loadtests.clients.errors import ClientError
from loadtests.clients.outcome import END_GRACE_S, conclude_ndjson, cut_failure, expiry_failure
from loadtests.protocol.content import (
    READ_OUTPUT_LIMIT,
    STREAM_OUTPUT_LIMIT,
    ContentDecoder,
    ContentDecodingError,
    make_content_decoder,
)
from loadtests.protocol.errors import FramingError
from loadtests.protocol.http1 import (
    USER_AGENT,
    BodyFraming,
    HeadReader,
    Origin,
    ResponseHead,
    encode_request,
    framing_for,
    merge_headers,
    parse_base_url,
    resolve_location,
)
from loadtests.protocol.lines import LineSplitter
from loadtests.protocol.ndjson_events import EventLines
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import ErrorKind
from stream_harness.contract.protocol import PROMISED_CHUNKS_HEADER, REQUEST_ID_HEADER

NAN = math.nan
#: How much of a non-2xx body is read (for the failure detail) before giving up on it.
ERROR_BODY_LIMIT = 64 * 1024
#: 307 / 308 redirects followed per stream (same method and body, as fetch does).
MAX_REDIRECTS = 5
REDIRECT_STATUSES = (307, 308)
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
        decoded_read_limit: int = READ_OUTPUT_LIMIT,
        decoded_stream_limit: int = STREAM_OUTPUT_LIMIT,
    ) -> None:
        self._origin = parse_base_url(base_url)
        self._accept_encoding = accept_encoding
        self._connect_timeout = connect_timeout
        self._verify_tls = verify_tls
        self._ca_file = ca_file
        self._ssl = make_ssl_context(verify_tls, ca_file) if self._origin.is_tls else None
        self._sock: gsocket.socket | None = None
        self._sock_origin: Origin | None = None
        self.decoded_read_limit = decoded_read_limit
        self.decoded_stream_limit = decoded_stream_limit
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

        Read indexes count every socket read of the (final) response from 0,
        the read(s) carrying the response head included; ``first_chunk_timeout``
        runs until the first ``chunk`` line (the TTFC definition), not the
        first byte, and both timeouts run from the first request through any
        redirects.  An ``end`` whose reason starts with "cancel" makes the
        stream ``cancelled`` (not ``short_stream``).  307 / 308 redirects are
        followed like fetch follows them (same method and body, at most
        ``MAX_REDIRECTS``); the hops are noted in ``error_detail``.
        """
        run = _StreamRun(self, record, first_chunk_timeout, stream_timeout)
        try:
            run.execute(path, orjson.dumps(body), headers)
        except BaseException as exc:
            # GreenletExit (Locust stopping the user), an outer gevent.Timeout, or a bug.
            self._drop_connection()
            run.set_duration_now()
            if isinstance(exc, Exception):
                record.fail(ErrorKind.DISCONNECT, f"client error: {exc!r}"[:200])
            else:
                record.fail(ErrorKind.STOPPED, type(exc).__name__)
            raise

    def cancel(self, request_id: str, headers: Mapping[str, str]) -> int:
        """POST /api/ai/cancel/{request_id} on a separate connection; HTTP status, 0 if unreachable."""
        return post_cancel(self._origin, request_id, headers, timeout=self._connect_timeout, ssl_context=self._ssl)

    def close(self) -> None:
        self._drop_connection()

    # ------------------------------------------------------------------ requests and connections
    def _request(self, origin: Origin, target: str, headers: Mapping[str, str], payload: bytes) -> bytes:
        defaults = [
            ("Host", origin.host_header),
            ("User-Agent", USER_AGENT),
            ("Accept", "*/*"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
        ]
        if self._accept_encoding:
            defaults.append(("Accept-Encoding", self._accept_encoding))
        return encode_request("POST", target, merge_headers(defaults, headers), payload)

    def _checkout(self, origin: Origin) -> tuple[gsocket.socket, bool]:
        """The kept-alive connection to ``origin`` if it is still usable, else a new one (OSError if none)."""
        sock = self._sock
        if sock is not None:
            if self._sock_origin == origin and not data_waiting(sock, unpollable=True):
                return sock, True
            self._drop_connection()
        if origin.is_tls and self._ssl is None:  # a redirect from http:// to https://
            self._ssl = make_ssl_context(self._verify_tls, self._ca_file)
        self._sock = open_connection(origin, self._connect_timeout, self._ssl if origin.is_tls else None)
        self._sock_origin = origin
        return self._sock, False

    def _drop_connection(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


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
        self.events = EventLines(
            record.add_event, NAN, on_first_chunk=self.on_first_chunk, on_end=self.on_end, on_error=self.on_error
        )
        self.splitter = LineSplitter()
        self.first_chunk_deadline = self.stream_deadline = self.deadline = math.inf
        self.timer: gevent.Timeout | None = None
        self.yield_at = 0.0

    # ------------------------------------------------------------------ orchestration
    def execute(self, path: str, payload: bytes, headers: Mapping[str, str]) -> None:
        try:
            self._follow(path, payload, headers)
        finally:
            self.disarm()
            self.events.drop_hooks()

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

    def _follow(self, path: str, payload: bytes, headers: Mapping[str, str]) -> None:
        """The request, then each 307 / 308 hop, until a response that is not a redirect."""
        client = self.client
        origin = client._origin
        target = origin.target(path)
        hops: list[str] = []
        while True:
            redirect = self._exchange(origin, client._request(origin, target, headers, payload), hop=len(hops))
            if redirect is None:
                break
            status, location = redirect
            if len(hops) == MAX_REDIRECTS:
                self.finish_failed(
                    ErrorKind.HTTP_STATUS, f"HTTP {status}: more than {MAX_REDIRECTS} redirects", drop=True
                )
                break
            try:
                next_origin, target = resolve_location(origin, target, location)
            except ValueError as exc:
                self.finish_failed(ErrorKind.HTTP_STATUS, f"HTTP {status}: {exc}", drop=True)
                break
            if next_origin != origin:
                # fetch drops the credentials of a request redirected to another origin
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                hops.append(f"{status} to {location.strip()[:60]}")
            else:
                hops.append(f"{status} to {target[:60]}")
            origin = next_origin
        if hops:
            record = self.record
            note = "redirected: " + ", ".join(hops)
            record.error_detail = f"{record.error_detail}; {note}" if record.error_detail else note

    def start_clock(self) -> None:
        """t0 (and the record's start) now: a first chunk can never look earlier than it came."""
        self.t0 = self.record.t0 = time.perf_counter()
        self.record.started_at = self.events.started_at = time.time()

    def _exchange(self, origin: Origin, request: bytes, hop: int) -> tuple[int, str] | None:
        """Send ``request`` and read its response into the record; (status, Location) of a redirect.

        On the first hop the clock starts and the phase timer is armed; later
        hops run under it.
        """
        client = self.client
        for attempt in (0, 1):
            if hop == 0:
                self.start_clock()  # a failed connect is timed from here
            try:
                try:
                    sock, reused = client._checkout(origin)
                except OSError as exc:
                    self.finish_failed(ErrorKind.CONNECT, connect_error_text(exc))
                    return None
                self.sock = sock
                if hop == 0:
                    self.start_clock()  # again, just before the request goes out
                try:
                    sock.settimeout(client._connect_timeout)
                    sock.sendall(request)
                except OSError as exc:
                    client._drop_connection()
                    if reused and attempt == 0:
                        continue
                    self.finish_failed(ErrorKind.CONNECT, f"sending the request failed: {exc}")
                    return None
                if hop == 0:
                    self.stream_deadline = self.t0 + self.stream_timeout
                    self.first_chunk_deadline = self.t0 + self.first_chunk_timeout
                self.reads = 0
                sock.settimeout(None)  # deadlines come from self.timer
                if hop == 0:
                    self.arm(min(self.first_chunk_deadline, self.stream_deadline))
                return self.read_response(may_retry=reused and attempt == 0)
            except _Expired:
                self.on_expired()
                return None
            except _Retry:
                client._drop_connection()
                continue
        return None

    def read_response(self, may_retry: bool) -> tuple[int, str] | None:
        record = self.record
        try:
            head, rest = self.read_head(may_retry)
        except _Expired:
            self.on_expired()
            return None
        except _Retry:
            raise
        except FramingError as exc:
            self.finish_failed(ErrorKind.MALFORMED, str(exc), drop=True)
            return None
        except OSError as exc:
            self.finish_failed(ErrorKind.DISCONNECT, f"before the response head: {exc}", drop=True)
            return None
        try:
            framing = framing_for(head, "POST")
        except FramingError as exc:
            self.finish_failed(ErrorKind.MALFORMED, str(exc), drop=True)
            return None
        location = head.get("location")
        if head.status in REDIRECT_STATUSES and location:
            self.skip_body(head, framing, rest)
            return head.status, location

        record.time_to_headers_ms = (self.now - self.t0) * 1000.0
        record.http_status = head.status
        record.content_encoding = head.get("content-encoding", "") or ""
        self.client.last_request_id = head.get(REQUEST_ID_HEADER)
        promised = head.get(PROMISED_CHUNKS_HEADER)
        if promised is not None and promised.strip().isdigit():
            record.expected_chunks = int(promised)
        if not 200 <= head.status < 300:
            self.read_error_body(head, framing, rest)
            return None
        try:
            decoder = make_content_decoder(
                head.get("content-encoding"),
                read_limit=self.client.decoded_read_limit,
                stream_limit=self.client.decoded_stream_limit,
            )
        except ContentDecodingError as exc:
            self.finish_failed(ErrorKind.MALFORMED, str(exc), drop=True)
            return None
        try:
            clean = self.read_body(framing, decoder, rest)
            if clean:
                self.on_clean_end(head, framing, decoder)
                return None
        except _Expired:
            self.on_expired()
            return None
        except FramingError as exc:
            self.finish_failed(ErrorKind.MALFORMED, f"bad chunked framing: {exc}", drop=True)
            return None
        except ContentDecodingError as exc:
            self.finish_failed(ErrorKind.MALFORMED, str(exc), drop=True)
            return None
        except OSError as exc:
            self.on_cut(f"{type(exc).__name__}: {exc}")
            return None
        self.on_cut("connection closed")
        return None

    # ------------------------------------------------------------------ reading
    def recv(self) -> bytes:
        """One socket read (the phase timer may throw _Expired in), stamped right after it returns.

        Hands the hub a turn when the loop has not for ``YIELD_AFTER_S``, and
        raises _Expired itself once the phase deadline has passed.
        """
        now = self.now
        if now >= self.yield_at:
            self.yield_at = take_turn()
        if now >= self.deadline:
            raise _Expired
        data = self.sock.recv(RECV_SIZE)
        self.now = time.perf_counter()
        if data:
            self.reads += 1
        return data

    def read_head(self, may_retry: bool) -> tuple[ResponseHead, bytes]:
        reader = HeadReader()
        self.now = time.perf_counter()
        self.yield_at = self.now + YIELD_AFTER_S
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
        Between reads: a turn for the hub every ``YIELD_AFTER_S`` and the
        phase deadline checked, so neither a fast peer nor a decompression
        bomb keeps the timers (or anyone else) from running.
        """
        feed = framing.feed
        split = self.splitter.feed
        on_lines = self.on_lines
        recv = self.sock.recv
        perf = time.perf_counter
        now = self.now
        read_idx = self.reads - 1
        yield_at = self.yield_at
        while True:
            if data:
                try:
                    payload = feed(data)
                except FramingError as exc:
                    if exc.payload:  # what came before the fault in this read still counts
                        self.deliver(exc.payload, decoder, now, read_idx)
                    raise
                if payload:
                    if decoder is not None:
                        self.deliver(payload, decoder, now, read_idx)
                        yield_at = self.yield_at
                    else:
                        lines = split(payload)
                        if lines:
                            on_lines(lines, now, read_idx)
            if framing.done:
                return True
            if now >= yield_at:
                yield_at = self.yield_at = take_turn()
            if now >= self.deadline:
                raise _Expired
            data = recv(RECV_SIZE)  # the phase timer may throw _Expired in
            now = perf()
            self.now = now
            if not data:
                return framing.clean_at_eof
            read_idx += 1
            self.reads = read_idx + 1

    def deliver(self, payload: bytes, decoder: ContentDecoder | None, now: float, read_idx: int) -> None:
        """Decode ``payload`` (in budget-sized pieces, with hub turns between) and record its lines."""
        if decoder is None:
            lines = self.splitter.feed(payload)
            if lines:
                self.on_lines(lines, now, read_idx)
            return
        out = decoder.decompress(payload)
        while True:
            if out:
                lines = self.splitter.feed(out)
                if lines:
                    self.on_lines(lines, now, read_idx)
            if not decoder.pending:
                return
            tick = time.perf_counter()
            if tick >= self.yield_at:
                self.yield_at = take_turn()
            if tick >= self.deadline:
                raise _Expired
            out = decoder.decompress(b"")

    def on_lines(self, lines: list[bytes], now: float, read_idx: int) -> None:
        """Record the events completed by one read (all get that read's time and index)."""
        self.events.feed(lines, (now - self.t0) * 1000.0, read_idx)

    def on_first_chunk(self, t_ms: float) -> None:
        if self.now >= self.first_chunk_deadline:
            raise _Expired  # the first chunk came after its deadline (the timer had no turn)
        if self.stream_deadline != self.deadline:
            self.arm(self.stream_deadline)

    def on_end(self, t_ms: float) -> None:
        self.arm(min(self.stream_deadline, self.now + END_GRACE_S))

    def on_error(self, detail: str) -> None:
        self.record.fail(ErrorKind.STREAM_ERROR_EVENT, detail)

    def drain_body(self, framing: BodyFraming, data: bytes, parts: list[bytes]) -> bool:
        """Read a body we do not stream (error, redirect) into ``parts``, up to a limit.

        True if it ended cleanly; _Expired when the phase deadline passes.
        """
        size = 0
        try:
            while True:
                if data:
                    chunk = framing.feed(data)
                    parts.append(chunk)
                    size += len(chunk)
                if framing.done:
                    return True
                if size > ERROR_BODY_LIMIT:
                    return False
                data = self.recv()
                if not data:
                    return False
        except (OSError, FramingError):
            return False

    def read_error_body(self, head: ResponseHead, framing: BodyFraming, data: bytes) -> None:
        """Non-2xx: keep a snippet of the body for the detail, and the connection if cheap."""
        parts: list[bytes] = []
        try:
            clean = self.drain_body(framing, data, parts)
        except _Expired:
            clean = False
        snippet = b"".join(parts)[:200].decode("utf-8", "replace").strip()
        detail = f"HTTP {head.status}" + (f": {snippet}" if snippet else "")
        reusable = clean and head.keep_alive and not framing.leftover and not head.get("content-encoding")
        self.finish_failed(ErrorKind.HTTP_STATUS, detail, drop=not reusable)

    def skip_body(self, head: ResponseHead, framing: BodyFraming, data: bytes) -> None:
        """A redirect's body: read and dropped, and the connection with it unless it can be reused."""
        clean = self.drain_body(framing, data, [])
        if not (clean and head.keep_alive and not framing.leftover):
            self.client._drop_connection()

    # ------------------------------------------------------------------ outcomes
    def set_duration_now(self) -> None:
        record = self.record
        if math.isnan(record.duration_ms) and not math.isnan(self.t0):
            record.duration_ms = (time.perf_counter() - self.t0) * 1000.0
        record.n_reads = self.reads
        record.malformed_lines = self.events.malformed + self.splitter.dropped

    def finish_failed(self, kind: ErrorKind, detail: str, drop: bool = False) -> None:
        if drop:
            self.client._drop_connection()
        self.record.fail(kind, detail)
        self.set_duration_now()

    def on_expired(self) -> None:
        self.client._drop_connection()
        events = self.events
        in_end_grace = events.ended and self.t0 + events.end_ms / 1000.0 < self.stream_deadline
        self.record.fail(
            *expiry_failure(
                events,
                in_end_grace=in_end_grace,
                waiting_first_chunk=events.n_chunks == 0 and self.first_chunk_deadline <= self.stream_deadline,
                first_chunk_timeout=self.first_chunk_timeout,
                stream_timeout=self.stream_timeout,
            )
        )
        if in_end_grace:
            self.record.duration_ms = events.end_ms
        self.set_duration_now()

    def on_cut(self, how: str) -> None:
        self.client._drop_connection()
        self.record.fail(*cut_failure(self.events, how))
        if self.events.ended:
            self.record.duration_ms = self.events.end_ms
        self.set_duration_now()

    def on_clean_end(self, head: ResponseHead, framing: BodyFraming, decoder: ContentDecoder | None) -> None:
        """The body ended as its framing says: classify the stream (_Expired if a deadline passed)."""
        events = self.events
        rest = self.splitter.take_rest()
        if rest:
            self.on_lines([rest], self.now, self.reads - 1)
        if not events.ended and (
            self.now >= self.stream_deadline or (events.n_chunks == 0 and self.now >= self.first_chunk_deadline)
        ):
            raise _Expired  # a deadline passed before the body ended (the timer had no turn)
        failure = None
        if decoder is not None:
            try:
                decoder.finish()
            except ContentDecodingError as exc:
                failure = (ErrorKind.MALFORMED, str(exc))
        if not (framing.done and head.keep_alive and not framing.leftover):
            self.client._drop_connection()
        conclude_ndjson(self.record, events, failure=failure, http_error=None, last_ms=(self.now - self.t0) * 1000.0)
        self.set_duration_now()
