"""The raw-data layout of a result set: every column defined once.

Load users record one :class:`~loadtests.results.record.StreamRecord` per
stream (the columns whose ``source`` is ``"record"``), the results writer
stores them with the columns derived from the events, and the analysis reads
them back.  Names, dtypes and defaults come from the tables here, so a result
set written by one version can be read by the next: a column an older file
lacks takes its default, a column a reader does not know is kept as it is.

A result set (``docs/RESULTS.md``) holds ``run.json``, ``streams.parquet`` (one
row per stream: :data:`STREAM_COLUMNS`), the events (one row per received
event: :data:`EVENT_COLUMNS`) and the computed ``summary.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from stream_harness.contract.kinds import Client, EventKind, StreamStatus

SCHEMA_VERSION: Final = 1

#: A missing integer (no server ``seq``, unknown promised chunks) is stored as -1.
NO_SEQ: Final = -1
MISSING_INT: Final = -1


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a result set's tables."""

    name: str
    dtype: str  # pandas / Arrow type: string, bool, int8, int32, float64
    default: object  # what a stream (or an older file) without a value gets
    source: str  # "record": filled by the load user; "derived": computed from the events
    doc: str
    contract: bool = False  # one of the columns the results contract has promised since schema 1


def _record(name: str, dtype: str, default: object, doc: str, contract: bool = False) -> Column:
    return Column(name, dtype, default, "record", doc, contract)


def _derived(name: str, dtype: str, default: object, doc: str, contract: bool = False) -> Column:
    return Column(name, dtype, default, "derived", doc, contract)


NAN: Final = math.nan

#: ``streams.parquet``: one row per stream.
STREAM_COLUMNS: Final[tuple[Column, ...]] = (
    _record("transport", "string", None, "ndjson | socketio", True),
    _record("endpoint", "string", None, "chat | agent | tool", True),
    _record("stream_id", "string", None, "unique in the run, e.g. w1-u3-s17", True),
    _record("worker", "string", "local", "Locust worker id (local when not distributed)", True),
    _record("user", "int32", 0, "user index within the worker", True),
    _record("started_at", "float64", NAN, "epoch seconds when the request was sent", True),
    _record("time_to_headers_ms", "float64", NAN, "request sent -> response headers (NDJSON) / ack (Socket.io)", True),
    _derived("ttfc_ms", "float64", NAN, "request sent -> first chunk; NaN when none", True),
    _record("duration_ms", "float64", NAN, "request sent -> stream ended (end, error or failure)", True),
    _derived("n_events", "int32", 0, "events received", True),
    _derived("n_chunks", "int32", 0, "chunk events received", True),
    _record("n_reads", "int32", 0, "socket reads (or HTTP/2 data frames) that carried data", True),
    _derived("gap_p50_ms", "float64", NAN, "median gap between the stream's chunks", True),
    _derived("gap_p99_ms", "float64", NAN, "p99 gap between the stream's chunks", True),
    _derived("gap_max_ms", "float64", NAN, "longest gap between the stream's chunks", True),
    _derived("staleness_p99_ms", "float64", NAN, "p99 staleness of the stream's chunks", True),
    _record("status", "string", StreamStatus.FAILED, "completed | failed | cancelled", True),
    _record("error", "string", None, "error kind (ErrorKind) or None", True),
    _derived("stream_key", "int32", MISSING_INT, "row index; the events refer to it"),
    _record(
        "error_detail", "string", None, "one human line about the failure, and the redirects followed (no secrets)"
    ),
    _record("http_status", "int32", 0, "NDJSON status code; 0 for Socket.io"),
    _record("content_encoding", "string", "", "response Content-Encoding ('' when none)"),
    _record("malformed_lines", "int32", 0, "lines or messages that were not valid events"),
    _derived("has_emit_times", "bool", False, "the server's emit times are known"),
    _derived("first_event_ms", "float64", NAN, "request sent -> first event of any kind"),
    _record("expected_chunks", "int32", MISSING_INT, "chunks the backend promised (fake backend only); -1 unknown"),
    _record("client", "string", Client.PROTOCOL, "protocol (the harness's client) | browser"),
    _record("http_version", "string", "1.1", "HTTP version the stream used: 1.1 or 2"),
    _derived("first_burst_chunks", "int32", 0, "chunks that arrived with the first one"),
    _derived("chunk_rate_per_s", "float64", NAN, "chunks per second while the stream streamed"),
    _derived("warmup", "bool", False, "started in the warm-up: kept, left out of every statistic"),
    _record("paint_lag_p99_ms", "float64", NAN, "browser only: p99 of read -> the page's next animation frame"),
)
STREAM_DTYPES: Final[dict[str, str]] = {c.name: c.dtype for c in STREAM_COLUMNS}
STREAM_DEFAULTS: Final[dict[str, object]] = {c.name: c.default for c in STREAM_COLUMNS}
#: Stream columns a load user's record carries (the rest are derived from its events).
RECORD_COLUMNS: Final[tuple[str, ...]] = tuple(c.name for c in STREAM_COLUMNS if c.source == "record")
#: The columns the results contract has promised since schema 1.
CONTRACT_STREAM_COLUMNS: Final[tuple[str, ...]] = tuple(c.name for c in STREAM_COLUMNS if c.contract)


@dataclass(frozen=True, slots=True)
class EventColumn:
    """One column of the events table, and the record array that holds it while a stream runs."""

    name: str
    dtype: str
    record_array: str  # StreamRecord attribute ("" for stream_key, set when written)
    typecode: str  # ``array.array`` typecode of that attribute
    doc: str


#: The events: one row per received event, grouped by stream, in arrival order.
EVENT_COLUMNS: Final[tuple[EventColumn, ...]] = (
    EventColumn("stream_key", "int32", "", "i", "row of the stream in streams.parquet"),
    EventColumn("kind", "int8", "kinds", "b", "EventKind code"),
    EventColumn(
        "t_ms",
        "float64",
        "t_ms",
        "d",
        "arrival: monotonic time of the read that completed the event, minus the monotonic time the request was sent",
    ),
    EventColumn("read", "int32", "reads", "i", "index of that read within the stream, from 0"),
    EventColumn(
        "seq", "int32", "seqs", "i", "server sequence number (NDJSON seq / Socket.io message index); -1 when none"
    ),
    EventColumn(
        "emit_ms",
        "float64",
        "emit_ms",
        "d",
        "server emit time (wall clock, corrected for the clock offset) minus the "
        "stream's started_at, in ms; NaN when unknown",
    ),
)
EVENT_DTYPES: Final[dict[str, str]] = {c.name: c.dtype for c in EVENT_COLUMNS}
#: The event columns a record carries as arrays (all but stream_key).
RECORD_ARRAYS: Final[tuple[EventColumn, ...]] = tuple(c for c in EVENT_COLUMNS if c.record_array)

CHUNK: Final = int(EventKind.CHUNK)
END: Final = int(EventKind.END)
ERROR: Final = int(EventKind.ERROR)
OTHER: Final = int(EventKind.OTHER)
