"""The one custom Locust event of the harness: a stream has finished.

Load users fire it once per stream with the filled :class:`StreamRecord`;
reporting (Locust stats rows) and the collector (result files) listen.  Users
therefore never know who consumes their measurements, in the same way Locust's
own ``request`` event decouples clients from stats.
"""
from __future__ import annotations

from locust.event import EventHook, Events


def stream_finished_hook(events: Events) -> EventHook:
    """The ``stream_finished(record=StreamRecord)`` hook of ``events`` (created on first use)."""
    hook = getattr(events, "stream_finished", None)
    if hook is None:
        hook = EventHook()
        events.stream_finished = hook  # type: ignore[attr-defined]
    return hook
