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

from analysis.errors import AnalysisError
from analysis.results import ResultsError, load_results, write_results


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
    """Write one results directory (raw files + summary.json) holding every run's streams.

    Raises MergeError for a missing or unreadable run.
    """
    if not run_dirs:
        raise MergeError("nothing to merge")
    metas, all_streams, all_events, ids = [], [], [], []
    offset = 0
    for run_dir in run_dirs:
        try:
            results = load_results(run_dir)
        except ResultsError as exc:
            raise MergeError(str(exc)) from None
        rid = Path(run_dir).resolve().name
        all_streams.append(
            results.streams.assign(
                stream_key=results.streams["stream_key"] + offset,
                stream_id=rid + "/" + results.streams["stream_id"].astype("string"),
            )
        )
        all_events.append(results.events.assign(stream_key=results.events["stream_key"] + offset))
        offset += len(results.streams)
        metas.append(results.run)
        ids.append(rid)
    counts = [len(frame) for frame in all_streams]
    write_results(
        out_dir,
        merge_meta(metas, ids, run_id, counts),
        pd.concat(all_streams, ignore_index=True),
        pd.concat(all_events, ignore_index=True),
    )
    return out_dir
