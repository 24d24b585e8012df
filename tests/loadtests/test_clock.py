"""Clock offsets to the fake backend: the NTP-style estimate, the correction, and a real probe."""

from __future__ import annotations

import math
import time

import gevent
import numpy as np
import pytest

from fake_backend.process import BackendProcess
from loadtests.clock import LAST_ROUND_TIMEOUT_S, MIN_DRIFT_SPAN_S, BackendClock, ClockSample, best_exchange, fit
from loadtests.protocol.http1 import parse_base_url
from loadtests.results.record import StreamRecord
from stream_harness.contract.protocol import STATS_PATH
from tests.support.loopback import ScriptedServer, http_head
from tests.support.waiting import wait_until


def test_the_round_trip_with_the_smallest_rtt_decides_the_offset():
    # the backend is 5 ms ahead; the second exchange waited 40 ms in a queue on the way back
    exchanges = [(100.000, 100.0105, 100.011), (200.000, 200.0105, 200.051), (300.000, 300.006, 300.002)]
    sample = best_exchange(exchanges)
    assert sample is not None
    assert sample.rtt_ms == pytest.approx(2.0)
    assert sample.offset_ms == pytest.approx(5.0)
    assert sample.at == pytest.approx(300.001)
    assert best_exchange([]) is None and best_exchange([(1.0, math.nan, 1.1)]) is None


def test_rounds_close_together_give_a_constant_offset_and_far_apart_a_drift():
    close = [ClockSample(at=1000.0 + i, offset_ms=5.0 + 0.01 * i, rtt_ms=0.2 + i) for i in range(3)]
    model = fit(close)
    assert model is not None and model.drift_ppm == 0.0
    assert model.offset_ms == pytest.approx(5.0)  # the round with the smallest RTT
    assert model.uncertainty_ms == pytest.approx(0.1)
    # 50 ppm: 50 µs of offset change per second of our clock
    far = [ClockSample(at=1000.0 + t, offset_ms=5.0 + 0.05 * t, rtt_ms=0.3) for t in (0.0, 60.0, 120.0)]
    model = fit(far)
    assert model is not None and model.rounds == 3
    assert model.drift_ppm == pytest.approx(50.0)
    assert model.offset_at_ms(np.array([1000.0, 1120.0])) == pytest.approx([5.0, 11.0])
    assert far[-1].at - far[0].at >= MIN_DRIFT_SPAN_S


def test_the_correction_takes_the_offset_at_each_event_and_leaves_unknown_times_alone():
    clock = BackendClock(parse_base_url("http://127.0.0.1:9"), {})
    clock.model = fit([ClockSample(at=1000.0 + t, offset_ms=5.0 + 0.05 * t, rtt_ms=0.3) for t in (0.0, 60.0, 120.0)])
    record = StreamRecord("ndjson", "chat", "s", started_at=1060.0)
    record.add_event(0, 10.0, 0, 0, 1000.0)  # emitted 1 s after the request (backend clock)
    record.add_event(0, 20.0, 1, 1, math.nan)
    clock.correct(record)
    # at 1061 s our clock the backend is 5 + 0.05 * 61 = 8.05 ms ahead
    assert record.emit_ms[0] == pytest.approx(1000.0 - 8.05)
    assert math.isnan(record.emit_ms[1])


def test_a_probe_of_the_fake_backend_on_loopback_is_precise(backend: BackendProcess):
    clock = BackendClock(parse_base_url(backend.url), {})
    clock.start()
    wait_until(lambda: clock.samples, 30, "the first clock round", sleep=gevent.sleep)
    summary = clock.stop()  # and a last round
    assert clock.available is True and summary is not None and summary["rounds"] == 2
    # same machine, same clock: the offset is within the uncertainty, which is a loopback RTT
    assert abs(summary["offset_ms"]) <= summary["uncertainty_ms"] + 0.5
    assert 0.0 < summary["uncertainty_ms"] < 50.0


def test_a_backend_that_is_not_the_fake_one_gets_no_clock_probe():
    asked = []

    def not_found(conn):
        request = conn.read_request()
        if request is not None:
            asked.append(request.target)
            conn.send(http_head(status=404, headers={"Content-Length": "0"}, chunked=False))

    with ScriptedServer(not_found) as server:
        clock = BackendClock(parse_base_url(server.url), {})
        clock.start()
        wait_until(lambda: clock.available is False, 30, "the verdict on the backend", sleep=gevent.sleep)
        assert clock.stop() is None
        assert clock.stop() is None
    assert asked == [STATS_PATH]


def test_the_last_round_cannot_hold_up_the_end_of_a_run():
    # a backend that once answered like the fake one and now accepts but never replies
    with ScriptedServer(lambda conn: conn.read_request() and gevent.sleep(30)) as server:
        clock = BackendClock(parse_base_url(server.url), {}, timeout=30.0)
        clock.available = True
        started = time.monotonic()
        assert clock.stop() is None
        assert time.monotonic() - started < LAST_ROUND_TIMEOUT_S + 2.0
