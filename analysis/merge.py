"""Merge several runs of one profile into one results directory.

``stream_harness.cli.compare_refs`` runs each side in short interleaved rounds and ``stream_harness.cli.nightly``
keeps a rolling baseline of past nights; the regression gate wants one sample
set per side. Rounds are concatenated: stream keys renumbered so events still
point at their stream, stream ids prefixed with the round's run id so they stay
unique, and run metadata summed (duration, so rates stay per second of load)
or taken at its worst (CPU, loop lag). The merge counts as saturated (no
buffering verdict) when most of its streams come from saturated rounds: one
starved round out of several does not void the others' evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.accumulate import RunAccumulator
from analysis.errors import AnalysisError
from analysis.metrics import fold_directory
from analysis.results import ResultsError, ResultSetWriter, check_directory, read_run, read_streams, warmup_until
from analysis.summary import build_summary


class MergeError(AnalysisError):
    """A run directory cannot be merged; one line naming the directory."""


def merge_meta(
    metas: Sequence[dict[str, Any]], run_ids: Sequence[str], run_id: str, stream_counts: Sequence[int] | None = None
) -> dict[str, Any]:
    """run.json of the merge: the first run's keys, with totals and worst cases over all."""
    merged = dict(metas[0])
    merged["id"] = run_id
    merged["merged_from"] = list(run_ids)
    durations = [m.get("duration_s") for m in metas]
    if all(isinstance(d, (int, float)) for d in durations):
        merged["duration_s"] = float(sum(d for d in durations if isinstance(d, (int, float))))
    harnesses = [m.get("harness") or {} for m in metas]
    if any(harnesses):
        harness = dict(harnesses[0])
        counts = list(stream_counts) if stream_counts is not None else [1] * len(metas)
        saturated = [bool(h.get("saturated")) for h in harnesses]
        starved = sum(n for n, sat in zip(counts, saturated) if sat)
        harness["saturated"] = starved * 2 > sum(counts)
        harness["saturated_runs"] = [rid for rid, sat in zip(run_ids, saturated) if sat]
        for key in set().union(*harnesses) - {"saturated", "saturated_runs"}:
            values = [
                v for v in (h.get(key) for h in harnesses) if isinstance(v, (int, float)) and not isinstance(v, bool)
            ]
            if values:
                harness[key] = max(values)
        merged["harness"] = harness
    for key in ("worker_problems", "problems"):
        lists = [v for v in (m.get(key) for m in metas) if isinstance(v, list)]
        if lists:
            merged[key] = [item for items in lists for item in items]
    return merged


def merge_runs(run_dirs: Sequence[Path], out_dir: Path, *, run_id: str) -> Path:
    """Write one result set holding every run's streams (raw files + summary.json).

    Reads each run one batch of streams at a time, so merging runs of any
    length needs the memory of one batch.  Raises MergeError for a missing or
    unreadable run.
    """
    if not run_dirs:
        raise MergeError("nothing to merge")
    try:
        checked = [check_directory(run_dir) for run_dir in run_dirs]
        metas = [read_run(run_dir) for run_dir in checked]
        tables = [read_streams(run_dir) for run_dir in checked]
    except ResultsError as exc:
        raise MergeError(str(exc)) from None
    ids = [Path(run_dir).resolve().name for run_dir in checked]
    meta = merge_meta(metas, ids, run_id, [len(table) for table in tables])
    writer = ResultSetWriter(out_dir, run_id)
    accumulator = RunAccumulator()
    filled: list[pd.DataFrame] = []
    offset = 0
    try:
        for run_dir, run, streams, rid in zip(checked, metas, tables, ids):
            renamed = streams.assign(
                stream_key=streams["stream_key"] + offset,
                stream_id=rid + "/" + streams["stream_id"].astype("string"),
            )
            accumulator.warmup_until = warmup_until(run)  # each run's warm-up from its own start
            filled.append(fold_directory(run_dir, renamed, accumulator, key_offset=offset, on_batch=writer.append))
            offset += len(streams)
        merged_streams = pd.concat(filled, ignore_index=True)
        summary = dict(build_summary(meta, merged_streams, accumulator.aggregates))
        writer.commit(meta, summary, merged_streams)
    except ResultsError as exc:
        writer.abort()
        raise MergeError(str(exc)) from None
    except BaseException:
        writer.abort()
        raise
    return out_dir
