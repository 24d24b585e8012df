"""`make bench-client`'s capacity search: where it stops and what it concludes per chunk rate."""

from __future__ import annotations

import pytest

from bench.client_capacity import Step, capacity_cell, capacity_of, next_step, parse_args, sizing_table


def step(users: int, *, saturated: bool = False, arrived: float = 1.0, rate: float = 100.0) -> Step:
    offered = users * rate
    summary = {"transports": {"ndjson": {"events_per_s": offered * arrived}}}
    return Step(users, rate, {"harness": {"saturated": saturated}}, summary, offered)


def test_doubling_stops_at_saturation_and_the_capacity_is_the_step_before():
    args = parse_args(["--start", "25"])
    steps = [step(25), step(50)]
    assert next_step([], args) == 25 and next_step(steps, args) == 100
    steps.append(step(100, saturated=True))
    assert next_step(steps, args) is None
    assert capacity_cell(capacity_of(steps)) == "50"


def test_a_backend_that_falls_behind_gives_a_lower_bound_not_a_capacity():
    args = parse_args([])
    steps = [step(26), step(52, arrived=0.7)]
    assert next_step(steps, args) is None
    assert capacity_cell(capacity_of(steps)) == "at least 52 (the backend on the same cores fell behind first)"
    assert capacity_cell(capacity_of([step(26, saturated=True)])) == "below the first step"


def test_the_largest_step_tried_is_said_and_explicit_steps_are_taken_as_given():
    args = parse_args(["--max-streams", "60"])
    steps = [step(26), step(52)]
    assert next_step(steps, args) is None
    assert "the largest step tried" in capacity_cell(capacity_of(steps))
    given = parse_args(["--steps", "10,30"])
    assert next_step([step(10, saturated=True)], given) == 30  # no early stop: the steps asked for
    table = sizing_table([capacity_of(steps)])
    assert table.startswith("## Sizing, measured (make bench-client)") and "| 100 chunks/s | at least 52" in table


@pytest.mark.parametrize("bad", [["--rates", "fast"], ["--start", "0"], ["--steps", "10,-1"]])
def test_bad_arguments_are_usage_errors(bad, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(bad)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("python -m bench.client_capacity: error: ")
