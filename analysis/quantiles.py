"""Exact percentiles of raw samples: per stream, and of per-stream values per group.

A stream's own chunks (its gap p50/p99/max, its staleness p99) and per-stream
values pooled over a group (TTFC, time to headers) are few enough to keep as
raw samples; chunk-level quantities pooled over a whole run go into log
histograms instead (``analysis.histogram``).

Quantiles use numpy's default ("linear") interpolation everywhere, so a
reviewer can check any number with ``numpy.percentile``.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np


def optional_float(value: float) -> float | None:
    """``None`` for NaN/inf so JSON carries ``null`` rather than ``NaN``."""
    return float(value) if math.isfinite(value) else None


def selected_percentiles(samples: np.ndarray, percentiles: tuple[float, ...]) -> np.ndarray:
    """``np.percentile(finite samples, percentiles)`` by partial sort, modifying ``samples``.

    NaN partitions after every number, so the finite values are the first
    ``n_finite`` positions and no filtered copy is needed.
    """
    samples = samples.astype(np.float64, copy=False)
    n_valid = samples.size - int(np.count_nonzero(np.isnan(samples)))
    if n_valid == 0:
        return np.full(len(percentiles), np.nan)
    position = _virtual_index(n_valid, percentiles)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, n_valid - 1)
    samples.partition(np.unique(np.r_[below, above]))
    return _lerp(samples[below], samples[above], position - below)


def _virtual_index(n: int | np.ndarray, percentiles: tuple[float, ...]) -> np.ndarray:
    """numpy's "linear" position of each percentile among ``n`` sorted values."""
    quantiles = np.asarray(percentiles, dtype=np.float64) / 100.0
    return (np.asarray(n, dtype=np.float64) - 1.0) * quantiles


def _lerp(low: np.ndarray, high: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """numpy's interpolation formula, so results match ``np.percentile`` to the last bit."""
    diff = high - low
    out = low + diff * fraction
    return np.asarray(np.where(fraction >= 0.5, high - diff * (1.0 - fraction), out))


def sort_by_group(values: np.ndarray, codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Finite ``values`` sorted by (group code, value) plus each group's start offset.

    One ``argsort`` of ``value + code * span`` (span > value range) sorts every
    group at once; the returned values are taken from the original array, so
    they are exact.  Returns ``(sorted_values, starts)`` with
    ``starts[g]:starts[g + 1]`` the slice of group ``g`` (``n_groups + 1`` entries).
    """
    values = np.asarray(values, dtype=np.float64)
    codes = np.asarray(codes)
    keep = ~np.isnan(values) & (codes >= 0)
    values = values[keep]
    codes = codes[keep].astype(np.int64)
    counts = np.bincount(codes, minlength=n_groups)[:n_groups]
    starts = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    if values.size == 0:
        return values, starts
    low = values.min()
    span = float(values.max() - low) + 1.0
    order = np.argsort((values - low) + codes * span)
    return values[order], starts


#: Mean segment length from which one selection per segment beats one big sort.
SEGMENT_LOOP_MIN_MEAN: Final = 500

#: Up to this many groups, one ``np.percentile`` (a linear-time selection) per
#: group beats sorting everything; per-stream quantiles take the sort path.
FEW_GROUPS: Final = 32


def grouped_percentiles(
    values: np.ndarray, codes: np.ndarray, n_groups: int, percentiles: tuple[float, ...]
) -> np.ndarray:
    """``(n_groups, len(percentiles))`` array of per-group percentiles (NaN for empty groups).

    Same numbers as ``np.percentile(values[codes == g], percentiles)`` for
    every group ``g`` with finite values; codes < 0 belong to no group.
    """
    codes = np.asarray(codes)
    out = np.full((n_groups, len(percentiles)), np.nan)
    if n_groups <= FEW_GROUPS:
        for group in range(n_groups):
            out[group] = selected_percentiles(values[codes == group], percentiles)
        return out
    values = np.asarray(values, dtype=np.float64)
    ordered, starts = sort_by_group(values, codes, n_groups)
    counts = np.diff(starts)
    present = counts > 0
    if not present.any():
        return out
    first = starts[:-1][present]
    n = counts[present]
    for column, percentile in enumerate(percentiles):
        position = _virtual_index(n, (percentile,))
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, n - 1)
        out[present, column] = _lerp(ordered[first + below], ordered[first + above], position - below)
    return out


def segment_percentiles(values: np.ndarray, starts: np.ndarray, percentiles: tuple[float, ...]) -> np.ndarray:
    """Percentiles of each contiguous segment ``values[starts[i]:starts[i + 1]]``.

    Long segments (streams of thousands of chunks) are cheapest one selection
    each; many short segments go through one grouped sort instead.
    """
    n_segments = starts.size
    if n_segments == 0:
        return np.full((0, len(percentiles)), np.nan)
    if values.size < SEGMENT_LOOP_MIN_MEAN * n_segments:
        codes = np.repeat(np.arange(n_segments, dtype=np.int64), np.diff(starts, append=values.size))
        return grouped_percentiles(values, codes, n_segments, percentiles)
    ends = np.r_[starts[1:], values.size]
    return np.array(
        [
            selected_percentiles(values[begin:end].copy(), percentiles)
            for begin, end in zip(starts.tolist(), ends.tolist())
        ]
    )
