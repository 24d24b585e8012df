"""Stream records -> the two raw-data frames of ``stream_harness.contract.schema``.

Load users keep one record per stream with ``array.array`` event columns (see
``loadtests/record.py``; duck-typed here so analysis never imports the load
side).  This module turns a list of them into ``streams`` and ``events``
frames without touching events one by one: every record's arrays are viewed
with ``np.frombuffer`` and concatenated once.

It also owns the dtype coercion readers use (``coerce_streams`` /
``coerce_events``) and ``stream_event_columns``, the per-stream columns that
follow from the events alone (counts, first chunk, emit times present), so the
writer, the synthetic generator and the loader derive them the same way.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from stream_harness.contract.schema import CHUNK, EVENT_COLUMNS, STREAM_COLUMNS

#: Values a stream column takes when a record (or an older file) lacks it.
STREAM_DEFAULTS: dict[str, Any] = {
    "worker": "local",
    "user": 0,
    "started_at": np.nan,
    "time_to_headers_ms": np.nan,
    "ttfc_ms": np.nan,
    "duration_ms": np.nan,
    "n_events": 0,
    "n_chunks": 0,
    "n_reads": 0,
    "gap_p50_ms": np.nan,
    "gap_p99_ms": np.nan,
    "gap_max_ms": np.nan,
    "staleness_p99_ms": np.nan,
    "status": "failed",
    "error": None,
    "error_detail": None,
    "http_status": 0,
    "content_encoding": "",
    "malformed_lines": 0,
    "has_emit_times": False,
    "first_event_ms": np.nan,
    "expected_chunks": -1,
}

#: What a missing integer becomes (like ``schema.NO_SEQ``: "unknown").
MISSING_INT = -1

#: Record attributes copied as they are into stream columns.
_RECORD_FIELDS: tuple[str, ...] = (
    "transport", "endpoint", "stream_id", "worker", "user", "started_at",
    "time_to_headers_ms", "duration_ms", "n_reads", "status", "error",
    "error_detail", "http_status", "content_encoding", "malformed_lines",
    "expected_chunks",
)

#: (record attribute, events column, numpy dtype of the array.array typecode).
_EVENT_ARRAYS: tuple[tuple[str, str, str], ...] = (
    ("kinds", "kind", "int8"),
    ("t_ms", "t_ms", "float64"),
    ("reads", "read", "int32"),
    ("seqs", "seq", "int32"),
    ("emit_ms", "emit_ms", "float64"),
)


def frames_from_records(records: Iterable[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(streams, events)`` frames with ``schema`` dtypes; ``stream_key`` = row index.

    Derived per-stream columns that need the events (``n_events``,
    ``n_chunks``, ``ttfc_ms``, ``first_event_ms``, ``has_emit_times``) are
    computed here; gap and staleness columns are left NaN for
    ``analysis.metrics.fill_stream_metrics``.
    """
    records = list(records)
    columns: dict[str, list[Any]] = {
        name: [getattr(record, name, STREAM_DEFAULTS.get(name)) for record in records]
        for name in _RECORD_FIELDS
    }
    streams = pd.DataFrame(columns)
    lengths = np.fromiter((len(record.kinds) for record in records), dtype=np.int64,
                          count=len(records))
    events_data: dict[str, np.ndarray] = {
        "stream_key": np.repeat(np.arange(len(records), dtype=np.int32), lengths),
    }
    for attribute, column, dtype in _EVENT_ARRAYS:
        parts = [np.frombuffer(getattr(record, attribute), dtype=dtype) for record in records]
        events_data[column] = (np.concatenate(parts) if parts
                               else np.empty(0, dtype=dtype)).astype(dtype, copy=False)
    events = pd.DataFrame({name: events_data[name] for name in EVENT_COLUMNS})
    streams["stream_key"] = np.arange(len(records), dtype=np.int32)
    streams = _with_event_columns(streams, events)
    return coerce_streams(streams), coerce_events(events)


def stream_event_columns(events: pd.DataFrame, n_streams: int) -> dict[str, np.ndarray]:
    """Per-stream columns that follow from ``events`` (sorted by ``stream_key``).

    ``n_events``, ``n_chunks``, ``first_event_ms``, ``ttfc_ms`` (first chunk's
    arrival) and ``has_emit_times`` (any finite ``emit_ms``), indexed by stream key.
    """
    keys = events["stream_key"].to_numpy()
    t_ms = events["t_ms"].to_numpy()
    is_chunk = events["kind"].to_numpy() == CHUNK
    n_events = np.bincount(keys, minlength=n_streams)[:n_streams]
    n_chunks = np.bincount(keys[is_chunk], minlength=n_streams)[:n_streams]
    first_event = _first_value_per_key(keys, t_ms, n_streams)
    ttfc = _first_value_per_key(keys[is_chunk], t_ms[is_chunk], n_streams)
    has_emit = np.bincount(keys, weights=np.isfinite(events["emit_ms"].to_numpy()),
                           minlength=n_streams)[:n_streams] > 0
    return {
        "n_events": n_events.astype(np.int32),
        "n_chunks": n_chunks.astype(np.int32),
        "first_event_ms": first_event,
        "ttfc_ms": ttfc,
        "has_emit_times": has_emit,
    }


def _with_event_columns(streams: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    derived = stream_event_columns(events, len(streams))
    return streams.assign(**derived)


def _first_value_per_key(keys: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """``values`` at the first row of each key (keys sorted), NaN for absent keys."""
    out = np.full(n, np.nan)
    if keys.size:
        first = np.r_[True, keys[1:] != keys[:-1]]
        out[keys[first]] = values[first]
    return out


def coerce_streams(streams: pd.DataFrame) -> pd.DataFrame:
    """``streams`` with every ``STREAM_COLUMNS`` column in its schema dtype.

    Missing extra columns get ``STREAM_DEFAULTS`` (files from older writers);
    unknown columns are kept as they are.  Raises ``KeyError`` naming the
    first missing column that has no default.
    """
    data: dict[str, Any] = {}
    n = len(streams)
    for name, dtype in STREAM_COLUMNS.items():
        if name in streams.columns:
            column = streams[name]
        elif name == "stream_key":
            column = pd.Series(np.arange(n, dtype=np.int32), index=streams.index)
        elif name in STREAM_DEFAULTS:
            column = pd.Series([STREAM_DEFAULTS[name]] * n, index=streams.index, dtype=object)
        else:
            raise KeyError(name)
        data[name] = _as_dtype(column, dtype)
    extra = [name for name in streams.columns if name not in STREAM_COLUMNS]
    frame = pd.DataFrame(data, index=streams.index)
    for name in extra:
        frame[name] = streams[name]
    return frame.reset_index(drop=True)


def coerce_events(events: pd.DataFrame) -> pd.DataFrame:
    """``events`` restricted to ``EVENT_COLUMNS`` in schema dtypes (KeyError if one is missing)."""
    return pd.DataFrame({
        name: events[name].to_numpy().astype(dtype, copy=False)
        for name, dtype in EVENT_COLUMNS.items()
    }, copy=False)


def _as_dtype(column: pd.Series, dtype: str) -> pd.Series:
    if dtype == "string":
        return column.astype("string")
    if dtype == "bool":
        return column.fillna(False).astype(bool)
    if dtype.startswith("int"):
        return column.fillna(MISSING_INT).astype(dtype)
    return column.astype(dtype)


def empty_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run with no streams (still a valid input for every function here)."""
    return frames_from_records(())
