"""benchmark.json for dashboards, and merging rounds into one results directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from analysis.merge import MergeError, merge_runs
from analysis.results import load_results
from stream_harness.cli.benchmark_json import benchmark_entries, write_benchmark_json
from tests.support import REPO
from tests.support.synthetic import SyntheticSpec, write_synthetic_run


def latency(p50: float | None, p95: float | None = None, p99: float | None = None) -> dict:
    return {"p50": p50, "p90": None, "p95": p95, "p99": p99, "p999": None, "max": None}


SUMMARY = {
    "schema": 1,
    "run": {"id": "r-1", "harness": {"saturated": False}},
    "transports": {
        "ndjson": {
            "streams": {"started": 10, "completed": 9, "failed": 1},
            "ttfc_ms": latency(12.5, 20.0, 31.25),
            "gap_ms": latency(1.0, 2.0, 4.5),
            "staleness_ms": latency(0.1, 0.2, 0.75),
            "buffering": {"verdict": "clean"},
        },
        "socketio": {
            "streams": {"started": 10, "completed": 10, "failed": 0},
            "ttfc_ms": latency(15.0, 25.0, 40.0),
            "gap_ms": latency(1.0, 2.0, 6.0),
            "staleness_ms": None,  # a backend without emit times
            "buffering": {"verdict": "buffered"},
        },
    },
}


# --------------------------------------------------------------------------- dashboard


def test_entries_are_custom_smaller_is_better_points() -> None:
    entries = benchmark_entries(SUMMARY)
    by_name = {e["name"]: e for e in entries}
    assert by_name["ndjson TTFC p50"]["value"] == 12.5
    assert by_name["ndjson TTFC p95"]["value"] == 20.0
    assert by_name["ndjson TTFC p99"]["value"] == 31.25
    assert by_name["ndjson chunk gap p99"]["value"] == 4.5
    assert by_name["ndjson staleness p99"]["value"] == 0.75
    assert by_name["socketio TTFC p99"]["value"] == 40.0
    assert all(e["unit"] == "ms" and isinstance(e["value"], float) for e in entries)
    assert "9 streams ok, 1 failed" in by_name["ndjson TTFC p50"]["extra"]
    assert "buffering: buffered" in by_name["socketio chunk gap p99"]["extra"]


def test_metrics_without_data_are_left_out_not_zero() -> None:
    names = {e["name"] for e in benchmark_entries(SUMMARY)}
    assert "socketio staleness p99" not in names
    assert len(names) == 5 + 4


def test_saturated_run_is_flagged_in_extra() -> None:
    saturated = {**SUMMARY, "run": {"id": "r-2", "harness": {"saturated": True}}}
    assert all("saturated" in e["extra"] for e in benchmark_entries(saturated))


def test_write_and_cli(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps(SUMMARY))
    path = write_benchmark_json(tmp_path)
    assert path == tmp_path / "benchmark.json"
    assert json.loads(path.read_text()) == benchmark_entries(SUMMARY)
    done = subprocess.run(
        [sys.executable, "-m", "stream_harness", "benchmark-json", str(tmp_path / "missing")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# --------------------------------------------------------------------------- merge


def test_merge_renumbers_streams_and_sums_durations(tmp_path: Path) -> None:
    first, second = tmp_path / "r1", tmp_path / "r2"
    write_synthetic_run(first, SyntheticSpec(streams=4, chunks=(50, 60), seed=1))
    write_synthetic_run(second, SyntheticSpec(streams=3, chunks=(50, 60), seed=2, saturated=True))
    merged = merge_runs([first, second], tmp_path / "merged", run_id="base-merged")
    a, b, m = load_results(first), load_results(second), load_results(merged)
    assert len(m.streams) == len(a.streams) + len(b.streams)
    assert len(m.events) == len(a.events) + len(b.events)
    assert m.streams["stream_id"].is_unique
    # The second run's events now point at its streams, shifted past the first run's.
    shifted = m.events.iloc[len(a.events) :].reset_index(drop=True)
    pd.testing.assert_series_equal(shifted["stream_key"], b.events["stream_key"] + len(a.streams), check_names=False)
    assert m.run["id"] == "base-merged"
    assert m.run["merged_from"] == ["r1", "r2"]
    assert m.run["duration_s"] == a.run["duration_s"] + b.run["duration_s"]
    # One starved round of two, holding fewer streams, does not void the other's evidence.
    assert m.run["harness"]["saturated"] is False
    assert m.run["harness"]["saturated_runs"] == ["r2"]
    summary = json.loads((merged / "summary.json").read_text())
    assert summary["transports"]["ndjson"]["streams"]["started"] == 4 + 3


def test_merge_of_a_broken_run_names_it(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    try:
        merge_runs([tmp_path / "empty"], tmp_path / "out", run_id="x")
    except MergeError as exc:
        assert "empty" in str(exc)
    else:
        raise AssertionError("no MergeError")


def test_merge_is_saturated_when_most_streams_come_from_saturated_rounds(tmp_path: Path) -> None:
    runs = []
    for name, saturated in (("r1", False), ("r2", True), ("r3", True)):
        write_synthetic_run(
            tmp_path / name, SyntheticSpec(streams=3, chunks=(50, 60), seed=len(runs), saturated=saturated)
        )
        runs.append(tmp_path / name)
    merged = load_results(merge_runs(runs, tmp_path / "merged", run_id="m"))
    assert merged.run["harness"]["saturated"] is True
    assert merged.run["harness"]["cpu_percent_max"] == 97.0
    summary = json.loads((tmp_path / "merged" / "summary.json").read_text())
    assert summary["transports"]["ndjson"]["buffering"]["verdict"] == "inconclusive"


CAPACITY = {
    "schema": 1,
    "slo": {"ttfc_p99_ms": 1000.0, "gap_p99_ms": 250.0, "failure_rate": 0.01, "clean": True, "confidence": 0.95},
    "transports": {
        "ndjson": {
            "max_streams_meeting_slo": 48,
            "lower_bound": False,
            "summary": "48 concurrent streams meet the SLO",
        },
        "socketio": {
            "max_streams_meeting_slo": 96,
            "lower_bound": True,
            "summary": "at least 96 concurrent streams meet the SLO (a lower bound: ...)",
        },
    },
}


def test_a_capacity_search_in_the_run_directory_adds_one_point_per_transport(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps(SUMMARY))
    (tmp_path / "capacity").mkdir()
    (tmp_path / "capacity" / "capacity.json").write_text(json.dumps(CAPACITY))
    entries = json.loads(write_benchmark_json(tmp_path).read_text())
    by_name = {e["name"]: e for e in entries}
    assert len(entries) == 5 + 4 + 2
    ndjson = by_name["ndjson capacity under the SLO"]
    assert (ndjson["value"], ndjson["unit"]) == (48.0, "streams")
    assert ndjson["extra"].startswith("bigger is better; 48 concurrent streams meet the SLO; SLO TTFC p99 <= 1000.0")
    assert "a lower bound" in by_name["socketio capacity under the SLO"]["extra"]


def test_the_cli_takes_a_capacity_file_from_elsewhere_and_refuses_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps(SUMMARY))
    (tmp_path / "cap.json").write_text(json.dumps(CAPACITY))
    command = [sys.executable, "-m", "stream_harness", "benchmark-json", str(tmp_path), "--capacity"]
    done = subprocess.run([*command, str(tmp_path / "cap.json")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    names = {e["name"] for e in json.loads((tmp_path / "benchmark.json").read_text())}
    assert {"ndjson capacity under the SLO", "socketio capacity under the SLO"} <= names
    missing = subprocess.run([*command, str(tmp_path / "nope.json")], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"stream-harness benchmark-json: {tmp_path / 'nope.json'}: no such capacity.json"
