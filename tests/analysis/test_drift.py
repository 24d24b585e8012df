"""Warm-up and drift: a backend that degrades over a run shows in the per-window numbers.

A synthetic run whose first chunk comes later the later a stream starts
(10 ms per second of run): the drift windows' TTFC p50 climbs window after
window, by the slope times the window; with ``--warmup`` the streams of the
first seconds are flagged, kept, and in no number (summary, drift windows).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from analysis.metrics import DRIFT_WINDOW_S, analyse
from stream_harness.contract.schema import CHUNK
from tests.support.synthetic import SyntheticSpec, synthetic_run

SLOPE_MS_PER_S = 10.0
SPEC = SyntheticSpec(transports=("ndjson",), streams=60, chunks=(600, 700), users=3, seed=21)


def degrading_run(warmup_s: float = 0.0):
    """The synthetic run with every chunk of a stream delayed by SLOPE x (its start - the run's start)."""
    run, streams, events = synthetic_run(SPEC)
    started = streams["started_at"].to_numpy()
    delay = (started - started.min()) * SLOPE_MS_PER_S
    shift = np.where(events["kind"].to_numpy() == CHUNK, delay[events["stream_key"].to_numpy()], 0.0)
    events = events.assign(t_ms=events["t_ms"].to_numpy() + shift, emit_ms=events["emit_ms"].to_numpy() + shift)
    if warmup_s:
        run = {**run, "options": {**run["options"], "warmup_s": warmup_s}}
    return run, streams, events


def window_p50(analysis, transport: str = "ndjson") -> list[float]:
    bins = analysis.drift[transport]
    return [bins[start].ttfc.quantile(0.5) for start in sorted(bins) if bins[start].ttfc.count]


def test_a_backend_that_degrades_climbs_window_after_window():
    analysis = analyse(*degrading_run())
    assert analysis.drift_window_s == DRIFT_WINDOW_S
    p50 = window_p50(analysis)
    assert len(p50) >= 3, p50
    steps = np.diff(p50)
    assert (steps > 0).all(), p50
    # whole windows in the middle climb by the slope times the window
    assert steps[1:-1] == pytest.approx(SLOPE_MS_PER_S * DRIFT_WINDOW_S, rel=0.3)


def test_warmup_streams_are_flagged_kept_and_in_no_number():
    plain = analyse(*degrading_run())
    warm = analyse(*degrading_run(warmup_s=DRIFT_WINDOW_S))
    flagged = warm.streams["warmup"].to_numpy()
    assert flagged.any() and not flagged.all()
    assert len(warm.streams) == len(plain.streams)  # kept in the raw data
    counts = warm.summary["transports"]["ndjson"]["streams"]
    assert counts["warmup"] == int(flagged.sum())
    assert counts["started"] == len(warm.streams) - int(flagged.sum())
    # the first window's streams are gone from the TTFC windows and from the summary's TTFC
    assert window_p50(warm)[0] > window_p50(plain)[0]
    assert (
        warm.summary["transports"]["ndjson"]["ttfc_ms"]["p50"] > plain.summary["transports"]["ndjson"]["ttfc_ms"]["p50"]
    )
    assert warm.summary["run"]["warmup_s"] == DRIFT_WINDOW_S


def test_the_warmup_is_not_a_run_without_one():
    spec_run = analyse(*synthetic_run(replace(SPEC, streams=10)))
    assert "warmup" not in spec_run.summary["transports"]["ndjson"]["streams"]
    assert "warmup_s" not in spec_run.summary["run"]
