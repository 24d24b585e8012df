"""Hostile and odd backends (issue 15), one client at a time against ``tests/support/badserver.py``.

A peer that writes as fast as the socket takes, a decompression bomb, chunk
sizes a browser refuses, redirects, 200 listeners, binary packets, a server
that goes silent after advertising a 1 s ping window.  The fast cases run
beside a healthy stream from the fake backend and a loop-lag probe in the
same hub: timers, the other user and the probe must keep running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gevent
import pytest

from fake_backend.process import BackendProcess, start_backend
from loadtests.clients.ndjson import MAX_REDIRECTS, NdjsonClient
from loadtests.clients.socketio import SocketIOSession
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import EventKind
from stream_harness.contract.schema import CHUNK, END
from tests.support.badserver import BAD_CHUNK_SIZES, MANY_LISTENERS, BadServer
from tests.support.loopback import LAST_CHUNK, ScriptedServer, chunk, http_head, line

pytestmark = pytest.mark.timeout(90)

CHAT = "/api/ai/chat/unified"
HEADERS = {"X-Fingerprint-ID": "hostile", "Authorization": "Bearer hostile-token"}
HEALTHY = {"chunks": 60, "duration_s": 0.6, "events": False}
#: A timeout may fire this much after its setting, whatever the peer sends.
TIMEOUT_SLACK_MS = 500.0
#: The loop-lag probe beside a fault: any wake-up later than this is a blocked hub.
BLOCKED_MS = 250.0


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    with start_backend() as process:
        yield process


@pytest.fixture(scope="module")
def bad() -> Iterator[BadServer]:
    with BadServer() as server:
        yield server


def new_record(transport: str = "ndjson") -> StreamRecord:
    return StreamRecord(transport=transport, endpoint="chat", stream_id=f"{transport}-hostile")


def chat(**harness: object) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], "harness": harness}


def ndjson(
    url: str,
    path: str,
    *,
    first_chunk_timeout: float = 5.0,
    stream_timeout: float = 10.0,
    client: NdjsonClient | None = None,
    **limits: int,
) -> StreamRecord:
    own = client is None
    client = client or NdjsonClient(url, **limits)
    record = new_record()
    try:
        client.stream(
            record, path, chat(), HEADERS, first_chunk_timeout=first_chunk_timeout, stream_timeout=stream_timeout
        )
    finally:
        if own:
            client.close()
    return record


@dataclass
class Beside:
    fault: StreamRecord
    healthy: StreamRecord
    worst_lag_ms: float


def beside_healthy(backend: BackendProcess, run_fault: Callable[[], StreamRecord]) -> Beside:
    """Run the fault, a healthy NDJSON stream and a 10 ms loop-lag probe in one hub."""
    healthy = new_record()
    client = NdjsonClient(backend.url)
    lags: list[float] = []
    done: list[StreamRecord] = []

    def probe() -> None:
        while True:
            before = time.perf_counter()
            gevent.sleep(0.01)
            lags.append((time.perf_counter() - before - 0.01) * 1000.0)

    prober = gevent.spawn(probe)
    jobs = [
        gevent.spawn(lambda: done.append(run_fault())),
        gevent.spawn(client.stream, healthy, CHAT, chat(**HEALTHY), HEADERS, first_chunk_timeout=10, stream_timeout=20),
    ]
    try:
        gevent.joinall(jobs, timeout=60, raise_error=True)
        assert all(job.dead for job in jobs), "a stream outlived its timeouts"
    finally:
        gevent.killall([*jobs, prober])
        client.close()
    assert healthy.status == "completed", (healthy.error, healthy.error_detail)
    assert list(healthy.kinds).count(CHUNK) == HEALTHY["chunks"]
    return Beside(done[0], healthy, max(lags))


def chunks_of(record: StreamRecord) -> int:
    return list(record.kinds).count(CHUNK)


# =========================================================================== NDJSON: a fast peer


def test_a_body_written_as_fast_as_the_socket_takes_it_times_out_on_time(backend: BackendProcess, bad: BadServer):
    pair = beside_healthy(backend, lambda: ndjson(bad.url, "/fault/fast-endless", stream_timeout=1.5))
    record = pair.fault
    assert record.error == "timeout" and "stream_timeout=1.5" in record.error_detail
    assert 1500 <= record.duration_ms < 1500 + TIMEOUT_SLACK_MS, record.duration_ms
    assert chunks_of(record) > 1000 and record.n_reads > 100  # it really was a flood
    assert pair.worst_lag_ms < BLOCKED_MS, f"the hub was blocked {pair.worst_lag_ms:.0f} ms"


def test_heartbeats_as_fast_as_the_socket_takes_them_do_not_hold_off_the_first_chunk_timeout(
    backend: BackendProcess, bad: BadServer
):
    pair = beside_healthy(
        backend, lambda: ndjson(bad.url, "/fault/fast-heartbeats", first_chunk_timeout=1.0, stream_timeout=30)
    )
    record = pair.fault
    assert record.error == "timeout" and "first_chunk_timeout=1" in record.error_detail
    assert 1000 <= record.duration_ms < 1000 + TIMEOUT_SLACK_MS, record.duration_ms
    assert chunks_of(record) == 0 and record.n_events > 1000
    assert pair.worst_lag_ms < BLOCKED_MS, f"the hub was blocked {pair.worst_lag_ms:.0f} ms"


# =========================================================================== NDJSON: bombs


@pytest.mark.parametrize("bomb", ["brotli-bomb", "gzip-bomb"])
def test_a_decompression_bomb_fails_as_malformed_at_the_stream_budget(
    bomb: str, backend: BackendProcess, bad: BadServer
):
    pair = beside_healthy(backend, lambda: ndjson(bad.url, f"/fault/{bomb}"))
    record = pair.fault
    assert record.error == "malformed", record.error_detail
    assert record.error_detail == "decompressed size exceeds 64 MiB per stream"
    assert record.content_encoding == ("br" if bomb.startswith("brotli") else "gzip")
    assert record.malformed_lines == 1  # 64 MiB without a newline: one runaway line
    assert pair.worst_lag_ms < BLOCKED_MS, f"the hub was blocked {pair.worst_lag_ms:.0f} ms"


def test_a_stream_decoding_a_bomb_without_a_chunk_is_a_timeout_not_missing_end(bad: BadServer):
    """With a budget larger than the bomb, decoding 1 GiB outlasts the first-chunk timeout."""
    record = ndjson(bad.url, "/fault/gzip-bomb", first_chunk_timeout=0.3, decoded_stream_limit=2 << 30)
    assert record.error == "timeout" and "first_chunk_timeout=0.3" in record.error_detail
    assert 300 <= record.duration_ms < 300 + TIMEOUT_SLACK_MS, record.duration_ms


def test_a_line_of_40_mb_counts_as_one_malformed_line():
    runaway = b'{"event": "chunk", "data": {"text": "' + b"x" * (40 << 20) + b'"}}\n'

    def handler(conn):
        conn.read_request()
        conn.send(http_head() + chunk(line("chunk", {"text": "a"})))
        for i in range(0, len(runaway), 1 << 20):
            conn.send(chunk(runaway[i : i + (1 << 20)]))
        conn.send(chunk(line("chunk", {"text": "b"}) + line("end")) + LAST_CHUNK)

    with ScriptedServer(handler) as server:
        record = ndjson(server.url, CHAT)
    assert record.status == "completed", record.error_detail
    assert record.malformed_lines == 1 and chunks_of(record) == 2


# =========================================================================== NDJSON: strictness


@pytest.mark.parametrize("variant", sorted(BAD_CHUNK_SIZES))
def test_a_chunk_size_a_browser_refuses_fails_the_stream_and_keeps_the_chunk_before_it(variant: str, bad: BadServer):
    record = ndjson(bad.url, f"/fault/bad-chunk-size-{variant}")
    assert record.error == "malformed" and "bad chunk size line" in record.error_detail
    assert BAD_CHUNK_SIZES[variant].strip().decode() in record.error_detail
    assert list(record.kinds) == [CHUNK]  # the good chunk in the same read was not lost


@pytest.mark.parametrize("status", [307, 308])
def test_a_307_or_308_redirect_is_followed_with_the_same_method_and_body(status: int, bad: BadServer):
    before = len(bad.requests)
    record = ndjson(bad.url, f"/fault/redirect-{status}")
    hops = bad.requests[before:]
    assert record.status == "completed", record.error_detail
    assert record.error is None and record.error_detail == f"redirected: {status} to /fault/healthy"
    assert chunks_of(record) == 5 and record.http_status == 200
    assert [(r.method, r.target) for r in hops] == [("POST", f"/fault/redirect-{status}"), ("POST", "/fault/healthy")]
    assert hops[0].body == hops[1].body and hops[1].headers["authorization"] == HEADERS["Authorization"]


def test_redirects_stop_after_the_limit(bad: BadServer):
    before = len(bad.requests)
    record = ndjson(bad.url, "/fault/redirect-loop")
    assert record.error == "http_status" and f"more than {MAX_REDIRECTS} redirects" in record.error_detail
    assert len(bad.requests) - before == MAX_REDIRECTS + 1


def test_a_redirect_to_another_origin_drops_the_credentials():
    seen = []

    def target(conn):
        seen.append(conn.read_request())
        conn.send(http_head() + chunk(line("chunk", {"text": "a"}) + line("end")) + LAST_CHUNK)

    with ScriptedServer(target) as other:
        elsewhere = other.url.replace("127.0.0.1", "localhost") + "/stream"

        def redirect(conn):
            conn.read_request()
            conn.send(b"HTTP/1.1 308 Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % elsewhere.encode())

        with ScriptedServer(redirect) as first:
            record = ndjson(first.url, CHAT)
    assert record.status == "completed", record.error_detail
    assert record.error_detail == f"redirected: 308 to {elsewhere}"
    assert "authorization" not in seen[0].headers and seen[0].headers["x-fingerprint-id"] == "hostile"


# =========================================================================== Socket.io


def sio(session: SocketIOSession, fault: str, *, stream_timeout: float = 10.0) -> StreamRecord:
    record = new_record("socketio")
    session.run_task(
        record,
        "chat_service",
        "direct_chat",
        {"fault": fault},
        ack_timeout=5,
        first_chunk_timeout=5,
        stream_timeout=stream_timeout,
        emit_times=True,
    )
    return record


def test_a_server_that_floods_a_task_cannot_hold_off_its_timeout(backend: BackendProcess, bad: BadServer):
    session = SocketIOSession(bad.url)

    def flooded() -> StreamRecord:
        try:
            return sio(session, "flood", stream_timeout=1.5)
        finally:
            session.close()

    pair = beside_healthy(backend, flooded)
    record = pair.fault
    assert record.error == "timeout" and "stream_timeout=1.5" in record.error_detail
    assert 1500 <= record.duration_ms < 1500 + TIMEOUT_SLACK_MS, record.duration_ms
    assert chunks_of(record) > 1000  # it really was a flood
    assert pair.worst_lag_ms < BLOCKED_MS, f"the hub was blocked {pair.worst_lag_ms:.0f} ms"


def test_an_ack_naming_200_listeners_is_followed_on_every_one(bad: BadServer):
    session = SocketIOSession(bad.url)
    try:
        record = sio(session, "many-listeners")
        again = sio(session, "healthy")  # the reader survived
    finally:
        session.close()
    assert record.status == "completed", record.error_detail
    assert chunks_of(record) == 2 * MANY_LISTENERS and list(record.kinds).count(END) == MANY_LISTENERS
    assert again.status == "completed"


def test_a_task_timeout_names_the_listeners_that_stayed_silent(bad: BadServer):
    session = SocketIOSession(bad.url)
    try:
        record = sio(session, "one-of-fifty", stream_timeout=1.0)
    finally:
        session.close()
    assert record.error == "timeout" and "stream_timeout=1" in record.error_detail
    assert "49 of 50 listeners sent nothing: bad-task-" in record.error_detail
    assert record.error_detail.endswith("and 46 more")
    assert 1000 <= record.duration_ms < 1000 + TIMEOUT_SLACK_MS


def test_binary_events_are_decoded_and_stray_binary_frames_counted_malformed(bad: BadServer):
    session = SocketIOSession(bad.url)
    try:
        record = sio(session, "binary")
        acked = sio(session, "binary-ack")
    finally:
        session.close()
    assert record.status == "completed", record.error_detail
    assert list(record.kinds) == [CHUNK, EventKind.OTHER, CHUNK, END]  # the bytes message is an event
    assert record.malformed_lines == 1  # the binary frame no packet announced
    assert acked.status == "completed" and list(acked.kinds) == [CHUNK, END], acked.error_detail


def test_a_server_silent_past_its_advertised_ping_window_is_dropped_in_about_that_time(bad: BadServer):
    session = SocketIOSession(bad.url + "/quick-ping")  # pingInterval 1 s + pingTimeout 1 s
    try:
        record = sio(session, "then-silence", stream_timeout=30)
        assert not session.connected
    finally:
        session.close()
    assert record.error == "disconnect" and "pingInterval + pingTimeout" in record.error_detail
    assert list(record.kinds) == [CHUNK]
    assert 2000 <= record.duration_ms < 2000 + TIMEOUT_SLACK_MS + 250, record.duration_ms
