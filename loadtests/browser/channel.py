"""One page's channel in the load process: its orders out, its stamps into the stream's record.

The user greenlet gives a page one stream at a time (:meth:`PageChannel.run`);
the page fetches the order from the bridge, runs the stream and sends its
stamps back in batches, which :meth:`PageChannel.absorb` appends to the
stream's :class:`StreamRecord` as they come (``add_event`` per event: ``t_ms``
since the page sent the request, ``read`` the page reader's read count, the
server's ``seq``, and ``emit_ms`` from the line's ``ts``), so the live tab
sees a browser stream grow like any other.  The last batch carries the
page's facts (what failed, when ``end`` came, headers), from which the
record's outcome follows by the protocol clients' own rules
(:func:`~loadtests.clients.outcome.conclude_ndjson` for NDJSON; the
Socket.io session's for Socket.io).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
from gevent.event import Event
from gevent.queue import Empty, Queue

from loadtests.browser.monitor import PageMonitor
from loadtests.clients.outcome import conclude_ndjson, http_error_detail
from loadtests.protocol.ndjson_events import EventLines
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import Client, ErrorKind, StreamStatus, Transport
from stream_harness.contract.schema import NO_SEQ

NAN = math.nan
#: What the page's resource timing calls a protocol -> our ``http_version``.
HTTP_VERSIONS: Final = {"http/1.1": "1.1", "h2": "2", "h3": "3", "http/1.0": "1.0"}
#: The order that makes a page stop polling.
STOP: Final = {"op": "stop"}


class PageStream:
    """The stream a page is running: its record, filled as batches arrive."""

    def __init__(self, record: StreamRecord, transport: str) -> None:
        self.record = record
        self.transport = transport
        self.listener_of = array("i")  # Socket.io: listener index per event (as a Task keeps it)
        self.paint_lag = array("d")
        self.facts: dict[str, Any] | None = None
        self.done = Event()

    def add(self, batch: Mapping[str, Any]) -> None:
        """Append one batch's events (columns ``k t r s e l``) and paint lags to the record."""
        record = self.record
        started_at = batch.get("started_at")
        if isinstance(started_at, (int, float)):  # the page's clock at request send (epoch s)
            record.started_at = float(started_at)
        kinds, times, reads, seqs, stamps = (batch.get(key) or [] for key in ("k", "t", "r", "s", "e"))
        base = record.started_at
        add = record.add_event
        for kind, t_ms, read, seq, ts in zip(kinds, times, reads, seqs, stamps):
            add(
                int(kind),
                float(t_ms),
                int(read),
                int(seq) if seq is not None else NO_SEQ,
                (ts - base) * 1000.0 if type(ts) in (int, float) else NAN,
            )
        if self.transport == Transport.SOCKETIO:
            self.listener_of.extend(int(li) for li in (batch.get("l") or []))
        paints = batch.get("p")
        if paints:
            self.paint_lag.extend(float(v) for v in paints)


class PageChannel:
    """Orders to one page and what it sends back."""

    def __init__(self, page_id: str, monitor: PageMonitor | None = None) -> None:
        self.page_id = page_id
        self.monitor = monitor
        self.orders: Queue[dict[str, Any]] = Queue()
        self.stream: PageStream | None = None
        self.stream_id: str | None = None
        self.dead: str | None = None  # why the page is gone (crashed, closed)
        self.http_versions: set[str] = set()

    # -- the user's side -----------------------------------------------------------
    def run(self, record: StreamRecord, order: dict[str, Any], transport: str, timeout: float) -> PageStream:
        """Have the page run one stream; returns once its facts are in (``facts`` None: no report in time)."""
        stream = PageStream(record, transport)
        record.client = Client.BROWSER
        self.stream, self.stream_id = stream, order["stream"]
        try:
            self.orders.put(order)
            stream.done.wait(timeout)
        finally:
            self.stream, self.stream_id = None, None
        return stream

    def close(self, why: str = "closed") -> None:
        """The page is going away: it stops polling; a stream it ran is over."""
        if self.dead is None:
            self.dead = why
        self.orders.put(STOP)
        stream = self.stream
        if stream is not None:
            stream.done.set()

    # -- the bridge's side ---------------------------------------------------------
    def next_order(self, timeout: float) -> dict[str, Any] | None:
        """The page's long poll: the next order, or None after ``timeout`` s."""
        try:
            return self.orders.get(timeout=timeout)
        except Empty:
            return None

    def absorb(self, batch: Mapping[str, Any]) -> None:
        """One batch from the page: its loop lag, and stamps of the stream it runs."""
        lags = batch.get("lag")
        if lags and self.monitor is not None:
            self.monitor.add_page_lag(lags)
        stream = self.stream
        if stream is None or batch.get("stream") != self.stream_id:
            return  # a late batch of a stream given up on
        stream.add(batch)
        paints = batch.get("p")
        if paints and self.monitor is not None:
            self.monitor.add_paint_lag(np.asarray(paints, dtype=np.float64))
        done = batch.get("done")
        if isinstance(done, Mapping):
            stream.facts = dict(done)
            stream.done.set()


# =========================================================================== outcomes


def conclude(stream: PageStream, *, gave_up_after_s: float) -> None:
    """The record's outcome from the page's facts (or from their absence)."""
    record = stream.record
    facts = stream.facts
    record.paint_lag_p99_ms = float(np.percentile(stream.paint_lag, 99)) if len(stream.paint_lag) else NAN
    if facts is None:
        record.fail(ErrorKind.TIMEOUT, f"the browser page did not report the stream within {gave_up_after_s:g} s")
        record.n_reads = int(record.reads[-1]) + 1 if len(record.reads) else 0
        record.duration_ms = gave_up_after_s * 1000.0
        return
    record.time_to_headers_ms = _number(facts.get("headers_ms"))
    record.http_status = int(facts.get("http_status") or 0)
    record.content_encoding = str(facts.get("content_encoding") or "")
    version = HTTP_VERSIONS.get(str(facts.get("http_version") or ""))
    if version:
        record.http_version = version
    expected = facts.get("expected_chunks")
    if type(expected) is int and expected >= 0:
        record.expected_chunks = expected
    record.n_reads = int(facts.get("reads") or 0)
    record.malformed_lines = int(facts.get("malformed") or 0)
    lines = EventLines(record.add_event, record.started_at)
    lines.n_chunks = int(facts.get("n_chunks") or 0)
    lines.ended = bool(facts.get("ended"))
    lines.end_ms = _number(facts.get("end_ms"))
    lines.cancelled = bool(facts.get("cancelled"))
    error_event = facts.get("error_detail")
    if isinstance(error_event, str):
        record.fail(ErrorKind.STREAM_ERROR_EVENT, error_event[:200])
    failure = _failure(facts.get("failure"))
    last_ms = _number(facts.get("last_ms"))
    if stream.transport == Transport.SOCKETIO:
        if failure is not None:
            record.fail(*failure)
        elif record.error is None:
            record.status = StreamStatus.CANCELLED if lines.cancelled else StreamStatus.COMPLETED
        record.duration_ms = lines.end_ms if lines.ended else last_ms
        return
    http_error = None
    if not 200 <= record.http_status < 300 and failure is None:
        http_error = http_error_detail(record.http_status, str(facts.get("error_body") or ""))
    conclude_ndjson(record, lines, failure=failure, http_error=http_error, last_ms=last_ms)


def _failure(value: Any) -> tuple[str, str] | None:
    if isinstance(value, list) and len(value) == 2 and value[0] in set(ErrorKind):
        return str(value[0]), str(value[1])[:200]
    return None


def _number(value: Any) -> float:
    return float(value) if type(value) in (int, float) else NAN
