"""Metrics as docs/RESULTS.md defines them, on arrival series small enough to compute by hand.

Stream A (ndjson/chat, emit times known, headers at 2 ms):

    event          t_ms  read  emit_ms  transit  staleness  gap   jitter
    status_update   3     0     2.5
    chunk          10     1     9         1        0
    chunk          20     2    18         2        1        10     1
    chunk          20     2    19         1        0         0     1
    chunk          50     3    30        20       19        30    19
    end            51     4    50.5

Stream B (ndjson/chat) failed with an HTTP status and no events.
Stream C (socketio/chat, no emit times): chunks at 5, 7, 9 ms (reads 0, 1, 2).
Run duration 2 s.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from analysis.chunks import chunk_series
from analysis.frames import coerce_streams, frames_from_records
from analysis.metrics import analyse
from analysis.quantiles import grouped_percentiles, segment_percentiles
from loadtests.results.record import StreamRecord
from stream_harness.contract.kinds import EVENT_CODE_BY_NAME, EventKind
from stream_harness.contract.schema import EVENT_DTYPES, NO_SEQ, STREAM_DTYPES

CHUNK = EventKind.CHUNK
NAN = math.nan


@dataclass
class Record:
    """Duck-typed stand-in for loadtests.results.record.StreamRecord (analysis never imports it)."""

    transport: str
    endpoint: str
    stream_id: str
    worker: str = "local"
    user: int = 0
    started_at: float = 1_700_000_000.0
    t0: float = 0.0
    time_to_headers_ms: float = NAN
    duration_ms: float = NAN
    status: str = "completed"
    error: str | None = None
    error_detail: str | None = None
    http_status: int = 200
    content_encoding: str = ""
    malformed_lines: int = 0
    n_reads: int = 0
    expected_chunks: int = -1
    kinds: array = field(default_factory=lambda: array("b"))
    t_ms: array = field(default_factory=lambda: array("d"))
    reads: array = field(default_factory=lambda: array("i"))
    seqs: array = field(default_factory=lambda: array("i"))
    emit_ms: array = field(default_factory=lambda: array("d"))

    def add(self, kind: str, t_ms: float, read: int, emit_ms: float = NAN) -> None:
        self.kinds.append(EVENT_CODE_BY_NAME[kind])
        self.t_ms.append(t_ms)
        self.reads.append(read)
        self.seqs.append(len(self.seqs))
        self.emit_ms.append(emit_ms)


def hand_records() -> list[Record]:
    a = Record("ndjson", "chat", "a", time_to_headers_ms=2.0, duration_ms=51.5, n_reads=5)
    for kind, t, read, emit in [
        ("status_update", 3, 0, 2.5),
        ("chunk", 10, 1, 9),
        ("chunk", 20, 2, 18),
        ("chunk", 20, 2, 19),
        ("chunk", 50, 3, 30),
        ("end", 51, 4, 50.5),
    ]:
        a.add(kind, t, read, emit)
    b = Record(
        "ndjson",
        "chat",
        "b",
        status="failed",
        error="http_status",
        error_detail="HTTP 503",
        http_status=503,
        time_to_headers_ms=1.0,
        duration_ms=1.5,
    )
    c = Record("socketio", "chat", "c", time_to_headers_ms=1.0, http_status=0, n_reads=4)
    for t, read in [(5, 0), (7, 1), (9, 2)]:
        c.add("chunk", t, read)
    c.add("end", 9.5, 3)
    return [a, b, c]


RUN = {"id": "hand", "duration_s": 2.0, "harness": {"saturated": False}}


@pytest.fixture(scope="module")
def summary() -> dict:
    streams, events = frames_from_records(hand_records())
    return analyse(RUN, streams, events).summary


# --------------------------------------------------------------------------- frames


def test_frames_have_the_schema_dtypes_and_stream_key_is_the_row_index():
    streams, events = frames_from_records(hand_records())
    assert {name: str(streams[name].dtype) for name in STREAM_DTYPES} == {
        name: ("str" if dtype == "string" and str(streams[name].dtype) == "str" else dtype)
        for name, dtype in STREAM_DTYPES.items()
    }
    assert {name: str(events[name].dtype) for name in EVENT_DTYPES} == EVENT_DTYPES
    assert list(streams["stream_key"]) == [0, 1, 2]
    assert list(events["stream_key"]) == [0] * 6 + [2] * 4
    assert list(events["t_ms"][:6]) == [3, 10, 20, 20, 50, 51]


def test_frames_derive_counts_first_chunk_and_emit_times_from_the_events():
    streams, _ = frames_from_records(hand_records())
    assert list(streams["n_events"]) == [6, 0, 4]
    assert list(streams["n_chunks"]) == [4, 0, 3]
    assert streams["ttfc_ms"].iloc[0] == 10 and math.isnan(streams["ttfc_ms"].iloc[1])
    assert list(streams["first_event_ms"].fillna(-1)) == [3, -1, 5]
    assert list(streams["has_emit_times"]) == [True, False, False]
    assert list(streams["expected_chunks"]) == [-1, -1, -1]
    assert streams["error"].iloc[1] == "http_status" and pd.isna(streams["error"].iloc[0])


def test_frames_from_no_records_are_empty_but_typed():
    streams, events = frames_from_records([])
    assert len(streams) == 0 and len(events) == 0
    assert str(events["t_ms"].dtype) == "float64"


def test_the_real_stream_record_is_accepted():
    record = StreamRecord("ndjson", "chat", "r1", time_to_headers_ms=1.0)
    record.add_event(CHUNK, 4.0, 0, 0, 3.0)
    record.add_event(CHUNK, 6.0, 1, 1, 5.5)
    streams, events = frames_from_records([record])
    assert streams["n_chunks"].iloc[0] == 2
    assert list(events["emit_ms"]) == [3.0, 5.5]
    assert list(events["seq"]) == [0, 1]


# --------------------------------------------------------------------------- per chunk


def test_chunk_series_gaps_staleness_jitter_and_bursts():
    streams, events = frames_from_records(hand_records())
    series = chunk_series(streams, events)
    a = series.stream == 0
    np.testing.assert_array_equal(series.gap_ms[a], [NAN, 10, 0, 30])
    np.testing.assert_array_equal(series.staleness_ms[a], [0, 1, 0, 19])
    np.testing.assert_array_equal(series.jitter_ms[a], [NAN, 1, 1, 19])
    np.testing.assert_array_equal(series.burst_size[a], [1, 2, 2, 1])
    # first burst: since headers (10 - 2); the pair after 10 ms; the last after 30 ms
    np.testing.assert_array_equal(series.burst_lead_ms[a], [8, 10, 10, 30])
    c = series.stream == 2
    assert np.isnan(series.staleness_ms[c]).all() and np.isnan(series.jitter_ms[c]).all()
    np.testing.assert_array_equal(series.gap_ms[c], [NAN, 2, 2])
    np.testing.assert_array_equal(series.read_events, [1, 1, 2, 1, 1, 1, 1, 1, 1])


def test_per_stream_columns_are_filled():
    streams, events = frames_from_records(hand_records())
    filled = analyse(RUN, streams, events).streams
    a = filled.iloc[0]
    assert a["gap_p50_ms"] == 10
    assert a["gap_p99_ms"] == pytest.approx(29.6)  # sorted 0,10,30: 10 + 0.98 * 20
    assert a["gap_max_ms"] == 30
    assert a["staleness_p99_ms"] == pytest.approx(18.46)  # sorted 0,0,1,19: 1 + 0.97 * 18
    assert math.isnan(filled.iloc[1]["gap_p50_ms"])
    assert math.isnan(filled.iloc[2]["staleness_p99_ms"])
    assert filled.iloc[2]["gap_max_ms"] == 2


# --------------------------------------------------------------------------- summary


def test_summary_has_schema_1_and_only_the_transports_that_ran(summary):
    assert summary["schema"] == 1
    assert list(summary["transports"]) == ["ndjson", "socketio"]
    assert summary["run"]["id"] == "hand" and summary["run"]["duration_s"] == 2.0
    assert summary["run"]["harness"]["saturated"] is False


def test_stream_and_event_counts(summary):
    ndjson = summary["transports"]["ndjson"]
    assert ndjson["streams"] == {
        "started": 2,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
        "errors": {"http_status": 1},
    }
    assert ndjson["events"] == {"total": 6, "chunks": 4, "malformed_lines": 0}


def test_latency_objects(summary):
    ndjson = summary["transports"]["ndjson"]
    assert ndjson["ttfc_ms"] == {"p50": 10, "p90": 10, "p95": 10, "p99": 10, "p999": 10, "max": 10}
    assert ndjson["time_to_headers_ms"]["p50"] == 1.5  # streams a (2 ms) and b (1 ms)
    gap = ndjson["gap_ms"]  # pooled 0, 10, 30
    assert gap["p50"] == 10 and gap["max"] == 30
    assert gap["p90"] == pytest.approx(26.0)  # 10 + 0.8 * 20
    staleness = ndjson["staleness_ms"]  # 0, 0, 1, 19
    assert staleness["p50"] == 0.5 and staleness["max"] == 19
    jitter = ndjson["jitter_ms"]  # 1, 1, 19
    assert jitter["p50"] == 1 and jitter["max"] == 19
    assert set(gap) == {"p50", "p90", "p95", "p99", "p999", "max"}


def test_events_per_read_and_throughput(summary):
    ndjson = summary["transports"]["ndjson"]
    assert ndjson["events_per_read"]["mean"] == pytest.approx(1.2)  # reads of 1,1,2,1,1
    assert ndjson["events_per_read"]["p99"] == pytest.approx(1.96)  # 1 + 0.96 * 1
    assert ndjson["events_per_s"] == 2.0  # 4 chunks / 2 s


def test_a_latency_object_without_samples_has_null_values():
    records = hand_records()[1:2]  # the failed stream only: no chunk at all
    streams, events = frames_from_records(records)
    ndjson = analyse(RUN, streams, events).summary["transports"]["ndjson"]
    assert ndjson["ttfc_ms"] == dict.fromkeys(("p50", "p90", "p95", "p99", "p999", "max"))
    assert ndjson["gap_ms"]["p50"] is None and ndjson["staleness_ms"] is None
    assert ndjson["buffering"]["verdict"] == "inconclusive"


def test_staleness_and_jitter_are_null_without_emit_times(summary):
    socketio = summary["transports"]["socketio"]
    assert socketio["staleness_ms"] is None and socketio["jitter_ms"] is None
    assert socketio["gap_ms"]["p50"] == 2 and socketio["ttfc_ms"]["p50"] == 5


def test_endpoints_sub_object(summary):
    ndjson = summary["transports"]["ndjson"]
    assert list(ndjson["endpoints"]) == ["chat"]
    chat = ndjson["endpoints"]["chat"]
    assert chat["gap_ms"] == ndjson["gap_ms"] and chat["streams"] == ndjson["streams"]


def test_endpoints_are_aggregated_separately_and_together():
    records = hand_records()
    records[1].endpoint = "agent"
    extra = Record("ndjson", "agent", "d", time_to_headers_ms=4.0)
    for t, read in [(100, 0), (140, 1)]:
        extra.add("chunk", t, read)
    streams, events = frames_from_records([*records, extra])
    ndjson = analyse(RUN, streams, events).summary["transports"]["ndjson"]
    assert set(ndjson["endpoints"]) == {"agent", "chat"}
    assert ndjson["endpoints"]["agent"]["gap_ms"]["max"] == 40
    assert ndjson["endpoints"]["chat"]["gap_ms"]["max"] == 30
    assert ndjson["gap_ms"]["max"] == 40 and ndjson["streams"]["started"] == 3
    assert ndjson["ttfc_ms"]["max"] == 100


def test_a_completed_stream_short_of_its_promised_chunks_is_failed_short_stream():
    records = hand_records()
    records[0].expected_chunks = 5  # 4 arrived
    records[2].expected_chunks = 3  # all 3 arrived
    streams, events = frames_from_records(records)
    analysis = analyse(RUN, streams, events)
    assert analysis.streams["status"].iloc[0] == "failed"
    assert analysis.streams["error"].iloc[0] == "short_stream"
    assert analysis.streams["error_detail"].iloc[0] == "received 4 of 5 promised chunks"
    assert analysis.streams["status"].iloc[2] == "completed"
    ndjson = analysis.summary["transports"]["ndjson"]
    assert ndjson["streams"]["errors"] == {"http_status": 1, "short_stream": 1}
    assert ndjson["chunks_per_stream"]["delivered_share"] == pytest.approx(4 / 5)


def test_an_empty_run_has_no_transports():
    streams, events = frames_from_records([])
    assert analyse(RUN, streams, events).summary["transports"] == {}


def test_events_out_of_stream_order_are_regrouped_keeping_arrival_order():
    streams, events = frames_from_records(hand_records())
    shuffled = pd.concat([events.iloc[6:], events.iloc[:6]], ignore_index=True)
    assert analyse(RUN, streams, shuffled).summary == analyse(RUN, streams, events).summary


# --------------------------------------------------------------------------- quantiles


@pytest.mark.parametrize("n_groups", [3, 200])  # the selection and the sort paths
def test_grouped_percentiles_match_numpy_exactly(n_groups):
    rng = np.random.default_rng(3)
    values = rng.exponential(3.0, 20_000)
    values[::11] = NAN
    codes = rng.integers(-1, n_groups, values.size)
    percentiles = (0.0, 50.0, 90.0, 99.9, 100.0)
    table = grouped_percentiles(values, codes, n_groups, percentiles)
    for group in range(n_groups):
        samples = values[(codes == group) & ~np.isnan(values)]
        np.testing.assert_array_equal(table[group], np.percentile(samples, percentiles))


@pytest.mark.parametrize("starts", [[0, 3000, 9000], list(range(0, 10_000, 7))])
def test_segment_percentiles_match_numpy_exactly(starts):
    values = np.random.default_rng(4).exponential(3.0, 10_000)
    values[::13] = NAN
    starts = np.array(starts)
    table = segment_percentiles(values, starts, (50.0, 99.0, 100.0))
    ends = np.r_[starts[1:], values.size]
    for row, begin, end in zip(table, starts, ends):
        samples = values[begin:end]
        samples = samples[~np.isnan(samples)]
        np.testing.assert_array_equal(row, np.percentile(samples, (50.0, 99.0, 100.0)))


def test_coerce_streams_fills_extra_columns_missing_in_older_files():
    streams, _ = frames_from_records(hand_records())
    old = streams.drop(columns=["expected_chunks", "first_event_ms", "has_emit_times"])
    again = coerce_streams(old)
    assert list(again["expected_chunks"]) == [-1, -1, -1]
    assert list(again["has_emit_times"]) == [False, False, False]
    with pytest.raises(KeyError):
        coerce_streams(streams.drop(columns=["transport"]))
    assert NO_SEQ == -1


def test_a_result_set_folded_by_two_worker_processes_gives_the_one_process_summary(
    tmp_path, monkeypatch: pytest.MonkeyPatch
):
    import analysis.metrics as metrics_module
    import analysis.results as results_module
    from analysis.metrics import WORKERS_ENV, analyse_directory
    from analysis.results import ResultSetWriter, event_parts
    from tests.support.synthetic import SyntheticSpec, synthetic_run

    monkeypatch.setattr(results_module, "PART_MAX_EVENTS", 400)  # several part files to share out
    run, streams, events = synthetic_run(SyntheticSpec(streams=12, chunks=(150, 250), seed=5))
    writer = ResultSetWriter(tmp_path / "set", run["id"])
    for key in range(len(streams)):
        writer.append(streams.iloc[[key]], events[events["stream_key"] == key])
    writer.commit(run, {"schema": 1}, writer.streams())
    assert len(event_parts(tmp_path / "set")) >= 2
    monkeypatch.setenv(WORKERS_ENV, "1")
    one = analyse_directory(tmp_path / "set")
    monkeypatch.setenv(WORKERS_ENV, "2")
    shared: list[int] = []
    parallel = metrics_module._fold_in_parallel
    monkeypatch.setattr(
        metrics_module,
        "_fold_in_parallel",
        lambda *a: shared.append(a[-1]) or parallel(*a),  # type: ignore[func-returns-value]
    )
    two = analyse_directory(tmp_path / "set")
    assert shared == [2]
    pd.testing.assert_frame_equal(one.streams, two.streams)
    assert one.summary["transports"].keys() == two.summary["transports"].keys()
    for name, item in one.summary["transports"].items():
        assert _close(item, two.summary["transports"][name]), name


def _close(a: object, b: object) -> bool:
    """Equal up to the last bits of floats summed in another order."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b
