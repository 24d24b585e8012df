"""A run's analysis: its summary, its filled streams table and what the charts need.

Two entry points, one reduction (``analysis.accumulate.RunAccumulator``):

- :func:`analyse_directory`: a result set on disk, read one batch of whole
  streams at a time, so memory does not grow with the number of events
  (``stream-harness report`` and ``compare``);
- :func:`analyse`: frames already in memory (tests, tools, small runs).

Per-transport objects carry the contract's keys plus extensions
(``cancelled``, ``first_event_ms``, ``chunks_per_stream``,
``buffering.evidence``, ``endpoints``, ``by_client``, ``approximate``);
readers ignore keys they do not know.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from analysis.accumulate import GroupKey, RunAccumulator
from analysis.aggregate import Aggregate, TimeBin
from analysis.frames import coerce_events, coerce_streams
from analysis.results import check_directory, event_parts, iter_event_batches, read_run, read_streams, warmup_until
from analysis.summary import build_summary, run_duration_s
from stream_harness.contract.summary import Summary

#: Worker processes of an analysis at most (more cores sit idle: the work is I/O-bound by then).
MAX_WORKERS: Final = 4
#: Environment variable that sets the number of worker processes (1: fold in this process).
WORKERS_ENV: Final = "STREAM_HARNESS_ANALYSIS_WORKERS"
#: Width of the drift chart's windows; widened for long runs to keep at most MAX_WINDOWS.
DRIFT_WINDOW_S: Final = 10.0
MAX_WINDOWS: Final = 360

#: Fetches the events of some streams (by stream key), for the charts of the worst streams.
EventSource = Callable[[Sequence[int]], pd.DataFrame]


@dataclass(frozen=True)
class Analysis:
    """Everything computed from one run."""

    summary: Summary
    streams: pd.DataFrame  # with the derived columns filled
    aggregates: dict[GroupKey, Aggregate] = field(default_factory=dict)
    arrivals: dict[str, Counter[int]] = field(default_factory=dict)  # transport -> epoch s -> chunks
    drift: dict[str, dict[int, TimeBin]] = field(default_factory=dict)  # transport -> window -> bin
    drift_window_s: float = DRIFT_WINDOW_S
    events_of: EventSource | None = None


def analyse(run: Mapping[str, Any], streams: pd.DataFrame, events: pd.DataFrame) -> Analysis:
    """The analysis of a run held in memory."""
    streams = coerce_streams(streams)
    events = coerce_events(events)
    keys = events["stream_key"].to_numpy()
    if keys.size > 1 and np.any(keys[1:] < keys[:-1]):
        events = events.sort_values("stream_key", kind="stable", ignore_index=True)
    window = drift_window_s(run, streams)
    accumulator = RunAccumulator(warmup_until=warmup_until(run), timeline=True, drift_window_s=window)
    filled = accumulator.add_batch(streams, events)

    def events_of(wanted: Sequence[int]) -> pd.DataFrame:
        return events[np.isin(events["stream_key"].to_numpy(), np.asarray(wanted))].reset_index(drop=True)

    return _finish(run, filled, accumulator, window, events_of)


def analyse_directory(
    directory: str | Path, *, on_batch: Callable[[pd.DataFrame, pd.DataFrame], None] | None = None
) -> Analysis:
    """The analysis of a result set on disk, in the memory of one batch.

    ``on_batch(filled_streams, events)`` sees every batch (e.g. to copy the set).
    """
    directory = check_directory(directory)
    run = read_run(directory)
    streams = read_streams(directory)
    window = drift_window_s(run, streams)
    accumulator = RunAccumulator(warmup_until=warmup_until(run), timeline=True, drift_window_s=window)
    parts = event_parts(directory)
    n_workers = min(analysis_workers(), len(parts))
    if on_batch is None and n_workers > 1:
        filled = _fold_in_parallel(directory, streams, accumulator, parts, n_workers)
    else:
        filled = fold_directory(directory, streams, accumulator, on_batch=on_batch)

    def events_of(wanted: Sequence[int]) -> pd.DataFrame:
        parts = list(iter_event_batches(directory, keys=wanted))
        return pd.concat(parts, ignore_index=True) if parts else coerce_events(_no_events())

    return _finish(run, filled, accumulator, window, events_of)


def analysis_workers() -> int:
    """Worker processes that fold a result set's part files: $STREAM_HARNESS_ANALYSIS_WORKERS, else up to 2."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if configured.isdigit() and int(configured) >= 1:
        return int(configured)
    return min(2, os.cpu_count() or 1)


def fold_directory(
    directory: Path,
    streams: pd.DataFrame,
    accumulator: RunAccumulator,
    *,
    key_offset: int = 0,
    on_batch: Callable[[pd.DataFrame, pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Fold every stream of a result set into ``accumulator``; returns the filled streams table.

    ``streams`` is the set's table (row i = the set's stream i), whose stream
    keys may be shifted by ``key_offset`` (merging); events are shifted alike.
    """
    parts: list[pd.DataFrame] = []
    seen = np.zeros(len(streams), dtype=bool)
    for events in iter_event_batches(directory):
        all_keys = events["stream_key"].to_numpy()
        keys = all_keys[np.r_[True, all_keys[1:] != all_keys[:-1]]] if all_keys.size else all_keys  # grouped
        if keys.size and (keys[0] < 0 or keys[-1] >= len(streams)):
            from analysis.results import ResultsError

            raise ResultsError(
                f"{directory}: events refer to streams that streams.parquet does not have (partial write?)"
            )
        if key_offset:
            events = events.assign(stream_key=events["stream_key"] + key_offset)
        batch = accumulator.add_batch(streams.iloc[keys], events)
        seen[keys] = True
        parts.append(batch)
        if on_batch is not None:
            on_batch(batch, events)
    rest = streams[~seen]
    if len(rest):
        batch = accumulator.add_batch(rest, coerce_events(_no_events()))
        parts.append(batch)
        if on_batch is not None:
            on_batch(batch, coerce_events(_no_events()))
    if not parts:
        return accumulator.add_batch(streams, coerce_events(_no_events()))
    return pd.concat(parts, ignore_index=True).sort_values("stream_key", kind="stable", ignore_index=True)


def _fold_in_parallel(
    directory: Path, streams: pd.DataFrame, accumulator: RunAccumulator, parts: list[Path], n_workers: int
) -> pd.DataFrame:
    """``fold_directory`` with the part files shared out over worker processes."""
    shares = [parts[i::n_workers] for i in range(n_workers)]
    settings = (accumulator.warmup_until, accumulator.timeline, accumulator.drift_window_s)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited gevent or sockets
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
        results = list(
            pool.map(_fold_share, [directory] * n_workers, [streams] * n_workers, shares, [settings] * n_workers)
        )
    filled: list[pd.DataFrame] = []
    seen = np.zeros(len(streams), dtype=bool)
    for part_streams, part in results:
        accumulator.merge(part)
        filled.append(part_streams)
        seen[part_streams["stream_key"].to_numpy()] = True
    rest = streams[~seen]
    if len(rest):
        filled.append(accumulator.add_batch(rest, coerce_events(_no_events())))
    return pd.concat(filled, ignore_index=True).sort_values("stream_key", kind="stable", ignore_index=True)


def _fold_share(
    directory: Path, streams: pd.DataFrame, parts: list[Path], settings: tuple[float, bool, float | None]
) -> tuple[pd.DataFrame, RunAccumulator]:
    """One worker's share: its part files folded into an accumulator of its own."""
    warmup, timeline, window = settings
    accumulator = RunAccumulator(warmup_until=warmup, timeline=timeline, drift_window_s=window)
    filled = []
    for events in iter_event_batches(directory, parts=parts):
        all_keys = events["stream_key"].to_numpy()
        keys = all_keys[np.r_[True, all_keys[1:] != all_keys[:-1]]]
        filled.append(accumulator.add_batch(streams.iloc[keys], events))
    table = pd.concat(filled, ignore_index=True) if filled else streams.iloc[:0]
    return table, accumulator


def drift_window_s(run: Mapping[str, Any], streams: pd.DataFrame) -> float:
    """DRIFT_WINDOW_S, widened so that a long run has at most MAX_WINDOWS windows."""
    duration = run_duration_s(run, streams)
    return max(DRIFT_WINDOW_S, float(math.ceil(duration / MAX_WINDOWS))) if duration > 0 else DRIFT_WINDOW_S


def _finish(
    run: Mapping[str, Any], streams: pd.DataFrame, accumulator: RunAccumulator, window: float, events_of: EventSource
) -> Analysis:
    summary = build_summary(run, streams, accumulator.aggregates)
    return Analysis(
        summary=summary,
        streams=streams,
        aggregates=accumulator.aggregates,
        arrivals=accumulator.arrivals,
        drift=accumulator.drift,
        drift_window_s=window,
        events_of=events_of,
    )


def _no_events() -> pd.DataFrame:
    from stream_harness.contract.schema import EVENT_DTYPES

    return pd.DataFrame({name: np.empty(0, dtype=dtype) for name, dtype in EVENT_DTYPES.items()})
