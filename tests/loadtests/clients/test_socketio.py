"""Socket.io load client: Engine.IO v4 / Socket.IO v5 over websocket (docs/PROTOCOL.md, "Socket.io").

Part 1 checks the framing code on every possible read split.  Part 2 runs the
session against a scripted loopback Socket.io server that sends exact frames
(packed together, split apart, chunks before the ack, pings, disconnects).
Part 3 runs it against the fake backend.
"""

from __future__ import annotations

import math
import threading
import time

import gevent
import orjson
import pytest

from loadtests.clients.socketio import SessionError, SocketIOSession
from loadtests.protocol.engineio import (
    SIO_ACK,
    SIO_BINARY_EVENT,
    SIO_CONNECT_ERROR,
    SIO_EVENT,
    encode_connect,
    encode_event,
    parse_sio,
)
from loadtests.protocol.websocket import (
    OP_BINARY,
    OP_PING,
    OP_TEXT,
    FrameParser,
    WebSocketError,
    accept_for,
    encode_frame,
)
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import EventKind
from stream_harness.contract.protocol import STATS_PATH
from stream_harness.contract.schema import CHUNK, END, ERROR, OTHER
from tests.support.loopback import ScriptedServer, free_port, sio_event, ws_frame

NS = "/UserSession"
INFO, DATA, BROKER = EventKind.INFO, EventKind.DATA, EventKind.BROKER
OPEN = '0{"sid":"eio-1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}'


def new_record() -> StreamRecord:
    return StreamRecord(transport="socketio", endpoint="chat", stream_id="t")


# =========================================================================== part 1: framing

FRAMES = (
    ws_frame('42/UserSession,["l","héllo 😀"]')
    + ws_frame("2")
    + ws_frame("x" * 300)  # 16-bit length
    + ws_frame(b"ab", opcode=OP_PING)
    + ws_frame("frag-", fin=False)
    + ws_frame(b"", opcode=OP_PING)  # ping inside a fragmented msg
    + ws_frame("ment", opcode=0, fin=True)
)
EXPECTED = [
    (OP_TEXT, '42/UserSession,["l","héllo 😀"]'.encode()),
    (OP_TEXT, b"2"),
    (OP_TEXT, b"x" * 300),
    (OP_PING, b"ab"),
    (OP_PING, b""),
    (OP_TEXT, b"frag-ment"),
]


@pytest.mark.parametrize("cut", range(1, len(FRAMES)))
def test_frame_parser_any_single_split(cut):
    parser = FrameParser()
    assert parser.feed(FRAMES[:cut]) + parser.feed(FRAMES[cut:]) == EXPECTED


def test_frame_parser_byte_by_byte_and_big_frames():
    parser = FrameParser()
    assert [m for i in range(len(FRAMES)) for m in parser.feed(FRAMES[i : i + 1])] == EXPECTED
    big = ws_frame(b"y" * 200_000, opcode=OP_BINARY)  # 64-bit length, many reads
    parser = FrameParser()
    out = [m for i in range(0, len(big), 7000) for m in parser.feed(big[i : i + 7000])]
    assert out == [(OP_BINARY, b"y" * 200_000)]


@pytest.mark.parametrize(
    "bad",
    [
        bytes((0x81, 0x82)) + b"mask" + b"hi",  # server frames must not be masked
        bytes((0xC1, 0x01)) + b"x",  # RSV1 without an extension
        bytes((0x80, 0x01)) + b"x",  # continuation without a message
    ],
)
def test_frame_parser_rejects_protocol_violations(bad):
    with pytest.raises(WebSocketError):
        FrameParser().feed(bad)


def test_client_frames_are_masked_and_unmask_to_the_payload():
    from tests.support.loopback import Conn

    payload = b'42/UserSession,0["chat_service",{}]' * 10
    frame = encode_frame(OP_TEXT, payload)
    assert frame[1] & 0x80
    conn = Conn(sock=None, server=None, buf=frame)
    assert conn.recv_frame() == (OP_TEXT, payload)
    assert accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 example


def test_socketio_packets():
    assert encode_connect(NS, {"token": "t"}) == b'40/UserSession,{"token":"t"}'
    assert encode_connect("/") == b"40"
    assert encode_event(NS, ["chat_service", {"a": 1}], 7) == b'42/UserSession,7["chat_service",{"a":1}]'
    ack = parse_sio(b'3/UserSession,12[{"response_listener_events":["x"]}]')
    assert (ack.type, ack.namespace, ack.ack_id, ack.data) == (SIO_ACK, NS, 12, [{"response_listener_events": ["x"]}])
    event = parse_sio(b'2["x","y"]')
    assert (event.type, event.namespace, event.ack_id, event.data) == (SIO_EVENT, "/", None, ["x", "y"])
    binary = parse_sio(b'51-/UserSession,["x",{"_placeholder":true,"num":0}]')
    assert binary.type == SIO_BINARY_EVENT and binary.attachments == 1
    error = parse_sio(b'4/UserSession,{"message":"nope"}')
    assert error.type == SIO_CONNECT_ERROR and error.data == {"message": "nope"}


# =========================================================================== part 2: loopback


class FakeSocketIO:
    """Scripted server side of one Socket.io session: handshake, then ``script(conn)``.

    Also answers ``GET /api/_harness/emit-times/<listener>`` from ``emit_times``
    and, like the fake backend, ``GET /api/_harness/stats`` (404 with
    ``fake_backend=False``, like a real backend).
    """

    def __init__(
        self, script, emit_times: dict | None = None, refuse: str | None = None, fake_backend: bool = True
    ) -> None:
        self.script = script
        self.emit_times = emit_times or {}
        self.refuse = refuse
        self.fake_backend = fake_backend
        self.auth: list = []
        self.upgrade_headers: list[dict] = []
        self.pongs = 0
        self.lock = threading.Lock()
        self.server = ScriptedServer(self.handle)
        self.url = self.server.url

    def handle(self, conn) -> None:
        req = conn.read_request()
        if req is None:
            return
        if req.target == STATS_PATH:
            body = b'{"active":{"ndjson":0,"socketio":1},"emit_log":{}}' if self.fake_backend else b"{}"
            status = b"200 OK" if self.fake_backend else b"404 Not Found"
            conn.send(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            return
        if req.target.startswith("/api/_harness/emit-times/"):
            doc = self.emit_times.get(req.target.rsplit("/", 1)[1])
            body = orjson.dumps(doc) if doc is not None else b'{"detail":"unknown listener"}'
            status = b"200 OK" if doc is not None else b"404 Not Found"
            conn.send(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            return
        assert req.target == "/socket.io/?EIO=4&transport=websocket", req.target
        self.upgrade_headers.append(req.headers)
        conn.accept_websocket(req)
        conn.send(ws_frame(OPEN))
        hello = conn.recv_text()
        assert hello.startswith(b"40/UserSession,"), hello
        self.auth.append(orjson.loads(hello[len(b"40/UserSession,") :] or b"null"))
        if self.refuse:
            conn.send(ws_frame(f'44/UserSession,{{"message":"{self.refuse}"}}'))
            return
        conn.send(ws_frame('40/UserSession,{"sid":"sio-1"}'))
        self.script(self, conn)

    def recv_emit(self, conn) -> tuple[int, list] | None:
        """Next EVENT from the client (answering nothing else): (ack id, args)."""
        while True:
            text = conn.recv_text()
            if text is None:
                return None
            if text == b"3":
                with self.lock:
                    self.pongs += 1
                continue
            packet = parse_sio(text[1:])
            if packet.type == SIO_EVENT:
                return packet.ack_id, packet.data

    def wait_closed(self, conn) -> None:
        while self.recv_emit(conn) is not None:
            pass

    def __enter__(self) -> FakeSocketIO:
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)


def ack(ack_id: int, reply) -> bytes:
    return ws_frame(b"43/UserSession," + str(ack_id).encode() + orjson.dumps([reply]))


def listening(ack_id: int, *names: str) -> bytes:
    return ack(ack_id, {"response_listener_events": list(names)})


def run(
    session: SocketIOSession,
    *,
    ack_timeout=5.0,
    first_chunk_timeout=5.0,
    stream_timeout=10.0,
    emit_times=False,
    task_data=None,
) -> StreamRecord:
    record = new_record()
    session.run_task(
        record,
        "chat_service",
        "direct_chat",
        task_data or {"prompt": "hi"},
        ack_timeout=ack_timeout,
        first_chunk_timeout=first_chunk_timeout,
        stream_timeout=stream_timeout,
        emit_times=emit_times,
    )
    return record


def test_one_connection_with_auth_token_serves_many_tasks():
    def script(srv, conn):
        for n in range(3):
            ack_id, args = srv.recv_emit(conn)
            assert args == ["chat_service", {"taskName": "direct_chat", "taskData": {"prompt": "hi"}}]
            conn.send(
                listening(ack_id, f"task-{n}") + sio_event(f"task-{n}", "hello") + sio_event(f"task-{n}", {"end": True})
            )
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url, auth_token="tok", headers={"Cookie": "a=b"})
        session.connect()
        assert session.connected and session.sid == "sio-1"
        records = [run(session) for _ in range(3)]
        session.close()
        assert not session.connected
    assert [r.status for r in records] == ["completed"] * 3
    assert [list(r.kinds) for r in records] == [[CHUNK, END]] * 3
    assert srv.server.connections == 1
    assert srv.auth == [{"token": "tok"}] and srv.upgrade_headers[0]["cookie"] == "a=b"


def test_every_message_is_recorded_in_order_with_the_time_of_its_read():
    def script(srv, conn):
        ack_id, _ = srv.recv_emit(conn)
        text = sio_event("L", "wörld 😀")
        cut = text.index("😀".encode()) + 1
        conn.send_pieces(
            [
                listening(ack_id, "L") + sio_event("L", "hello") + text[:cut],  # read: ack, 1 chunk, half
                text[cut:]
                + ws_frame("2")  # completes it; a ping
                + sio_event("L", {"info": "thinking"})
                + sio_event("L", {"data": {"k": 1}}),
                sio_event("L", {"broker": [{"broker_id": "b", "value": 1}]})
                + sio_event("L", 42)
                + sio_event("other-listener", "not ours")
                + sio_event("L", {"end": "True"}),
            ],
            gap=0.25,
        )
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url, auth_token="tok")
        record = run(session)
        gevent.sleep(0.05)
        session.close()
    assert record.status == "completed", record.error_detail
    assert list(record.kinds) == [CHUNK, CHUNK, INFO, DATA, BROKER, OTHER, END]
    assert list(record.seqs) == [0, 1, 2, 3, 4, 5, 6]
    reads, t = list(record.reads), list(record.t_ms)
    assert reads == [0, 1, 1, 1, 2, 2, 2]
    assert t[1] == t[2] == t[3] and t[4] == t[5] == t[6]
    assert t[1] - t[0] > 150 and t[4] - t[3] > 150
    assert record.time_to_headers_ms <= t[0] < 150
    assert record.n_reads == 3 and record.duration_ms == t[6]
    assert srv.pongs == 1  # the server's ping "2" got a "3"


def test_chunks_that_arrive_before_the_ack_are_not_lost():
    def script(srv, conn):
        ack_id, _ = srv.recv_emit(conn)
        conn.send_pieces(
            [
                sio_event("L", "early-1") + sio_event("L", "early-2"),
                listening(ack_id, "L")
                + ws_frame(b'42/UserSession,9["L","late, server wants an ack"]')
                + sio_event("L", {"end": True}),
            ],
            gap=0.1,
        )
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url)
        record = run(session)
        session.close()
    assert record.status == "completed"
    assert list(record.kinds) == [CHUNK, CHUNK, CHUNK, END]
    assert list(record.seqs) == [0, 1, 2, 3]
    assert record.t_ms[0] < record.time_to_headers_ms  # arrival kept, not replay time


def test_error_object_fails_the_stream_which_still_ends_normally():
    def script(srv, conn):
        ack_id, _ = srv.recv_emit(conn)
        conn.send(
            listening(ack_id, "L")
            + sio_event("L", "a")
            + sio_event("L", {"error": {"error_type": "quota", "message": "over"}})
            + sio_event("L", {"end": True})
        )
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url)
        record = run(session)
        session.close()
    assert record.error == "stream_error_event" and "quota" in record.error_detail
    assert list(record.kinds) == [CHUNK, ERROR, END]


@pytest.mark.parametrize("reply", [{"response_listener_events": []}, {"error": "unknown service"}, "what"])
def test_empty_or_error_ack_reply_is_an_ack_failure(reply):
    def script(srv, conn):
        ack_id, _ = srv.recv_emit(conn)
        conn.send(ack(ack_id, reply))
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url)
        record = run(session)
        session.close()
    assert record.error == "ack" and record.n_events == 0
    assert not math.isnan(record.time_to_headers_ms)


def test_missing_ack_times_out_as_ack_and_a_silent_stream_at_first_chunk_timeout():
    def script(srv, conn):
        srv.recv_emit(conn)  # never acked
        ack_id, _ = srv.recv_emit(conn)
        conn.send(listening(ack_id, "L2"))  # acked, then silence
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url)
        no_ack = run(session, ack_timeout=0.3)
        silent = run(session, first_chunk_timeout=0.3)
        session.close()
    assert no_ack.error == "ack" and 250 <= no_ack.duration_ms < 3000
    assert silent.error == "timeout" and "first_chunk_timeout" in silent.error_detail
    assert 250 <= silent.duration_ms < 3000


@pytest.mark.parametrize("how", ["tcp-close", "namespace-disconnect", "engineio-close", "websocket-close"])
def test_server_disconnect_mid_task_then_reconnect(how):
    def script(srv, conn):
        if srv.server.connections == 1:
            ack_id, _ = srv.recv_emit(conn)
            conn.send(listening(ack_id, "L") + sio_event("L", "a") + sio_event("L", "b"))
            time.sleep(0.05)
            if how == "namespace-disconnect":
                conn.send(ws_frame("41/UserSession,"))
            elif how == "engineio-close":
                conn.send(ws_frame("1"))
            elif how == "websocket-close":
                conn.send(ws_frame(b"\x03\xf3going away", opcode=0x8))  # 1011 and a reason
            if how != "tcp-close":
                srv.wait_closed(conn)  # the client must hang up by itself
            return
        ack_id, _ = srv.recv_emit(conn)
        conn.send(listening(ack_id, "L") + sio_event("L", {"end": True}))
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url)
        cut = run(session)
        assert not session.connected
        again = run(session)
        session.close()
    assert cut.error == "disconnect" and list(cut.kinds) == [CHUNK, CHUNK]
    if how == "websocket-close":  # the close frame's code and reason reach the record
        assert "server closed the websocket (1011 going away)" in cut.error_detail
    assert again.status == "completed" and srv.server.connections == 2


def test_connect_failures_raise_session_error_and_fail_run_task():
    with FakeSocketIO(lambda srv, conn: None, refuse="bad token") as srv, pytest.raises(SessionError) as info:
        SocketIOSession(srv.url, auth_token="nope").connect()
    assert info.value.kind == "connect" and "bad token" in info.value.detail
    session = SocketIOSession(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SessionError):
        session.connect()
    record = run(session)
    assert record.error == "connect" and not math.isnan(record.duration_ms)


def test_emit_times_fill_emit_ms_and_promised_chunks_are_checked():
    state = {}

    def script(srv, conn):
        for listener, sent in (("full", 3), ("short", 2), ("unknown", 1)):
            ack_id, _ = srv.recv_emit(conn)
            t = time.time()
            frames = listening(ack_id, listener)
            for i in range(sent):
                frames += sio_event(listener, f"c{i}")
            frames += sio_event(listener, {"end": True})
            if listener != "unknown":
                srv.emit_times[listener] = {
                    "listener": listener,
                    "chunks": 3,
                    "done": True,
                    "ts": [t + 0.001 * i for i in range(sent + 1)],
                }
            state[listener] = t
            conn.send(frames)
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url)
        full, short, unknown = (run(session, emit_times=True) for _ in range(3))
        session.close()
    assert full.status == "completed" and full.expected_chunks == 3
    for i in range(4):
        assert full.emit_ms[i] == pytest.approx((state["full"] + 0.001 * i - full.started_at) * 1000)
    assert short.error == "short_stream" and short.expected_chunks == 3
    assert unknown.status == "completed" and all(math.isnan(v) for v in unknown.emit_ms)


def test_a_task_can_listen_on_several_events_and_ends_when_all_ended():
    def script(srv, conn):
        ack_id, _ = srv.recv_emit(conn)
        t = time.time()
        srv.emit_times["A"] = {"listener": "A", "chunks": 1, "done": True, "ts": [t, t + 1]}
        srv.emit_times["B"] = {"listener": "B", "chunks": 1, "done": True, "ts": [t + 2, t + 3]}
        conn.send(
            listening(ack_id, "A", "B") + sio_event("A", "a") + sio_event("B", "b") + sio_event("A", {"end": True})
        )
        time.sleep(0.2)
        conn.send(sio_event("B", {"end": True}))
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url)
        record = run(session, emit_times=True)
        session.close()
    assert record.status == "completed" and list(record.kinds) == [CHUNK, CHUNK, END, END]
    assert list(record.seqs) == [0, 0, 1, 1] and record.duration_ms > 150
    offsets = [v - record.emit_ms[0] for v in record.emit_ms]
    assert offsets == pytest.approx([0, 2000, 1000, 3000])


def test_emit_times_of_200_listeners_land_on_each_listeners_own_messages():
    names = [f"L{i}" for i in range(200)]

    def script(srv, conn):
        ack_id, _ = srv.recv_emit(conn)
        t = time.time()
        for i, name in enumerate(names):  # listener i's messages were emitted at t + i s (and + 0.5 s)
            srv.emit_times[name] = {"listener": name, "chunks": 1, "done": True, "ts": [t + i, t + i + 0.5]}
        frames = listening(ack_id, *names)
        frames += b"".join(sio_event(name, "c") for name in reversed(names))
        frames += b"".join(sio_event(name, {"end": True}) for name in names)
        conn.send(frames)
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url)
        record = run(session, emit_times=True)
        session.close()
    assert record.status == "completed" and record.expected_chunks == 200
    offsets = [v - record.emit_ms[199] for v in record.emit_ms]  # event 199 is L0's chunk
    assert offsets[:200] == pytest.approx([1000.0 * i for i in reversed(range(200))])
    assert offsets[200:] == pytest.approx([1000.0 * i + 500.0 for i in range(200)])


@pytest.mark.parametrize("fake_backend", [True, False], ids=["fake backend", "real backend"])
def test_emit_times_are_looked_up_only_where_the_backend_is_the_fake_one(fake_backend: bool):
    def script(srv, conn):
        for n in range(4):
            ack_id, _ = srv.recv_emit(conn)
            conn.send(listening(ack_id, f"A{n}", f"B{n}") + sio_event(f"A{n}", "a") + sio_event(f"A{n}", {"end": True}))
            conn.send(sio_event(f"B{n}", {"end": True}))
        srv.wait_closed(conn)

    with FakeSocketIO(script, fake_backend=fake_backend) as srv:
        session = SocketIOSession(srv.url, auth_token="tok", headers={"Authorization": "Bearer secret"})
        records = [run(session, emit_times=True) for _ in range(4)]
        session.close()
    assert [r.status for r in records] == ["completed"] * 4
    probes = [r for r in srv.server.requests if r.target == STATS_PATH]
    lookups = [r for r in srv.server.requests if r.target.startswith("/api/_harness/emit-times/")]
    assert len(probes) == 1  # asked once, then remembered
    assert len(lookups) == (8 if fake_backend else 0)
    assert not any("authorization" in r.headers for r in probes + lookups)


def test_killing_the_greenlet_marks_the_record_stopped():
    def script(srv, conn):
        ack_id, _ = srv.recv_emit(conn)
        conn.send(listening(ack_id, "L") + sio_event("L", "a"))
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url)
        record = new_record()
        g = gevent.spawn(
            session.run_task,
            record,
            "chat_service",
            "direct_chat",
            {},
            ack_timeout=5,
            first_chunk_timeout=5,
            stream_timeout=10,
        )
        deadline = time.monotonic() + 5
        while record.n_events == 0 and time.monotonic() < deadline:
            gevent.sleep(0.01)
        g.kill(block=True, timeout=5)
        assert session.connected  # the session outlives the task
        session.close()
    assert g.dead and record.error == "stopped" and list(record.kinds) == [CHUNK]


def test_a_silent_connection_is_declared_dead_by_the_watchdog(monkeypatch):
    import loadtests.clients.socketio.session as sio_client

    monkeypatch.setattr(sio_client, "PING_SLACK_S", 0.1)
    quick_open = OPEN.replace("25000", "100").replace("20000", "100")  # window 0.2 s + 0.1 s slack

    def handler(conn):
        req = conn.read_request()
        conn.accept_websocket(req)
        conn.send(ws_frame(quick_open))
        conn.recv_text()
        conn.send(ws_frame('40/UserSession,{"sid":"s"}'))
        packet = parse_sio(conn.recv_text()[1:])
        conn.send(listening(packet.ack_id, "L") + sio_event("L", "a"))
        while conn._fill():  # then silence: no pings, no close
            pass

    with ScriptedServer(handler) as server:
        session = SocketIOSession(server.url)
        record = run(session, stream_timeout=10)
        assert not session.connected
        session.close()
    assert record.error == "disconnect" and "ping" in record.error_detail
    assert 200 <= record.duration_ms < 5000


def test_idle_session_answers_pings():
    def script(srv, conn):
        conn.send(ws_frame("2"))
        assert conn.recv_text() == b"3"
        with srv.lock:
            srv.pongs += 1
        srv.wait_closed(conn)

    with FakeSocketIO(script) as srv:
        session = SocketIOSession(srv.url)
        session.connect()
        deadline = time.monotonic() + 5
        while not srv.pongs and time.monotonic() < deadline:
            gevent.sleep(0.01)
        session.close()
    assert srv.pongs == 1


# =========================================================================== part 3: fake backend


def test_fake_backend_counts_match_chunk_for_chunk_with_emit_times(backend):
    session = SocketIOSession(backend.url, auth_token="tok")
    record = run(session, emit_times=True, task_data={"harness": {"chunks": 600, "duration_s": 0.5, "seed": 3}})
    session.close()
    assert record.status == "completed", record.error_detail
    assert list(record.kinds).count(CHUNK) == record.expected_chunks == 600
    assert list(record.seqs) == list(range(record.n_events)) and record.kinds[-1] == END
    transit = [t - e for t, e in zip(record.t_ms, record.emit_ms)]
    assert all(-50 < x < 2000 for x in transit)  # every emit time filled


def test_fake_backend_first_chunk_delay_is_measured_as_ttfc(backend):
    session = SocketIOSession(backend.url, auth_token="tok")
    session.connect()
    record = run(
        session, task_data={"harness": {"chunks": 20, "duration_s": 0.2, "events": False, "first_chunk_delay_ms": 250}}
    )
    session.close()
    assert record.status == "completed"
    ttfc = record.t_ms[list(record.kinds).index(CHUNK)]
    assert 245 <= ttfc <= 330, ttfc
    assert record.time_to_headers_ms < 150


def test_fake_backend_faults_and_reconnect(backend):
    session = SocketIOSession(backend.url, auth_token="tok")
    shape = {"chunks": 50, "duration_s": 0.2, "events": False}
    errored = run(session, task_data={"harness": {**shape, "error_at": 5}})
    dropped = run(session, task_data={"harness": {**shape, "disconnect_at": 5}})
    assert not session.connected
    invalid = run(session, task_data={"harness": {"chunks": -1}})  # reconnects first
    fine = run(session, emit_times=True, task_data={"harness": shape})
    session.close()
    assert errored.error == "stream_error_event" and list(errored.kinds).count(CHUNK) == 5
    assert dropped.error == "disconnect" and list(dropped.kinds).count(CHUNK) == 5
    assert invalid.error == "ack" and "chunks" in invalid.error_detail
    assert fine.status == "completed" and list(fine.kinds).count(CHUNK) == 50
