"""One Socket.io task: its record, its listeners and what has arrived on them.

The session's reader hands every message of a listener to :meth:`Task.deliver`
with the time of the read that completed it; the task records it and knows
when every listener has ended.
"""

from __future__ import annotations

import math
import time
from array import array
from typing import Any

from gevent.event import Event

from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import ErrorKind, EventKind

NAN = math.nan
CHUNK = int(EventKind.CHUNK)
#: Silent listeners named in a failure's detail (the rest are counted).
NAMED_LISTENERS = 3


def _is_end(value: Any) -> bool:
    return value is True or value == "true" or value == "True"


class Task:
    """One emitted task: its record, listeners and progress (filled by the reader)."""

    __slots__ = (
        "record",
        "t0",
        "read_base",
        "ack_id",
        "acked",
        "listeners",
        "counts",
        "open_listeners",
        "listener_of",
        "got_chunk",
        "n_chunks",
        "finished",
        "end_ms",
        "reads_at_end",
        "malformed",
        "cancelled",
        "wakeup",
    )

    def __init__(self, record: StreamRecord) -> None:
        self.record = record
        self.t0 = time.perf_counter()
        self.read_base = 0
        self.ack_id = -1
        self.acked = False
        self.listeners: list[str] = []
        self.counts: list[int] = []
        self.open_listeners = 0
        self.listener_of: array | None = None  # listener index per event, int32 (only with >1 listener)
        self.got_chunk = False
        self.n_chunks = 0
        self.finished = False
        self.end_ms = NAN
        self.reads_at_end = -1
        self.malformed = 0
        self.cancelled = False
        self.wakeup = Event()

    def deliver(self, li: int, message: Any, now: float, read: int) -> None:
        """Record one message on listener ``li`` that read number ``read`` completed."""
        seq = self.counts[li]
        self.counts[li] = seq + 1
        t_ms = (now - self.t0) * 1000.0
        if type(message) is str:
            self.record.add_event(CHUNK, t_ms, read, seq)
            if self.listener_of is not None:
                self.listener_of.append(li)
            self.n_chunks += 1
            if not self.got_chunk:
                self.got_chunk = True
                self.wakeup.set()
        else:
            self._deliver_object(li, message, t_ms, read, seq)

    def _add(self, kind: int, t_ms: float, read: int, seq: int, li: int) -> None:
        self.record.add_event(kind, t_ms, read, seq)
        if self.listener_of is not None:
            self.listener_of.append(li)

    def _deliver_object(self, li: int, message: Any, t_ms: float, read: int, seq: int) -> None:
        if type(message) is not dict:
            self._add(EventKind.OTHER, t_ms, read, seq, li)
            return
        ends = _is_end(message.get("end"))
        error = message.get("error")
        if error:
            self._add(EventKind.ERROR, t_ms, read, seq, li)
            self.record.fail(ErrorKind.STREAM_ERROR_EVENT, error_detail(error))
        elif "broker" in message:
            self._add(EventKind.BROKER, t_ms, read, seq, li)
        elif "data" in message:
            self._add(EventKind.DATA, t_ms, read, seq, li)
        elif "info" in message:
            self._add(EventKind.INFO, t_ms, read, seq, li)
        elif not ends:
            self._add(EventKind.OTHER, t_ms, read, seq, li)
        if ends:
            self._add(EventKind.END, t_ms, read, seq, li)
            reason = message.get("reason")
            if type(reason) is str and reason.lower().startswith("cancel"):
                self.cancelled = True
            self.open_listeners -= 1
            if self.open_listeners == 0:
                self.end_ms = t_ms
                self.finish(self.read_base + read + 1)

    def silence_note(self) -> str:
        """``"; 49 of 50 listeners sent nothing: a, b, c and 46 more"`` ('' when all spoke, or one listener)."""
        if len(self.listeners) < 2:
            return ""
        silent = [name for name, count in zip(self.listeners, self.counts) if count == 0]
        if not silent:
            return ""
        named = ", ".join(name[:40] for name in silent[:NAMED_LISTENERS])
        more = f" and {len(silent) - NAMED_LISTENERS} more" if len(silent) > NAMED_LISTENERS else ""
        return f"; {len(silent)} of {len(self.listeners)} listeners sent nothing: {named}{more}"

    def finish(self, reads_at_end: int) -> None:
        """Done (end, failure or timeout); ``reads_at_end`` = session read count by then."""
        if not self.finished:
            self.finished = True
            self.reads_at_end = reads_at_end
            self.wakeup.set()

    def lose(self, detail: str, now: float, reads_at_end: int) -> None:
        """The connection went away under this task."""
        if not self.finished:
            self.record.fail(ErrorKind.DISCONNECT, detail + self.silence_note())
            self.end_ms = (now - self.t0) * 1000.0
            self.finish(reads_at_end)


def error_detail(error: Any) -> str:
    if type(error) is dict:
        text = f"{error.get('error_type', 'error')}: {error.get('message') or error.get('user_message') or ''}"
    else:
        text = str(error)
    return text[:200]
