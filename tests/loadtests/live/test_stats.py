"""Live stream statistics: mergeable histograms, incremental tracking, live verdicts.

The Streams tab must show the numbers the post-run analysis will report, live
and merged over workers.  These tests pin that down without a network:

- a log histogram merged from parts equals the histogram of the concatenated
  samples, and its quantiles are numpy's within the 1% bucket precision;
- streams fed to the tracker a few events at a time (as in-flight polls see
  them) give the buffering detector's evidence and verdict that
  ``analysis.buffering`` computes from the raw frames after the run;
- worker deltas shipped through Locust's msgpack wire format merge into what
  one process would have seen; reset starts from zero.
"""

from __future__ import annotations

import dataclasses
import math
import random

import msgpack
import numpy as np
import pandas as pd
import pytest

from analysis.buffering import Evidence, classify
from analysis.histogram import GAMMA, LogHistogram
from loadtests.live.stats import BIN_S, LiveStats, Snapshot, live_evidence, verdict
from loadtests.live.tracker import StreamTracker
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import EventKind
from stream_harness.contract.schema import CHUNK
from tests.support.exact_reference import exact_evidence
from tests.support.synthetic import SyntheticSpec, synthetic_run

REL = GAMMA - 1.0  # one bucket


# --------------------------------------------------------------------------- histogram


def over_the_wire(data: object) -> object:
    """What Locust's worker -> master messages do to a payload (locust/rpc/protocol.py:
    msgpack, str keys, ``strict_map_key=False``).  Not imported from Locust: importing
    it monkey-patches this whole test process."""
    return msgpack.unpackb(msgpack.packb(data, use_bin_type=True), raw=False, strict_map_key=False)


def samples(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.lognormal(1.0, 1.2, 4000),  # gaps: ms, long tail
            np.zeros(300),  # coalesced chunks: exactly 0
            rng.uniform(0.0, 0.0005, 50),  # below the clock's resolution
            rng.uniform(80.0, 120.0, 500),  # a buffer's flush interval
        ]
    )


def hist_of(values: np.ndarray) -> LogHistogram:
    h = LogHistogram()
    h.add_array(values)
    return h


def test_merge_equals_histogram_of_concatenation() -> None:
    values = samples(1)
    parts = np.array_split(values, 7)
    merged = LogHistogram()
    for part in parts:
        merged.merge(hist_of(part))
    whole = hist_of(values)
    assert merged.buckets == whole.buckets
    assert merged.sums.keys() == whole.sums.keys()
    for key, total in whole.sums.items():
        assert merged.sums[key] == pytest.approx(total, rel=1e-12)
    assert merged.zeros == whole.zeros == 350
    assert merged.count == whole.count == values.size
    assert (merged.min, merged.max) == (whole.min, whole.max) == (values.min(), values.max())
    assert merged.total == pytest.approx(values.sum(), rel=1e-12)
    for q in (0.0, 0.5, 0.9, 0.99, 0.999, 1.0):
        assert merged.quantile(q) == pytest.approx(whole.quantile(q), rel=1e-12)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99, 0.999])
def test_quantiles_within_one_bucket_of_numpy(seed: int, q: float) -> None:
    values = samples(seed)
    got = hist_of(values).quantile(q)
    want = float(np.percentile(values, q * 100))
    assert got == pytest.approx(want, rel=REL, abs=1e-3)


def test_extremes_are_exact_and_nan_means_not_measured() -> None:
    h = hist_of(np.array([3.0, np.nan, 7.25, 1000.5]))
    assert h.count == 3
    assert h.quantile(0.0) == 3.0 and h.quantile(1.0) == 1000.5
    assert h.summary()["max"] == 1000.5


def test_empty_histogram_reports_nothing() -> None:
    h = LogHistogram()
    assert h.quantile(0.5) is None and h.mean is None
    assert h.summary() == {"p50": None, "p90": None, "p95": None, "p99": None, "p999": None, "max": None}


def test_small_integers_are_exact() -> None:
    h = hist_of(np.array([1, 1, 2, 3, 3, 3, 17, 40], dtype=float))
    assert [h.quantile(q) for q in (0.0, 0.25, 0.5, 0.75, 1.0)] == [
        np.percentile([1, 1, 2, 3, 3, 3, 17, 40], p) for p in (0, 25, 50, 75, 100)
    ]


def test_weights_repeat_values() -> None:
    weighted = LogHistogram()
    weighted.add_array([1.0, 5.0, 0.0], weights=[3, 2, 4])
    plain = hist_of(np.array([1.0] * 3 + [5.0] * 2 + [0.0] * 4))
    assert weighted.buckets == plain.buckets and weighted.sums == plain.sums
    assert (weighted.zeros, weighted.count, weighted.total) == (plain.zeros, plain.count, plain.total)


def test_wire_round_trip_through_locust_messages() -> None:
    h = hist_of(samples(4))
    back = LogHistogram.from_dict(over_the_wire({"h": h.to_dict()})["h"])
    assert back.buckets == h.buckets
    assert back.summary() == h.summary()


# --------------------------------------------------------------------------- tracker


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """A run with a 100 ms buffer on NDJSON only, plus the analysis's own evidence."""
    spec = SyntheticSpec(streams=8, chunks=(300, 400), transport_overrides={"ndjson": {"buffer_ms": 100.0}}, seed=3)
    _run, streams, events = synthetic_run(spec)
    expected = [
        exact_evidence(streams, events, (streams["transport"] == transport).to_numpy(dtype=bool))
        for transport in ("ndjson", "socketio")
    ]
    return streams, events, expected


def fresh_records(synthetic) -> list[tuple[StreamRecord, pd.DataFrame]]:
    """Empty records for the synthetic streams, each with the events a user would add."""
    streams, events, _ = synthetic
    out = []
    for row in streams.itertuples():
        record = StreamRecord(
            transport=row.transport,
            endpoint=row.endpoint,
            stream_id=row.stream_id,
            started_at=row.started_at,
            time_to_headers_ms=row.time_to_headers_ms,
            status=row.status,
            n_reads=row.n_reads,
            content_encoding=row.content_encoding or "",
        )
        out.append((record, events[events["stream_key"] == row.stream_key]))
    return out


def feed(
    tracker: StreamTracker, record: StreamRecord, events: pd.DataFrame, rng: random.Random, on_poll=lambda: None
) -> None:
    """Replay one stream as a load user fills it, polling at random points in between."""
    tracker.started(record)
    columns = [events[c].to_numpy() for c in ("kind", "t_ms", "read", "seq", "emit_ms")]
    i, n = 0, len(events)
    while i < n:
        j = min(n, i + rng.randint(1, 120))
        for x in range(i, j):
            record.add_event(
                int(columns[0][x]), float(columns[1][x]), int(columns[2][x]), int(columns[3][x]), float(columns[4][x])
            )
        tracker.poll()
        on_poll()
        i = j
    tracker.finished(record)


def test_live_evidence_matches_the_post_run_detector(synthetic) -> None:
    records, expected = fresh_records(synthetic), synthetic[2]
    tracker = StreamTracker()
    rng = random.Random(7)
    for record, events in records:
        feed(tracker, record, events, rng)
    live = LiveStats()
    live.absorb("local", tracker.take())
    for group, transport in enumerate(("ndjson", "socketio")):
        mine = live_evidence(live.total.rows[(transport, "chat", "protocol")])
        want = expected[group]
        counted = {"coalesced_share", "stale_share", "staleness_max_ms"}  # exact, not bucketed
        for field in dataclasses.fields(Evidence):  # every piece of evidence, new ones too
            got, exp = getattr(mine, field.name), getattr(want, field.name)
            if not isinstance(exp, float):
                assert got == exp, field.name
            elif field.name in counted:
                assert got == pytest.approx(exp, abs=1e-12), field.name
            elif math.isnan(exp):
                assert math.isnan(got), field.name
            else:
                assert got == pytest.approx(exp, rel=2 * REL, abs=1e-3), field.name
        assert classify(mine).verdict == classify(want).verdict
    assert classify(expected[0]).verdict == "buffered"
    assert classify(expected[1]).verdict == "clean"


def test_counts_follow_the_stream_lifecycle() -> None:
    record = StreamRecord(
        transport="ndjson",
        endpoint="chat",
        stream_id="x",
        started_at=1000.0,
        time_to_headers_ms=2.0,
        status="failed",
        error="disconnect",
        n_reads=5,
    )
    tracker = StreamTracker()
    tracker.started(record)
    assert tracker.running() == {("ndjson", "chat", "protocol"): 1}
    record.add_event(CHUNK, 10.0, 0)
    record.add_event(CHUNK, 10.0, 0)
    record.add_event(EventKind.STATUS_UPDATE, 12.0, 1)
    record.add_event(CHUNK, 15.0, 2)
    tracker.poll()
    agg = tracker.delta.rows[("ndjson", "chat", "protocol")]
    assert [agg.counts[n] for n in ("started", "completed", "failed", "events", "chunks")] == [1, 0, 0, 4, 3]
    assert agg.hist["ttfc"].quantile(0.5) == 10.0
    assert agg.hist["gap"].count == 2 and agg.counts["coalesced"] == 1
    record.add_event(CHUNK, 15.0, 2)  # same read as the previous poll's last event
    tracker.finished(record)
    assert tracker.running() == {}
    assert (agg.counts["failed"], agg.errors, agg.counts["reads"]) == (1, {"disconnect": 1}, 5)
    # reads 0, 1, 2 completed 2, 1 and 2 events: the open read spanned the poll
    assert sorted(agg.hist["events_per_read"].quantile(q) for q in (0.0, 0.5, 1.0)) == [1.0, 2.0, 2.0]
    assert agg.hist["events_per_read"].count == 3
    assert sum(b.chunks for b in agg.bins.values()) == 4


def test_a_stream_never_announced_still_counts() -> None:
    record = StreamRecord(transport="socketio", endpoint="chat", stream_id="y", status="completed")
    tracker = StreamTracker()
    tracker.finished(record)
    agg = tracker.take().rows[("socketio", "chat", "protocol")]
    assert (agg.counts["started"], agg.counts["completed"]) == (1, 1)


def test_worker_deltas_over_the_wire_merge_to_the_single_process_result(synthetic) -> None:
    records = fresh_records(synthetic)
    rng = random.Random(11)
    single, workers = StreamTracker(), [StreamTracker(), StreamTracker()]
    master = LiveStats()
    reports: list[tuple[str, object]] = []

    def ship(node: int) -> None:
        reports.append((f"w{node}", over_the_wire({"delta": workers[node].take().to_list()})))

    for index, (record, events) in enumerate(records):
        twin = StreamRecord(
            **{
                f: getattr(record, f)
                for f in ("transport", "endpoint", "stream_id", "started_at", "time_to_headers_ms", "status", "n_reads")
            }
        )
        node = index % 2
        feed(
            workers[node],
            record,
            events,
            random.Random(index),
            on_poll=lambda node=node: rng.random() < 0.2 and ship(node),
        )
        feed(single, twin, events, random.Random(index))
    ship(0), ship(1)
    for node, data in reports:
        master.absorb(node, Snapshot.from_list(data["delta"]))
    alone = LiveStats()
    alone.absorb("local", single.take())
    assert master.keys() == alone.keys()
    for key in alone.keys():  # noqa: SIM118 - LiveStats.keys(), not a dict
        a, b = master.total.rows[key].to_dict(), alone.total.rows[key].to_dict()
        for name in ("ttfc", "gap", "staleness", "events_per_read", "burst_size", "burst_lead"):
            assert a["hist"][name]["k"] == b["hist"][name]["k"] and a["hist"][name]["c"] == b["hist"][name]["c"], name
        for name in ("started", "completed", "events", "chunks", "coalesced", "stale"):
            assert a["counts"][name] == b["counts"][name], name


def test_reset_starts_totals_afresh_but_keeps_running_gauges(synthetic) -> None:
    record, events = fresh_records(synthetic)[0]
    tracker = StreamTracker()
    feed(tracker, record, events, random.Random(1))
    live = LiveStats()
    live.absorb(
        "w1",
        tracker.take(),
        running={("ndjson", "chat", "protocol"): 3},
        harness={"saturated": False, "cpu_percent_max": 10.0},
    )
    assert live.view()["rows"][0]["streams"]["completed"] == 1
    live.reset()
    report = live.view()
    (row,) = report["rows"]  # still listed: streams are running there
    assert row["streams"] == {"running": 3, "started": 0, "completed": 0, "failed": 0, "cancelled": 0, "errors": {}}
    assert row["ttfc_ms"]["p50"] is None and report["series"] == {}
    assert row["buffering"]["verdict"] == "inconclusive"  # no chunks yet


def test_saturated_harness_makes_every_verdict_inconclusive(synthetic) -> None:
    tracker = StreamTracker()
    buffered = [(r, e) for r, e in fresh_records(synthetic) if r.transport == "ndjson"]
    for record, events in buffered[:4]:
        feed(tracker, record, events, random.Random(2))
    agg = tracker.take().rows[("ndjson", "chat", "protocol")]
    assert verdict(agg, {"saturated": False}).verdict == "buffered"
    judged = verdict(agg, {"saturated": True, "loop_lag_ms_p99": 40.0})
    assert judged.verdict == "inconclusive"
    assert "saturated" in judged.reasons[0]


def test_series_has_one_point_per_bin_until_now() -> None:
    now = [10_000.0]
    live = LiveStats(clock=lambda: now[0])
    record = StreamRecord(
        transport="ndjson", endpoint="chat", stream_id="z", started_at=10_000.0 - 7.0, status="completed"
    )
    tracker = StreamTracker()
    tracker.started(record)
    for i in range(40):  # one chunk every 100 ms, from 7 s ago to 3 s ago
        record.add_event(CHUNK, i * 100.0, i)
    tracker.finished(record)
    live.absorb("local", tracker.take())
    points = live.series()["ndjson"]
    assert [p["t"] for p in points] == list(range(9_992, 10_000, BIN_S))
    assert sum(p["chunks_per_s"] * BIN_S for p in points) == 40
    assert all(p["gap_p99_ms"] == pytest.approx(100.0, rel=REL) for p in points if p["chunks_per_s"])
    assert points[-1]["gap_p99_ms"] is None  # the last 2 s had no chunks


def test_no_verdict_before_a_stream_has_finished(synthetic) -> None:
    tracker = StreamTracker()
    record, events = next((r, e) for r, e in fresh_records(synthetic) if r.transport == "ndjson")
    tracker.started(record)
    for row in events.itertuples():
        record.add_event(int(row.kind), float(row.t_ms), int(row.read), int(row.seq), float(row.emit_ms))
    tracker.poll()
    agg = tracker.delta.rows[("ndjson", "chat", "protocol")]
    assert agg.counts["chunks"] >= 50
    judged = verdict(agg, {"saturated": False})
    assert judged.verdict == "inconclusive" and "finished" in judged.reasons[0]
    tracker.finished(record)
    assert verdict(agg, {"saturated": False}).verdict == "buffered"
