"""Calibration: protocol clients against browsers, in summary.json, report.md and the PR comment.

Synthetic runs whose streams are split between the two kinds of client: the
same simulated path for both must agree; a browser behind a buffer the
protocol clients do not see must not, and the line must say why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.calibration import (
    AGREE_LINE,
    CalibrationThresholds,
    CalibrationThresholdsError,
    calibrate,
    load_calibration_thresholds,
)
from analysis.metrics import analyse
from analysis.report import calibration_lines, render_report
from stream_harness.contract.kinds import Client
from tests.support import REPO
from tests.support.synthetic import SyntheticSpec, synthetic_run


def mixed_run(protocol: SyntheticSpec, browser: SyntheticSpec) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """One run: ``protocol``'s streams read by protocol clients, ``browser``'s by browsers."""
    run, streams_a, events_a = synthetic_run(protocol)
    _, streams_b, events_b = synthetic_run(browser)
    offset = len(streams_a)
    streams_b = streams_b.assign(
        stream_key=streams_b["stream_key"] + offset, client=Client.BROWSER, stream_id=streams_b["stream_id"] + "-b"
    )
    events_b = events_b.assign(stream_key=events_b["stream_key"] + offset)
    return run, pd.concat([streams_a, streams_b], ignore_index=True), pd.concat([events_a, events_b], ignore_index=True)


CLEAN = SyntheticSpec(transports=("ndjson",), streams=12, seed=1)


def test_the_same_path_read_by_both_kinds_of_client_agrees():
    summary = analyse(*mixed_run(CLEAN, SyntheticSpec(transports=("ndjson",), streams=12, seed=2))).summary
    ndjson = summary["transports"]["ndjson"]
    assert set(ndjson["by_client"]) == {"protocol", "browser"}
    found = ndjson["calibration"]
    assert found["agree"] is True and found["line"] == AGREE_LINE and found["reasons"] == []
    assert found["streams"] == {"protocol": 12, "browser": 12}
    assert found["verdicts"] == {"protocol": "clean", "browser": "clean"}
    p50 = found["ttfc_ms"]["p50"]
    assert p50["delta"] == pytest.approx(p50["browser"] - p50["protocol"])
    assert found["thresholds"]["ttfc_p50_ms"] == CalibrationThresholds().ttfc_p50_ms


def test_a_buffer_only_the_browser_sees_is_named():
    buffered = SyntheticSpec(transports=("ndjson",), streams=12, seed=3, buffer_ms=100.0)
    summary = analyse(*mixed_run(CLEAN, buffered)).summary
    found = summary["transports"]["ndjson"]["calibration"]
    assert found["agree"] is False
    assert found["verdicts"] == {"protocol": "clean", "browser": "buffered"}
    assert any("verdicts differ: browser buffered" in reason for reason in found["reasons"])
    assert any(reason.startswith("TTFC p50: browser") for reason in found["reasons"])
    assert found["line"].startswith("protocol clients do NOT agree with the browser: ")


def test_no_calibration_without_both_kinds_of_client():
    run, streams, events = synthetic_run(CLEAN)
    assert "calibration" not in analyse(run, streams, events).summary["transports"]["ndjson"]
    assert calibrate({"protocol": {}}) is None  # type: ignore[dict-item]


def one_slow_browser_stream(extra_ms: float) -> dict:
    """``by_client`` of a clean mixed run whose browser TTFC p99 is ``extra_ms`` slower (one slow fetch)."""
    summary = analyse(*mixed_run(CLEAN, SyntheticSpec(transports=("ndjson",), streams=12, seed=2))).summary
    by_client = summary["transports"]["ndjson"]["by_client"]
    by_client["browser"]["ttfc_ms"]["p99"] += extra_ms
    return by_client


def test_the_ttfc_p99_of_few_streams_is_shown_not_judged():
    found = calibrate(one_slow_browser_stream(75.0))
    assert found is not None and found["agree"] is True and found["line"] == AGREE_LINE
    p99 = found["ttfc_ms"]["p99"]
    assert p99["judged"] is False and p99["delta"] > p99["allowed"]
    assert found["notes"] == [
        "TTFC p99 not judged: 12 completed protocol streams (it needs 100; of fewer it is about the slowest one)"
    ]
    assert all(
        found[key][q]["judged"]
        for key in ("ttfc_ms", "gap_ms")
        for q in ("p50", "p99")
        if (key, q) != ("ttfc_ms", "p99")
    )
    judged = calibrate(one_slow_browser_stream(75.0), CalibrationThresholds(ttfc_p99_min_streams=12))
    assert judged is not None and judged["agree"] is False and judged["ttfc_ms"]["p99"]["judged"] is True
    assert [reason.split(":")[0] for reason in judged["reasons"]] == ["TTFC p99"] and judged["notes"] == []


def test_too_few_streams_and_inconclusive_verdicts_cannot_agree():
    few = SyntheticSpec(transports=("ndjson",), streams=2, seed=4)
    found = analyse(*mixed_run(CLEAN, few)).summary["transports"]["ndjson"]["calibration"]
    assert not found["agree"] and "too few completed browser streams to compare (2 < 3)" in found["reasons"]
    run, streams, events = mixed_run(CLEAN, SyntheticSpec(transports=("ndjson",), streams=12, seed=2))
    run["harness"] = {"saturated": True, "reasons": ["event-loop lag p99 40 ms >= 25 ms"]}
    found = analyse(run, streams, events).summary["transports"]["ndjson"]["calibration"]
    assert not found["agree"]
    assert "the protocol and browser verdicts are inconclusive: nothing to compare" in found["reasons"]


def test_thresholds_come_from_pyproject(tmp_path: Path):
    assert load_calibration_thresholds(REPO / "pyproject.toml") == CalibrationThresholds()  # documented defaults
    assert load_calibration_thresholds(tmp_path / "missing.toml") == CalibrationThresholds()
    custom = tmp_path / "pyproject.toml"
    custom.write_text("[tool.stream_harness.calibration]\nttfc_p50_ms = 1\nsame_verdict = false\n")
    found = load_calibration_thresholds(custom)
    assert found.ttfc_p50_ms == 1.0 and found.same_verdict is False
    assert found.allowed_ms("ttfc_p50", 200.0) == pytest.approx(1.0 + 20.0)
    for bad, message in (
        ("ttfc_p50_ms = -1", "ttfc_p50_ms must be a number >= 0"),
        ("tfc_p50_ms = 1", "unknown key 'tfc_p50_ms'"),
        ("same_verdict = 1", "same_verdict must be true or false"),
    ):
        custom.write_text(f"[tool.stream_harness.calibration]\n{bad}\n")
        with pytest.raises(CalibrationThresholdsError, match=message):
            load_calibration_thresholds(custom)


def test_the_report_has_one_line_per_calibrated_transport():
    analysis = analyse(*mixed_run(CLEAN, SyntheticSpec(transports=("ndjson",), streams=12, seed=2)))
    text = render_report(analysis)
    (line,) = [row for row in text.splitlines() if AGREE_LINE in row]
    assert line.startswith("- :white_check_mark: ndjson: protocol clients agree with the browser (TTFC p50 browser")
    assert calibration_lines({"socketio": {"buffering": {}}}) == []
    assert np.isfinite(analysis.summary["transports"]["ndjson"]["calibration"]["gap_ms"]["p99"]["allowed"])
