"""NDJSON over HTTP/2: the client against the fake backend on Hypercorn (h2c) and behind nginx (TLS, ALPN h2).

The same contract as the HTTP/1.1 client: every line recorded with the time
and index of the read that completed it, faults classified, never raised;
and what HTTP/2 adds: several streams on one connection, a browser's
settings, a server that will not speak h2 named as such.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import gevent
import numpy as np
import pytest

from fake_backend.process import BackendProcess, start_backend
from loadtests.clients.ndjson_h2 import H2NdjsonClient, H2Pool, _Stream
from loadtests.protocol.http2 import BROWSER_CONNECTION_WINDOW, new_client_connection, request_headers
from loadtests.protocol.ndjson_events import EventLines
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import ErrorKind
from stream_harness.contract.protocol import NDJSON_PATHS
from stream_harness.contract.schema import CHUNK, END
from tests.support import edge
from tests.support.cycles import left_in_cycles
from tests.support.loopback import free_port

CHAT = NDJSON_PATHS["chat"]
AUTH = {"X-Fingerprint-ID": "h2-test"}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def h2_backend() -> Iterator[BackendProcess]:
    with start_backend("--http2") as process:
        yield process


def body(**harness: object) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], "harness": {"events": False, **harness}}


def stream(client: H2NdjsonClient, harness: dict, *, first_chunk_timeout: float = 10, stream_timeout: float = 30):
    record = StreamRecord("ndjson", "chat", "s")
    client.stream(
        record, CHAT, body(**harness), AUTH, first_chunk_timeout=first_chunk_timeout, stream_timeout=stream_timeout
    )
    return record


def chunks(record: StreamRecord) -> int:
    return sum(1 for kind in record.kinds if kind == CHUNK)


# --------------------------------------------------------------------------- sans-IO


def test_requests_are_http2_shaped():
    headers = request_headers(
        "POST",
        "https",
        "example.test",
        "/api/x",
        [("Host", "ignored"), ("Connection", "keep-alive"), ("Accept", "*/*")],
        {"X-Fingerprint-ID": "fp", "accept": "application/x-ndjson"},
    )
    names = [name for name, _ in headers]
    assert names[:4] == [b":method", b":scheme", b":authority", b":path"]
    assert b"host" not in names and b"connection" not in names
    assert (b"accept", b"application/x-ndjson") in headers and (b"x-fingerprint-id", b"fp") in headers
    with pytest.raises(ValueError):
        request_headers("GET", "https", "h", "/", [], {"x-bad": "a\r\nb"})


def test_the_connection_announces_a_browsers_settings():
    conn = new_client_connection()
    assert conn.local_settings.initial_window_size == 6 * 1024 * 1024
    assert conn.local_settings.enable_push == 0
    assert conn.inbound_flow_control_window == BROWSER_CONNECTION_WINDOW
    assert conn.data_to_send().startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")


# --------------------------------------------------------------------------- against the fake backend (h2c)


def test_a_stream_is_recorded_read_by_read(h2_backend: BackendProcess):
    client = H2NdjsonClient(h2_backend.url)
    try:
        record = stream(client, {"chunks": 120, "duration_s": 0.6, "seed": 3})
    finally:
        client.close()
    assert (record.status, record.error) == ("completed", None), record.error_detail
    assert record.http_version == "2" and record.http_status == 200
    assert chunks(record) == record.expected_chunks == 120
    assert record.kinds[-1] == END
    t_ms, reads = np.asarray(record.t_ms), np.asarray(record.reads)
    assert np.all(np.diff(t_ms) >= 0) and np.all(np.diff(reads) >= 0)
    assert reads[0] in (0, 1)  # read 0 carried the HEADERS (and may carry the first lines too)
    assert record.n_reads >= reads[-1] + 1  # (the END_STREAM frame may come in a read of its own)
    assert 0 < record.time_to_headers_ms <= t_ms[0]
    # paced at 5 ms: about one line per read, spread over the stream
    assert t_ms[-1] - t_ms[0] >= 400 and record.n_reads >= 60
    assert np.isfinite(np.asarray(record.emit_ms)).all()


def test_a_finished_stream_is_freed_at_once_not_by_the_cycle_collector(h2_backend: BackendProcess):
    """The stream state holds the record with all its columns: nothing of it may wait for a gc pass."""
    client = H2NdjsonClient(h2_backend.url)

    def two_streams() -> StreamRecord:  # (the reader's loop holds the last one it fed until its next read)
        stream(client, {"chunks": 20, "duration_s": 0.1})
        return stream(client, {"chunks": 20, "duration_s": 0.1})

    try:
        record, left = left_in_cycles(two_streams, _Stream, EventLines)
    finally:
        client.close()
    assert (record.status, chunks(record)) == ("completed", 20), record.error_detail
    assert left == []


def test_users_share_connections_up_to_the_stream_limit(h2_backend: BackendProcess):
    pool = H2Pool(h2_backend.url, streams_per_connection=3)
    clients = [H2NdjsonClient(h2_backend.url, pool=pool) for _ in range(7)]
    records = [StreamRecord("ndjson", "chat", f"s{i}") for i in range(7)]
    seen: list[int] = []

    def watch() -> None:
        while True:
            seen.append(len(pool.connections))
            gevent.sleep(0.02)

    watcher = gevent.spawn(watch)
    try:
        gevent.joinall(
            [
                gevent.spawn(
                    c.stream, r, CHAT, body(chunks=60, duration_s=0.6), AUTH, first_chunk_timeout=10, stream_timeout=30
                )
                for c, r in zip(clients, records)
            ],
            timeout=60,
        )
    finally:
        watcher.kill()
        for c in clients:
            c.close()
    assert all(r.status == "completed" and chunks(r) == 60 for r in records), [r.error_detail for r in records]
    assert max(seen) == 3  # 7 streams at 3 per connection
    assert pool.connections == []  # the last user closed them


def test_faults_are_classified_and_the_connection_goes_on(h2_backend: BackendProcess):
    client = H2NdjsonClient(h2_backend.url)
    try:
        bad = stream(client, {"chunks": 0})
        assert (bad.error, bad.http_status) == (ErrorKind.HTTP_STATUS, 422)
        assert bad.error_detail.startswith("HTTP 422: ") and "chunks" in bad.error_detail
        error = stream(client, {"chunks": 20, "duration_s": 0.1, "error_at": 5})
        assert error.error == ErrorKind.STREAM_ERROR_EVENT and chunks(error) == 5
        cut = stream(client, {"chunks": 20, "duration_s": 0.1, "disconnect_at": 7})
        assert cut.error == ErrorKind.DISCONNECT and chunks(cut) == 7
        late = stream(client, {"chunks": 5, "first_chunk_delay_ms": 3000}, first_chunk_timeout=0.3)
        assert late.error == ErrorKind.TIMEOUT and "first_chunk_timeout" in late.error_detail
        assert 250 <= late.duration_ms < 2500
        slow = stream(client, {"chunks": 50, "duration_s": 5}, stream_timeout=0.5)
        assert slow.error == ErrorKind.TIMEOUT and "stream_timeout" in slow.error_detail
        # every stream above was reset or ended; the connection still carries the next one
        fine = stream(client, {"chunks": 10, "duration_s": 0.05})
        assert fine.status == "completed" and chunks(fine) == 10
        assert len(client.pool.connections) == 1
    finally:
        client.close()


def test_no_server_means_a_connect_failure():
    client = H2NdjsonClient(f"http://127.0.0.1:{free_port()}")
    record = stream(client, {"chunks": 1})
    client.close()
    assert record.error == ErrorKind.CONNECT and record.n_reads == 0 and not math.isnan(record.duration_ms)


# --------------------------------------------------------------------------- behind nginx (TLS, ALPN)


@pytest.fixture(scope="module")
def tls_edge(h2_backend: BackendProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[edge.Edge]:
    if not edge.available():
        pytest.skip("Debian's nginx is not installed (`make nginx` installs it as root)")
    with start_backend() as plain, edge.start_edge(plain.url, tmp_path_factory.mktemp("edge")) as running:
        yield running


def test_tls_speaks_h2_by_alpn_and_verifies_the_certificate(tls_edge: edge.Edge):
    trusting = H2NdjsonClient(tls_edge.urls["passthrough"], ca_file=str(tls_edge.ca_file))
    strict = H2NdjsonClient(tls_edge.urls["passthrough"])
    try:
        record = stream(trusting, {"chunks": 40, "duration_s": 0.2})
        refused = stream(strict, {"chunks": 1})
    finally:
        trusting.close()
        strict.close()
    assert record.status == "completed" and record.http_version == "2" and chunks(record) == 40
    assert refused.error == ErrorKind.CONNECT and refused.error_detail.startswith("TLS: certificate verify failed")


def test_a_server_without_h2_is_named(tls_edge: edge.Edge):
    client = H2NdjsonClient(tls_edge.urls["http1-only"], verify_tls=False)
    record = stream(client, {"chunks": 1})
    client.close()
    assert record.error == ErrorKind.CONNECT
    assert "did not agree to HTTP/2" in record.error_detail and "http/1.1" in record.error_detail


def test_a_buffering_compressing_edge_shows_in_the_reads(tls_edge: edge.Edge, tmp_path: Path):
    client = H2NdjsonClient(tls_edge.urls["buffering"], verify_tls=False)
    try:
        record = stream(client, {"chunks": 200, "duration_s": 1.0, "seed": 5})
    finally:
        client.close()
    assert record.status == "completed" and record.content_encoding == "gzip" and chunks(record) == 200
    reads = np.asarray(record.reads)[np.asarray(record.kinds) == CHUNK]
    # 200 lines paced over a second arrive in a few compressed bursts, not line by line
    assert np.unique(reads).size <= 20
