"""ResultsSink: finished streams go whole to the writer process, however slowly it reads."""

from __future__ import annotations

from pathlib import Path

import gevent
import pandas as pd

from loadtests.results.record import StreamRecord
from loadtests.results.sink import FLUSH_EVENTS, ResultsSink
from stream_harness.contract.kinds import EventKind, StreamStatus
from tests.support.synthetic import SyntheticSpec, synthetic_run


def long_record(stream_id: str, chunks: int) -> StreamRecord:
    record = StreamRecord("ndjson", "chat", stream_id, started_at=1.5e9, duration_ms=chunks / 10, status="completed")
    for seq in range(chunks):
        record.add_event(EventKind.CHUNK, 1.0 + seq / 10, seq + 1, seq, 0.5 + seq / 10)
    return record


def test_a_batch_the_writer_has_not_read_yet_is_written_whole_before_the_finish(tmp_path: Path):
    run, _, _ = synthetic_run(SyntheticSpec(transports=("ndjson",), streams=1))
    sink = ResultsSink(tmp_path / "out", str(run["id"]))
    # One record over FLUSH_EVENTS wakes the flusher at once: its batch (about 5 MB)
    # fills the pipe while the writer is still importing its code.
    sink.add(long_record("s-1", FLUSH_EVENTS + 50_000))
    deadline = gevent.get_hub().loop.now() + 10
    while sink._pending and gevent.get_hub().loop.now() < deadline:
        gevent.sleep(0.01)
    assert not sink._pending  # the flusher holds the batch, part written
    sink.add(long_record("s-2", 100))
    reply = sink.finish(run)
    assert reply["streams"] == 2 and reply["failed"] == 0
    streams = pd.read_parquet(tmp_path / "out" / "streams.parquet")
    assert sorted(streams["stream_id"]) == ["s-1", "s-2"]
    assert (streams["status"] == str(StreamStatus.COMPLETED)).all()
