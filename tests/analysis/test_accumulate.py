"""The bounded-memory reduction: batch by batch equals all at once, and matches the exact reference."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from analysis.accumulate import RunAccumulator
from analysis.buffering import Evidence, classify
from analysis.histogram import GAMMA
from analysis.metrics import analyse
from analysis.summary import build_summary
from tests.support.exact_reference import exact_evidence, exact_latency, exact_pooled
from tests.support.synthetic import SyntheticSpec, synthetic_run

ONE_BUCKET = GAMMA - 1.0
SPEC = SyntheticSpec(
    streams=12,
    chunks=(300, 600),
    endpoints=("chat", "agent"),
    failure_share=0.2,
    transport_overrides={"socketio": {"buffer_ms": 80.0}},
    seed=21,
)


@pytest.fixture(scope="module")
def run() -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    return synthetic_run(SPEC)


def fold(streams: pd.DataFrame, events: pd.DataFrame, batches: list[np.ndarray], **kwargs) -> tuple:
    accumulator = RunAccumulator(**kwargs)
    parts = []
    for keys in batches:
        mine = events[np.isin(events["stream_key"].to_numpy(), keys)]
        parts.append(accumulator.add_batch(streams.iloc[keys], mine))
    filled = pd.concat(parts, ignore_index=True).sort_values("stream_key", ignore_index=True)
    return filled, accumulator


@pytest.mark.parametrize("n_batches", [2, 5, 12])
def test_folding_in_batches_equals_folding_at_once(run, n_batches: int):
    _, streams, events = run
    keys = np.arange(len(streams))
    at_once, whole = fold(streams, events, [keys])
    batched, parts = fold(streams, events, np.array_split(keys, n_batches))
    pd.testing.assert_frame_equal(batched, at_once)
    assert whole.aggregates.keys() == parts.aggregates.keys()
    for key, agg in whole.aggregates.items():
        other = parts.aggregates[key]
        assert agg.counts == other.counts and agg.errors == other.errors and agg.encodings == other.encodings
        for name, histogram in agg.hist.items():
            twin = other.hist[name]
            assert (histogram.buckets, histogram.zeros, histogram.count) == (twin.buckets, twin.zeros, twin.count), name
            for bucket, total in histogram.sums.items():
                assert twin.sums[bucket] == pytest.approx(total, rel=1e-12), name


def test_pooled_percentiles_are_within_one_bucket_of_exact(run):
    meta, streams, events = run
    summary = analyse(meta, streams, events).summary
    for transport, item in summary["transports"].items():
        mask = (streams["transport"] == transport).to_numpy(dtype=bool)
        exact = exact_pooled(streams, events, mask)
        for key in ("gap_ms", "staleness_ms", "jitter_ms"):
            for pct, want in exact[key].items():
                got = item[key][pct]  # type: ignore[literal-required]
                if pct == "max":
                    assert got == want, (transport, key, pct)
                else:
                    assert got == pytest.approx(want, rel=ONE_BUCKET, abs=1e-9), (transport, key, pct)


def test_per_stream_latencies_are_exact(run):
    meta, streams, events = run
    analysis = analyse(meta, streams, events)
    for transport, item in analysis.summary["transports"].items():
        mine = analysis.streams[(analysis.streams["transport"] == transport).to_numpy(dtype=bool)]
        for key in ("ttfc_ms", "time_to_headers_ms", "first_event_ms"):
            assert item[key] == exact_latency(mine[key].to_numpy(dtype=np.float64)), key  # type: ignore[literal-required]


def test_verdicts_and_evidence_match_the_exact_detector(run):
    meta, streams, events = run
    analysis = analyse(meta, streams, events)
    filled = analysis.streams
    for transport, item in analysis.summary["transports"].items():
        want = exact_evidence(filled, events, (filled["transport"] == transport).to_numpy(dtype=bool))
        got = item["buffering"]["evidence"]
        assert item["buffering"]["verdict"] == classify(want).verdict
        for field in dataclasses.fields(Evidence):
            expected, actual = getattr(want, field.name), got[field.name]  # type: ignore[literal-required]
            if isinstance(expected, tuple):
                assert tuple(actual) == expected, field.name
            elif isinstance(expected, float) and math.isnan(expected):
                assert actual is None, field.name
            else:
                assert actual == pytest.approx(expected, rel=ONE_BUCKET, abs=1e-9), field.name
    verdicts = {t: item["buffering"]["verdict"] for t, item in analysis.summary["transports"].items()}
    assert verdicts == {"ndjson": "clean", "socketio": "buffered"}


def test_warmup_streams_are_kept_flagged_and_left_out(run):
    meta, streams, events = run
    cut = float(np.median(streams["started_at"]))
    filled, accumulator = fold(streams, events, [np.arange(len(streams))], warmup_until=cut)
    warm = (filled["started_at"] < cut).to_numpy()
    assert filled["warmup"].tolist() == warm.tolist() and warm.any() and not warm.all()
    summary = build_summary(meta, filled, accumulator.aggregates)
    counted = {t: item["streams"]["started"] for t, item in summary["transports"].items()}
    warmed = {t: item["streams"].get("warmup", 0) for t, item in summary["transports"].items()}
    for transport in counted:
        in_transport = (filled["transport"] == transport).to_numpy()
        assert counted[transport] == int((in_transport & ~warm).sum())
        assert warmed[transport] == int((in_transport & warm).sum())
        mine = filled[in_transport & ~warm]
        assert summary["transports"][transport]["ttfc_ms"] == exact_latency(mine["ttfc_ms"].to_numpy(dtype=np.float64))


def test_staleness_is_withheld_when_the_clocks_agree_less_than_it_measures(run):
    meta, streams, events = run
    meta = {**meta, "clock": {"local": {"offset_ms": 3.0, "uncertainty_ms": 10_000.0}}}
    item = analyse(meta, streams, events).summary["transports"]["ndjson"]
    assert item["staleness_ms"] is None and item["jitter_ms"] is None
    assert "unreliable" in item["staleness_note"]
    precise = {**meta, "clock": {"local": {"offset_ms": 3.0, "uncertainty_ms": 0.01}}}
    assert analyse(precise, streams, events).summary["transports"]["ndjson"]["staleness_ms"] is not None
