"""Per-stream measurement record: what a load user fills while a stream runs.

The hot path (one call to ``add_event`` per received event) appends to typed
``array.array`` columns: no dict, no object per event.  The fields are the
schema's record columns (``stream_harness.contract.schema.RECORD_COLUMNS``,
defaults from its table) and its event arrays (``RECORD_ARRAYS``); the
results writer turns a batch of records into the two tables without touching
events one by one.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any

from stream_harness.contract.kinds import ErrorKind, StreamStatus
from stream_harness.contract.schema import NO_SEQ, STREAM_DEFAULTS

NAN = math.nan


def _default(name: str) -> Any:
    return STREAM_DEFAULTS[name]


@dataclass(slots=True)
class StreamRecord:
    """Everything measured about one stream (one POST / one Socket.io task)."""

    transport: str  # Transport
    endpoint: str  # Endpoint
    stream_id: str
    worker: str = _default("worker")
    user: int = _default("user")
    started_at: float = NAN  # epoch s at request send (wall clock)
    t0: float = NAN  # time.perf_counter() at request send (not stored)
    time_to_headers_ms: float = NAN
    duration_ms: float = NAN
    status: str = StreamStatus.FAILED
    error: str | None = None  # ErrorKind
    error_detail: str | None = None
    http_status: int = _default("http_status")
    content_encoding: str = _default("content_encoding")
    malformed_lines: int = _default("malformed_lines")
    n_reads: int = _default("n_reads")
    expected_chunks: int = _default("expected_chunks")  # what the backend promised, when known
    client: str = _default("client")
    http_version: str = _default("http_version")
    paint_lag_p99_ms: float = NAN  # browser pages only: read -> next animation frame
    kinds: array = field(default_factory=lambda: array("b"))
    t_ms: array = field(default_factory=lambda: array("d"))
    reads: array = field(default_factory=lambda: array("i"))
    seqs: array = field(default_factory=lambda: array("i"))
    emit_ms: array = field(default_factory=lambda: array("d"))

    def add_event(self, kind: int, t_ms: float, read: int, seq: int = NO_SEQ, emit_ms: float = NAN) -> None:
        """Append one received event (hot path: keep it this small)."""
        self.kinds.append(kind)
        self.t_ms.append(t_ms)
        self.reads.append(read)
        self.seqs.append(seq)
        self.emit_ms.append(emit_ms)

    def fail(self, error: ErrorKind | str, detail: str | None = None) -> None:
        """Mark the stream failed; the first failure reason wins."""
        self.status = StreamStatus.FAILED
        if self.error is None:
            self.error = error
            self.error_detail = detail

    @property
    def n_events(self) -> int:
        return len(self.kinds)
