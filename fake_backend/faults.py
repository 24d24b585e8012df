"""Fault building blocks that sit between the stream logic and the wire.

- ``Valve``: the buffering fault.  It models a layer *between* the application
  and the transport (a proxy, a framework buffer): the application produces a
  line, the valve holds it, and releases everything held in one transport write
  every ``buffer_ms`` (windows aligned to request start) and/or every
  ``buffer_chunks`` chunks.  The end of a stream always releases.  On an abrupt
  disconnect the held lines are lost, as they would be in a real proxy.
- ``AbruptDisconnect``: raised out of the ASGI app to make uvicorn drop the
  connection without finishing the chunked body; ``QuietAbruptDisconnects``
  keeps uvicorn (and Hypercorn) from logging a traceback for what is a requested fault.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fake_backend.errors import FakeBackendError


class AbruptDisconnect(FakeBackendError):
    """Requested fault: close the connection now, mid-body."""


class QuietAbruptDisconnects(logging.Filter):
    """Drop uvicorn's 'Exception in ASGI application' record for AbruptDisconnect."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, AbruptDisconnect)


def install_log_filter() -> None:
    for name in ("uvicorn.error", "hypercorn.error"):
        logging.getLogger(name).addFilter(QuietAbruptDisconnects())


class Valve:
    """Hold produced units and release them together (the buffering fault)."""

    __slots__ = ("_release", "_clock", "_every_s", "_every_chunks", "_held", "_chunks_held", "deadline")

    def __init__(
        self,
        release: Callable[[list[Any]], Awaitable[None]],
        clock: Callable[[], float],
        started: float,
        *,
        every_ms: float | None,
        every_chunks: int | None,
    ) -> None:
        self._release = release
        self._clock = clock
        self._every_s = every_ms / 1000 if every_ms else None
        self._every_chunks = every_chunks
        self._held: list[Any] = []
        self._chunks_held = 0
        #: next time-window release (loop clock), None without a time window
        self.deadline = started + self._every_s if self._every_s else None

    async def add(self, unit: Any, is_chunk: bool) -> None:
        self._held.append(unit)
        if is_chunk and self._every_chunks:
            self._chunks_held += 1
            if self._chunks_held >= self._every_chunks:
                await self.release()
        if self.deadline is not None and self._clock() >= self.deadline:
            await self.tick()

    async def tick(self) -> None:
        """A time window closed: release what is held, move to the next window."""
        await self.release()
        now = self._clock()
        step = self._every_s
        assert step is not None and self.deadline is not None
        if self.deadline <= now:
            self.deadline += step * (1 + int((now - self.deadline) // step))

    async def release(self) -> None:
        if self._held:
            units, self._held = self._held, []
            self._chunks_held = 0
            await self._release(units)

    def discard(self) -> None:
        self._held.clear()
