"""NDJSON event lines -> recorded events: kinds, server seq and emit time, the stream's end.

Sans-IO: the caller splits lines (``loadtests.protocol.lines``) and says which
read completed them and when (``t_ms`` since the request was sent); this
module only interprets them and hands every event to ``add`` (a record's
``add_event``).  It keeps what the caller needs to close the stream: chunks
seen, malformed lines, whether ``end`` came (and when, and whether it said
"cancelled") and the first ``error`` event's detail.

Every NDJSON reader uses it (the HTTP/1.1 and HTTP/2 clients, the browser
users' results): ``seq`` outside 0..2**31-1 is no seq, ``ts`` (epoch s, the
server's clock) becomes ``emit_ms`` relative to ``started_at``, a blank line
is nothing and any other line that is not a JSON object is malformed.

A reader that acts on the stream's milestones passes hooks, called in line
order before ``feed`` returns: ``on_first_chunk(t_ms)`` just before the first
chunk is recorded (it may raise to refuse it, e.g. when its deadline has
passed), ``on_end(t_ms)`` at the first ``end`` and ``on_error(detail)`` at the
first ``error`` event.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson

from stream_harness.contract.kinds import EVENT_CODE_BY_NAME
from stream_harness.contract.schema import CHUNK, END, ERROR, NO_SEQ, OTHER

MAX_SEQ = 0x7FFFFFFF
NAN = math.nan

#: ``add(kind, t_ms, read, seq, emit_ms)``: a record's ``add_event``.
AddEvent = Callable[[int, float, int, int, float], None]
#: ``hook(t_ms)``: the first chunk or the end arrived in a read at ``t_ms``.
Milestone = Callable[[float], None]


class EventLines:
    """Interprets one stream's NDJSON lines as they are completed."""

    __slots__ = (
        "_add",
        "_on_first_chunk",
        "_on_end",
        "_on_error",
        "started_at",
        "n_chunks",
        "malformed",
        "ended",
        "end_ms",
        "cancelled",
        "error_detail",
    )

    def __init__(
        self,
        add: AddEvent,
        started_at: float,
        *,
        on_first_chunk: Milestone | None = None,
        on_end: Milestone | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._add = add
        self._on_first_chunk = on_first_chunk
        self._on_end = on_end
        self._on_error = on_error
        self.started_at = started_at  # epoch s at request send: emit_ms is relative to it
        self.n_chunks = 0
        self.malformed = 0
        self.ended = False
        self.end_ms = NAN
        self.cancelled = False
        self.error_detail: str | None = None  # the first ``error`` event's "type: message"

    def feed(self, lines: list[bytes], t_ms: float, read: int) -> None:
        """Record the events of ``lines``, all completed by read number ``read`` at ``t_ms``."""
        add = self._add
        loads = orjson.loads
        kind_of = EVENT_CODE_BY_NAME.get
        started_at = self.started_at
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
            emit_ms = (ts - started_at) * 1000.0 if type(ts) is float or type(ts) is int else NAN
            if kind == CHUNK:
                if not self.n_chunks and self._on_first_chunk is not None:
                    self._on_first_chunk(t_ms)
                add(kind, t_ms, read, seq, emit_ms)
                self.n_chunks += 1
                continue
            add(kind, t_ms, read, seq, emit_ms)
            if kind == END:
                if not self.ended:
                    self._end(obj, t_ms)
            elif kind == ERROR and self.error_detail is None:
                self.error_detail = _error_detail(obj)
                if self._on_error is not None:
                    self._on_error(self.error_detail)

    def drop_hooks(self) -> None:
        """Forget the hooks once the stream is over.

        Hooks are usually the reader's own methods, so reader and lines refer
        to each other; without this the pair, and the record the reader holds
        with all its event columns, waits for the cycle collector.
        """
        self._on_first_chunk = self._on_end = self._on_error = None

    def _end(self, obj: dict[str, Any], t_ms: float) -> None:
        self.ended = True
        self.end_ms = t_ms
        data = obj.get("data")
        reason = data.get("reason") if type(data) is dict else None
        if type(reason) is str and reason.lower().startswith("cancel"):
            self.cancelled = True
        if self._on_end is not None:
            self._on_end(t_ms)


def _error_detail(obj: dict[str, Any]) -> str:
    data = obj.get("data")
    if type(data) is dict:
        return f"{data.get('error_type', 'error')}: {data.get('message', '')}"[:200]
    return "error event"
