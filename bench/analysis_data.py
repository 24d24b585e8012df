"""Synthetic result sets of any size for the analysis benchmark, written batch by batch.

``tests.support.synthetic`` simulates a run in memory; a run of 150 million
chunks would not fit, so this writes one simulated batch of streams at a time
with the same writer a load run uses (``analysis.results.ResultSetWriter``):
the same shard layout, the same row groups of whole streams.  A second
layout, ``legacy``, is the single ``events.parquet`` earlier releases wrote,
for running the previous release's analysis on the very same data.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.frames import coerce_streams
from analysis.results import (
    LEGACY_EVENTS_FILE,
    RUN_FILE,
    STREAMS_FILE,
    ResultSetWriter,
    events_table,
    json_safe,
)
from tests.support.synthetic import SyntheticSpec, synthetic_run

#: Streams simulated per batch (both transports together).
BATCH_STREAMS = 400
#: Mean chunks per stream (the plan's streams have 2,000-10,000).
MEAN_CHUNKS = 6_700


def write_run(directory: Path, chunks: int, *, layout: str = "shards", seed: int = 1) -> int:
    """A run of about ``chunks`` chunks in ``directory``; returns the exact chunk count."""
    per_transport = BATCH_STREAMS // 2
    spec = SyntheticSpec(
        streams=per_transport,
        chunks=(int(MEAN_CHUNKS * 0.9), int(MEAN_CHUNKS * 1.1)),
        endpoints=("chat", "agent", "tool"),
        users=100,
        seed=seed,
    )
    n_batches = max(1, round(chunks / (BATCH_STREAMS * MEAN_CHUNKS)))
    if chunks < BATCH_STREAMS * MEAN_CHUNKS:  # a small run: fewer streams in one batch
        streams = max(2, round(chunks / MEAN_CHUNKS))
        spec = replace(spec, streams=max(1, streams // 2))
    directory.mkdir(parents=True, exist_ok=True)
    writer = ResultSetWriter(directory, f"synthetic-{seed}") if layout == "shards" else None
    legacy: pq.ParquetWriter | None = None
    stream_parts = []
    run: dict[str, Any] = {}
    total = offset = 0
    for batch in range(n_batches):
        run, streams, events = synthetic_run(replace(spec, seed=seed * 1000 + batch))
        streams = streams.assign(
            stream_key=streams["stream_key"] + offset, stream_id=f"b{batch}-" + streams["stream_id"]
        )
        events = events.assign(stream_key=events["stream_key"] + offset)
        total += int(streams["n_chunks"].sum())
        offset += len(streams)
        if writer is not None:
            writer.append(streams, events)
        else:
            table = events_table(events)
            if legacy is None:
                legacy = pq.ParquetWriter(directory / LEGACY_EVENTS_FILE, table.schema, compression="zstd")
            legacy.write_table(table)
            stream_parts.append(streams)
    run = {**run, "id": f"synthetic-{seed}", "duration_s": float(run.get("duration_s") or 60.0) * n_batches}
    if writer is not None:
        writer.commit(run, {"schema": 1}, writer.streams())
    else:
        assert legacy is not None
        legacy.close()
        import pandas as pd

        table = pa.Table.from_pandas(coerce_streams(pd.concat(stream_parts, ignore_index=True)), preserve_index=False)
        pq.write_table(table, directory / STREAMS_FILE, compression="zstd")
        (directory / RUN_FILE).write_text(json.dumps(json_safe(run), indent=2))
    return total


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*.parquet"))


def chunk_count(directory: Path) -> int:
    streams = pq.read_table(directory / STREAMS_FILE, columns=["n_chunks"]).column(0).to_numpy()
    return int(np.sum(streams))
