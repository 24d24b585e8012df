"""The capacity load shape's step lifecycle, without Locust running: a stand-in runner and clock.

Streams are fed through the harness's own stream hooks, as the users fire
them; the shape must wait for the step's users, let them settle, count only
the streams of its transport that started afterwards (never one the step
change cut short), decide with ``analysis.capacity``, stop every user of one
transport before the next one's search, measure a step the machine starved
once more, and write capacity.json at the end.
"""

from __future__ import annotations

import json
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from locust.env import Environment
from locust.runners import STATE_RUNNING

import loadtests.capacity as capacity_module
from loadtests.capacity import Sweep
from loadtests.hooks import stream_finished_hook, stream_started_hook
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import ErrorKind, StreamStatus
from stream_harness.contract.schema import CHUNK


@dataclass
class FakeRunner:
    """What the shape reads of Locust's runner: its state and the users per class."""

    state: str = STATE_RUNNING
    user_classes_count: dict[str, int] = field(default_factory=dict)

    @property
    def user_count(self) -> int:
        return sum(self.user_classes_count.values())

    def apply(self, tick: tuple | None) -> None:
        """Locust's dispatcher: spawns the given class, keeps the others' users."""
        if tick is None:
            return
        users, _rate, classes = tick
        if users == 0:
            self.user_classes_count = {}
            return
        others = {name: n for name, n in self.user_classes_count.items() if name != classes[0].__name__}
        self.user_classes_count = {**others, classes[0].__name__: users - sum(others.values())}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(capacity_module.time, "time", clock)
    return clock


def environment(tmp_path: Path, transport: str = "ndjson", **sweep: str) -> Environment:
    options = {
        "transport": transport,
        "slo": "ttfc_p99_ms=350",
        "sweep_start": "4",
        "sweep_max_streams": "4",
        "sweep_step_seconds": "2",
        "sweep_max_step_seconds": "4",
        "sweep_settle_seconds": "1",
        "sweep_min_streams": "3",
        "capacity_file": str(tmp_path / "capacity.json"),
        **sweep,
    }
    env = Environment(parsed_options=Namespace(**options))
    env.runner = FakeRunner()  # type: ignore[assignment]
    return env


def stream(env: Environment, transport: str, started_at: float, ttfc_ms: float = 100.0, **changes) -> StreamRecord:
    """A whole stream fired through the hooks: 5 chunks 50 ms apart after ``ttfc_ms``."""
    record = StreamRecord(transport=transport, endpoint="chat", stream_id=f"s{started_at}")
    stream_started_hook(env.events).fire(record=record)
    record.started_at = started_at
    for i in range(5):
        record.add_event(CHUNK, ttfc_ms + 50.0 * i, i)
    record.status = StreamStatus.COMPLETED
    for key, value in changes.items():
        setattr(record, key, value)
    stream_finished_hook(env.events).fire(record=record)
    return record


def test_a_step_counts_only_its_transports_streams_started_after_the_settle_time(tmp_path, clock):
    env = environment(tmp_path)
    sweep = Sweep(env)
    runner = env.runner
    tick = sweep.tick()
    assert tick[0] == 4 and [c.__name__ for c in tick[2]] == ["NdjsonStreamUser"]
    assert sweep.recorder is None  # its users do not run yet
    runner.apply(tick)
    sweep.tick()
    recorder = sweep.recorder
    assert recorder is not None and recorder.measure_from == clock.now + 1
    stream(env, "ndjson", clock.now)  # started before the settle time was over: not counted
    stream(env, "socketio", clock.now + 2)  # another transport
    stream(env, "ndjson", clock.now + 2, status=StreamStatus.FAILED, error=ErrorKind.STOPPED)  # cut short
    for k in range(3):
        stream(env, "ndjson", clock.now + 1.5 + k * 0.1)
    assert recorder.ttfc_ms == [100.0] * 3 and recorder.failed == [False] * 3
    assert recorder.gap_p99_ms == [pytest.approx(50.0)] * 3


def test_a_search_runs_to_capacity_json_and_drains_users_between_transports(tmp_path, clock):
    env = environment(tmp_path, transport="both", sweep_start="1", sweep_max_streams="1", sweep_min_streams="5")
    sweep = Sweep(env)
    runner = env.runner
    finished = []
    for transport in ("ndjson", "socketio"):
        runner.apply(sweep.tick())
        if transport == "socketio":  # the last transport's users are all stopped first
            assert runner.user_count == 0
            runner.apply(sweep.tick())
        sweep.tick()
        assert sweep.recorder is not None and sweep.recorder.transport == transport
        for k in range(4):
            stream(env, transport, clock.now + 1.2 + k * 0.1, ttfc_ms=500.0 if k == 0 else 100.0)
        clock.now += 1.5  # a break with confidence, but on 4 streams: fewer than --sweep-min-streams
        assert sweep.tick() is not None and sweep.recorder is not None
        stream(env, transport, clock.now - 0.2)
        finished.append(sweep.tick())  # the fifth stream decides: the break ends the step early
    assert finished[-1] is None  # the shape stops the run
    capacity = json.loads((tmp_path / "capacity.json").read_text())
    assert (tmp_path / "capacity.png").is_file()
    for transport in ("ndjson", "socketio"):
        result = capacity["transports"][transport]
        (step,) = result["steps"]
        assert (step["streams"], step["decision"], step["resolved"]) == (1, "breaks", True)  # 1 of 5 over 350 ms
        assert step["objectives"]["ttfc"]["missed"] == 1 and step["objectives"]["ttfc"]["trials"] == 5
        assert result["max_streams_meeting_slo"] == 0 and result["breaks_at"] == 1
        assert result["stop_reason"] == "slo_unmet_at_one_stream"
    assert capacity["slo"]["ttfc_p99_ms"] == 350


def test_a_step_the_machine_starved_is_measured_once_more_and_a_busy_harness_is_not(tmp_path, clock):
    sweep = Sweep(environment(tmp_path))
    starved = {"saturated": True, "cpu_percent_mean": 12.0, "reasons": ["event-loop lag p99 80 ms >= 25 ms"]}
    assert sweep._measure_again("ndjson", 8, starved)
    assert not sweep._measure_again("ndjson", 8, starved)  # once
    assert sweep.retried[("ndjson", 8)] == ["event-loop lag p99 80 ms >= 25 ms"]
    busy = {"saturated": True, "cpu_percent_mean": 97.0, "reasons": ["CPU >= 90% of a core in 80% of the run"]}
    assert not sweep._measure_again("ndjson", 16, busy)


def test_streams_waiting_past_the_ttfc_limit_are_misses_before_they_end(tmp_path, clock):
    env = environment(tmp_path)
    sweep = Sweep(env)
    env.runner.apply(sweep.tick())
    sweep.tick()
    recorder = sweep.recorder
    waiting = StreamRecord(transport="ndjson", endpoint="chat", stream_id="w")
    stream_started_hook(env.events).fire(record=waiting)
    waiting.started_at = clock.now + 1.1
    assert recorder.late_first_chunks(clock.now + 1.3) == 0  # 200 ms: within the 350 ms limit
    assert recorder.late_first_chunks(clock.now + 1.6) == 1
    waiting.add_event(CHUNK, 400.0, 0)
    assert recorder.late_first_chunks(clock.now + 1.6) == 0  # its first chunk came
