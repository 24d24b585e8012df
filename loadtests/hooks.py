"""Stream lifecycle events: how a stream's record reaches its consumers.

Load users fire them; consumers (results collector, Locust stats rows, the
live Streams tab) subscribe, and neither side imports the other: the same
decoupling Locust's own ``events.request`` gives its stats.  Like that hook
they live on ``environment.events`` (created on first use), so several
environments in one process (tests) never see each other's streams.

- ``stream_started(record=StreamRecord)``: once per stream, just before the
  request is sent.  The record is then being filled by its user: a listener
  may read its append-only columns while it runs (that is how the Streams tab
  shows in-flight streams) but must never write to it.
- ``stream_ending(record=StreamRecord)``: once per stream, when its client has
  filled the record and before ``stream_finished``.  The one hook whose
  listeners may complete the record (the clock keeper corrects emit times).
- ``stream_finished(record=StreamRecord)``: once per stream when its record is
  final (status, error, duration and, for Socket.io, emit times filled in).
"""

from __future__ import annotations

from locust.event import EventHook, Events

__all__ = ["stream_ending_hook", "stream_finished_hook", "stream_started_hook"]


def _hook(events: Events, name: str) -> EventHook:
    hook = getattr(events, name, None)
    if hook is None:
        hook = EventHook()
        setattr(events, name, hook)
    return hook


def stream_started_hook(events: Events) -> EventHook:
    """The ``stream_started(record=StreamRecord)`` hook of ``events``."""
    return _hook(events, "stream_started")


def stream_ending_hook(events: Events) -> EventHook:
    """The ``stream_ending(record=StreamRecord)`` hook of ``events``."""
    return _hook(events, "stream_ending")


def stream_finished_hook(events: Events) -> EventHook:
    """The ``stream_finished(record=StreamRecord)`` hook of ``events``."""
    return _hook(events, "stream_finished")
