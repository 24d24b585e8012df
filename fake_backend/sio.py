"""The Socket.io transport: namespace ``/UserSession`` (docs/PROTOCOL.md, "Socket.io").

A client emits ``<name>_service`` (``chat_service``, ``scraper_service``, ...)
with ``{"taskName": str, "taskData": {...}}`` and an ack callback.  The ack
reply is ``{"response_listener_events": [<task id>]}`` (or ``{"error": msg}``
for a bad request; the connection stays up), then the task streams on the
listener named by the task id.  The same plan as NDJSON maps to messages:

====================  ==================================================
plan event            Socket.io message on the listener
====================  ==================================================
chunk                 the bare text string
status_update         ``{"info": <status payload>}``
tool_event            ``{"info": <tool payload>}``
data, completion      ``{"data": <payload>}``
broker                ``{"broker": [<broker payload>]}``
error                 ``{"error": <error payload>}``
end                   ``{"end": true}`` (``"reason": "cancelled"`` added on cancel)
heartbeat             not sent: Engine.IO pings do that job on this transport
====================  ==================================================

Lean emit path.  ``AsyncServer.emit`` costs a lot per message: it builds a
Socket.IO packet, JSON-encodes it with the stdlib, wraps it in an Engine.IO
packet, creates one asyncio task per recipient and waits on them
(socketio/async_manager.py ``AsyncManager.emit``), then ``AsyncSocket.send``
checks the ping timeout and logs before queueing.  A task has exactly one
recipient and a fixed event name, so this module encodes the packet text
itself - ``2/UserSession,["<listener>",<json>]``, byte for byte the form
``socketio.packet.Packet.encode`` produces except that orjson writes non-ASCII
as UTF-8 instead of ``\\uXXXX`` escapes (both are the same JSON value; the
Node server writes UTF-8 too) - and puts the Engine.IO MESSAGE packet straight
into the Engine.IO socket's outgoing queue, the same queue ``AsyncSocket.send``
uses, so ordering with acks, pings and disconnects is preserved.  The socket's
writer task sends it unchanged, on websocket or polling.  Backpressure: once
``HIGH_WATER`` packets are queued (``POLLING_BATCH`` on polling) the stream
waits until the writer has taken them (``queue.join()``), so a slow client cannot grow memory without bound;
a client that reads nothing for the server's send timeout is disconnected from
the namespace and its task ends as ``slow_consumer`` (``fake_backend.slow_consumer``).

Harness keys apply to tasks as to NDJSON streams, except ``gzip`` (an HTTP
body fault; ignored here).  ``disconnect_at`` disconnects the socket from the
namespace (``sio.disconnect``), which also ends the socket's other tasks.

Emit times: with ``timing`` on, each message's wall-clock time is recorded in
the ``EmitLog`` when it is produced, i.e. right before the packet is handed to
the Engine.IO queue (see ``fake_backend.runner`` for the buffering fault).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from time import time
from typing import Any, Final

import orjson
import socketio
from engineio import packet as eio_packet

from fake_backend.auth import socket_token_present
from fake_backend.control import BackendConfig, ControlError, StreamSettings, resolve
from fake_backend.emit_log import EmitLog, EmitRecord
from fake_backend.registry import StreamRegistry
from fake_backend.runner import CANCELLED, CLIENT_GONE, COMPLETE, ERRORED, StreamControl, run_stream
from fake_backend.shapes import (
    BROKER,
    CHUNK,
    COMPLETION,
    DATA,
    END,
    ERROR,
    HEARTBEAT,
    STATUS_UPDATE,
    TOOL_EVENT,
    StreamPlan,
    build_plan,
)
from fake_backend.slow_consumer import SLOW_CONSUMER, SlowConsumer, bounded_join
from stream_harness.contract.protocol import SOCKETIO_NAMESPACE

NAMESPACE: Final = SOCKETIO_NAMESPACE
SKIPPED_KINDS: Final = frozenset({HEARTBEAT})
HIGH_WATER: Final = 64
#: On the polling transport each long-poll response carries everything queued,
#: and python-engineio clients reject a payload of more than 16 packets
#: (engineio.payload.Payload.max_decode_packets; python-engineio issue #142).
#: Keep our share well under it, leaving room for acks and pings.
POLLING_BATCH: Final = 8
#: Socket.io service -> which NDJSON endpoint's event mix it gets.
SERVICE_ENDPOINTS: Final = {"chat_service": "chat", "scraper_service": "tool", "tool_service": "tool"}

log = logging.getLogger("fake_backend.sio")
_dumps = orjson.dumps
_new_packet = eio_packet.Packet.__new__
_EioPacket = eio_packet.Packet
_MESSAGE = eio_packet.MESSAGE


def _end_message(payload: dict) -> dict:
    reason = payload.get("reason")
    return {"end": True} if reason in (None, COMPLETE, ERRORED) else {"end": True, "reason": reason}


_MESSAGE_OF: Final = {
    STATUS_UPDATE: lambda p: {"info": p},
    TOOL_EVENT: lambda p: {"info": p},
    DATA: lambda p: {"data": p},
    COMPLETION: lambda p: {"data": p},
    BROKER: lambda p: {"broker": [p]},
    ERROR: lambda p: {"error": p},
    END: _end_message,
}


def to_message(kind: str, payload: dict) -> str | dict:
    """The Socket.io message for one plan event (see the table above)."""
    return payload["text"] if kind == CHUNK else _MESSAGE_OF[kind](payload)


def _message_packet(text: str) -> eio_packet.Packet:
    """An Engine.IO MESSAGE packet carrying ``text``, pre-encoded (no per-send checks)."""
    pkt = _new_packet(_EioPacket)
    pkt.packet_type = _MESSAGE
    pkt.data = text
    pkt.binary = False
    pkt.encode_cache = "4" + text
    return pkt


class SioOutlet:
    """Writes one task's messages straight into the client's Engine.IO queue."""

    __slots__ = ("_sio", "_sid", "_socket", "_queue", "_prefix", "_ts", "_send_timeout_s")

    def __init__(
        self,
        sio: socketio.AsyncServer,
        sid: str,
        eio_socket: Any,
        listener: str,
        record: EmitRecord | None,
        send_timeout_s: float = 0.0,
    ) -> None:
        self._send_timeout_s = send_timeout_s
        self._sio = sio
        self._sid = sid
        self._socket = eio_socket
        self._queue: asyncio.Queue = eio_socket.queue
        self._prefix = b"2" + NAMESPACE.encode() + b",[" + _dumps(listener) + b","
        self._ts = record.ts if record is not None else None

    def encode(self, kind: str, payload: dict) -> eio_packet.Packet:
        body = _dumps(payload["text"] if kind == CHUNK else _MESSAGE_OF[kind](payload))
        pkt = _message_packet((self._prefix + body + b"]").decode())
        if self._ts is not None:
            self._ts.append(time())
        return pkt

    async def send(self, pkt: eio_packet.Packet) -> None:
        sock = self._socket
        if sock.closed or sock.closing:
            return  # the disconnect handler is stopping this task
        queue = self._queue
        # Check before the put (no await in between), so concurrent tasks on
        # one socket cannot overshoot the limit together.
        if queue.qsize() >= (HIGH_WATER if sock.upgraded else POLLING_BATCH):
            await bounded_join(queue, self._send_timeout_s)
        queue.put_nowait(pkt)

    async def send_many(self, pkts: list[eio_packet.Packet]) -> None:
        for pkt in pkts:  # queued back to back up to the limit: one burst on the wire
            await self.send(pkt)

    async def finish(self) -> None:
        return None

    async def drop(self) -> None:
        await self._sio.disconnect(self._sid, namespace=NAMESPACE)


def parse_task(event: str, data: object, defaults: Mapping[str, object]) -> tuple[str, StreamSettings]:
    """(endpoint mix, settings) for a ``*_service`` emit; ControlError when malformed."""
    if not isinstance(data, dict):
        raise ControlError(f"{event} payload must be an object with 'taskName' and 'taskData'")
    task_name = data.get("taskName")
    if not isinstance(task_name, str) or not task_name:
        raise ControlError(f"{event} payload needs a non-empty 'taskName' string")
    task_data = data.get("taskData", {})
    if not isinstance(task_data, dict):
        raise ControlError("'taskData' must be an object")
    settings = resolve(task_data.get("harness"), defaults)
    return SERVICE_ENDPOINTS.get(event, "agent"), settings


class UserSessionService:
    """Handlers of the ``/UserSession`` namespace and the tasks they run."""

    def __init__(
        self, sio: socketio.AsyncServer, config: BackendConfig, registry: StreamRegistry, emit_log: EmitLog
    ) -> None:
        self._sio = sio
        self._config = config
        self._registry = registry
        self._emit_log = emit_log
        #: sid -> task id -> (task, control); a sid is present while connected
        self._tasks: dict[str, dict[str, tuple[asyncio.Task, StreamControl]]] = {}
        sio.on("connect", self.connect, namespace=NAMESPACE)
        sio.on("disconnect", self.disconnect, namespace=NAMESPACE)
        sio.on("*", self.start_task, namespace=NAMESPACE)

    @property
    def sessions(self) -> int:
        return len(self._tasks)

    async def connect(self, sid: str, environ: dict, auth: object = None) -> None:
        if self._config.require_auth and not socket_token_present(auth):
            raise socketio.exceptions.ConnectionRefusedError("unauthorized: connect with auth={'token': '<jwt>'}")
        self._tasks[sid] = {}

    async def disconnect(self, sid: str, reason: str | None = None) -> None:
        """The client left (or was dropped): stop its tasks, nobody is listening."""
        me = asyncio.current_task()
        for task, control in self._tasks.pop(sid, {}).values():
            control.stop(CLIENT_GONE)
            if task is not me:
                task.cancel()

    async def start_task(self, event: str, sid: str, data: object = None, *_: object) -> dict:
        if not event.endswith("_service"):
            return {"error": f"unknown event {event!r}: start a task by emitting '<name>_service'"}
        tasks = self._tasks.get(sid)
        eio_socket = self._eio_socket(sid)
        if tasks is None or eio_socket is None:
            return {"error": "not connected"}
        try:
            endpoint, settings = parse_task(event, data, self._config.defaults)
        except ControlError as exc:
            return {"error": str(exc)}
        plan = build_plan(settings, endpoint)
        listener = str(uuid.uuid4())
        record = self._emit_log.open(listener, settings.chunks, settings.seed) if settings.timing else None
        control = self._registry.open(listener, "socketio")
        outlet = SioOutlet(self._sio, sid, eio_socket, listener, record, self._config.send_timeout_s)
        # The ack is queued when this handler returns, before the new task
        # first runs (nothing below awaits), so it precedes every message.
        task = asyncio.create_task(self._run(sid, listener, plan, control, outlet, record))
        tasks[listener] = (task, control)
        return {"response_listener_events": [listener]}

    def _eio_socket(self, sid: str) -> Any:
        eio_sid = self._sio.manager.eio_sid_from_sid(sid, NAMESPACE)
        try:
            return self._sio.eio._get_socket(eio_sid)
        except KeyError:
            return None

    async def _run(
        self,
        sid: str,
        listener: str,
        plan: StreamPlan,
        control: StreamControl,
        outlet: SioOutlet,
        record: EmitRecord | None,
    ) -> None:
        outcome = "server_error"
        try:
            outcome = await run_stream(plan, control, outlet, SKIPPED_KINDS)
        except asyncio.CancelledError:
            outcome = control.stop_reason or CANCELLED
        except SlowConsumer:
            outcome = SLOW_CONSUMER
            await self._sio.disconnect(sid, namespace=NAMESPACE)  # ends its other tasks too
        except Exception:
            log.exception("socket.io task %s failed", listener)
        finally:
            self._registry.close(listener, outcome)
            if record is not None:
                self._emit_log.finish(record)
            self._tasks.get(sid, {}).pop(listener, None)
