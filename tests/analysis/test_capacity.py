"""The capacity search, without a load: SLO parsing, Wilson intervals, step judgements, doubling then bisection."""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_type_hints

import numpy as np
import pytest

from analysis.capacity import (
    CapacitySearch,
    Slo,
    SloError,
    StepPolicy,
    StepSamples,
    judge_step,
    load_slo,
    stream_sample,
    wilson_interval,
)
from analysis.metrics import analyse
from analysis.results import load_results
from stream_harness.contract.capacity import CapacityStep, ObjectiveResult, StepMetrics, TransportCapacity
from stream_harness.contract.kinds import StepDecision
from tests.support import REPO
from tests.support.synthetic import SyntheticSpec, write_synthetic_run

SLO = Slo(ttfc_p99_ms=500.0, gap_p99_ms=100.0, failure_rate=0.01)


# --------------------------------------------------------------------------- the SLO


def test_the_project_slo_comes_from_pyproject_and_overrides_win():
    slo = load_slo(REPO / "pyproject.toml")
    assert slo == Slo(ttfc_p99_ms=1000.0, gap_p99_ms=250.0, failure_rate=0.01, clean=True, confidence=0.95)
    tighter = slo.with_overrides("ttfc_p99_ms=400, failure_rate=0.05,clean=false")
    assert (tighter.ttfc_p99_ms, tighter.gap_p99_ms, tighter.failure_rate, tighter.clean) == (400, 250, 0.05, False)
    assert Slo().with_overrides(tighter.flag()) == tighter


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ttfc=1000", "--slo: unknown key 'ttfc'"),
        ("ttfc_p99_ms", "--slo: 'ttfc_p99_ms' is not key=value"),
        ("ttfc_p99_ms=fast", "--slo: ttfc_p99_ms must be a number, got 'fast'"),
        ("failure_rate=1.5", "--slo: failure_rate must be in [0, 1)"),
        ("gap_p99_ms=0", "--slo: ttfc_p99_ms and gap_p99_ms must be > 0"),
        ("clean=1", "--slo: clean must be true or false"),
    ],
)
def test_a_bad_slo_is_one_line(text, message):
    with pytest.raises(SloError) as error:
        Slo().with_overrides(text)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_pyproject_table_with_a_typo_is_refused(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("[tool.stream_harness.slo]\nttfc_p99=5\n")
    with pytest.raises(SloError, match=r"\[tool.stream_harness.slo\]: unknown key 'ttfc_p99'"):
        load_slo(tmp_path / "pyproject.toml")
    assert load_slo(tmp_path / "missing.toml") == Slo()


# --------------------------------------------------------------------------- Wilson


def test_wilson_interval_matches_the_textbook():
    low, high = wilson_interval(5, 10, 0.95)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    for n in (10, 100, 381):  # no miss: the upper end is z^2 / (n + z^2)
        z2 = 1.959964**2
        assert wilson_interval(0, n, 0.95) == (pytest.approx(0.0, abs=1e-12), pytest.approx(z2 / (n + z2), rel=1e-5))
    assert wilson_interval(0, 0, 0.95) == (0.0, 1.0)
    assert wilson_interval(3, 30, 0.99)[1] > wilson_interval(3, 30, 0.9)[1]


# --------------------------------------------------------------------------- one stream, one step


def test_a_streams_sample_is_the_streams_table_value(tmp_path: Path):
    """TTFC and own p99 gap computed from a record's events equal the analysis's columns."""
    write_synthetic_run(tmp_path / "run", SyntheticSpec(streams=6, chunks=(50, 80), seed=3))
    results = load_results(tmp_path / "run")
    filled = analyse(results.run, results.streams, results.events).streams
    events = results.events
    for key in range(len(filled)):
        mine = events[events["stream_key"] == key]
        ttfc, gap = stream_sample(mine["kind"].to_numpy(), mine["t_ms"].to_numpy())
        assert ttfc == filled["ttfc_ms"].iloc[key]
        assert gap == filled["gap_p99_ms"].iloc[key]
    assert all(math.isnan(v) for v in stream_sample(np.array([8]), np.array([1.0])))


def samples(n: int, ttfc: float = 100.0, gap: float = 20.0, **changes) -> StepSamples:
    values = {
        "failed": np.zeros(n, dtype=bool),
        "ttfc_ms": np.full(n, ttfc),
        "gap_p99_ms": np.full(n, gap),
        "measured_s": 10.0,
        "chunks": n * 50,
    }
    values.update(changes)
    return StepSamples(**values)


def test_a_few_good_streams_hold_on_the_point_estimate_only():
    judged = judge_step(samples(40), SLO)
    assert judged.decision == StepDecision.HOLDS and not judged.resolved
    ttfc = judged.objectives["ttfc"]
    assert ttfc["missed"] == 0 and ttfc["trials"] == 40 and ttfc["holds"] and not ttfc["resolved"]
    assert ttfc["interval"][1] > 0.01  # 0 of 40 cannot show a 1% tail holds
    assert judged.metrics["ttfc_p99_ms"] == 100.0 and judged.metrics["chunks_per_s"] == 200.0


def test_enough_good_streams_hold_with_confidence():
    judged = judge_step(samples(400), SLO)
    assert judged.decision == StepDecision.HOLDS and judged.resolved
    assert judged.reasons == []


def test_slow_first_chunks_break_with_confidence_within_a_few_streams():
    judged = judge_step(samples(8, ttfc=900.0), SLO)
    assert judged.decision == StepDecision.BREAKS and judged.resolved
    assert judged.reasons[0].startswith("8 of 8 streams TTFC over 500 ms (100.0%")
    assert "with confidence" in judged.reasons[0]


def test_streams_still_waiting_for_a_first_chunk_past_the_limit_count_as_misses():
    judged = judge_step(samples(3, late_first_chunks=5), SLO)
    ttfc = judged.objectives["ttfc"]
    assert (ttfc["missed"], ttfc["trials"]) == (5, 8)
    assert judged.decision == StepDecision.BREAKS


def test_one_slow_stream_in_fifty_breaks_on_the_point_estimate_but_is_not_resolved():
    ttfc = np.full(50, 100.0)
    ttfc[0] = 900.0
    judged = judge_step(samples(50, ttfc_ms=ttfc), SLO)
    assert judged.decision == StepDecision.BREAKS and not judged.resolved


def test_failures_gaps_and_buffering_are_objectives_too():
    failed = np.zeros(50, dtype=bool)
    failed[:10] = True
    assert judge_step(samples(50, failed=failed), SLO).reasons[0].startswith("10 of 50 streams failed (20.0%")
    assert judge_step(samples(50, gap=300.0), SLO).reasons[0].startswith("50 of 50 streams own p99 gap over 100 ms")
    buffered = judge_step(samples(400, verdict="buffered", verdict_reason="chunks arrive 30 per read"), SLO)
    assert buffered.decision == StepDecision.BREAKS and buffered.resolved
    assert buffered.reasons == ["buffering verdict buffered: chunks arrive 30 per read"]
    assert judge_step(samples(400, verdict="buffered"), Slo(clean=False)).decision == StepDecision.HOLDS
    undecided = judge_step(samples(400, verdict="inconclusive"), SLO)
    assert undecided.decision == StepDecision.HOLDS and not undecided.resolved


def test_a_saturated_load_generator_decides_nothing_about_the_backend():
    judged = judge_step(samples(400, ttfc=900.0, saturated=True, saturated_reason="CPU >= 90%"), SLO)
    assert judged.decision == StepDecision.SATURATED
    assert judged.reasons[0] == "the load generator was saturated: CPU >= 90%"


def test_a_step_ends_when_decided_with_confidence_or_out_of_time():
    policy = StepPolicy(min_s=5, max_s=20, min_streams=10)
    assert not policy.done(judge_step(samples(40), SLO), 19.0)  # holds, unresolved: runs on
    assert policy.done(judge_step(samples(40), SLO), 20.0)
    assert not policy.done(judge_step(samples(400), SLO), 4.0)  # resolved, but shorter than min
    assert policy.done(judge_step(samples(400), SLO), 5.0)
    assert policy.done(judge_step(samples(10, ttfc=900.0), SLO), 1.0)  # a resolved break ends early
    assert not policy.done(judge_step(samples(5, ttfc=900.0), SLO), 1.0)  # ... on enough streams


# --------------------------------------------------------------------------- the search


def step(level: int, decision: StepDecision) -> dict:
    return {"streams": level, "decision": str(decision), "reasons": [f"at {level}"]}


def search_against(capacity: int, saturates_at: int | None = None, **settings) -> CapacitySearch:
    """Run the search against an oracle: the SLO holds up to ``capacity`` streams."""
    search = CapacitySearch(**settings)
    while (level := search.next_level()) is not None:
        if saturates_at is not None and level >= saturates_at:
            search.record(step(level, StepDecision.SATURATED))
        else:
            search.record(step(level, StepDecision.HOLDS if level <= capacity else StepDecision.BREAKS))
    return search


@pytest.mark.parametrize("capacity", [1, 3, 6, 7, 12, 48, 100, 255])
def test_doubling_then_bisection_finds_the_exact_crossing_with_no_tolerance(capacity):
    search = search_against(capacity, start=4, max_streams=256, tolerance=0.0)
    result = search.result()
    assert result["max_streams_meeting_slo"] == capacity and result["breaks_at"] == capacity + 1
    assert not result["lower_bound"] and result["stop_reason"] == "converged"
    levels = [s["streams"] for s in result["steps"]]
    first_miss = next(i for i, s in enumerate(result["steps"]) if s["decision"] != "holds")
    assert levels[: first_miss + 1] == [4 * 2**i for i in range(first_miss + 1)]  # doubling until a miss
    assert len(levels) <= 16
    assert result["summary"].startswith(f"{capacity} concurrent streams meet the SLO; {capacity + 1} break it: at")


@pytest.mark.parametrize("capacity", [20, 50, 90, 200])
def test_with_a_tolerance_the_answer_is_within_one_final_step_of_the_crossing(capacity):
    result = search_against(capacity, start=4, max_streams=256, tolerance=0.1).result()
    held, broke = result["max_streams_meeting_slo"], result["breaks_at"]
    assert held <= capacity < broke <= held + max(1, 0.1 * held)


def test_a_saturating_load_generator_makes_the_answer_a_lower_bound():
    result = search_against(100, saturates_at=40, start=4, tolerance=0.0).result()
    assert result["lower_bound"] and result["saturated_at"] == 40 and result["breaks_at"] is None
    assert result["max_streams_meeting_slo"] == 39
    assert result["summary"] == (
        "at least 39 concurrent streams meet the SLO (a lower bound: the load generator saturated at 40 streams)"
    )


def test_reaching_the_ceiling_is_a_lower_bound_and_a_miss_at_one_stream_is_zero():
    top = search_against(10_000, start=4, max_streams=64).result()
    assert top["max_streams_meeting_slo"] == 64 and top["lower_bound"] and top["stop_reason"] == "max_streams_reached"
    none = search_against(0, start=4).result()
    assert none["max_streams_meeting_slo"] == 0 and not none["lower_bound"]
    assert none["stop_reason"] == "slo_unmet_at_one_stream"
    assert [s["streams"] for s in none["steps"]] == [4, 2, 1]
    assert none["summary"] == "the SLO is not met even at 1 concurrent stream(s): at 1"


def test_the_search_settings_are_checked():
    with pytest.raises(SloError):
        CapacitySearch(start=0)
    with pytest.raises(SloError):
        CapacitySearch(start=8, max_streams=4)


def test_the_results_document_names_every_key_of_capacity_json():
    text = (REPO / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    section = text[text.index("## `capacity.json`") :]
    for typed in (TransportCapacity, CapacityStep, StepMetrics, ObjectiveResult):
        for key in get_type_hints(typed):
            assert f"`{key}`" in section, (typed.__name__, key)
