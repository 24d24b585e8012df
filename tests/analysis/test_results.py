"""Result sets on disk: staged and committed whole, read back in batches of whole streams, one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import analysis.results as results_module
from analysis.results import (
    EVENTS_DIR,
    LEGACY_EVENTS_FILE,
    RUN_FILE,
    STREAMS_FILE,
    SUMMARY_FILE,
    ResultsError,
    ResultSetWriter,
    event_parts,
    iter_event_batches,
    load_results,
    write_results,
)
from tests.support.synthetic import SyntheticSpec, synthetic_run

SMALL = SyntheticSpec(streams=3, chunks=(60, 80), seed=11)
RESULT_SET = sorted([RUN_FILE, STREAMS_FILE, EVENTS_DIR, SUMMARY_FILE])


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    run, streams, events = synthetic_run(SMALL)
    write_results(tmp_path / "run", run, streams, events)
    return tmp_path / "run"


def first_part(run_dir: Path) -> Path:
    return event_parts(run_dir)[0]


def test_write_results_creates_the_directory_and_exactly_the_set(tmp_path: Path):
    run, streams, events = synthetic_run(SMALL)
    summary = write_results(tmp_path / "a" / "b", run, streams, events)
    directory = tmp_path / "a" / "b"
    assert sorted(p.name for p in directory.iterdir()) == RESULT_SET  # no staging, no temp files
    assert json.loads((directory / SUMMARY_FILE).read_text()) == json.loads(json.dumps(summary))
    assert summary["schema"] == 1 and set(summary["transports"]) == {"ndjson", "socketio"}


def test_round_trip_keeps_rows_dtypes_and_fills_derived_columns(run_dir: Path):
    run, streams, events = synthetic_run(SMALL)
    loaded = load_results(run_dir)
    assert loaded.run == json.loads(json.dumps(run))
    pd.testing.assert_frame_equal(loaded.events, events)
    assert len(loaded.streams) == len(streams)
    assert loaded.streams["gap_p99_ms"].notna().all()  # filled by the writer
    assert loaded.streams["staleness_p99_ms"].notna().all()
    assert (loaded.streams["first_burst_chunks"] >= 1).all()
    assert list(loaded.streams["stream_id"]) == list(streams["stream_id"])


def test_rewriting_replaces_the_set_whole(run_dir: Path):
    run, streams, events = synthetic_run(SyntheticSpec(streams=1, chunks=(60, 60), seed=2, transports=("ndjson",)))
    write_results(run_dir, run, streams, events)
    assert len(load_results(run_dir).streams) == 1
    assert sorted(p.name for p in run_dir.iterdir()) == RESULT_SET


def test_a_set_written_before_events_were_sharded_is_read_and_replaced(run_dir: Path, tmp_path: Path):
    old = tmp_path / "old"
    old.mkdir()
    loaded = load_results(run_dir)
    for name in (RUN_FILE, STREAMS_FILE):
        (old / name).write_bytes((run_dir / name).read_bytes())
    pq.write_table(pq.read_table(first_part(run_dir)), old / LEGACY_EVENTS_FILE, row_group_size=50)
    pd.testing.assert_frame_equal(load_results(old).events, loaded.events)
    run, streams, events = synthetic_run(SMALL)
    write_results(old, run, streams, events)  # the new set replaces the legacy file too
    assert sorted(p.name for p in old.iterdir()) == RESULT_SET


@pytest.mark.parametrize("batch_events", [1, 7, 64, 10_000])
def test_batches_hold_whole_streams_whatever_the_read_size(run_dir: Path, batch_events: int):
    everything = load_results(run_dir).events
    batches = list(iter_event_batches(run_dir, batch_events=batch_events))
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), everything)
    seen: set[int] = set()
    for batch in batches:
        keys = set(np.unique(batch["stream_key"]).tolist())
        assert not keys & seen, "a stream was split over two batches"
        seen |= keys


def test_batches_of_selected_streams(run_dir: Path):
    batches = list(iter_event_batches(run_dir, batch_events=5, keys=[2]))
    assert set(pd.concat(batches)["stream_key"]) == {2}


def test_the_writer_appends_batches_into_row_groups_and_rotates_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(results_module, "PART_MAX_EVENTS", 150)
    run, streams, events = synthetic_run(SyntheticSpec(streams=6, chunks=(60, 60), seed=3))
    writer = ResultSetWriter(tmp_path / "set", run["id"])
    for key in range(len(streams)):
        writer.append(streams.iloc[[key]], events[events["stream_key"] == key])
    writer.commit(run, {"schema": 1}, writer.streams())
    parts = event_parts(tmp_path / "set")
    assert len(parts) > 1
    for part in parts:
        file = pq.ParquetFile(part)
        for group in range(file.num_row_groups):  # every row group is one whole stream here
            keys = file.read_row_group(group, columns=["stream_key"]).column(0).to_numpy()
            assert len(set(keys.tolist())) == 1
    pd.testing.assert_frame_equal(load_results(tmp_path / "set").events, events)


def test_an_aborted_set_leaves_nothing_behind(tmp_path: Path):
    run, streams, events = synthetic_run(SMALL)
    writer = ResultSetWriter(tmp_path / "set", run["id"])
    writer.append(streams, events)
    writer.abort()
    assert list((tmp_path / "set").iterdir()) == []


def test_a_run_whose_streams_received_nothing_is_a_whole_set(tmp_path: Path):
    run, streams, events = synthetic_run(SMALL)
    write_results(tmp_path / "empty", run, streams, events.iloc[:0])
    loaded = load_results(tmp_path / "empty")
    assert len(loaded.streams) == len(streams) and loaded.events.empty
    assert (loaded.streams["n_events"] == 0).all()


@pytest.mark.parametrize("missing", [RUN_FILE, STREAMS_FILE, EVENTS_DIR])
def test_a_missing_raw_entry_is_named(run_dir: Path, missing: str):
    target = run_dir / missing
    if target.is_dir():
        for part in target.iterdir():
            part.unlink()
        target.rmdir()
    else:
        target.unlink()
    with pytest.raises(ResultsError, match=f"incomplete results, missing {missing}"):
        load_results(run_dir)


def test_a_missing_directory(tmp_path: Path):
    with pytest.raises(ResultsError, match="no such results directory"):
        load_results(tmp_path / "nope")


def test_a_file_instead_of_a_directory(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResultsError, match="not a directory"):
        load_results(tmp_path / "file")


def test_a_corrupt_part_is_named(run_dir: Path):
    part = first_part(run_dir)
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])  # cut mid-write
    with pytest.raises(ResultsError, match=f"{part.name}: unreadable parquet"):
        load_results(run_dir)


def test_corrupt_run_json(run_dir: Path):
    (run_dir / RUN_FILE).write_text('{"id": ')
    with pytest.raises(ResultsError, match="run.json: not valid JSON"):
        load_results(run_dir)
    (run_dir / RUN_FILE).write_text("[1, 2]")
    with pytest.raises(ResultsError, match="expected a JSON object"):
        load_results(run_dir)


def test_a_missing_column_is_named(run_dir: Path):
    part = first_part(run_dir)
    pq.write_table(pq.read_table(part).drop(["t_ms"]), part)
    with pytest.raises(ResultsError, match="missing column 't_ms'"):
        load_results(run_dir)


def test_events_of_streams_that_are_not_there_mean_a_partial_write(run_dir: Path):
    streams = pd.read_parquet(run_dir / STREAMS_FILE).iloc[:2]
    streams.to_parquet(run_dir / STREAMS_FILE)
    with pytest.raises(ResultsError, match="partial write"):
        load_results(run_dir)


def test_events_not_grouped_by_stream_are_refused(run_dir: Path):
    part = first_part(run_dir)
    table = pq.read_table(part).to_pandas()
    pq.write_table(pq.read_table(part).take(np.argsort(-table["stream_key"].to_numpy(), kind="stable")), part)
    with pytest.raises(ResultsError, match="not grouped by stream"):
        list(iter_event_batches(run_dir, batch_events=10))


def test_error_messages_are_one_line(run_dir: Path):
    (run_dir / STREAMS_FILE).write_bytes(b"PAR1 garbage\n more garbage\n")
    with pytest.raises(ResultsError) as caught:
        load_results(run_dir)
    assert "\n" not in str(caught.value)


def test_the_results_document_lists_every_column_with_its_type():
    from stream_harness.contract.schema import EVENT_COLUMNS, STREAM_COLUMNS
    from tests.support import REPO

    text = (REPO / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", text, flags=re.MULTILINE))
    for column in (*STREAM_COLUMNS, *EVENT_COLUMNS):
        assert rows.get(column.name) == column.dtype, column.name
