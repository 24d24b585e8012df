"""Which streams are running right now, by id, for cancel and for leak checks.

NDJSON request ids and Socket.io task ids (listener names) share one registry,
so ``POST /api/ai/cancel/{id}`` works for both, and ``/api/_harness/stats`` can
show that streams whose clients vanished really ended.
"""

from __future__ import annotations

from collections import Counter

from fake_backend.control import StreamSettings
from fake_backend.runner import CANCELLED, StreamControl


class StreamRegistry:
    """Active streams plus counters of how finished ones ended."""

    def __init__(self) -> None:
        self._active: dict[str, tuple[str, StreamControl]] = {}
        self._running: Counter[str] = Counter()  # transport -> active streams
        self.started: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()

    def open(self, stream_id: str, transport: str, settings: StreamSettings | None = None) -> StreamControl:
        """Register a stream about to run; its control carries the load delay ``settings`` ask for."""
        control = StreamControl()
        self._active[stream_id] = (transport, control)
        self._running[transport] += 1
        self.started[transport] += 1
        if settings is not None:
            control.load_delay_ms = settings.load_delay_ms(self._running[transport])
        return control

    def close(self, stream_id: str, outcome: str) -> None:
        entry = self._active.pop(stream_id, None)
        if entry is not None:
            self._running[entry[0]] -= 1
            self.outcomes[outcome] += 1

    def cancel(self, stream_id: str) -> bool:
        """Ask a running stream to end with ``end`` reason "cancelled"."""
        entry = self._active.get(stream_id)
        if entry is None:
            return False
        entry[1].stop(CANCELLED)
        return True

    def active(self, transport: str) -> int:
        return self._running[transport]
