"""The capacity search run live (``loadtests.sweep``), without Locust: a stand-in for its runner and clock.

Streams are handed over as the stream hooks hand them; the search must wait
for the step's users, let them settle, count only the streams of its
transport that started afterwards (never one the step change cut short),
decide with ``analysis.capacity``, stop every user of one transport before
the next one's search, measure a step the machine starved once more, and
give capacity.json at the end.  (The Locust wiring, ``loadtests.capacity``,
runs in the subprocess tests of ``tests/cli/test_sweep.py``.)
"""

from __future__ import annotations

import json
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loadtests.options import OptionError
from loadtests.results.record import StreamRecord
from loadtests.sweep import Sweep, SweepError, sweep_settings, write_capacity
from stream_harness.contract.kinds import ErrorKind, StreamStatus
from stream_harness.contract.schema import CHUNK


@dataclass
class Clock:
    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Load:
    """Locust's dispatcher as the search sees it: users per transport, applied at once."""

    running: dict[str, int] = field(default_factory=dict)

    def apply(self, target: tuple[int, float, str] | None) -> None:
        if target is None:
            return
        users, _rate, transport = target
        if users == 0:
            self.running = {}
            return
        others = {t: n for t, n in self.running.items() if t != transport}  # Locust keeps other classes' users
        self.running = {**others, transport: users - sum(others.values())}


def make_sweep(clock: Clock, transport: str = "ndjson", **flags: str) -> Sweep:
    options = {
        "transport": transport,
        "slo": "ttfc_p99_ms=350",
        "sweep_start": "4",
        "sweep_max_streams": "4",
        "sweep_step_seconds": "2",
        "sweep_max_step_seconds": "4",
        "sweep_settle_seconds": "1",
        "sweep_min_streams": "3",
        **flags,
    }
    run, sweep_options, slo = sweep_settings(Namespace(**options))
    return Sweep(list(run.transports), sweep_options, slo, clock=clock, say=lambda _line: None)


def stream(sweep: Sweep, transport: str, started_at: float, ttfc_ms: float = 100.0, **changes) -> StreamRecord:
    """A whole stream handed over as the hooks do: 5 chunks 50 ms apart after ``ttfc_ms``."""
    record = StreamRecord(transport=transport, endpoint="chat", stream_id=f"s{started_at}")
    sweep.started(record)
    record.started_at = started_at
    for i in range(5):
        record.add_event(CHUNK, ttfc_ms + 50.0 * i, i)
    record.status = StreamStatus.COMPLETED
    for key, value in changes.items():
        setattr(record, key, value)
    sweep.finished(record)
    return record


def test_a_step_counts_only_its_transports_streams_started_after_the_settle_time():
    clock, load = Clock(), Load()
    sweep = make_sweep(clock)
    target = sweep.tick(load.running, ready=True)
    assert target == (4, 4.0, "ndjson") and sweep.recorder is None  # its users do not run yet
    load.apply(target)
    assert sweep.tick(load.running, ready=False) == target and sweep.recorder is None  # Locust still spawning
    sweep.tick(load.running, ready=True)
    recorder = sweep.recorder
    assert recorder is not None and recorder.measure_from == clock.now + 1
    stream(sweep, "ndjson", clock.now)  # started before the settle time was over: not counted
    stream(sweep, "socketio", clock.now + 2)  # another transport
    stream(sweep, "ndjson", clock.now + 2, status=StreamStatus.FAILED, error=ErrorKind.STOPPED)  # cut short
    for k in range(3):
        stream(sweep, "ndjson", clock.now + 1.5 + k * 0.1)
    assert recorder.ttfc_ms == [100.0] * 3 and recorder.failed == [False] * 3
    assert recorder.gap_p99_ms == [pytest.approx(50.0)] * 3


def test_a_search_runs_to_the_end_and_stops_every_user_between_transports(tmp_path: Path):
    clock, load = Clock(), Load()
    sweep = make_sweep(clock, "both", sweep_start="1", sweep_max_streams="1", sweep_min_streams="5")
    last = None
    for transport in ("ndjson", "socketio"):
        if transport == "socketio":  # the step that ended NDJSON's search asked for no user at all
            assert last == (0, 1.0, "socketio") and load.running == {}
        load.apply(sweep.tick(load.running, ready=True))
        sweep.tick(load.running, ready=True)
        assert sweep.recorder is not None and sweep.recorder.transport == transport
        for k in range(4):
            stream(sweep, transport, clock.now + 1.2 + k * 0.1, ttfc_ms=500.0 if k == 0 else 100.0)
        clock.now += 1.5  # a break with confidence, but on 4 streams: fewer than --sweep-min-streams
        assert sweep.tick(load.running, ready=True) is not None and sweep.recorder is not None
        stream(sweep, transport, clock.now - 0.2)
        last = sweep.tick(load.running, ready=True)  # the fifth stream decides: the break ends the step early
        load.apply(last)
    assert last is None and sweep.done
    capacity = sweep.capacity("http://backend")
    for transport in ("ndjson", "socketio"):
        result = capacity["transports"][transport]
        (step,) = result["steps"]
        assert (step["streams"], step["decision"], step["resolved"]) == (1, "breaks", True)  # 1 of 5 over 350 ms
        assert step["objectives"]["ttfc"]["missed"] == 1 and step["objectives"]["ttfc"]["trials"] == 5
        assert result["max_streams_meeting_slo"] == 0 and result["breaks_at"] == 1
        assert result["stop_reason"] == "slo_unmet_at_one_stream"
    assert capacity["slo"]["ttfc_p99_ms"] == 350 and capacity["host"] == "http://backend"
    write_capacity(tmp_path / "capacity.json", capacity)
    assert json.loads((tmp_path / "capacity.json").read_text()) == capacity
    assert (tmp_path / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_step_the_machine_starved_is_measured_once_more_and_a_busy_harness_is_not():
    sweep = make_sweep(Clock())
    starved = {"saturated": True, "cpu_percent_mean": 12.0, "reasons": ["event-loop lag p99 80 ms >= 25 ms"]}
    assert sweep._measure_again("ndjson", 8, starved)
    assert not sweep._measure_again("ndjson", 8, starved)  # once
    assert sweep.retried[("ndjson", 8)] == ["event-loop lag p99 80 ms >= 25 ms"]
    busy = {"saturated": True, "cpu_percent_mean": 97.0, "reasons": ["CPU >= 90% of a core in 80% of the run"]}
    assert not sweep._measure_again("ndjson", 16, busy)


def test_streams_waiting_past_the_ttfc_limit_are_misses_before_they_end():
    clock, load = Clock(), Load()
    sweep = make_sweep(clock)
    load.apply(sweep.tick(load.running, ready=True))
    sweep.tick(load.running, ready=True)
    recorder = sweep.recorder
    waiting = StreamRecord(transport="ndjson", endpoint="chat", stream_id="w")
    sweep.started(waiting)
    waiting.started_at = clock.now + 1.1
    assert recorder.late_first_chunks(clock.now + 1.3) == 0  # 200 ms: within the 350 ms limit
    assert recorder.late_first_chunks(clock.now + 1.6) == 1
    waiting.add_event(CHUNK, 400.0, 0)
    assert recorder.late_first_chunks(clock.now + 1.6) == 0  # its first chunk came


def test_bad_search_flags_are_one_line():
    with pytest.raises(SweepError, match=r"^--slo: unknown key 'p99'"):
        sweep_settings(Namespace(slo="p99=3"))
    with pytest.raises(OptionError, match=r"--sweep-start \(9\) must not exceed --sweep-max-streams \(4\)"):
        sweep_settings(Namespace(sweep_start="9", sweep_max_streams="4"))
