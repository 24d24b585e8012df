"""Results directories: atomic writes, faithful reads, one-line errors for bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from analysis.results import (
    EVENTS_FILE,
    RUN_FILE,
    STREAMS_FILE,
    SUMMARY_FILE,
    ResultsError,
    load_results,
    write_results,
)
from tests.support.synthetic import SyntheticSpec, synthetic_run

SMALL = SyntheticSpec(streams=3, chunks=(60, 80), seed=11)


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    run, streams, events = synthetic_run(SMALL)
    write_results(tmp_path / "run", run, streams, events)
    return tmp_path / "run"


def test_write_results_creates_the_directory_and_all_four_files(tmp_path: Path):
    run, streams, events = synthetic_run(SMALL)
    summary = write_results(tmp_path / "a" / "b", run, streams, events)
    directory = tmp_path / "a" / "b"
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [RUN_FILE, STREAMS_FILE, EVENTS_FILE, SUMMARY_FILE]
    )  # no temp files left
    assert json.loads((directory / SUMMARY_FILE).read_text()) == summary
    assert summary["schema"] == 1 and set(summary["transports"]) == {"ndjson", "socketio"}


def test_round_trip_keeps_rows_dtypes_and_fills_derived_columns(run_dir: Path):
    run, streams, events = synthetic_run(SMALL)
    loaded = load_results(run_dir)
    assert loaded.run == json.loads(json.dumps(run))
    pd.testing.assert_frame_equal(loaded.events, events)
    assert len(loaded.streams) == len(streams)
    assert loaded.streams["gap_p99_ms"].notna().all()  # filled by the writer
    assert loaded.streams["staleness_p99_ms"].notna().all()
    assert list(loaded.streams["stream_id"]) == list(streams["stream_id"])


def test_rewriting_replaces_files_whole(run_dir: Path):
    run, streams, events = synthetic_run(SyntheticSpec(streams=1, chunks=(60, 60), seed=2, transports=("ndjson",)))
    write_results(run_dir, run, streams, events)
    assert len(load_results(run_dir).streams) == 1


@pytest.mark.parametrize("missing", [RUN_FILE, STREAMS_FILE, EVENTS_FILE])
def test_a_missing_raw_file_is_named(run_dir: Path, missing: str):
    (run_dir / missing).unlink()
    with pytest.raises(ResultsError, match=f"incomplete results, missing {missing}"):
        load_results(run_dir)


def test_a_missing_directory(tmp_path: Path):
    with pytest.raises(ResultsError, match="no such results directory"):
        load_results(tmp_path / "nope")


def test_a_file_instead_of_a_directory(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultsError, match="not a directory"):
        load_results(tmp_path / "file")


def test_corrupt_parquet(run_dir: Path):
    data = (run_dir / EVENTS_FILE).read_bytes()
    (run_dir / EVENTS_FILE).write_bytes(data[: len(data) // 2])  # cut mid-write
    with pytest.raises(ResultsError, match="events.parquet: unreadable parquet"):
        load_results(run_dir)


def test_corrupt_run_json(run_dir: Path):
    (run_dir / RUN_FILE).write_text('{"id": ')
    with pytest.raises(ResultsError, match="run.json: not valid JSON"):
        load_results(run_dir)
    (run_dir / RUN_FILE).write_text("[1, 2]")
    with pytest.raises(ResultsError, match="expected a JSON object"):
        load_results(run_dir)


def test_a_missing_column_is_named(run_dir: Path):
    events = pd.read_parquet(run_dir / EVENTS_FILE).drop(columns=["t_ms"])
    events.to_parquet(run_dir / EVENTS_FILE)
    with pytest.raises(ResultsError, match="missing column 't_ms'"):
        load_results(run_dir)


def test_events_of_streams_that_are_not_there_mean_a_partial_write(run_dir: Path):
    streams = pd.read_parquet(run_dir / STREAMS_FILE).iloc[:2]
    streams.to_parquet(run_dir / STREAMS_FILE)
    with pytest.raises(ResultsError, match="partial write"):
        load_results(run_dir)


def test_error_messages_are_one_line(run_dir: Path):
    (run_dir / STREAMS_FILE).write_bytes(b"PAR1 garbage\n more garbage\n")
    with pytest.raises(ResultsError) as caught:
        load_results(run_dir)
    assert "\n" not in str(caught.value)
