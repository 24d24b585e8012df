"""Drive a stream plan through time onto a transport ("outlet").

The runner owns pacing and the faults that are about *when* and *whether*
(first-chunk delay, with the load delay the registry decided, stall, error,
disconnect, buffering windows, cancel).  The
transport modules own *how* a unit is encoded and written.

Timing rule (the measurement contract): an outlet stamps a unit's emit time in
``Outlet.encode``, which the runner calls right after the pacing sleep has
returned and right before the unit is written.  So sleep overshoot and event
loop lag are *in* the emit time (they are the server's real lateness), and the
only thing between the stamp and the transport hand-off is the buffering
fault's ``Valve`` - whose delay is exactly what staleness must reveal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, Final, Protocol

from fake_backend.faults import Valve
from fake_backend.shapes import CHUNK, END, ERROR, StreamPlan, error_payload

#: Yield to the event loop at least this often (seconds) when running behind
#: schedule (or unpaced), so one fast stream cannot starve the others.  By time,
#: not by count: a yield costs an event-loop pass (an epoll call), too much to
#: pay every few lines.
YIELD_AFTER_S: Final = 0.002

# Stream outcomes (also the registry's counters).
COMPLETE: Final = "complete"
CANCELLED: Final = "cancelled"
CLIENT_GONE: Final = "client_gone"
ERRORED: Final = "error"
DISCONNECTED: Final = "disconnect"


class Outlet(Protocol):
    """A transport's side of a stream."""

    def encode(self, kind: str, payload: dict) -> Any:
        """Encode one event and stamp its emit time (called at production time)."""

    def send(self, unit: Any) -> Awaitable[None]:
        """Write one unit (may be a plain function returning an awaitable)."""

    async def send_many(self, units: list[Any]) -> None:
        """Write several units as one transport write where the transport allows it."""

    async def finish(self) -> None:
        """The stream ended well-formed (its `end` was sent)."""

    async def drop(self) -> None:
        """The disconnect fault: cut the connection without an end."""


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class StreamControl:
    """Stops a running stream from outside (cancel endpoint, vanished client)."""

    __slots__ = ("load_delay_ms", "stop_reason", "_waiter")

    def __init__(self) -> None:
        self.stop_reason: str | None = None
        self.load_delay_ms = 0.0  # added to the first-chunk delay (``StreamSettings.load_delay_ms``)
        self._waiter: asyncio.Future | None = None

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self._waiter is not None:
            _wake(self._waiter)

    @property
    def sleeping(self) -> bool:
        """Pacing itself (in ``sleep``) rather than writing: see ``fake_backend.slow_consumer``."""
        return self._waiter is not None

    async def sleep(self, delay: float) -> None:
        """asyncio.sleep that ``stop()`` cuts short (same cost: one future, one timer)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        handle = loop.call_later(delay, _wake, fut)
        self._waiter = fut
        try:
            await fut
        finally:
            handle.cancel()
            self._waiter = None


async def run_stream(
    plan: StreamPlan, control: StreamControl, outlet: Outlet, skip: frozenset[str] = frozenset()
) -> str:
    """Emit the plan on time, apply the faults, return the outcome."""
    s = plan.settings
    # perf_counter, not loop.time(): uvloop's loop clock has 1 ms resolution.
    clock = time.perf_counter
    started = clock()
    first_at = started + (s.first_chunk_delay_ms + control.load_delay_ms) / 1000
    offsets = plan.offsets
    n = s.chunks
    stall_at = s.stall_at if s.stall_at is not None else -1
    error_at = s.error_at if s.error_at is not None else -1
    disconnect_at = s.disconnect_at if s.disconnect_at is not None else -1
    fault_points = {stall_at, error_at, disconnect_at} - {-1}  # one set lookup per chunk
    yield_after = YIELD_AFTER_S
    valve = (
        Valve(outlet.send_many, clock, started, every_ms=s.buffer_ms, every_chunks=s.buffer_chunks)
        if s.buffer_ms or s.buffer_chunks
        else None
    )
    encode = outlet.encode
    send = outlet.send
    current = -2
    yielded_at = started

    async def emit(kind: str, payload: dict) -> None:
        if valve is None:
            await send(encode(kind, payload))
        else:
            await valve.add(encode(kind, payload), kind == CHUNK)

    async def wait_until(target: float) -> None:
        if valve is not None:
            while valve.deadline is not None and valve.deadline <= target:
                delay = valve.deadline - clock()
                if delay > 0:
                    await control.sleep(delay)
                if control.stop_reason is not None:
                    return
                await valve.tick()
        # uvloop timers have 1 ms granularity and may fire up to 1 ms early:
        # sleep again for any remainder (at least 1 ms, so never a busy loop).
        while (delay := target - clock()) > 0 and control.stop_reason is None:
            await control.sleep(max(delay, 0.001))

    async def end(reason: str) -> str:
        await emit(END, {"reason": reason})
        if valve is not None:
            await valve.release()
        await outlet.finish()
        return reason

    for due, kind, payload in plan.events(skip):
        if due != current:
            current = due
            if 0 <= due < n:
                at_fault = due in fault_points
                if at_fault and due == stall_at:
                    # The pause runs from the previous chunk's send (now) even when the stream
                    # is behind its plan, so the gap before this chunk is never under stall_ms.
                    first_at = max(first_at, clock() - offsets[due]) + s.stall_ms / 1000  # type: ignore[operator]
                target = first_at + offsets[due]
                now = clock()
                if target > now:
                    await wait_until(target)
                    yielded_at = clock()
                elif now - yielded_at >= yield_after:
                    await asyncio.sleep(0)
                    yielded_at = clock()
                if at_fault and control.stop_reason is None:
                    if due == error_at:
                        await emit(ERROR, error_payload(due))
                        return await end(ERRORED)
                    if due == disconnect_at:
                        if valve is not None:
                            valve.discard()
                        await outlet.drop()
                        return DISCONNECTED
            if control.stop_reason is not None:
                break
        if callable(payload):
            payload = payload(clock() - started)
        # emit(), inlined: this is the per-event hot path
        if valve is None:
            await send(encode(kind, payload))
        else:
            await valve.add(encode(kind, payload), kind == CHUNK)
    else:
        if control.stop_reason is None:
            return await end(COMPLETE)
    if control.stop_reason == CANCELLED:
        return await end(CANCELLED)
    return control.stop_reason  # the client is gone: nothing left to write to
