"""Parity: NDJSON against Socket.io in one run, with the gate's statistics.

Runs are simulated (tests.support.synthetic) with known truth: identical
transports, a buffering fault or a slower first chunk on one of them,
failures, too few streams, a saturated load generator.
"""

from __future__ import annotations

from dataclasses import replace
from typing import get_type_hints

import pytest

from analysis.compare import RegressionThresholds, compare_runs
from analysis.metrics import Analysis, analyse
from analysis.parity import judge_parity
from analysis.report import render_compare_markdown, render_report
from stream_harness.contract.summary import Parity, ParityFailures, ParityMetric
from tests.support import REPO
from tests.support.synthetic import SyntheticSpec, synthetic_run

BASE = SyntheticSpec(streams=20, chunks=(300, 400), seed=11)


def analysed(spec: SyntheticSpec) -> Analysis:
    return analyse(*synthetic_run(spec))


def test_identical_transports_give_parity_with_every_metric_judged():
    parity = analysed(BASE).summary["parity"]
    assert parity["verdict"] == "parity" and parity["reasons"] == []
    assert set(parity["metrics"]) == {"ttfc", "gap_p99", "staleness_p99"}
    for metric in parity["metrics"].values():
        low, high = metric["ci"]
        assert low <= metric["difference"] <= high
        assert metric["difference"] == pytest.approx(metric["ndjson_median"] - metric["socketio_median"])
        assert metric["streams"] == {"ndjson": 20, "socketio": 20}
        assert not (metric["significant"] and metric["practical"]) and metric["result"] == "parity"
    assert parity["buffering"] == {"ndjson": "clean", "socketio": "clean", "result": "parity"}
    assert parity["endpoints"]["chat"]["verdict"] == "parity"


@pytest.mark.parametrize(
    ("faulty", "verdict", "first"),
    [
        ("ndjson", "ndjson_worse", "NDJSON buffering verdict buffered, Socket.io clean"),
        ("socketio", "ndjson_better", "Socket.io buffering verdict buffered, NDJSON clean"),
    ],
)
def test_a_buffering_fault_on_one_transport_decides_with_the_reason_first(faulty, verdict, first):
    parity = analysed(replace(BASE, transport_overrides={faulty: {"buffer_ms": 100}})).summary["parity"]
    assert parity["verdict"] == verdict
    assert parity["reasons"][0].startswith(first), parity["reasons"]
    assert parity["buffering"]["result"] == verdict
    gap = parity["metrics"]["gap_p99"]
    assert gap["significant"] and gap["practical"] and gap["result"] == verdict


def test_a_slower_first_chunk_is_worse_only_beyond_the_practical_threshold():
    slow = replace(BASE, transport_overrides={"ndjson": {"first_chunk_delay_ms": 100.0}})
    ttfc = analysed(slow).summary["parity"]["metrics"]["ttfc"]
    assert ttfc["result"] == "ndjson_worse" and ttfc["difference"] == pytest.approx(97, abs=5)
    low, high = ttfc["ci"]
    assert 90 < low <= high < 110
    # the same shift under a 150 ms practical threshold: significant, not practical, parity
    lenient = RegressionThresholds(ttfc_ms=150.0)
    analysis = analysed(slow)
    judged = judge_parity(analysis.summary["transports"], analysis.streams, lenient)
    assert judged is not None
    metric = judged["metrics"]["ttfc"]
    assert metric["significant"] and not metric["practical"] and metric["result"] == "parity"


def test_more_failures_on_ndjson_are_worse_when_fishers_test_agrees():
    parity = analysed(replace(BASE, streams=40, transport_overrides={"ndjson": {"failure_share": 0.5}})).summary[
        "parity"
    ]
    assert parity["verdict"] == "ndjson_worse"
    failures = parity["failures"]
    assert failures["result"] == "ndjson_worse" and failures["ndjson_rate"] > 0.3 and failures["socketio_rate"] == 0
    assert failures["p_value"] < 0.01
    assert any(reason.startswith("failed streams: NDJSON") for reason in parity["reasons"])


def test_too_few_streams_is_inconclusive_and_says_what_was_not_judged():
    parity = analysed(replace(BASE, streams=3)).summary["parity"]
    assert parity["verdict"] == "inconclusive"
    assert parity["metrics"] == {}
    assert any("too few streams" in reason for reason in parity["reasons"])


def test_a_saturated_load_generator_is_inconclusive_even_with_a_difference():
    spec = replace(BASE, saturated=True, transport_overrides={"ndjson": {"first_chunk_delay_ms": 100.0}})
    parity = analysed(spec).summary["parity"]
    assert parity["verdict"] == "inconclusive"
    assert parity["reasons"][0].startswith("the load generator was saturated")


def test_a_run_with_one_transport_has_no_parity_and_the_report_says_so():
    analysis = analysed(replace(BASE, transports=("ndjson",)))
    assert "parity" not in analysis.summary
    lines = render_report(analysis).splitlines()
    assert lines[2] == "**Parity (NDJSON vs Socket.io): not judged** (ndjson ran; parity needs both)"


def test_parity_is_the_first_line_of_the_report_and_of_the_pr_comment():
    base = analysed(BASE)
    current = analysed(replace(BASE, seed=12, transport_overrides={"ndjson": {"buffer_ms": 100}}))
    report = render_report(current).splitlines()
    assert report[2].startswith("**Parity (NDJSON vs Socket.io): ndjson_worse**: NDJSON buffering verdict buffered")
    assert "## Parity: NDJSON vs Socket.io" in report
    markdown = render_compare_markdown(compare_runs(base, current), base, current).splitlines()
    assert markdown[0].startswith("## Stream latency:")
    assert markdown[2].startswith(
        "**Parity (NDJSON vs Socket.io): ndjson_worse** (baseline: parity): NDJSON buffering verdict buffered"
    )


def test_parity_per_endpoint_names_the_endpoint_in_the_reasons():
    spec = replace(BASE, endpoints=("chat", "agent"), transport_overrides={"ndjson": {"buffer_ms": 100}})
    parity = analysed(spec).summary["parity"]
    assert set(parity["endpoints"]) == {"agent", "chat"}
    assert parity["verdict"] == "ndjson_worse"
    assert parity["reasons"][0].split(": ", 1)[0] in {"agent", "chat"}


def test_the_results_document_names_every_key_of_the_parity_object():
    text = (REPO / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    section = text[text.index("### `parity`") : text.index("## `capacity.json`")]
    for typed in (Parity, ParityMetric, ParityFailures):
        for key in get_type_hints(typed):
            assert f"`{key}`" in section, (typed.__name__, key)
