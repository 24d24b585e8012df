"""Stream records -> the two raw-data frames of ``stream_harness.contract.schema``.

Load users keep one record per stream with ``array.array`` event columns (see
``loadtests/results/record.py``; duck-typed here so analysis never imports the
load side).  This module turns a batch of them into ``streams`` and ``events``
frames without touching events one by one: every record's arrays are viewed
with ``np.frombuffer`` and concatenated once.

It also owns the dtype coercion readers use (``coerce_streams`` /
``coerce_events``) and ``stream_event_columns``, the per-stream columns that
follow from the events alone (counts, first chunk, emit times present), so the
writer, the synthetic generator and the reader derive them the same way.
Column names, dtypes and defaults all come from the schema's tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from stream_harness.contract.schema import (
    CHUNK,
    EVENT_DTYPES,
    MISSING_INT,
    RECORD_ARRAYS,
    RECORD_COLUMNS,
    STREAM_DEFAULTS,
    STREAM_DTYPES,
)


def frames_from_records(records: Iterable[Any], first_key: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(streams, events)`` frames with schema dtypes; stream keys count from ``first_key``.

    Derived per-stream columns that need only the events (``n_events``,
    ``n_chunks``, ``ttfc_ms``, ``first_event_ms``, ``has_emit_times``) are
    computed here; the others stay at their defaults for the analysis.
    """
    records = list(records)
    streams = pd.DataFrame(
        {name: [getattr(record, name, STREAM_DEFAULTS[name]) for record in records] for name in RECORD_COLUMNS}
    )
    lengths = np.fromiter((len(record.kinds) for record in records), dtype=np.int64, count=len(records))
    keys = np.arange(first_key, first_key + len(records), dtype=np.int32)
    events_data: dict[str, np.ndarray] = {"stream_key": np.repeat(keys, lengths)}
    for column in RECORD_ARRAYS:
        parts = [np.frombuffer(getattr(record, column.record_array), dtype=column.dtype) for record in records]
        events_data[column.name] = np.concatenate(parts) if parts else np.empty(0, dtype=column.dtype)
    events = pd.DataFrame({name: events_data[name] for name in EVENT_DTYPES}, copy=False)
    streams["stream_key"] = keys
    derived = stream_event_columns(events, keys)
    streams = streams.assign(**derived)
    return coerce_streams(streams, keys_from=first_key), coerce_events(events)


def stream_event_columns(events: pd.DataFrame, keys: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Per-stream columns that follow from ``events`` (grouped by ``stream_key``).

    ``n_events``, ``n_chunks``, ``first_event_ms``, ``ttfc_ms`` (first chunk's
    arrival) and ``has_emit_times`` (any finite ``emit_ms``), one value per
    entry of ``keys`` (streams without events get zeros / NaN).
    """
    keys = np.asarray(keys, dtype=np.int64)
    n = keys.size
    base = int(keys.min()) if n else 0
    span = int(keys.max()) - base + 1 if n else 0
    event_keys = events["stream_key"].to_numpy().astype(np.int64) - base
    inside = (event_keys >= 0) & (event_keys < span)
    event_keys = event_keys[inside]
    t_ms = events["t_ms"].to_numpy()[inside]
    is_chunk = events["kind"].to_numpy()[inside] == CHUNK
    n_events = np.bincount(event_keys, minlength=span)
    n_chunks = np.bincount(event_keys[is_chunk], minlength=span)
    first_event = _first_value_per_key(event_keys, t_ms, span)
    ttfc = _first_value_per_key(event_keys[is_chunk], t_ms[is_chunk], span)
    has_emit = np.bincount(event_keys, weights=np.isfinite(events["emit_ms"].to_numpy()[inside]), minlength=span) > 0
    at = keys - base
    return {
        "n_events": n_events[at].astype(np.int32),
        "n_chunks": n_chunks[at].astype(np.int32),
        "first_event_ms": first_event[at],
        "ttfc_ms": ttfc[at],
        "has_emit_times": has_emit[at],
    }


def _first_value_per_key(keys: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """``values`` at the first row of each key (keys grouped), NaN for absent keys."""
    out = np.full(n, np.nan)
    if keys.size:
        first = np.r_[True, keys[1:] != keys[:-1]]
        out[keys[first]] = values[first]
    return out


def coerce_streams(streams: pd.DataFrame, keys_from: int | None = None) -> pd.DataFrame:
    """``streams`` with every schema column in its dtype.

    Missing columns get the schema's defaults (files from older writers; a
    missing ``stream_key`` counts from ``keys_from``, default 0); unknown columns
    are kept as they are.  Raises ``KeyError`` naming the first missing column
    that has no default.
    """
    data: dict[str, Any] = {}
    n = len(streams)
    for name, dtype in STREAM_DTYPES.items():
        if name in streams.columns:
            column = streams[name]
        elif name == "stream_key":
            start = keys_from or 0
            column = pd.Series(np.arange(start, start + n, dtype=np.int32), index=streams.index)
        elif STREAM_DEFAULTS[name] is not None or name in ("error", "error_detail"):
            column = pd.Series([STREAM_DEFAULTS[name]] * n, index=streams.index, dtype=object)
        else:
            raise KeyError(name)
        data[name] = _as_dtype(column, dtype)
    extra = [name for name in streams.columns if name not in STREAM_DTYPES]
    frame = pd.DataFrame(data, index=streams.index)
    for name in extra:
        frame[name] = streams[name]
    return frame.reset_index(drop=True)


def coerce_events(events: pd.DataFrame) -> pd.DataFrame:
    """``events`` restricted to the event columns in schema dtypes (KeyError if one is missing)."""
    return pd.DataFrame(
        {name: events[name].to_numpy().astype(dtype, copy=False) for name, dtype in EVENT_DTYPES.items()}, copy=False
    )


def _as_dtype(column: pd.Series, dtype: str) -> pd.Series:
    if dtype == "string":
        return column.astype("string")
    if dtype == "bool":
        return column.fillna(False).astype(bool)
    if dtype.startswith("int"):
        return column.fillna(MISSING_INT).astype(np.dtype(dtype))
    return column.astype(np.dtype(dtype))
