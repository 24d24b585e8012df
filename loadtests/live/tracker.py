"""Stream records -> live deltas: what every load process adds to the Streams tab.

A :class:`StreamTracker` follows each stream from ``stream_started`` to
``stream_finished``.  While it runs, ``poll`` reads only the events appended
since the last look (numpy over copies of the record's ``array`` columns, so
the growing record is never pinned) and adds chunks, gaps, bursts, events per
read and TTFC to a :class:`~loadtests.live.stats.Snapshot` delta; the open
burst and the open socket read carry over to the next poll.  At the end it
adds what needs the whole stream: status and error, staleness (transit minus
the stream's smallest transit; Socket.io emit times are only fetched after the
task), per-stream chunk rate and first burst.  Definitions are the analysis's
(``analysis/chunks.py``, ``analysis/buffering.py``), so the live evidence is
the post-run evidence, bucketed.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from analysis.aggregate import Aggregate
from analysis.buffering import HOLD_MS, RATE_MIN_CHUNKS
from analysis.chunks import BURST_GAP_MS
from analysis.histogram import prepare
from loadtests.live.stats import BIN_S, Key, Snapshot, bin_of, live_key
from loadtests.results.record import StreamRecord
from stream_harness.contract.schema import CHUNK

#: How often a local run looks at in-flight records (s); workers look at each report.
POLL_S: Final = 2.0
_IDENTITY_ENCODINGS: Final = frozenset({"", "identity"})


@dataclass(slots=True)
class _Cursor:
    """How far the tracker has read one in-flight record, and what is still open."""

    record: StreamRecord
    key: Key
    seen: int = 0  # events already ingested
    first_chunk_ms: float = math.nan
    last_chunk_ms: float = math.nan  # arrival of the last ingested chunk
    read: int = -1  # read index of the run of events still open
    read_events: int = 0  # events of that read seen so far
    burst_size: int = 0  # chunks of the burst still open (0: none yet)
    burst_lead_ms: float = math.nan  # silence before it (NaN: the stream's first burst)
    headers_done: bool = False


def _add_timed(
    agg: Aggregate,
    name: str,
    started_at: float,
    t_ms: np.ndarray,
    values: np.ndarray,
    *,
    count_chunks: bool = False,
) -> None:
    """Add per-chunk ``values`` (NaN: none) to histogram ``name`` of the totals and of the
    time bins the chunks arrived in (arrival = ``started_at`` + ``t_ms``)."""
    first_bin = bin_of(started_at + float(t_ms.min()) / 1000.0)
    if first_bin == bin_of(started_at + float(t_ms.max()) / 1000.0):  # the usual case
        prepared = prepare(values)
        agg.hist[name].add_prepared(prepared)
        target = agg.bin(first_bin)
        getattr(target, name).add_prepared(prepared)
        if count_chunks:
            target.chunks += int(t_ms.size)
        return
    agg.hist[name].add_array(values)
    starts = (np.floor((started_at + t_ms / 1000.0) / BIN_S) * BIN_S).astype(np.int64)
    for start in np.unique(starts).tolist():
        sel = starts == start
        target = agg.bin(start)
        getattr(target, name).add_array(values[sel])
        if count_chunks:
            target.chunks += int(sel.sum())


def _np(column: array, start: int, stop: int, dtype: Any) -> np.ndarray:
    """Copy of ``column[start:stop]`` as numpy (a copy: never pin the growing array)."""
    return np.frombuffer(column[start:stop], dtype=dtype)


class StreamTracker:
    """Turns stream records (in flight and finished) into :class:`Snapshot` deltas."""

    def __init__(self) -> None:
        self._open: dict[int, _Cursor] = {}
        self.delta = Snapshot()

    # -- lifecycle ---------------------------------------------------------------
    def started(self, record: StreamRecord) -> None:
        """A stream is about to send its request (``stream_started``)."""
        key = live_key(record.transport, record.endpoint, record.client)
        self._open[id(record)] = _Cursor(record, key)
        self.delta.row(key).add("started", 1)

    def finished(self, record: StreamRecord) -> None:
        """A stream's record is final (``stream_finished``)."""
        cursor = self._open.pop(id(record), None)
        if cursor is None:  # never announced: count its start now
            cursor = _Cursor(record, live_key(record.transport, record.endpoint, record.client))
            self.delta.row(cursor.key).add("started", 1)
        self._ingest(cursor)
        self._close(cursor)

    def poll(self, pause: Callable[[], None] | None = None) -> None:
        """Ingest what in-flight streams received since the last poll.

        ``pause`` runs after each stream: the load process passes a gevent
        yield, so a poll over many streams never holds up a chunk's timestamp
        for longer than one stream's ingestion.
        """
        for cursor in list(self._open.values()):
            self._ingest(cursor)
            if pause is not None:
                pause()

    def forget_open(self) -> None:
        """Drop in-flight streams nobody will finish (their test was stopped)."""
        self._open.clear()

    def running(self) -> dict[Key, int]:
        counts: dict[Key, int] = {}
        for cursor in self._open.values():
            counts[cursor.key] = counts.get(cursor.key, 0) + 1
        return counts

    def take(self) -> Snapshot:
        """The delta since the last ``take`` (and start a new one)."""
        delta, self.delta = self.delta, Snapshot()
        return delta

    # -- internals ---------------------------------------------------------------
    def _ingest(self, c: _Cursor) -> None:
        record = c.record
        agg = self.delta.row(c.key)
        if not c.headers_done and record.time_to_headers_ms == record.time_to_headers_ms:
            agg.hist["headers"].add(record.time_to_headers_ms)
            c.headers_done = True
        stop = len(record.kinds)
        if stop <= c.seen:
            return
        start, c.seen = c.seen, stop
        kinds = _np(record.kinds, start, stop, np.int8)
        t_ms = _np(record.t_ms, start, stop, np.float64)
        reads = _np(record.reads, start, stop, np.intc)
        agg.add("events", kinds.size)
        self._reads(c, agg, reads)

        chunk_t = t_ms[kinds == CHUNK]
        if chunk_t.size == 0:
            return
        agg.add("chunks", chunk_t.size)
        # gap[i]: since the previous chunk of the stream (NaN for the stream's first)
        gaps = np.diff(chunk_t, prepend=c.last_chunk_ms)
        if math.isnan(c.first_chunk_ms):
            c.first_chunk_ms = float(chunk_t[0])
            agg.hist["ttfc"].add(c.first_chunk_ms)
        c.last_chunk_ms = float(chunk_t[-1])
        has_gap = ~np.isnan(gaps)
        agg.add("coalesced", int((gaps[has_gap] <= BURST_GAP_MS).sum()))
        self._bursts(c, agg, gaps)
        started_at = record.started_at if record.started_at == record.started_at else time.time()
        _add_timed(agg, "gap", started_at, chunk_t, gaps, count_chunks=True)

    @staticmethod
    def _reads(c: _Cursor, agg: Aggregate, reads: np.ndarray) -> None:
        """Events per socket read: runs of equal read index; the last run may continue."""
        boundaries = np.flatnonzero(np.diff(reads)) + 1
        run_starts = np.concatenate(([0], boundaries))
        lengths = np.diff(np.append(run_starts, reads.size))
        if int(reads[0]) == c.read:
            lengths[0] += c.read_events
        elif c.read_events:
            agg.hist["events_per_read"].add(c.read_events)
        agg.hist["events_per_read"].add_integers(lengths[:-1])
        c.read = int(reads[run_starts[-1]])
        c.read_events = int(lengths[-1])

    def _bursts(self, c: _Cursor, agg: Aggregate, gaps: np.ndarray) -> None:
        """Bursts (analysis/chunks.py): runs of chunks <= BURST_GAP_MS apart; the last stays open."""
        new_burst = ~(gaps <= BURST_GAP_MS)  # NaN (first chunk) starts one too
        starts = np.flatnonzero(new_burst)
        if starts.size == 0:
            c.burst_size += gaps.size
            return
        c.burst_size += int(starts[0])
        if c.burst_size:
            self._close_burst(c, agg)
        sizes = np.diff(np.append(starts, gaps.size))
        leads = gaps[starts]
        if sizes.size > 1:
            done_sizes, done_leads = sizes[:-1], leads[:-1]
            if math.isnan(done_leads[0]):  # the stream's first burst closed in this slice
                c.burst_size, c.burst_lead_ms = int(done_sizes[0]), math.nan
                self._close_burst(c, agg)
                done_sizes, done_leads = done_sizes[1:], done_leads[1:]
            agg.hist["burst_size"].add_integers(done_sizes, weights=done_sizes)
            multi = done_sizes >= 2
            if multi.any():
                agg.hist["burst_lead"].add_array(done_leads[multi], weights=done_sizes[multi])
        c.burst_size, c.burst_lead_ms = int(sizes[-1]), float(leads[-1])

    @staticmethod
    def _close_burst(c: _Cursor, agg: Aggregate) -> None:
        size = c.burst_size
        lead = c.burst_lead_ms
        if math.isnan(lead):  # the stream's first burst: its lead is headers -> first chunk
            headers = c.record.time_to_headers_ms
            lead = c.first_chunk_ms - (headers if headers == headers else 0.0)
            agg.hist["first_burst"].add(size)
        agg.hist["burst_size"].add(size, size)
        if size >= 2:
            agg.hist["burst_lead"].add(lead, size)
        c.burst_size = 0

    def _close(self, c: _Cursor) -> None:
        record = c.record
        agg = self.delta.row(c.key)
        if c.read_events:
            agg.hist["events_per_read"].add(c.read_events)
            c.read_events = 0
        if c.burst_size:
            self._close_burst(c, agg)
        agg.add("reads", record.n_reads)
        agg.add("malformed_lines", record.malformed_lines)
        if record.content_encoding not in _IDENTITY_ENCODINGS:
            agg.encodings.add(record.content_encoding)
        if record.status == "completed":
            agg.add("completed", 1)
        elif record.status == "cancelled":
            agg.add("cancelled", 1)
        else:
            agg.add("failed", 1)
            kind = record.error or "unknown"
            agg.errors[kind] = agg.errors.get(kind, 0) + 1
        if c.first_chunk_ms == c.first_chunk_ms:
            headers = record.time_to_headers_ms
            if headers == headers:
                agg.hist["headers_to_first"].add(max(0.0, c.first_chunk_ms - headers))
            n_chunks = self._chunk_count(record)
            span_ms = c.last_chunk_ms - c.first_chunk_ms
            if n_chunks >= RATE_MIN_CHUNKS and span_ms > 0:
                agg.hist["stream_rate"].add((n_chunks - 1) * 1000.0 / span_ms)
        self._staleness(record, agg)

    @staticmethod
    def _chunk_count(record: StreamRecord) -> int:
        return int((_np(record.kinds, 0, len(record.kinds), np.int8) == CHUNK).sum())

    @staticmethod
    def _staleness(record: StreamRecord, agg: Aggregate) -> None:
        """Transit minus the stream's smallest transit, per chunk (analysis/chunks.py)."""
        n = len(record.kinds)
        if n == 0:
            return
        chunk = _np(record.kinds, 0, n, np.int8) == CHUNK
        t_ms = _np(record.t_ms, 0, n, np.float64)[chunk]
        transit = t_ms - _np(record.emit_ms, 0, n, np.float64)[chunk]
        known = np.isfinite(transit)
        if not known.any():
            return
        staleness = transit[known] - transit[known].min()
        agg.add("stale", int((staleness >= HOLD_MS).sum()))
        started_at = record.started_at if record.started_at == record.started_at else time.time()
        _add_timed(agg, "staleness", started_at, t_ms[known], staleness)
