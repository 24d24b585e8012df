"""bench.memory's tables: what a long run's RSS did, minute by minute."""

from __future__ import annotations

import numpy as np

from bench.memory import Outcome, Trace, by_ten_minutes, on_run_clock


def outcome(seconds: float, rss_at) -> Outcome:
    t = [float(x) for x in np.arange(0.0, seconds + 30.0, 1.0)]
    traces = {"worker 1": Trace("worker 1", t, [rss_at(x) for x in t])}
    return Outcome("distributed", seconds, 80, traces, seconds + 1.0, 0, 0, [], False, 0.0)


def test_a_long_run_shows_the_level_before_every_ten_minute_mark():
    lines = by_ten_minutes(outcome(1800, lambda t: 150.0 + min(t, 900.0) / 300.0))
    assert lines[3] == "| process | min 10 | min 20 | min 30 |"
    # (the minute before minute 10 climbs from 151.8 to 152.0: its median is 151.9)
    assert lines[5] == "| worker 1 | 151.9 MB | 153.0 MB | 153.0 MB |"  # climbs to minute 15, then level


def test_a_run_shorter_than_twenty_minutes_has_no_such_table():
    assert by_ten_minutes(outcome(600, lambda t: 150.0)) == []


def test_samples_are_put_on_the_runs_clock():
    """The run (and its events' clock) starts when the load starts, after the spawn."""
    traces = {"worker 1": Trace("worker 1", [0.0, 1.0, 4.5, 24.5], [1.0, 2.0, 3.0, 4.0])}
    on_run_clock(traces, 4.5)
    assert traces["worker 1"].t == [-4.5, -3.5, 0.0, 20.0]
