"""Ending streams whose client stopped reading (slow consumers).

A client that keeps its connection open but stops reading fills the socket
buffers; then the server's writes wait: uvicorn pauses the HTTP response's
``send`` (flow control) and the websocket writer of Engine.IO, and the
Socket.io task waits on its queue (``fake_backend.sio.HIGH_WATER``).  Memory
stays bounded, but without a limit such a stream would run for ever (a 5 s
stream stays "active" as long as its client holds the socket).  So a write
that makes no progress for ``send_timeout_s`` ends the stream with the
outcome ``slow_consumer``:

- NDJSON: :func:`watch_writes` runs beside the stream and cancels it; the
  response then drops the connection (``AbruptDisconnect``).  It costs the
  hot path nothing but a counter: the watchdog samples the outlet's write
  count and the runner's pacing state a few times per timeout.
- Socket.io: :func:`bounded_join` puts the timeout on the high-water wait;
  the task then disconnects its client from the namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from fake_backend.errors import FakeBackendError
from fake_backend.runner import StreamControl

SLOW_CONSUMER: Final = "slow_consumer"
#: Watchdog samples per timeout: a stuck stream ends within 1.25 timeouts.
CHECKS_PER_TIMEOUT: Final = 4


class SlowConsumer(FakeBackendError):
    """A write to the client waited longer than the send timeout."""


async def watch_writes(writes: Callable[[], int], control: StreamControl, stream: asyncio.Task, timeout: float) -> None:
    """Cancel ``stream`` once ``writes()`` has not moved for ``timeout`` seconds
    while the stream was not pacing itself (a stream asleep until its next
    chunk is not stuck; one asleep in a write is)."""
    interval = timeout / CHECKS_PER_TIMEOUT
    last = writes()
    stuck = 0.0
    while True:
        await asyncio.sleep(interval)
        now = writes()
        if now == last and not control.sleeping:
            stuck += interval
            if stuck >= timeout:
                control.stop(SLOW_CONSUMER)
                stream.cancel()
                return
        else:
            stuck = 0.0
        last = now


async def bounded_join(queue: asyncio.Queue, timeout: float) -> None:
    """``queue.join()``, raising SlowConsumer after ``timeout`` s (0 = no limit)."""
    if timeout <= 0:
        await queue.join()
        return
    try:
        await asyncio.wait_for(queue.join(), timeout)
    except TimeoutError:
        raise SlowConsumer(f"client read nothing for {timeout:g} s") from None
