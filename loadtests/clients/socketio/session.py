"""Socket.io stream client for the load users: one websocket per session, one reader loop.

What the stock python-socketio client gets wrong for measurement, and what
this one does instead:

- it runs every incoming message in its own thread/greenlet, so a timestamp
  taken in the handler includes scheduling delay and order can change.  Here a
  single reader greenlet stamps each socket read with ``time.perf_counter()``
  right after ``recv`` and records every event that read completed, in order,
  before reading again;
- long-polling packs many packets in one HTTP response (fake bursts): only the
  websocket transport is spoken;
- chunks can arrive before the ack reply is handled: a task is registered
  before its emit is sent, and messages on not-yet-known listener names are
  kept (with their read time) until the ack names them.

Cost: ~one ``orjson.loads`` and one ``add_event`` per message, no per-message
objects beyond that, no greenlet switches per message (the reader hands the
hub a turn only after ``YIELD_AFTER_S`` of uninterrupted work, so a server
that sends without pause cannot starve timers and other users).

Binary events and acks are assembled from their attachments (binary frames)
and then handled like text ones; a binary frame no packet announced, or a
packet whose attachments never came, is counted as malformed.  A server that
sends nothing for its advertised ``pingInterval + pingTimeout`` is dead.
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import gevent
import orjson
from gevent.lock import Semaphore
from greenlet import GreenletExit

from loadtests.clients.connection import (
    RECV_SIZE,
    YIELD_AFTER_S,
    connect_error_text,
    data_waiting,
    make_ssl_context,
    open_connection,
    recv_head,
    take_turn,
)
from loadtests.clients.errors import ClientError
from loadtests.clients.socketio.emit_times import EmitTimes
from loadtests.clients.socketio.task import Task, error_detail
from loadtests.protocol.engineio import (
    EIO_CLOSE,
    EIO_MESSAGE,
    EIO_PING,
    PONG,
    SIO_ACK,
    SIO_BINARY_ACK,
    SIO_BINARY_EVENT,
    SIO_CONNECT,
    SIO_CONNECT_ERROR,
    SIO_DISCONNECT,
    SIO_EVENT,
    PacketError,
    SioPacket,
    encode_connect,
    encode_disconnect,
    encode_event,
    engineio_path,
    event_prefix,
    fill_placeholders,
    parse_open,
    parse_sio,
)
from loadtests.protocol.errors import ProtocolError
from loadtests.protocol.http1 import USER_AGENT, encode_request, merge_headers, parse_base_url
from loadtests.protocol.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    WebSocketError,
    check_handshake,
    encode_close,
    encode_frame,
    handshake_headers,
    new_key,
    parse_close,
)
from loadtests.results.record import StreamRecord
from stream_harness.contract.protocol import SOCKETIO_NAMESPACE

NAN = math.nan
#: Messages kept for a task whose ack has not been handled yet (bounded).
MAX_EARLY_MESSAGES = 100_000
#: Slack on top of the server's pingInterval + pingTimeout before a connection
#: without any read counts as dead (socket.io-client allows none; this covers
#: a ping that is a few scheduler ticks late).
PING_SLACK_S = 0.25


class SessionError(ClientError):
    """A session-level failure; ``kind`` is one of stream_harness.contract.kinds.ErrorKind."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class SocketIOSession:
    """One browser session: a websocket to ``/socket.io/``, connected to ``namespace``.

    Reused across tasks (``run_task`` reconnects first if the session was lost).
    """

    def __init__(
        self,
        base_url: str,
        *,
        namespace: str = SOCKETIO_NAMESPACE,
        auth_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
        verify_tls: bool = True,
        ca_file: str | None = None,
    ) -> None:
        self._origin = parse_base_url(base_url)
        self._namespace = namespace
        self._auth = {"token": auth_token} if auth_token is not None else None
        self._headers = dict(headers or {})
        self._connect_timeout = connect_timeout
        self._ssl = make_ssl_context(verify_tls, ca_file) if self._origin.is_tls else None
        self._sock = None
        self._reader: gevent.Greenlet | None = None
        self._watchdog: gevent.Greenlet | None = None
        self._connected = False
        self._send_lock = Semaphore()
        self._last_ack_id = -1
        self._pending_acks: dict[int, Task] = {}
        self._routes: dict[str, tuple[Task, int]] = {}
        self._early: list[tuple[str, Any, float, int]] = []
        self._reads = 0
        self._last_read = 0.0  # perf_counter of the latest read (the watchdog's clock)
        self._binary: SioPacket | None = None  # a binary packet waiting for its attachments
        self._attachments: list[bytes] = []
        self._event_prefix = event_prefix(namespace)
        self._emit_times = EmitTimes(self._origin, connect_timeout, self._ssl)
        self.sid: str | None = None
        self._end_detail = "server closed the session"  # what the server said when it ended the session

    # ------------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """Websocket handshake, Engine.IO open, Socket.IO CONNECT with ``{"token": ...}``.

        Raises SessionError("connect", ...) on any failure (refused connection,
        upgrade refused, CONNECT_ERROR from the namespace, timeout).
        """
        if self._connected:
            return
        self._teardown("reconnecting")
        deadline = time.monotonic() + self._connect_timeout
        try:
            sock = open_connection(self._origin, self._connect_timeout, self._ssl)
        except OSError as exc:
            raise SessionError("connect", connect_error_text(exc)) from None
        try:
            parser, backlog, window = self._handshake(sock, deadline)
        except SessionError:
            sock.close()
            raise
        except (OSError, ProtocolError) as exc:
            sock.close()
            raise SessionError("connect", f"{type(exc).__name__}: {exc}") from None
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)  # liveness is the watchdog's job, not a per-read timer's
        self._sock = sock
        self._connected = True
        self._last_read = time.perf_counter()
        self._binary, self._attachments = None, []
        self._reader = gevent.spawn(self._read_loop, sock, parser, backlog)
        self._watchdog = gevent.spawn(self._watch, sock, window)

    def _handshake(self, sock, deadline: float) -> tuple[FrameParser, list, float]:
        key = new_key()
        upgrade = handshake_headers(self._origin.host_header, key)
        reserved = {name.lower() for name, _ in upgrade}
        extra = [
            (n, v) for n, v in merge_headers([("User-Agent", USER_AGENT)], self._headers) if n.lower() not in reserved
        ]
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(encode_request("GET", engineio_path(self._origin.base_path), upgrade + extra))
        head, rest = recv_head(sock, deadline)
        check_handshake(head, key)
        parser = FrameParser()
        frames = parser.feed(rest) if rest else []
        opened: dict | None = None
        yield_at = time.perf_counter() + YIELD_AFTER_S
        while True:
            while not frames:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SessionError("connect", "timed out in the Socket.IO handshake")
                if time.perf_counter() >= yield_at:
                    yield_at = take_turn()
                sock.settimeout(remaining)
                data = sock.recv(RECV_SIZE)
                if not data:
                    raise SessionError("connect", "server closed the connection during the handshake")
                frames = parser.feed(data)
            opcode, payload = frames.pop(0)
            if opcode == OP_PING:
                sock.sendall(encode_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                raise SessionError("connect", "server closed the websocket during the handshake")
            elif opcode != OP_TEXT or not payload:
                continue
            elif opened is None:
                opened = parse_open(payload)
                sock.sendall(encode_frame(OP_TEXT, encode_connect(self._namespace, self._auth)))
            elif payload[0] == EIO_PING:
                sock.sendall(encode_frame(OP_TEXT, PONG))
            elif payload[0] == EIO_CLOSE:
                raise SessionError("connect", "Engine.IO close during the handshake")
            elif payload[0] == EIO_MESSAGE:
                packet = parse_sio(payload[1:])
                if packet.namespace != self._namespace:
                    continue
                if packet.type == SIO_CONNECT:
                    self.sid = packet.data.get("sid") if type(packet.data) is dict else None
                    break
                if packet.type == SIO_CONNECT_ERROR:
                    data = packet.data
                    message = data.get("message", data) if type(data) is dict else data
                    raise SessionError("connect", f"namespace {self._namespace} refused: {message}")
        assert opened is not None  # a CONNECT is only read after the open packet
        return parser, frames, ping_window(opened) + PING_SLACK_S

    def close(self) -> None:
        """Leave the namespace, close the websocket, stop the reader (idempotent)."""
        sock = self._sock
        if sock is not None and self._connected:
            try:
                sock.settimeout(1.0)
                with self._send_lock:
                    sock.sendall(encode_frame(OP_TEXT, encode_disconnect(self._namespace)) + encode_close())
            except OSError:
                pass
        self._teardown("session closed")

    def _watch(self, sock, window: float) -> None:
        """The server pings every pingInterval: no read at all for interval + timeout means dead.

        Sleeps until ``window`` after the latest read (one wakeup per window
        while the server talks, instead of a socket timeout, which would arm a
        timer on every blocking read of the hot loop).  Bytes the reader has
        not had a turn to take yet are not silence.
        """
        while self._sock is sock:
            wait = self._last_read + window - time.perf_counter()
            if wait > 0:
                gevent.sleep(wait)
                continue
            if data_waiting(sock, unpollable=False):
                gevent.sleep(YIELD_AFTER_S)
                continue
            self._watchdog = None
            self._teardown(f"no ping from the server within pingInterval + pingTimeout ({window:g} s): connection dead")
            return

    def _teardown(self, detail: str) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not gevent.getcurrent():
            watchdog.kill(block=False)
        reader, self._reader = self._reader, None
        if reader is not None and reader is not gevent.getcurrent():
            # Kill first, close after: gevent defers closing a socket another
            # greenlet is blocked on until the hub runs again.
            reader.kill(block=True, timeout=2.0)
        self._lost(detail)

    def _lost(self, detail: str) -> None:
        """The connection is gone: fail every task still waiting on it."""
        self._connected = False
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        tasks = {id(t): t for t in self._pending_acks.values()}
        tasks.update((id(t), t) for t, _ in self._routes.values())
        self._pending_acks.clear()
        self._routes.clear()
        self._early.clear()
        now = time.perf_counter()
        for task in tasks.values():
            task.lose(detail, now, self._reads)

    def _send(self, frame: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise ConnectionError("not connected")
        with self._send_lock:
            sock.sendall(frame)

    # ------------------------------------------------------------------ the reader
    def _read_loop(self, sock, parser: FrameParser, backlog: list) -> None:
        """Single reader: recv, stamp, handle every frame of that read, repeat."""
        detail = "server closed the connection"
        recv = sock.recv
        feed = parser.feed
        handle = self._handle_frames
        perf = time.perf_counter
        frames, now = backlog, perf()
        yield_at = now + YIELD_AFTER_S
        killed = False
        try:
            while True:
                if frames and handle(frames, now):
                    detail = self._end_detail
                    return
                if now >= yield_at:  # a fast server must not keep timers and other users from running
                    yield_at = take_turn()
                data = recv(RECV_SIZE)
                now = perf()
                self._last_read = now
                if not data:
                    return
                self._reads += 1
                try:
                    frames = feed(data)
                except WebSocketError as exc:
                    if exc.messages:  # what came before the fault in this read still counts
                        handle(exc.messages, now)
                    raise
        except OSError as exc:
            detail = f"{type(exc).__name__}: {exc}"
        except WebSocketError as exc:
            detail = f"websocket protocol error: {exc}"
        except GreenletExit:
            killed = True  # close(): the closer cleans up
            raise
        except Exception as exc:
            detail = f"client error in the reader: {exc!r}"
            raise
        finally:
            if not killed and self._sock is sock:
                self._reader = None
                self._lost(detail)

    def _handle_frames(self, frames: list[tuple[int, bytes]], now: float) -> bool:
        """Route every frame of one read; True when the server ended the session."""
        prefix = self._event_prefix
        plen = len(prefix)
        routes = self._routes
        loads = orjson.loads
        read = self._reads
        for opcode, payload in frames:
            if opcode == OP_TEXT:
                if self._binary is not None:
                    self._binary_cut()
                if payload.startswith(prefix) and payload[plen : plen + 1] == b"[":
                    try:
                        args = loads(payload[plen:])
                    except orjson.JSONDecodeError:
                        self._malformed()
                        continue
                    if type(args) is not list or not args or type(args[0]) is not str:
                        self._malformed()
                        continue
                    route = routes.get(args[0])
                    if route is not None:
                        task = route[0]
                        task.deliver(route[1], args[1] if len(args) > 1 else None, now, read - task.read_base - 1)
                    elif self._pending_acks:
                        self._keep_early(args, now, read)
                    continue
                first = payload[0] if payload else -1
                if first == EIO_MESSAGE:
                    if self._on_packet(payload[1:], now, read):
                        return True
                elif first == EIO_PING:
                    self._send(encode_frame(OP_TEXT, PONG))
                elif first == EIO_CLOSE:
                    return True
            elif opcode == OP_BINARY:
                if self._on_attachment(payload, now, read):
                    return True
            elif opcode == OP_PING:
                self._send(encode_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                code, reason = parse_close(payload)
                said = " ".join(part for part in (str(code) if code is not None else "", reason) if part)
                self._end_detail = f"server closed the websocket ({said})" if said else "server closed the websocket"
                try:
                    self._send(encode_close())
                except OSError:
                    pass
                return True
        return False

    def _on_packet(self, message: bytes, now: float, read: int) -> bool:
        """Socket.IO packets off the fast path: acks, disconnects, unusual and binary events."""
        try:
            packet = parse_sio(message)
        except PacketError:
            self._malformed()
            return False
        if packet.attachments:  # binary event / ack: its attachments follow as binary frames
            self._binary, self._attachments = packet, []
            return False
        return self._dispatch(packet, now, read)

    def _dispatch(self, packet: SioPacket, now: float, read: int) -> bool:
        if packet.namespace != self._namespace:
            return False
        kind = packet.type
        if kind in (SIO_ACK, SIO_BINARY_ACK):
            task = self._pending_acks.pop(packet.ack_id, None) if packet.ack_id is not None else None
            if task is not None:
                self._on_ack(task, packet.data, now, read)
        elif kind in (SIO_EVENT, SIO_BINARY_EVENT):
            args = packet.data
            if type(args) is not list or not args or type(args[0]) is not str:
                self._malformed()
                return False
            route = self._routes.get(args[0])
            if route is not None:
                route[0].deliver(route[1], args[1] if len(args) > 1 else None, now, read - route[0].read_base - 1)
            elif self._pending_acks:
                self._keep_early(args, now, read)
        elif kind == SIO_DISCONNECT:
            return True
        return False

    def _on_attachment(self, payload: bytes, now: float, read: int) -> bool:
        """One binary frame: the next attachment of the binary packet being assembled."""
        packet = self._binary
        if packet is None:
            self._malformed()  # a binary frame no packet announced
            return False
        self._attachments.append(payload)
        if len(self._attachments) < packet.attachments:
            return False
        attachments, self._binary, self._attachments = self._attachments, None, []
        try:
            packet.data = fill_placeholders(packet.data, attachments)
        except PacketError:
            self._malformed()
            return False
        return self._dispatch(packet, now, read)

    def _binary_cut(self) -> None:
        """A text frame came while a binary packet still waited for attachments: that packet is lost."""
        self._binary, self._attachments = None, []
        self._malformed()

    def _on_ack(self, task: Task, data: Any, now: float, read: int) -> None:
        record = task.record
        record.time_to_headers_ms = (now - task.t0) * 1000.0
        task.acked = True
        reply = data[0] if type(data) is list and data else None
        listeners = reply.get("response_listener_events") if type(reply) is dict else None
        if type(reply) is dict and reply.get("error"):
            record.fail("ack", f"error reply: {error_detail(reply['error'])}")
        elif type(listeners) is not list or not listeners or not all(type(name) is str for name in listeners):
            record.fail("ack", f"no response_listener_events in ack reply {str(reply)[:120]}")
        else:
            task.listeners = listeners
            task.counts = [0] * len(listeners)
            task.open_listeners = len(listeners)
            if len(listeners) > 1:
                task.listener_of = array("i")
            for li, name in enumerate(listeners):
                self._routes[name] = (task, li)
            self._replay_early(task)
            task.wakeup.set()
            return
        task.end_ms = record.time_to_headers_ms
        task.finish(read)

    def _keep_early(self, args: list, now: float, read: int) -> None:
        if len(self._early) < MAX_EARLY_MESSAGES:
            self._early.append((args[0], args[1] if len(args) > 1 else None, now, read))

    def _replay_early(self, task: Task) -> None:
        if not self._early:
            return
        keep = []
        for item in self._early:
            route = self._routes.get(item[0])
            if route is not None and route[0] is task:
                task.deliver(route[1], item[1], item[2], item[3] - task.read_base - 1)
            else:
                keep.append(item)
        self._early = keep if self._pending_acks else []

    def _malformed(self) -> None:
        tasks = {id(t): t for t in self._pending_acks.values()}
        tasks.update((id(t), t) for t, _ in self._routes.values())
        if len(tasks) == 1:
            next(iter(tasks.values())).malformed += 1

    # ------------------------------------------------------------------ tasks
    def run_task(
        self,
        record: StreamRecord,
        service: str,
        task_name: str,
        task_data: dict,
        *,
        ack_timeout: float,
        first_chunk_timeout: float,
        stream_timeout: float,
        emit_times: bool = True,
    ) -> Task:
        """Emit ``service`` with an ack and record every message on the returned listeners.

        time_to_headers_ms = ack received.  Never raises for stream faults
        (classified into ``record.error``); a killed greenlet marks the record
        ``stopped`` and re-raises.  With ``emit_times``, afterwards fills
        ``record.emit_ms`` from the fake backend (:meth:`emit_times_lookup`,
        run right here; not counted in ``duration_ms``).  Returns the task, for
        a caller that looks its emit times up later itself.
        """
        task = Task(record)
        record.t0 = task.t0
        record.started_at = time.time()
        record.http_status = 0
        try:
            if not self._connected:
                try:
                    self.connect()
                except SessionError as exc:
                    record.fail(exc.kind, exc.detail)
                    record.duration_ms = (time.perf_counter() - task.t0) * 1000.0
                    return task
            self._last_ack_id += 1
            task.ack_id = self._last_ack_id
            frame = encode_frame(
                OP_TEXT,
                encode_event(self._namespace, [service, {"taskName": task_name, "taskData": task_data}], task.ack_id),
            )
            self._pending_acks[task.ack_id] = task  # listen before emitting
            task.read_base = self._reads
            # t0 just before the emit goes out: a first chunk can never look earlier than it came
            task.t0 = time.perf_counter()
            record.t0 = task.t0
            record.started_at = time.time()
            try:
                self._send(frame)
            except OSError as exc:
                self._teardown(f"emit failed: {type(exc).__name__}: {exc}")
            except BaseException:
                # Killed while sendall waited: part of the frame may be out, so
                # the websocket stream is no longer framed correctly.
                self._teardown("emit interrupted")
                raise
            else:
                self._wait(task, ack_timeout, first_chunk_timeout, stream_timeout)
        except BaseException as exc:
            self._forget(task)
            if math.isnan(record.duration_ms):
                record.duration_ms = (time.perf_counter() - task.t0) * 1000.0
            record.fail(
                "stopped" if not isinstance(exc, Exception) else "disconnect",
                type(exc).__name__ if not isinstance(exc, Exception) else f"client error: {exc!r}"[:200],
            )
            raise
        self._forget(task)
        reads_at_end = task.reads_at_end if task.reads_at_end >= 0 else self._reads
        record.n_reads = max(reads_at_end - task.read_base, 0)
        record.malformed_lines = task.malformed
        record.duration_ms = task.end_ms
        if record.error is None:
            record.status = "cancelled" if task.cancelled else "completed"
        if emit_times:
            lookup = self.emit_times_lookup(task)
            if lookup is not None:
                lookup()
        return task

    def emit_times_lookup(self, task: Task) -> Callable[[], None] | None:
        """The fake backend's emit times of a finished ``task`` into its record, as a call to make.

        None when there is nothing to look up.  The call asks the backend once
        per process whether it is the fake backend (a real one never gets an
        emit-time request) and then fetches per listener; it blocks, so a
        load user makes it off its critical path, before handing the record on.
        """
        if not task.listeners:
            return None
        return partial(self._emit_times.fill, task)

    def _wait(self, task: Task, ack_timeout: float, first_chunk_timeout: float, stream_timeout: float) -> None:
        """Sleep until the reader finishes the task or a deadline passes (no per-message wakeups)."""
        t0 = task.t0
        stream_deadline = t0 + stream_timeout
        while not task.finished:
            if not task.acked:
                deadline = t0 + ack_timeout
                kind, why = "ack", f"no ack within ack_timeout={ack_timeout:g} s"
            elif not task.got_chunk:
                deadline = t0 + first_chunk_timeout
                kind, why = "timeout", f"no chunk within first_chunk_timeout={first_chunk_timeout:g} s"
            else:
                deadline = stream_deadline
                kind, why = (
                    "timeout",
                    (f"stream not done within stream_timeout={stream_timeout:g} s ({task.n_chunks} chunks)"),
                )
            if stream_deadline < deadline:
                deadline = stream_deadline
                kind, why = "timeout", f"stream not done within stream_timeout={stream_timeout:g} s"
            now = time.perf_counter()
            if now >= deadline:
                task.record.fail(kind, why + task.silence_note())
                task.end_ms = (now - t0) * 1000.0
                task.finish(self._reads)
                return
            task.wakeup.clear()
            task.wakeup.wait(deadline - now)

    def _forget(self, task: Task) -> None:
        """Stop routing to ``task``: later messages on its listeners are dropped."""
        if self._pending_acks.get(task.ack_id) is task:
            del self._pending_acks[task.ack_id]
        for name in task.listeners:
            route = self._routes.get(name)
            if route is not None and route[0] is task:
                del self._routes[name]
        if not self._pending_acks:
            self._early.clear()


def ping_window(opened: Mapping[str, Any]) -> float:
    """pingInterval + pingTimeout of an Engine.IO open packet, in seconds (Engine.IO's defaults if absent)."""
    interval, timeout = opened.get("pingInterval", 25000), opened.get("pingTimeout", 20000)
    if type(interval) not in (int, float) or type(timeout) not in (int, float) or interval < 0 or timeout < 0:
        raise PacketError(f"bad ping settings in the open packet: {interval!r}, {timeout!r}")
    return (interval + timeout) / 1000.0
