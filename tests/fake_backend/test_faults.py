"""Stream timing and fault injection, observed the way a client really sees it:
one raw socket, every recv() timed separately.

Assertions are generous about speed (shared, noisy CI cores) and strict about
what each fault must do to the byte stream."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
import zlib
from dataclasses import dataclass

import httpx
import pytest

from tests.support.rawstream import RawStream
from tests.support.waiting import backend_stats, wait_until

CHAT = "/api/ai/chat/unified"
BODY = {"messages": [{"role": "user", "content": "Hello"}]}


@dataclass
class Observed:
    status: int
    headers: dict
    headers_at: float  # s after request sent
    lines: list[dict]
    arrival: list[float]  # per line: s after request sent (time of the read completing it)
    lines_per_read: list[int]  # reads that completed at least one line
    terminated: bool

    @property
    def chunk_arrivals(self) -> list[float]:
        return [t for line, t in zip(self.lines, self.arrival) if line["event"] == "chunk"]

    @property
    def kinds(self) -> list[str]:
        return [line["event"] for line in self.lines]


def observe(base: str, harness: dict, headers: dict | None = None) -> Observed:
    with RawStream.post(base, CHAT, {**BODY, "harness": harness}, headers=headers) as s:
        headers_at = time.perf_counter() - s.sent_at
        gz = zlib.decompressobj(16 + zlib.MAX_WBITS) if s.headers.get("content-encoding") == "gzip" else None
        buf, lines, arrival, per_read = b"", [], [], []
        for t, piece in s.reads():
            buf += gz.decompress(piece) if gz else piece
            *complete, buf = buf.split(b"\n")
            lines += [json.loads(line) for line in complete]
            arrival += [t - s.sent_at] * len(complete)
            if complete:
                per_read.append(len(complete))
        assert buf == b"", "a partial line was left over"
        return Observed(s.status, s.headers, headers_at, lines, arrival, per_read, s.terminated)


def test_2000_chunks_over_2s_all_arrive_paced(backend):
    o = observe(backend.url, {"chunks": 2000, "duration_s": 2, "pacing": "steady", "events": False})
    assert o.status == 200 and o.terminated
    assert o.kinds == ["chunk"] * 2000 + ["end"]
    assert [line["seq"] for line in o.lines] == list(range(2001))
    spread = o.chunk_arrivals[-1] - o.chunk_arrivals[0]
    assert 1.9 <= spread < 10, spread  # paced over ~2 s, not dumped at once
    emit_spread = o.lines[1999]["ts"] - o.lines[0]["ts"]
    assert 1.9 <= emit_spread < 10


#: How late this test's own reader may take a chunk off the socket on a shared machine.
READ_LATENESS_S = 0.01


def test_stall_shows_as_one_long_gap_before_its_chunk(backend):
    o = observe(backend.url, {"chunks": 200, "duration_s": 1, "events": False, "stall_ms": 300, "stall_at": 120})
    emit_gap = o.lines[120]["ts"] - o.lines[119]["ts"]
    assert emit_gap >= 0.3  # the backend pauses at least stall_ms, also when it runs behind its plan
    arrivals = o.chunk_arrivals
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    longest = max(range(len(gaps)), key=gaps.__getitem__)
    # (this client reading chunk 119 a few ms late on a busy machine shortens the gap it sees)
    assert longest + 1 == 120 and gaps[longest] >= 0.3 - READ_LATENESS_S, (gaps[longest], emit_gap)
    assert sorted(gaps)[-2] < 0.3


def test_buffer_ms_releases_lines_in_bursts_and_ts_reveals_it(backend):
    o = observe(backend.url, {"chunks": 400, "duration_s": 2, "events": False, "buffer_ms": 100})
    assert o.kinds == ["chunk"] * 400 + ["end"] and o.terminated
    # ~20 chunks are produced per 100 ms window and released as one write
    assert statistics.mean(o.lines_per_read) >= 8, o.lines_per_read
    assert len(o.lines_per_read) <= 60
    # within one burst the emit times span most of a window: staleness is visible
    staleness = [t - (line["ts"] - o.lines[0]["ts"]) for line, t in zip(o.lines, o.arrival)]
    assert max(staleness) - min(staleness) >= 0.05


def test_buffer_chunks_releases_every_n_chunks(backend):
    o = observe(backend.url, {"chunks": 300, "duration_s": 1.5, "events": False, "buffer_chunks": 50})
    assert o.kinds == ["chunk"] * 300 + ["end"]
    assert max(o.lines_per_read) >= 45 and statistics.mean(o.lines_per_read) >= 20, o.lines_per_read


def test_without_faults_lines_arrive_one_by_one(backend):
    o = observe(backend.url, {"chunks": 200, "duration_s": 1, "events": False})
    assert statistics.median(o.lines_per_read) == 1


def test_gzip_holds_headers_and_lines_back_until_a_block_fills(backend):
    harness = {"chunks": 2000, "duration_s": 2, "events": False}
    plain = observe(backend.url, harness, headers={"Accept-Encoding": "gzip"})
    zipped = observe(backend.url, {**harness, "gzip": True}, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.kinds == ["chunk"] * 2000 + ["end"] and zipped.terminated
    assert plain.chunk_arrivals[0] < 1.0
    # the whole 2 s body is smaller than one deflate block: nothing (not even
    # the headers) leaves before the end
    assert zipped.headers_at >= 1.5 and zipped.chunk_arrivals[0] >= 1.5
    assert max(zipped.lines_per_read) >= 500


def test_gzip_large_body_comes_in_full_blocks(backend):
    o = observe(
        backend.url,
        {"chunks": 12000, "duration_s": 2, "events": False, "gzip": True, "chunk_chars": 8},
        headers={"Accept-Encoding": "gzip"},
    )
    assert o.kinds == ["chunk"] * 12000 + ["end"]
    assert len(o.lines_per_read) >= 2  # several blocks, spread over the stream
    assert min(o.lines_per_read[:-1]) >= 500  # each one a big batch of lines


def test_gzip_is_skipped_when_the_client_does_not_accept_it(backend):
    o = observe(backend.url, {"chunks": 10, "duration_s": 0, "gzip": True}, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in o.headers and o.kinds[-1] == "end"


@pytest.mark.parametrize("gzip", [False, True])
def test_disconnect_at_cuts_the_body_without_terminating_chunk(backend, gzip):
    o = observe(
        backend.url,
        {"chunks": 200, "duration_s": 0.5, "events": False, "disconnect_at": 50, "gzip": gzip},
        headers={"Accept-Encoding": "gzip"},
    )
    assert o.status == 200
    assert not o.terminated  # the 0-size chunk never came: connection dropped
    # plain: exactly the 50 chunks before K; gzip: those 50 lines never filled a block
    assert o.kinds == ([] if gzip else ["chunk"] * 50)


def test_disconnect_at_is_an_error_for_a_normal_http_client(backend):
    body = {**BODY, "harness": {"chunks": 100, "duration_s": 0, "disconnect_at": 10}}
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream("POST", backend.url + CHAT, json=body) as response:
        for _ in response.iter_lines():
            pass
    assert httpx.get(backend.url + "/api/health").status_code == 200


def test_error_at_sends_error_then_end(backend):
    o = observe(backend.url, {"chunks": 100, "duration_s": 0, "events": False, "error_at": 30})
    assert o.kinds == ["chunk"] * 30 + ["error", "end"] and o.terminated
    error = o.lines[30]["data"]
    assert error["error_type"] and error["message"] and error["user_message"]
    assert o.lines[-1]["data"] == {"reason": "error"}


def test_first_chunk_delay_separates_first_event_from_first_chunk(backend):
    o = observe(backend.url, {"chunks": 5, "duration_s": 0, "first_chunk_delay_ms": 500})
    first_chunk = o.kinds.index("chunk")
    assert o.kinds[0] == "status_update"
    assert o.arrival[first_chunk] >= 0.5
    assert o.lines[first_chunk]["ts"] - o.lines[0]["ts"] >= 0.5
    assert o.headers_at < o.arrival[first_chunk]


def test_no_traceback_noise_from_injected_faults(backend):
    observe(backend.url, {"chunks": 20, "duration_s": 0, "disconnect_at": 5})
    time.sleep(0.2)
    assert "Traceback" not in backend.stderr_text()


def test_the_load_knee_delays_the_first_chunk_by_the_streams_running_beyond_it(backend):
    """knee_streams=2, knee_delay_ms=200: with 3 long streams running, a 4th waits 200 ms x (4 - 2)."""
    knee = {"knee_streams": 2, "knee_delay_ms": 200}
    wait_until(lambda: (backend_stats(backend.url) or {}).get("active", {}).get("ndjson") == 0, 10, "no stream running")
    with contextlib.ExitStack() as running:
        for _ in range(3):  # their own first chunks: 0, 0 and 200 ms; they hold the load for 5 s
            stream = running.enter_context(
                RawStream.post(backend.url, CHAT, {**BODY, "harness": {"chunks": 50, "duration_s": 5, **knee}})
            )
            assert stream.status == 200
        o = observe(backend.url, {"chunks": 5, "duration_s": 0, "events": False, **knee})
    ttfc = o.chunk_arrivals[0]
    assert 0.4 <= ttfc < 2.0, ttfc
    wait_until(lambda: backend_stats(backend.url)["active"]["ndjson"] == 0, 10, "the three streams to end")
    alone = observe(backend.url, {"chunks": 5, "duration_s": 0, "events": False, **knee})
    assert alone.chunk_arrivals[0] < 0.2  # the three are gone: back under the knee
