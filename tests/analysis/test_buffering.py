"""The buffering detector on simulated arrival series (tests.support.synthetic).

Clean streams (steady, Poisson and LLM-like bursty pacing, with a loaded or
heavily loaded client that now and then reads 2-3 lines at once) must be
called clean every time; every buffering mode (timer windows of 50 ms and
more, N-chunk buffers, a gzip layer that flushes full blocks, a buffering
proxy) must be called buffered, with and without server emit times.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from analysis.buffering import (
    BURST_LEAD_MIN_MS,
    COALESCED_SHARE_MIN,
    MIN_CHUNKS,
    STALE_SHARE_MIN,
    STALENESS_P99_MIN_MS,
    Evidence,
    classify,
)
from analysis.metrics import analyse
from tests.support.synthetic import SyntheticSpec, synthetic_run

BASE = SyntheticSpec(streams=8, chunks=(500, 700), rate=333.0)


def verdicts(spec: SyntheticSpec) -> dict[str, dict]:
    run, streams, events = synthetic_run(spec)
    summary = analyse(run, streams, events).summary
    return {name: item["buffering"] for name, item in summary["transports"].items()}


@pytest.mark.parametrize("pacing", ["steady", "poisson", "llm"])
def test_twenty_clean_runs_of_each_pacing_raise_no_false_alarm(pacing):
    for seed in range(20):
        noise = "heavy" if seed % 2 else "loaded"
        spec = replace(BASE, pacing=pacing, noise=noise, seed=seed, emit_times=seed % 4 < 2)
        for transport, buffering in verdicts(spec).items():
            assert buffering["verdict"] == "clean", (seed, noise, transport, buffering)


@pytest.mark.parametrize("rate", [67.0, 333.0])
def test_clean_streams_at_the_protocols_rates_are_clean(rate):
    found = verdicts(replace(BASE, rate=rate, pacing="llm", seed=99))
    assert {item["verdict"] for item in found.values()} == {"clean"}
    reasons = found["ndjson"]["reasons"]
    assert any("one at a time" in reason for reason in reasons), reasons
    assert any("staleness p99" in reason for reason in reasons), reasons


BUFFERING_MODES = {
    "window 50 ms": dict(buffer_ms=50),
    "window 100 ms": dict(buffer_ms=100),
    "window 200 ms": dict(buffer_ms=200),
    "window 50 ms, no emit times, bursty pacing, heavy noise": dict(
        buffer_ms=50, emit_times=False, pacing="llm", noise="heavy"
    ),
    "window 100 ms, no emit times": dict(buffer_ms=100, emit_times=False),
    "window 50 ms at 67 chunks/s, no emit times": dict(buffer_ms=50, rate=67.0, emit_times=False),
    # a steady 20/s would wait exactly one window each: a constant delay, invisible
    "window 50 ms at 20 chunks/s, Poisson (batches of ~1: staleness only)": dict(
        buffer_ms=50, rate=20.0, chunks=(150, 200), pacing="poisson"
    ),
    "every 10 chunks": dict(buffer_chunks=10, emit_times=False),
    "every 20 chunks": dict(buffer_chunks=20),
    "every 5 chunks at 67 chunks/s": dict(buffer_chunks=5, rate=67.0, emit_times=False),
    "gzip, 32 KB blocks": dict(gzip_block_bytes=32768, emit_times=False),
    "gzip, 32 KB blocks, with emit times": dict(gzip_block_bytes=32768),
    "buffering proxy, 8 KB": dict(proxy_buffer_bytes=8192, emit_times=False),
    "buffering proxy, 4 KB, bursty pacing": dict(proxy_buffer_bytes=4096, pacing="llm", emit_times=False),
}


@pytest.mark.parametrize("mode", list(BUFFERING_MODES))
def test_each_buffering_mode_is_called_buffered(mode):
    spec = replace(BASE, seed=7, transports=("ndjson",), **BUFFERING_MODES[mode])
    buffering = verdicts(spec)["ndjson"]
    assert buffering["verdict"] == "buffered", buffering


def test_batching_reason_names_reads_rate_and_flush_interval():
    buffering = verdicts(replace(BASE, buffer_ms=100, emit_times=False, seed=3))["ndjson"]
    first = buffering["reasons"][0]
    assert "per socket read at" in first and "chunks/s (clean streams: ~1)" in first
    assert any("100 ms of silence" in reason for reason in buffering["reasons"])
    assert any("no server emit times" in reason for reason in buffering["reasons"])


def test_staleness_reason_says_how_long_chunks_wait():
    buffering = verdicts(replace(BASE, buffer_ms=200, seed=3))["ndjson"]
    staleness = [r for r in buffering["reasons"] if r.startswith("staleness p99")]
    assert staleness and "wait 20 ms or more" in staleness[0], buffering["reasons"]
    assert buffering["evidence"]["staleness_p99_ms"] == pytest.approx(200, abs=25)


def test_gzip_reason_names_the_encoding_and_the_late_first_chunk():
    buffering = verdicts(replace(BASE, gzip_block_bytes=32768, seed=3))["ndjson"]
    text = " ".join(buffering["reasons"])
    assert "gzip-encoded" in text, buffering["reasons"]
    assert "the headers arrive only with the first chunk" in text, buffering["reasons"]


def test_a_saturated_harness_gives_inconclusive_even_when_buffered():
    for extra in ({}, {"buffer_ms": 100}):
        buffering = verdicts(replace(BASE, saturated=True, seed=5, **extra))["ndjson"]
        assert buffering["verdict"] == "inconclusive"
        assert "saturated" in buffering["reasons"][0]


def test_too_few_chunks_give_inconclusive():
    buffering = verdicts(replace(BASE, streams=1, chunks=(20, 20), seed=1))["ndjson"]
    assert buffering["verdict"] == "inconclusive"
    assert f"at least {MIN_CHUNKS}" in buffering["reasons"][0]


# --------------------------------------------------------------------------- thresholds


def evidence(**changes: float) -> Evidence:
    clean = Evidence(
        streams=10,
        chunks=5000,
        chunk_rate_per_s=333.0,
        coalesced_share=0.02,
        chunks_per_burst=1.0,
        burst_lead_ms=3.0,
        first_burst_chunks=1.0,
        headers_to_first_chunk_ms=3.0,
        staleness_p99_ms=2.0,
        staleness_max_ms=30.0,
        stale_share=0.001,
    )
    return replace(clean, **changes)


def test_thresholds_of_the_batching_rule():
    at = dict(coalesced_share=COALESCED_SHARE_MIN, burst_lead_ms=BURST_LEAD_MIN_MS, chunks_per_burst=7.0)
    assert classify(evidence(**at)).verdict == "buffered"
    assert classify(evidence(**{**at, "coalesced_share": 0.49})).verdict == "clean"
    below = classify(evidence(**{**at, "burst_lead_ms": 15.0}))
    assert below.verdict == "clean"
    assert "below the 20 ms a reader notices" in below.reasons[0]


def test_thresholds_of_the_staleness_rule():
    at = dict(staleness_p99_ms=STALENESS_P99_MIN_MS, stale_share=STALE_SHARE_MIN)
    assert classify(evidence(**at)).verdict == "buffered"
    assert classify(evidence(**{**at, "stale_share": 0.19})).verdict == "clean"
    assert classify(evidence(**{**at, "staleness_p99_ms": 24.0})).verdict == "clean"


def test_without_emit_times_only_batching_decides():
    no_emit = dict(staleness_p99_ms=math.nan, staleness_max_ms=math.nan, stale_share=math.nan)
    assert classify(evidence(**no_emit)).verdict == "clean"
    assert (
        classify(evidence(**no_emit, coalesced_share=0.9, burst_lead_ms=50.0, chunks_per_burst=10.0)).verdict
        == "buffered"
    )


def test_verdict_json_carries_reasons_and_evidence():
    payload = classify(evidence()).as_json()
    assert payload["verdict"] == "clean" and payload["reasons"]
    assert payload["evidence"]["chunks"] == 5000 and payload["evidence"]["encodings"] == []


def test_with_no_gap_to_judge_no_reason_prints_nan():
    no_rate = dict(chunk_rate_per_s=math.nan, staleness_p99_ms=math.nan, staleness_max_ms=math.nan)
    one_chunk_each = classify(evidence(**no_rate, coalesced_share=math.nan, stale_share=math.nan))
    assert one_chunk_each.verdict == "inconclusive" and "no gap between chunks" in one_chunk_each.reasons[0]
    for verdict in (one_chunk_each, classify(evidence(**no_rate, stale_share=math.nan))):
        assert not any("nan" in reason for reason in verdict.reasons), verdict.reasons
