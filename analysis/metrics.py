"""From raw frames to ``summary.json`` (schema 1) and the per-stream derived columns.

``analyse`` is the single entry point: it derives the per-chunk series once
(``analysis.chunks``), fills the stream columns the load users cannot know
(gap and staleness percentiles, streams shorter than promised), then
aggregates per transport and per transport x endpoint exactly as
CONTRACTS.md defines, adding the buffering verdict of each group.

Per-transport objects carry the contract's keys plus extras (``cancelled``,
``first_event_ms``, ``chunks_per_stream``, ``buffering.evidence``,
``endpoints``); readers ignore keys they do not know.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.buffering import detect_buffering
from analysis.chunks import ChunkSeries, chunk_series
from analysis.groups import GroupLevel
from analysis.quantiles import (
    LATENCY_KEYS,
    LATENCY_PERCENTILES,
    grouped_percentiles,
    optional_float,
    segment_percentiles,
)
from stream_harness.contract.schema import SCHEMA_VERSION

#: Preferred order of transports in the summary and the report.
TRANSPORT_ORDER: tuple[str, ...] = ("ndjson", "socketio")
#: Per-stream percentiles filled into streams.parquet.
_STREAM_GAP_PERCENTILES = (50.0, 99.0, 100.0)


@dataclass(frozen=True)
class Analysis:
    """Everything computed from one run: the summary and what the charts need."""

    summary: dict[str, Any]
    streams: pd.DataFrame  # with derived columns filled
    series: ChunkSeries


def analyse(run: Mapping[str, Any], streams: pd.DataFrame, events: pd.DataFrame) -> Analysis:
    """Compute the summary (schema 1) and the filled streams frame of one run."""
    return analyse_series(run, streams, chunk_series(streams, sorted_events(events)))


def analyse_series(run: Mapping[str, Any], streams: pd.DataFrame, series: ChunkSeries) -> Analysis:
    """``analyse`` once the per-chunk series exist (lets a caller free the events first)."""
    streams = fill_stream_metrics(streams, series)
    summary = {
        "schema": SCHEMA_VERSION,
        "run": run_summary(run, streams),
        "transports": transport_summaries(run, streams, series),
    }
    return Analysis(summary=summary, streams=streams, series=series)


def sorted_events(events: pd.DataFrame) -> pd.DataFrame:
    """Events grouped by stream with arrival order kept (stable sort, only when needed)."""
    keys = events["stream_key"].to_numpy()
    if keys.size < 2 or bool(np.all(keys[1:] >= keys[:-1])):
        return events
    return events.sort_values("stream_key", kind="stable", ignore_index=True)


def fill_stream_metrics(streams: pd.DataFrame, series: ChunkSeries) -> pd.DataFrame:
    """Fill gap/staleness percentiles per stream and flag streams shorter than promised.

    A stream that ``completed`` but carried fewer chunks than the backend
    promised (``expected_chunks``) becomes ``failed`` with ``short_stream``:
    the stream ended cleanly yet the user lost text.
    """
    n = len(streams)
    keys = series.stream_keys
    gap = np.full((n, len(_STREAM_GAP_PERCENTILES)), np.nan)
    gap[keys] = segment_percentiles(series.gap_ms, series.stream_starts, _STREAM_GAP_PERCENTILES)
    staleness = np.full((n, 1), np.nan)
    staleness[keys] = segment_percentiles(series.staleness_ms, series.stream_starts, (99.0,))
    out = streams.copy()
    out["gap_p50_ms"] = gap[:, 0]
    out["gap_p99_ms"] = gap[:, 1]
    out["gap_max_ms"] = gap[:, 2]
    out["staleness_p99_ms"] = staleness[:, 0]
    expected = out["expected_chunks"].to_numpy()
    delivered = out["n_chunks"].to_numpy()
    short = (out["status"] == "completed").to_numpy(dtype=bool) & (expected >= 0) & (delivered < expected)
    if short.any():
        out.loc[short, "status"] = "failed"
        out.loc[short, "error"] = "short_stream"
        out.loc[short, "error_detail"] = [
            f"received {got} of {want} promised chunks" for got, want in zip(delivered[short], expected[short])
        ]
    return out


def run_summary(run: Mapping[str, Any], streams: pd.DataFrame) -> dict[str, Any]:
    """The summary's ``run`` object; what run.json lacks is derived from the streams."""
    harness = dict(run.get("harness") or {})
    started = run.get("started_at")
    if not started and len(streams) and np.isfinite(streams["started_at"].min()):
        started = dt.datetime.fromtimestamp(float(streams["started_at"].min()), tz=dt.UTC).isoformat()
    return {
        "id": str(run.get("id") or ""),
        "started_at": str(started or ""),
        "duration_s": float(run_duration_s(run, streams)),
        "host": str(run.get("host") or ""),
        "users": int(run.get("users") or 0),
        "workers": int(run.get("workers") or 0),
        "harness": {
            **harness,  # extra self-check keys (e.g. reasons) pass through
            "saturated": bool(harness.get("saturated", False)),
            "cpu_percent_max": _number_or_none(harness.get("cpu_percent_max")),
            "loop_lag_ms_p99": _number_or_none(harness.get("loop_lag_ms_p99")),
        },
        # extensions: a run that lost a worker or was cut short says so in its summary
        "worker_problems": list(run.get("worker_problems") or []),
        "stopped_early": bool(run.get("stopped_early", False)),
    }


def run_duration_s(run: Mapping[str, Any], streams: pd.DataFrame) -> float:
    """run.json's ``duration_s`` when set, else first request sent -> last stream ended."""
    value = run.get("duration_s")
    if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
        return float(value)
    if len(streams) == 0:
        return 0.0
    start = streams["started_at"].to_numpy(dtype=np.float64)
    end = start + np.nan_to_num(streams["duration_ms"].to_numpy(dtype=np.float64)) / 1000.0
    if not np.isfinite(start).any():
        return 0.0
    return float(np.nanmax(end) - np.nanmin(start))


def transport_summaries(run: Mapping[str, Any], streams: pd.DataFrame, series: ChunkSeries) -> dict[str, Any]:
    """``{transport: object}`` with an ``endpoints`` sub-object per transport."""
    transports = ordered_transports(streams["transport"])
    rank = {transport: index for index, transport in enumerate(transports)}
    pair_list = sorted(
        (tuple(label.split("\x00", 1)) for label in _pair_labels(streams).unique()),
        key=lambda pair: (rank.get(pair[0], len(rank)), pair[1]),
    )
    pair_list = [pair for pair in pair_list if pair[0] in rank]
    duration_s = run_duration_s(run, streams)
    harness = run.get("harness") or {}

    pairs = GroupLevel.of(series, _pair_codes(streams, pair_list), len(pair_list))
    by_pair = _group_objects(streams, series, pairs, duration_s, harness)
    endpoints_of = {
        transport: {endpoint: by_pair[index] for index, (t, endpoint) in enumerate(pair_list) if t == transport}
        for transport in transports
    }
    # a transport with a single endpoint is that endpoint's object: computed once
    several = [len(endpoints_of[t]) > 1 for t in transports]
    parent = np.array([rank[t] if several[rank[t]] else -1 for t, _ in pair_list], dtype=np.int32)
    by_transport = (
        _group_objects(streams, series, pairs.coarser(parent, len(transports)), duration_s, harness)
        if any(several)
        else []
    )
    out: dict[str, Any] = {}
    for index, transport in enumerate(transports):
        endpoints = endpoints_of[transport]
        item = by_transport[index] if several[index] else copy.deepcopy(next(iter(endpoints.values())))
        item["endpoints"] = endpoints
        out[transport] = item
    return out


def ordered_transports(column: pd.Series) -> list[str]:
    """Transports present, known ones first in ``TRANSPORT_ORDER``."""
    present = {str(value) for value in column.dropna().unique()}
    return [t for t in TRANSPORT_ORDER if t in present] + sorted(present.difference(TRANSPORT_ORDER))


def _codes(labels: pd.Series, names: list[str]) -> np.ndarray:
    """Index of each label in ``names`` (-1 when absent), vectorised."""
    return pd.Categorical(labels, categories=names).codes.astype(np.int32)


def _pair_labels(streams: pd.DataFrame) -> pd.Series:
    frame = streams[["transport", "endpoint"]].astype(object).fillna("").astype(str)
    return frame["transport"] + "\x00" + frame["endpoint"]


def _pair_codes(streams: pd.DataFrame, pairs: list[tuple[str, str]]) -> np.ndarray:
    return _codes(_pair_labels(streams), [f"{t}\x00{e}" for t, e in pairs])


def _group_objects(
    streams: pd.DataFrame, series: ChunkSeries, level: GroupLevel, duration_s: float, harness: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One transport-shaped object per group of streams of ``level``."""
    stream_group, n_groups = level.stream_group, level.n_groups
    gap = level.chunk_percentiles(series.gap_ms, LATENCY_PERCENTILES)
    staleness = level.chunk_percentiles(series.staleness_ms, LATENCY_PERCENTILES)
    jitter = level.chunk_percentiles(series.jitter_ms, LATENCY_PERCENTILES)
    headers = _latency_table(streams["time_to_headers_ms"].to_numpy(dtype=np.float64), stream_group, n_groups)
    ttfc = _latency_table(streams["ttfc_ms"].to_numpy(dtype=np.float64), stream_group, n_groups)
    first_event = _latency_table(streams["first_event_ms"].to_numpy(dtype=np.float64), stream_group, n_groups)
    reads_p99 = level.read_percentiles(series.read_events, (99.0,))[:, 0]
    read_group = _bins(stream_group[series.read_stream], n_groups)
    n_reads = np.bincount(read_group, minlength=n_groups + 1)[:n_groups]
    read_events = np.bincount(read_group, weights=series.read_events, minlength=n_groups + 1)[:n_groups]
    p99_index = LATENCY_PERCENTILES.index(99.0)
    verdicts = detect_buffering(
        series, streams, stream_group, n_groups, harness, staleness_p99_max=staleness[:, [p99_index, -1]], level=level
    )
    objects = []
    for group in range(n_groups):
        subset = streams[stream_group == group]
        chunks = int(subset["n_chunks"].sum())
        objects.append(
            {
                "streams": _stream_counts(subset),
                "events": {
                    "total": int(subset["n_events"].sum()),
                    "chunks": chunks,
                    "malformed_lines": int(subset["malformed_lines"].sum()),
                },
                "time_to_headers_ms": _latency_row(headers[group]),
                "ttfc_ms": _latency_row(ttfc[group]),
                "first_event_ms": _latency_row(first_event[group]),
                "gap_ms": _latency_row(gap[group]),
                "staleness_ms": _latency_row(staleness[group], null_when_empty=True),
                "jitter_ms": _latency_row(jitter[group], null_when_empty=True),
                "events_per_read": {
                    "mean": float(read_events[group] / n_reads[group]) if n_reads[group] else None,
                    "p99": optional_float(reads_p99[group]),
                },
                "events_per_s": (chunks / duration_s) if duration_s > 0 else None,
                "chunks_per_stream": _chunks_per_stream(subset),
                "buffering": verdicts[group].as_json(),
            }
        )
    return objects


def _bins(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Codes for ``np.bincount``: "no group" (-1) goes to an overflow bin ``n_groups``."""
    return np.where(codes >= 0, codes, n_groups)


def _latency_table(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    return grouped_percentiles(values, codes, n_groups, LATENCY_PERCENTILES)


def _latency_row(row: np.ndarray, *, null_when_empty: bool = False) -> dict[str, float | None] | None:
    if null_when_empty and not np.isfinite(row).any():
        return None
    return {key: optional_float(value) for key, value in zip(LATENCY_KEYS, row)}


def _stream_counts(subset: pd.DataFrame) -> dict[str, Any]:
    status = subset["status"].astype(object)
    errors = subset["error"].dropna().astype(str).value_counts()
    return {
        "started": int(len(subset)),
        "completed": int((status == "completed").sum()),
        "failed": int((status == "failed").sum()),
        "cancelled": int((status == "cancelled").sum()),
        "errors": {str(kind): int(count) for kind, count in sorted(errors.items())},
    }


def _chunks_per_stream(subset: pd.DataFrame) -> dict[str, float | None]:
    """Mean chunks delivered per stream and, where the backend said, the share delivered.

    Cancelled streams and streams cut because the test stopped are left out:
    they end early by design.
    """
    subset = subset[
        (subset["status"] != "cancelled").to_numpy(dtype=bool)
        & (subset["error"] != "stopped").fillna(True).to_numpy(dtype=bool)
    ]
    delivered = subset["n_chunks"].to_numpy(dtype=np.float64)
    expected = subset["expected_chunks"].to_numpy(dtype=np.float64)
    known = expected > 0
    return {
        "mean": float(delivered.mean()) if delivered.size else None,
        "delivered_share": (float(delivered[known].sum() / expected[known].sum()) if known.any() else None),
    }


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return optional_float(float(value))
