"""Fault matrix, broken streams: a broken stream is classified, timed out
where it must be, and never holds up the other users.

Each test runs the faulty stream and, at the same time in the same gevent hub
(as two Locust users would share a load process), a healthy stream from the
fake backend.  The faulty side comes from the fake backend where it can
produce the fault, else from ``tests/badserver.py``.  The healthy stream must
complete with every chunk and without a gap anywhere near the fault's length:
a client that blocked the hub (a blocking read, a busy parse loop) would
stall it for the whole fault.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gevent
import httpx
import pytest

from fake_backend.process import BackendProcess
from loadtests.clients.ndjson import NdjsonClient
from loadtests.clients.socketio import SocketIOSession
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import EventKind
from stream_harness.contract.schema import CHUNK, END
from tests.support.badserver import HUGE_LINE_BYTES, BadServer

pytestmark = pytest.mark.timeout(60)

CHAT = "/api/ai/chat/unified"
HEADERS = {"X-Fingerprint-ID": "fault-matrix"}
#: The companion stream: 60 chunks, 10 ms apart.
HEALTHY = {"chunks": 60, "duration_s": 0.6, "events": False}
#: A gap in the healthy stream this long means something blocked the hub; every
#: fault that could block lasts well over it (>= 1 s).
BLOCKED_GAP_MS = 500.0
STATUS = EventKind.STATUS_UPDATE


@pytest.fixture(scope="module")
def bad() -> Iterator[BadServer]:
    with BadServer() as server:
        yield server


# --------------------------------------------------------------------------- helpers


def chat(**harness: object) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], "harness": harness}


def new_record(transport: str) -> StreamRecord:
    return StreamRecord(transport=transport, endpoint="chat", stream_id=f"{transport}-fault")


def chunk_count(record: StreamRecord) -> int:
    return list(record.kinds).count(CHUNK)


def assert_not_blocked(healthy: StreamRecord) -> None:
    """The concurrent healthy stream got every chunk, on time."""
    assert healthy.status == "completed", (healthy.error, healthy.error_detail)
    assert chunk_count(healthy) == HEALTHY["chunks"]
    arrivals = [t for t, k in zip(healthy.t_ms, healthy.kinds) if k == CHUNK]
    worst = max(b - a for a, b in zip(arrivals, arrivals[1:]))
    assert worst < BLOCKED_GAP_MS, f"the healthy stream stalled {worst:.0f} ms beside the fault"


@dataclass
class Pair:
    fault: StreamRecord
    healthy: StreamRecord


def beside_healthy_ndjson(backend: BackendProcess, run_fault: Callable[[StreamRecord], None]) -> Pair:
    """Run ``run_fault`` and a healthy NDJSON stream concurrently; both records when done."""
    fault, healthy = new_record("ndjson"), new_record("ndjson")
    client = NdjsonClient(backend.url)
    jobs = [
        gevent.spawn(run_fault, fault),
        gevent.spawn(client.stream, healthy, CHAT, chat(**HEALTHY), HEADERS, first_chunk_timeout=10, stream_timeout=20),
    ]
    try:
        gevent.joinall(jobs, timeout=30, raise_error=True)
        assert all(job.dead for job in jobs), "a stream outlived its timeouts"
    finally:
        gevent.killall(jobs)
        client.close()
    return Pair(fault, healthy)


def ndjson_fault(
    url: str, path: str, body: dict | None = None, *, first_chunk_timeout: float = 5.0, stream_timeout: float = 10.0
) -> Callable[[StreamRecord], None]:
    def run(record: StreamRecord) -> None:
        client = NdjsonClient(url)
        try:
            client.stream(
                record,
                path,
                body or chat(),
                HEADERS,
                first_chunk_timeout=first_chunk_timeout,
                stream_timeout=stream_timeout,
            )
        finally:
            client.close()

    return run


def active_streams(backend: BackendProcess) -> dict[str, int]:
    return httpx.get(f"{backend.url}/api/_harness/stats", timeout=5).json()["active"]


def wait_until_no_active_streams(backend: BackendProcess, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (active := active_streams(backend)) != {"ndjson": 0, "socketio": 0}:
        assert time.monotonic() < deadline, f"backend still runs abandoned streams: {active}"
        time.sleep(0.1)


# =========================================================================== row 2: NDJSON


def test_truncated_stream_is_a_disconnect_with_its_chunks_kept(backend: BackendProcess):
    pair = beside_healthy_ndjson(
        backend, ndjson_fault(backend.url, CHAT, chat(chunks=40, duration_s=0.8, events=False, disconnect_at=10))
    )
    assert pair.fault.status == "failed" and pair.fault.error == "disconnect"
    assert chunk_count(pair.fault) == 10 and END not in pair.fault.kinds
    assert_not_blocked(pair.healthy)


def test_error_event_fails_the_stream_as_stream_error_event(backend: BackendProcess):
    pair = beside_healthy_ndjson(
        backend, ndjson_fault(backend.url, CHAT, chat(chunks=40, duration_s=0.8, events=False, error_at=10))
    )
    assert pair.fault.status == "failed" and pair.fault.error == "stream_error_event"
    assert chunk_count(pair.fault) == 10 and pair.fault.kinds[-1] == END  # read to its end
    assert_not_blocked(pair.healthy)


def test_malformed_json_lines_are_counted_and_the_stream_completes(backend: BackendProcess, bad: BadServer):
    pair = beside_healthy_ndjson(backend, ndjson_fault(bad.url, "/fault/malformed-lines"))
    assert pair.fault.status == "completed", pair.fault.error_detail
    assert pair.fault.malformed_lines == 4  # not JSON, an array, a string, a cut object
    assert chunk_count(pair.fault) == 4 and pair.fault.kinds[-1] == END
    assert_not_blocked(pair.healthy)


def test_lines_split_across_reads_are_reassembled(backend: BackendProcess, bad: BadServer):
    pair = beside_healthy_ndjson(backend, ndjson_fault(bad.url, "/fault/split-lines"))
    record = pair.fault
    assert record.status == "completed" and record.malformed_lines == 0
    assert list(record.kinds) == [CHUNK, CHUNK, CHUNK, END]
    assert record.n_reads >= 5  # it really came in pieces
    assert_not_blocked(pair.healthy)


def test_invalid_utf8_line_is_counted_malformed_and_the_rest_is_kept(backend: BackendProcess, bad: BadServer):
    pair = beside_healthy_ndjson(backend, ndjson_fault(bad.url, "/fault/invalid-utf8"))
    assert pair.fault.status == "completed" and pair.fault.malformed_lines == 1
    assert chunk_count(pair.fault) == 4
    assert_not_blocked(pair.healthy)


def test_a_10_mb_line_is_one_chunk_and_does_not_stall_others(backend: BackendProcess, bad: BadServer):
    pair = beside_healthy_ndjson(backend, ndjson_fault(bad.url, "/fault/huge-line"))
    assert pair.fault.status == "completed", pair.fault.error_detail
    assert chunk_count(pair.fault) == 3 and pair.fault.malformed_lines == 0
    assert pair.fault.n_reads > HUGE_LINE_BYTES // (1024 * 1024)  # it took many reads
    assert_not_blocked(pair.healthy)


def test_endless_stream_times_out_at_the_stream_timeout(backend: BackendProcess, bad: BadServer):
    pair = beside_healthy_ndjson(backend, ndjson_fault(bad.url, "/fault/endless", stream_timeout=1.5))
    record = pair.fault
    assert record.status == "failed" and record.error == "timeout"
    assert "stream_timeout=1.5" in record.error_detail
    assert 1500 <= record.duration_ms < 4000 and chunk_count(record) > 10
    assert_not_blocked(pair.healthy)


def test_stream_that_never_sends_its_first_chunk_times_out_at_the_first_chunk_timeout(backend: BackendProcess):
    slow = chat(chunks=10, duration_s=0.1, first_chunk_delay_ms=60_000)
    pair = beside_healthy_ndjson(
        backend, ndjson_fault(backend.url, CHAT, slow, first_chunk_timeout=1.0, stream_timeout=30)
    )
    record = pair.fault
    assert record.status == "failed" and record.error == "timeout"
    assert "first_chunk_timeout=1" in record.error_detail
    assert 1000 <= record.duration_ms < 3500 and chunk_count(record) == 0
    assert record.time_to_headers_ms < 1000  # headers came; the first chunk did not
    assert_not_blocked(pair.healthy)
    wait_until_no_active_streams(backend)  # the backend ended the abandoned stream


def test_server_that_never_answers_times_out_at_the_first_chunk_timeout(backend: BackendProcess, bad: BadServer):
    pair = beside_healthy_ndjson(backend, ndjson_fault(bad.url, "/fault/never-responds", first_chunk_timeout=1.0))
    record = pair.fault
    assert record.error == "timeout" and "first_chunk_timeout" in record.error_detail
    assert 1000 <= record.duration_ms < 3500 and record.n_events == 0
    assert_not_blocked(pair.healthy)


@pytest.mark.parametrize("source", ["fake backend careless gzip", "bad server gzip in two halves"])
def test_gzip_encoded_body_is_decoded_and_its_encoding_recorded(source: str, backend: BackendProcess, bad: BadServer):
    if source.startswith("fake"):
        run = ndjson_fault(backend.url, CHAT, chat(chunks=20, duration_s=0.2, events=False, gzip=True))
    else:
        run = ndjson_fault(bad.url, "/fault/gzip")
    pair = beside_healthy_ndjson(backend, run)
    assert pair.fault.status == "completed", pair.fault.error_detail
    assert pair.fault.content_encoding == "gzip" and chunk_count(pair.fault) == 20
    assert_not_blocked(pair.healthy)


# =========================================================================== row 3: Socket.io


def sio_task(
    session: SocketIOSession,
    record: StreamRecord,
    task_data: dict,
    *,
    ack_timeout: float = 5.0,
    first_chunk_timeout: float = 5.0,
    stream_timeout: float = 10.0,
) -> None:
    session.run_task(
        record,
        "chat_service",
        "direct_chat",
        task_data,
        ack_timeout=ack_timeout,
        first_chunk_timeout=first_chunk_timeout,
        stream_timeout=stream_timeout,
        emit_times=False,
    )


def beside_healthy_sio(backend: BackendProcess, run_fault: Callable[[StreamRecord], None]) -> Pair:
    """Run ``run_fault`` and a healthy Socket.io task (its own session) concurrently."""
    fault, healthy = new_record("socketio"), new_record("socketio")
    session = SocketIOSession(backend.url, auth_token="fault-matrix")
    jobs = [gevent.spawn(run_fault, fault), gevent.spawn(sio_task, session, healthy, {"harness": HEALTHY})]
    try:
        gevent.joinall(jobs, timeout=30, raise_error=True)
        assert all(job.dead for job in jobs), "a task outlived its timeouts"
    finally:
        gevent.killall(jobs)
        session.close()
    return Pair(fault, healthy)


def test_server_disconnect_mid_task_is_a_disconnect_and_the_next_task_reconnects(backend: BackendProcess):
    session = SocketIOSession(backend.url, auth_token="fault-matrix")
    again = new_record("socketio")
    try:
        pair = beside_healthy_sio(
            backend,
            lambda record: sio_task(
                session, record, {"harness": {"chunks": 40, "duration_s": 0.8, "events": False, "disconnect_at": 10}}
            ),
        )
        # the browser sees its socket's "disconnect" event: the task is lost ...
        assert pair.fault.status == "failed" and pair.fault.error == "disconnect"
        assert chunk_count(pair.fault) == 10 and not session.connected
        assert_not_blocked(pair.healthy)
        # ... and socket.io-client reconnects; the next task runs on the new connection
        sio_task(session, again, {"harness": {"chunks": 5, "duration_s": 0.05, "events": False}})
    finally:
        session.close()
    assert again.status == "completed" and chunk_count(again) == 5


def test_ack_that_never_arrives_fails_as_ack_at_the_ack_timeout(backend: BackendProcess, bad: BadServer):
    session = SocketIOSession(bad.url)
    after = new_record("socketio")
    try:
        pair = beside_healthy_sio(
            backend, lambda record: sio_task(session, record, {"fault": "no-ack"}, ack_timeout=1.0)
        )
        # the session is still good: an emitWithAck timeout does not drop the socket
        sio_task(session, after, {"fault": "healthy"})
    finally:
        session.close()
    assert pair.fault.status == "failed" and pair.fault.error == "ack"
    assert "ack_timeout=1" in pair.fault.error_detail and 1000 <= pair.fault.duration_ms < 3500
    assert_not_blocked(pair.healthy)
    assert after.status == "completed" and chunk_count(after) == 5


def test_empty_response_listener_events_fails_as_ack(backend: BackendProcess, bad: BadServer):
    session = SocketIOSession(bad.url)
    try:
        pair = beside_healthy_sio(backend, lambda record: sio_task(session, record, {"fault": "empty-listeners"}))
    finally:
        session.close()
    assert pair.fault.status == "failed" and pair.fault.error == "ack"
    assert "response_listener_events" in pair.fault.error_detail and pair.fault.n_events == 0
    assert pair.fault.duration_ms < 3000  # an immediate client-side error, no waiting
    assert_not_blocked(pair.healthy)


def test_chunks_before_the_ack_is_processed_are_kept_with_their_real_arrival(backend: BackendProcess, bad: BadServer):
    session = SocketIOSession(bad.url)
    try:
        pair = beside_healthy_sio(backend, lambda record: sio_task(session, record, {"fault": "chunks-before-ack"}))
    finally:
        session.close()
    record = pair.fault
    assert record.status == "completed" and chunk_count(record) == 4 and record.kinds[-1] == END
    # the three early chunks keep the time they arrived, before the ack (the reorder is visible)
    assert all(t < record.time_to_headers_ms for t in record.t_ms[:3])
    assert_not_blocked(pair.healthy)
