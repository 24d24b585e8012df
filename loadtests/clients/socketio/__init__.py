"""The Socket.io load client: one websocket per browser session, one reader loop.

- :mod:`.session`: connect and handshake, the reader, the watchdog, routing
  messages to tasks, running a task with its timeouts;
- :mod:`.task`: one task's record and listeners;
- :mod:`.emit_times`: the fake backend's emit times into a finished task's record.
"""

from __future__ import annotations

from loadtests.clients.socketio.session import SessionError, SocketIOSession

__all__ = ["SessionError", "SocketIOSession"]
