"""Fault matrix, the backend under abuse: the fake backend stays up, stays
bounded in memory, and ends the streams nobody can receive.

Abuse comes from raw sockets in this process (``bench/abuse.py``, shared with
``make soak``): oversized bodies, thousands of connections opened and dropped
half-way, and clients that stop reading.  Memory is the backend process's RSS
(psutil); the backend's own counters (``/api/_harness/stats``) say which
streams run and how the finished ones ended.  Every socket is closed in a
``finally``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import psutil
import pytest

from fake_backend.process import BackendProcess, start_backend
from tests.support.abuse import (
    CHAT,
    STREAM_WAY,
    address,
    churn_ways,
    drop_connections,
    open_connections,
    oversized_body,
    read_until,
    slow_consumers,
    socketio_task,
)

pytestmark = pytest.mark.timeout(120)

#: Backend send timeout in these tests: a client that reads nothing for 1 s is a slow consumer.
SEND_TIMEOUT_S = 1.0
#: Generous bound on how much one test's abuse may grow the backend's RSS.
RSS_GROWTH_LIMIT_MB = 60


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    """This module's backend gives up on a silent client after SEND_TIMEOUT_S (conftest's: 30 s)."""
    with start_backend("--send-timeout", str(SEND_TIMEOUT_S)) as process:
        yield process


# --------------------------------------------------------------------------- helpers


def stats(backend: BackendProcess) -> dict:
    return httpx.get(f"{backend.url}/api/_harness/stats", timeout=10).json()


def healthy(backend: BackendProcess) -> bool:
    return httpx.get(f"{backend.url}/api/health", timeout=10).json() == {"status": "ok"}


def rss_mb(backend: BackendProcess) -> float:
    return psutil.Process(backend.pid).memory_info().rss / 2**20


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def all_streams_ended(backend: BackendProcess) -> dict | None:
    """The stats once nothing runs and every started stream has an outcome."""
    now = stats(backend)
    done = (
        now["active"] == {"ndjson": 0, "socketio": 0}
        and now["socketio_sessions"] == 0
        and sum(now["started"].values()) == sum(now["outcomes"].values())
    )
    return now if done else None


# --------------------------------------------------------------------------- oversized bodies


def test_oversized_bodies_are_refused_without_being_read_into_memory(backend: BackendProcess):
    addr = address(backend.url)
    before = rss_mb(backend)
    # 1. a declared 200 MB body: refused from its Content-Length, the rest never read
    head, taken_mb = oversized_body(addr, declared_bytes=200 * 2**20, send_mb=200)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert taken_mb < 100, f"the backend swallowed {taken_mb} MB of a refused body"
    # 2. a chunked upload with no declared length: refused once it passes the cap
    refused = httpx.post(
        backend.url + CHAT,
        content=(b"y" * 2**20 for _ in range(40)),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert refused.status_code == 413
    # 3. an oversized Socket.io message (3 MB, the server allows 1 MB): the server
    #    closes the websocket (a close frame, opcode 0x8) and runs no task
    big = socketio_task(addr, {"chunks": 1, "duration_s": 0, "padding": "z" * (3 * 2**20)})
    try:
        assert read_until(big, b"\x88")[:1] == b"\x88"
    finally:
        big.close()
    assert healthy(backend)
    wait_for(lambda: all_streams_ended(backend), 10, "the backend to settle")
    assert rss_mb(backend) - before < RSS_GROWTH_LIMIT_MB


# --------------------------------------------------------------------------- connection churn


def test_thousands_of_connections_opened_and_dropped_leave_nothing_behind(backend: BackendProcess):
    addr = address(backend.url)
    process = psutil.Process(backend.pid)
    fds_before, rss_before = process.num_fds(), rss_mb(backend)
    started_before = stats(backend)["started"].get("ndjson", 0)
    count = 2000
    socks = open_connections(addr, count, {"chunks": 50, "duration_s": 1.0})
    try:
        wait_for(lambda: stats(backend)["active"]["ndjson"] > 0, 10, "streams to start")
    finally:
        drop_connections(socks)  # half with a FIN, half with a RST
    final = wait_for(lambda: all_streams_ended(backend), 30, "every dropped stream to end")
    stream_requests = sum(1 for i in range(count) if i % len(churn_ways(addr, {})) == STREAM_WAY)
    assert final["started"]["ndjson"] - started_before == stream_requests
    assert set(final["outcomes"]) <= {"client_gone", "complete"}
    assert healthy(backend)
    wait_for(lambda: process.num_fds() <= fds_before + 5, 10, "the backend to close the sockets")
    assert rss_mb(backend) - rss_before < RSS_GROWTH_LIMIT_MB
    assert "Traceback" not in backend.stderr_text()


# --------------------------------------------------------------------------- slow consumers


def test_clients_that_stop_reading_have_their_streams_ended(backend: BackendProcess):
    addr = address(backend.url)
    before = stats(backend)["outcomes"].get("slow_consumer", 0)
    rss_before = rss_mb(backend)
    flood = {"chunks": 100_000, "duration_s": 10, "chunk_chars": 200, "events": False}
    with ExitStack() as cleanup:
        for sock in slow_consumers(addr, flood, count=3):  # 3 NDJSON streams + 3 Socket.io tasks
            cleanup.callback(sock.close)
        wait_for(lambda: sum(stats(backend)["active"].values()) == 6, 10, "the six streams to start")
        started = time.monotonic()
        # the clients still hold their sockets open and read nothing: the backend ends the streams
        wait_for(
            lambda: stats(backend)["active"] == {"ndjson": 0, "socketio": 0}, 15, "the backend to end the stuck streams"
        )
        ended_after = time.monotonic() - started
        outcomes = stats(backend)["outcomes"]
        assert outcomes.get("slow_consumer", 0) - before == 6, outcomes
        assert ended_after < 10, "a 10 s stream must be cut by the 1 s send timeout, not run out"
        assert healthy(backend)
        assert rss_mb(backend) - rss_before < RSS_GROWTH_LIMIT_MB
    assert "Traceback" not in backend.stderr_text()
