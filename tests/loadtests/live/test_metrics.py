"""The Prometheus exposition of the live stream statistics, without a network.

The histogram buckets must be exact cumulative counts of the live 1 % log
histograms (bounds on bucket edges), in seconds; the counters and gauges must
carry the same numbers as the live totals the Streams tab shows; the view
reads a live feed the way the web UI does.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from analysis.histogram import GAMMA, LogHistogram
from loadtests.live.metrics import BOUND_KEYS, BOUND_LABELS, cumulative_buckets, make_registry, metrics_view
from loadtests.live.stats import LiveStats
from loadtests.live.tracker import StreamTracker
from tests.loadtests.live.test_stats import feed, fresh_records, samples, synthetic  # noqa: F401 - fixture


def test_bounds_are_bucket_edges_in_seconds_from_sub_ms_to_minutes() -> None:
    assert (np.diff(BOUND_KEYS) == 10).all()
    bounds_s = [float(label) for label in BOUND_LABELS]
    assert bounds_s[0] <= 0.1e-3 and bounds_s[-1] >= 300.0
    assert bounds_s == pytest.approx([GAMMA ** float(k) / 1000.0 for k in BOUND_KEYS], rel=1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cumulative_counts_are_exact(seed: int) -> None:
    values = samples(seed)  # ms: zeros, sub-clock values, a long tail, a cluster
    hist = LogHistogram()
    hist.add_array(values)
    buckets = cumulative_buckets(hist)
    assert buckets[-1] == ("+Inf", values.size)
    for (label, count), key in zip(buckets, BOUND_KEYS):
        bound_ms = GAMMA ** float(key)
        assert count == int((values < bound_ms).sum()), label
    counts = [count for _label, count in buckets]
    assert counts == sorted(counts)


def test_empty_histogram_has_zero_buckets() -> None:
    buckets = cumulative_buckets(LogHistogram())
    assert {count for _label, count in buckets} == {0}


class Feed:
    """A LiveFeed's surface as metrics_view uses it."""

    def __init__(self, live: LiveStats) -> None:
        self.live = live
        self.flushed = 0

    def flush_local(self) -> None:
        self.flushed += 1

    def forget_gone_workers(self) -> None:
        pass


def test_exposition_carries_the_live_totals(synthetic) -> None:  # noqa: F811 - pytest fixture
    tracker = StreamTracker()
    rng = random.Random(3)
    for record, events in fresh_records(synthetic):
        feed(tracker, record, events, rng)
    live = LiveStats()
    live.absorb("local", tracker.take(), running={("ndjson", "chat", "protocol"): 2}, harness={"saturated": False})
    source = Feed(live)
    text = generate_latest(make_registry(lambda: metrics_view(source))).decode()
    assert source.flushed == 1  # in-flight streams are read in before a scrape
    parsed = {family.name: family for family in text_string_to_metric_families(text)}

    def samples_of(name: str, suffix: str = "", **labels: str) -> list[float]:
        return [
            s.value
            for s in parsed[name].samples
            if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    for transport in ("ndjson", "socketio"):
        agg = live.total.rows[(transport, "chat", "protocol")]
        assert samples_of("stream_harness_ttfc_seconds", "_count", transport=transport) == [agg.hist["ttfc"].count]
        assert samples_of("stream_harness_chunk_gap_seconds", "_sum", transport=transport) == [
            pytest.approx(agg.hist["gap"].total / 1000.0)
        ]
        assert samples_of("stream_harness_streams_started", "_total", transport=transport) == [agg.counts["started"]]
        assert samples_of("stream_harness_streams", "_total", transport=transport, status="completed") == [
            agg.counts["completed"]
        ]
        assert samples_of("stream_harness_chunks_received", "_total", transport=transport) == [agg.counts["chunks"]]
        verdicts = {
            s.labels["verdict"]: s.value
            for s in parsed["stream_harness_buffering_verdict"].samples
            if s.labels["transport"] == transport
        }
        assert sorted(verdicts.values()) == [0.0, 0.0, 1.0]
    # the synthetic run buffers NDJSON and leaves Socket.io clean (test_stats checks the detector)
    assert samples_of("stream_harness_buffering_verdict", transport="ndjson", verdict="buffered") == [1.0]
    assert samples_of("stream_harness_buffering_verdict", transport="socketio", verdict="clean") == [1.0]
    assert samples_of("stream_harness_streams_running", transport="ndjson") == [2.0]
    assert samples_of("stream_harness_load_generator_saturated") == [0.0]
