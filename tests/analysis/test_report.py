"""report.md reads verdict-first; charts exist; Mermaid blocks follow the xychart grammar."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.charts import CHART_FILES, cdf_points, envelope, histogram_bins
from analysis.histogram import LogHistogram
from analysis.mermaid import xychart
from analysis.report import build_report
from tests.support.synthetic import SyntheticSpec, write_synthetic_run


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("report") / "run"
    write_synthetic_run(
        directory,
        SyntheticSpec(
            streams=6,
            chunks=(200, 300),
            endpoints=("chat", "agent"),
            failure_share=0.2,
            seed=8,
            transport_overrides={"socketio": {"buffer_ms": 100}},
        ),
    )
    return build_report(directory)


def test_the_verdict_comes_first(report):
    lines = report.report_path.read_text().splitlines()
    assert lines[0].startswith("# Stream latency report: synthetic-8")
    assert lines[2].startswith("**Parity (NDJSON vs Socket.io): ndjson_better**: agent: Socket.io buffering verdict")
    assert lines[4] == "**ndjson: clean · socketio: BUFFERED**"
    assert lines[6].startswith("- **socketio buffered**: chunks arrive")
    assert lines[7].startswith("- ndjson: 6 streams, ")
    assert "load generator not saturated" in lines[9]


def test_tables_per_transport_and_endpoint(report):
    text = report.report_path.read_text()
    assert "## ndjson" in text and "## socketio" in text
    assert "| TTFC |" in text and "| staleness |" in text
    assert "| agent |" in text and "| chat |" in text


def test_every_chart_is_a_png_linked_from_the_report(report):
    text = report.report_path.read_text()
    assert set(report.charts) == set(CHART_FILES)
    for path in report.charts.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({path.name})" in text


def test_summary_json_is_rewritten(report):
    assert report.summary_path.is_file()
    assert report.analysis.summary["transports"]["socketio"]["buffering"]["verdict"] == "buffered"


def test_cdf_points_and_envelope_bound_the_points_drawn():
    values = np.arange(100_000, dtype=float)
    x, y = cdf_points(values, max_points=500)
    assert x.size == 500 and y[-1] == 1.0 and x[-1] == 99_999
    ex, ey = envelope(values, values[::-1].copy(), max_points=100)
    assert ex.size == 100 and ey[0] == 99_999  # peaks survive downsampling


def test_histogram_bins_count_zero_gaps_apart():
    histogram = LogHistogram()
    histogram.add_array(np.array([0.0, 0.0, 0.05, 1.0, 10.0, 100.0, np.nan]))
    zero, edges, counts = histogram_bins(histogram)
    assert zero == 3 and counts.sum() == 3  # 0.05 ms: within one read (BURST_GAP_MS)
    assert edges[0] == pytest.approx(1.0) and edges[-1] >= 100


def test_the_report_says_which_percentiles_are_approximate(report):
    text = report.report_path.read_text()
    assert "1% log buckets (within 1% of the exact value)" in text


def test_xychart_quotes_text_and_writes_plain_numbers():
    block = xychart(
        'a "quoted" title', ["p50", "p99"], [("bar", [1.5, float("nan")]), ("line", [1e-9, 123456.789])], "ms"
    )
    assert "title \"a 'quoted' title\"" in block
    assert "bar [1.5, 0]" in block and "line [0, 123456.79]" in block
    assert 'y-axis "ms" 0 --> 200000' in block
    with pytest.raises(ValueError):
        xychart("t", ["a"], [("pie", [1.0])], "ms")
