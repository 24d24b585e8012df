"""Per-stream measurement record: what a load user fills while a stream runs.

The hot path (one call to ``add_event`` per received event) appends to typed
``array.array`` columns: no dict, no object per event.  Column meanings are
``stream_harness.contract.schema.EVENT_COLUMNS``; the results writer turns a list of records
into the two parquet files without touching events one by one.
"""
from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

from stream_harness.contract.schema import NO_SEQ

NAN = math.nan


@dataclass(slots=True)
class StreamRecord:
    """Everything measured about one stream (one POST / one Socket.io task)."""

    transport: str                  # "ndjson" | "socketio"
    endpoint: str                   # "chat" | "agent" | "tool"
    stream_id: str
    worker: str = "local"
    user: int = 0
    started_at: float = NAN         # epoch s at request send (wall clock)
    t0: float = NAN                 # time.perf_counter() at request send
    time_to_headers_ms: float = NAN
    duration_ms: float = NAN
    status: str = "failed"          # completed | failed | cancelled
    error: str | None = None        # stream_harness.contract.schema.ERROR_KINDS
    error_detail: str | None = None
    http_status: int = 0
    content_encoding: str = ""
    malformed_lines: int = 0
    n_reads: int = 0
    expected_chunks: int = -1       # what the backend promised, when known
    kinds: array = field(default_factory=lambda: array("b"))
    t_ms: array = field(default_factory=lambda: array("d"))
    reads: array = field(default_factory=lambda: array("i"))
    seqs: array = field(default_factory=lambda: array("i"))
    emit_ms: array = field(default_factory=lambda: array("d"))

    def add_event(self, kind: int, t_ms: float, read: int, seq: int = NO_SEQ,
                  emit_ms: float = NAN) -> None:
        """Append one received event (hot path: keep it this small)."""
        self.kinds.append(kind)
        self.t_ms.append(t_ms)
        self.reads.append(read)
        self.seqs.append(seq)
        self.emit_ms.append(emit_ms)

    def fail(self, error: str, detail: str | None = None) -> None:
        """Mark the stream failed; the first failure reason wins."""
        self.status = "failed"
        if self.error is None:
            self.error = error
            self.error_detail = detail

    @property
    def n_events(self) -> int:
        return len(self.kinds)
