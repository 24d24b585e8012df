"""The raw-data layout every part of the harness agrees on.

Load users record events into these columns, the results writer stores them,
and the analysis reads them back.  Keeping the names and codes here (and only
here) means a results directory written by one version can be read by the next.

A results directory holds:

- ``run.json``        run metadata (id, started_at, duration_s, host, users,
                      workers, harness self-check, worker problems, options)
- ``streams.parquet`` one row per stream: ``STREAM_COLUMNS`` (the contract's
                      columns plus extra ones; readers ignore unknown columns)
- ``events.parquet``  one row per received event: ``EVENT_COLUMNS``
- ``summary.json``    computed from the three above by ``analysis``
"""
from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1

#: Event kinds, in code order.  ``info`` is Socket.io-only; ``other`` is any
#: event type the protocol does not name.
EVENT_KINDS: Final[tuple[str, ...]] = (
    "chunk",
    "status_update",
    "tool_event",
    "completion",
    "data",
    "error",
    "broker",
    "heartbeat",
    "end",
    "info",
    "other",
)
KIND_CODE: Final[dict[str, int]] = {name: code for code, name in enumerate(EVENT_KINDS)}
CHUNK: Final = KIND_CODE["chunk"]
END: Final = KIND_CODE["end"]
ERROR: Final = KIND_CODE["error"]
OTHER: Final = KIND_CODE["other"]

#: Missing integer values (no server ``seq``) are stored as -1; missing floats as NaN.
NO_SEQ: Final = -1

#: events.parquet: one row per event a stream received, in arrival order.
#:   stream_key  row index of the stream in streams.parquet (int32)
#:   kind        KIND_CODE of the event (int8)
#:   t_ms        arrival: monotonic time of the socket read that completed the
#:               event, minus the monotonic time the request was sent (float64)
#:   read        index of that socket read within the stream, from 0 (int32)
#:   seq         server sequence number (NDJSON ``seq`` key / Socket.io message
#:               index), -1 when the server sent none (int32)
#:   emit_ms     server emit time (wall clock) minus the stream's ``started_at``
#:               (wall clock at request send), in ms; NaN when unknown (float64)
EVENT_COLUMNS: Final[dict[str, str]] = {
    "stream_key": "int32",
    "kind": "int8",
    "t_ms": "float64",
    "read": "int32",
    "seq": "int32",
    "emit_ms": "float64",
}

#: streams.parquet: the contract's columns, then the harness's extra ones.
CONTRACT_STREAM_COLUMNS: Final[dict[str, str]] = {
    "transport": "string",          # "ndjson" | "socketio"
    "endpoint": "string",           # "chat" | "agent" | "tool"
    "stream_id": "string",          # unique in the run, e.g. "w1-u3-s17"
    "worker": "string",             # locust worker id ("local" when not distributed)
    "user": "int32",                # user index within the worker
    "started_at": "float64",        # epoch seconds when the request was sent
    "time_to_headers_ms": "float64",  # request sent -> headers (NDJSON) / ack (Socket.io)
    "ttfc_ms": "float64",           # request sent -> first chunk; NaN when none
    "duration_ms": "float64",       # request sent -> stream ended (end, error or failure)
    "n_events": "int32",
    "n_chunks": "int32",
    "n_reads": "int32",
    "gap_p50_ms": "float64",        # filled in by analysis from events
    "gap_p99_ms": "float64",
    "gap_max_ms": "float64",
    "staleness_p99_ms": "float64",
    "status": "string",             # "completed" | "failed" | "cancelled"
    "error": "string",              # error kind (ERROR_KINDS) or None
}
EXTRA_STREAM_COLUMNS: Final[dict[str, str]] = {
    "stream_key": "int32",          # == row index; events.parquet refers to it
    "error_detail": "string",       # one human line about the failure (no secrets)
    "http_status": "int32",         # NDJSON status code / 0 for Socket.io
    "content_encoding": "string",   # response Content-Encoding ("" when none)
    "malformed_lines": "int32",
    "has_emit_times": "bool",
    "first_event_ms": "float64",    # request sent -> first event of any kind
    "expected_chunks": "int32",     # chunks the backend promised (X-Harness-Chunks); -1 unknown
}
STREAM_COLUMNS: Final[dict[str, str]] = {**CONTRACT_STREAM_COLUMNS, **EXTRA_STREAM_COLUMNS}

#: Error kinds a failed stream can carry (``streams.errors`` keys in summary.json).
ERROR_KINDS: Final[tuple[str, ...]] = (
    "connect",             # could not connect / handshake failed
    "http_status",         # non-2xx response
    "stream_error_event",  # an `error` event / Socket.io {"error": ...}
    "disconnect",          # connection closed before `end`
    "timeout",             # stream or first-chunk timeout
    "missing_end",         # body ended cleanly but without an `end` line
    "malformed",           # body was not parseable at all (e.g. bad encoding)
    "short_stream",        # fewer chunks than the backend promised
    "ack",                 # Socket.io ack missing / empty response_listener_events
    "stopped",             # the test stopped while the stream ran
)
STREAM_STATUSES: Final[tuple[str, ...]] = ("completed", "failed", "cancelled")
