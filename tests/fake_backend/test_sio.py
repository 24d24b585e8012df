"""The fake backend's Socket.io path, driven by the real python-socketio client."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import socketio

from fake_backend.process import start_backend

NS = "/UserSession"
MESSAGE_KEYS = {"info", "data", "broker", "error", "end", "reason"}


class Session:
    """One real Socket.io client that records every message per listener."""

    def __init__(self, url: str, *, transport: str = "websocket", token: str | None = "jwt") -> None:
        self.client = socketio.Client(reconnection=False)
        self.messages: dict[str, list] = {}
        self.arrivals: dict[str, list[float]] = {}  # perf_counter when each message was handled
        self.cond = threading.Condition()
        self.disconnected = threading.Event()
        self.client.on("*", self._on_message, namespace=NS)
        self.client.on("disconnect", lambda *a: self.disconnected.set(), namespace=NS)
        self.client.connect(
            url, namespaces=[NS], transports=[transport], auth={"token": token} if token else None, wait_timeout=10
        )

    def _on_message(self, event: str, data: object) -> None:
        with self.cond:
            self.messages.setdefault(event, []).append(data)
            self.arrivals.setdefault(event, []).append(time.perf_counter())
            self.cond.notify_all()

    def start(self, harness: dict | None, service: str = "chat_service") -> dict:
        task_data = {"messages": [{"role": "user", "content": "hi"}]}
        if harness is not None:
            task_data["harness"] = harness
        return self.client.call(service, {"taskName": "direct_chat", "taskData": task_data}, namespace=NS, timeout=10)

    def wait(self, listener: str, until, timeout: float = 20) -> list:
        with self.cond:
            assert self.cond.wait_for(lambda: until(self.messages.get(listener, [])), timeout), (
                f"timed out; got {len(self.messages.get(listener, []))} messages"
            )
            return list(self.messages[listener])

    def run(self, harness: dict | None, service: str = "chat_service") -> tuple[str, list]:
        ack = self.start(harness, service)
        assert set(ack) == {"response_listener_events"} and len(ack["response_listener_events"]) == 1, ack
        listener = ack["response_listener_events"][0]
        return listener, self.wait(listener, lambda msgs: bool(msgs) and _is_end(msgs[-1]))

    def close(self, abort: bool = False) -> None:
        if abort:  # python-engineio's polling client otherwise waits ~30 s for its pending GET
            self.client.eio.disconnect(abort=True)
        else:
            self.client.disconnect()


def _is_end(message: object) -> bool:
    return isinstance(message, dict) and message.get("end") is True


@pytest.fixture
def session(backend):
    s = Session(backend.url)
    yield s
    s.close()


def check_messages(messages: list, chunks: int) -> None:
    """Strings are chunks; objects carry only the protocol's keys; end is last."""
    assert sum(isinstance(m, str) for m in messages) == chunks
    for m in messages:
        assert isinstance(m, (str, dict)), m
        if isinstance(m, dict):
            assert m and set(m) <= MESSAGE_KEYS, m
            if "broker" in m:
                assert isinstance(m["broker"], list)
                assert all({"broker_id", "value"} <= set(b) for b in m["broker"])
            if "info" in m or "data" in m:
                assert isinstance(m.get("info", m.get("data")), dict)
    assert _is_end(messages[-1]) and not any(_is_end(m) for m in messages[:-1])


@pytest.mark.parametrize("service", ["chat_service", "scraper_service", "research_service"])
def test_task_acks_then_streams_strings_objects_and_end(session, service):
    listener, messages = session.run({"chunks": 200, "duration_s": 0.2, "seed": 4}, service)
    check_messages(messages, chunks=200)
    assert messages[-1] == {"end": True}
    assert any("info" in m for m in messages if isinstance(m, dict))
    assert any("broker" in m for m in messages if isinstance(m, dict))


def test_emit_times_cover_every_message(backend, session):
    before = time.time()
    listener, messages = session.run({"chunks": 100, "duration_s": 0.5, "seed": 1})
    body = httpx.get(f"{backend.url}/api/_harness/emit-times/{listener}").json()
    assert body["listener"] == listener and body["chunks"] == 100 and body["done"] is True
    ts = body["ts"]
    assert len(ts) == len(messages)
    assert all(a <= b for a, b in zip(ts, ts[1:]))
    assert before - 1 <= ts[0] and ts[-1] <= time.time() + 1
    assert ts[-1] - ts[0] >= 0.45  # the 0.5 s pacing is visible in the emit times
    assert httpx.get(f"{backend.url}/api/_harness/emit-times/no-such-task").status_code == 404


def test_timing_off_records_no_emit_times(backend, session):
    listener, messages = session.run({"chunks": 5, "duration_s": 0, "timing": False})
    check_messages(messages, chunks=5)
    assert httpx.get(f"{backend.url}/api/_harness/emit-times/{listener}").status_code == 404


def test_one_socket_runs_several_tasks_at_once(session):
    acks = [session.start({"chunks": 50, "duration_s": 0.3, "events": False}) for _ in range(3)]
    listeners = [a["response_listener_events"][0] for a in acks]
    assert len(set(listeners)) == 3
    for listener in listeners:
        messages = session.wait(listener, lambda msgs: bool(msgs) and _is_end(msgs[-1]))
        assert messages[:-1] == [m for m in messages[:-1] if isinstance(m, str)]
        check_messages(messages, chunks=50)


def test_cancel_ends_the_task_with_end(backend, session):
    ack = session.start({"chunks": 1000, "duration_s": 20})
    listener = ack["response_listener_events"][0]
    session.wait(listener, lambda msgs: sum(isinstance(m, str) for m in msgs) >= 3)
    response = httpx.post(f"{backend.url}/api/ai/cancel/{listener}")
    assert response.status_code == 200
    messages = session.wait(listener, lambda msgs: _is_end(msgs[-1]), timeout=5)
    assert messages[-1] == {"end": True, "reason": "cancelled"}
    assert sum(isinstance(m, str) for m in messages) < 1000


def test_error_at_sends_error_then_end(session):
    listener, messages = session.run({"chunks": 40, "duration_s": 0, "error_at": 25, "events": False})
    assert messages[:25] == [m for m in messages[:25] if isinstance(m, str)] and len(messages) == 27
    error = messages[25]["error"]
    assert {"error_type", "message", "user_message"} <= set(error)
    assert messages[26] == {"end": True}


def test_disconnect_at_drops_the_socket_without_end(backend):
    s = Session(backend.url)
    try:
        ack = s.start({"chunks": 100, "duration_s": 0.5, "disconnect_at": 30, "events": False})
        assert s.disconnected.wait(10)
        time.sleep(0.2)
        messages = s.messages.get(ack["response_listener_events"][0], [])
        assert messages == [m for m in messages if isinstance(m, str)] and len(messages) == 30
    finally:
        s.close()


def test_buffer_fault_delivers_messages_in_bursts_while_emit_times_stay_spread(backend, session):
    listener, messages = session.run({"chunks": 100, "duration_s": 1, "events": False, "buffer_ms": 250})
    check_messages(messages, chunks=100)
    arrivals = session.arrivals[listener]
    pauses = sum(b - a > 0.15 for a, b in zip(arrivals, arrivals[1:]))
    assert 2 <= pauses <= 6, pauses  # ~4 bursts 250 ms apart, not a message every 10 ms
    ts = httpx.get(f"{backend.url}/api/_harness/emit-times/{listener}").json()["ts"]
    assert sum(b - a > 0.1 for a, b in zip(ts, ts[1:])) == 0  # produced steadily every 10 ms


def test_stall_and_first_chunk_delay_apply_to_tasks(backend, session):
    sent = time.perf_counter()
    ack = session.start(
        {"chunks": 40, "duration_s": 0.2, "events": False, "first_chunk_delay_ms": 300, "stall_ms": 300, "stall_at": 20}
    )
    listener = ack["response_listener_events"][0]
    session.wait(listener, lambda msgs: bool(msgs) and _is_end(msgs[-1]))
    assert session.arrivals[listener][0] - sent >= 0.3
    ts = httpx.get(f"{backend.url}/api/_harness/emit-times/{listener}").json()["ts"]
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    assert gaps[19] >= 0.3 and sorted(gaps)[-2] < 0.3


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({"taskName": "direct_chat", "taskData": {"harness": {"pacing": "fast"}}}, "harness.pacing"),
        ({"taskName": "direct_chat", "taskData": {"harness": {"chunks": 0}}}, "harness.chunks"),
        ({"taskName": "direct_chat", "taskData": {"harness": "x"}}, "harness must be a JSON object"),
        ({"taskData": {}}, "taskName"),
        ({"taskName": "direct_chat", "taskData": []}, "taskData"),
        ("just a string", "payload must be an object"),
    ],
)
def test_bad_task_gets_an_error_ack_and_the_socket_stays_usable(session, payload, fragment):
    reply = session.client.call("chat_service", payload, namespace=NS, timeout=10)
    assert set(reply) == {"error"} and fragment in reply["error"]
    _, messages = session.run({"chunks": 3, "duration_s": 0})
    check_messages(messages, chunks=3)


def test_unknown_event_gets_an_error_ack(session):
    reply = session.client.call("not_a_service_event", {"taskName": "x"}, namespace=NS, timeout=10)
    assert "error" in reply


@pytest.mark.parametrize("duration_s", [0.2, 0])
def test_polling_transport_carries_the_same_stream(backend, duration_s):
    # unpaced, the server produces far faster than a long-poll round trip: each
    # poll response must still stay within what python-engineio clients decode
    s = Session(backend.url, transport="polling")
    try:
        _, messages = s.run({"chunks": 300, "duration_s": duration_s, "seed": 2})
        check_messages(messages, chunks=300)
    finally:
        s.close(abort=True)


def test_connect_refused_without_token_when_auth_required():
    with start_backend("--require-auth") as b:
        with pytest.raises(socketio.exceptions.ConnectionError):
            Session(b.url, token=None)
        with pytest.raises(socketio.exceptions.ConnectionError):
            Session(b.url, token="  ")
        s = Session(b.url, token="jwt.token")
        try:
            _, messages = s.run({"chunks": 5, "duration_s": 0})
            check_messages(messages, chunks=5)
        finally:
            s.close()


def test_vanished_clients_do_not_leak_tasks(backend):
    # (an aborted polling client elsewhere may linger until its ping timeout: count ours only)
    sessions_before = httpx.get(backend.url + "/api/_harness/stats").json()["socketio_sessions"]
    sessions = [Session(backend.url) for _ in range(4)]
    for s in sessions:
        for _ in range(2):
            s.start({"chunks": 5000, "duration_s": 60})
    assert httpx.get(backend.url + "/api/_harness/stats").json()["active"]["socketio"] >= 8
    for s in sessions:
        s.close()
    deadline = time.monotonic() + 10
    stats = {}
    while time.monotonic() < deadline:
        stats = httpx.get(backend.url + "/api/_harness/stats").json()
        if stats["active"]["socketio"] == 0 and stats["socketio_sessions"] == sessions_before:
            break
        time.sleep(0.05)
    assert stats["active"]["socketio"] == 0 and stats["socketio_sessions"] == sessions_before
    assert stats["outcomes"].get("client_gone", 0) >= 8
