"""Stream lifecycle events: how a stream's record reaches live consumers.

Load users fire them, consumers (results collector, Locust stats rows, the live
Streams tab) subscribe, and neither side imports the other: the decoupling
Locust's own ``events.request`` gives its stats.  Like that hook they live on
``environment.events`` (created on first use), so several environments in one
process (tests) never see each other's streams.

- ``stream_started(record=StreamRecord)``: once per stream, just before the
  request is sent.  The record is then being filled by its user: a listener
  may read its append-only columns while it runs (that is how the Streams tab
  shows in-flight streams) but must never write to it.
- ``stream_finished(record=StreamRecord)``: once per stream when its record is
  final (status, error, duration and, for Socket.io, emit times filled in).
  Defined by :mod:`loadtests.stream_events`; re-exported here so a consumer
  imports one module for the whole lifecycle.
"""
from __future__ import annotations

from locust.event import EventHook, Events

from loadtests.stream_events import stream_finished_hook

__all__ = ["stream_started_hook", "stream_finished_hook"]


def stream_started_hook(events: Events) -> EventHook:
    """The ``stream_started(record=StreamRecord)`` hook of ``events`` (created on first use)."""
    hook = getattr(events, "stream_started", None)
    if hook is None:
        hook = EventHook()
        events.stream_started = hook  # type: ignore[attr-defined]
    return hook
