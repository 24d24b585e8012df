"""The exact reference the analysis is checked against: every number from raw samples with numpy.

The analysis pools chunk-level quantities in 1% log histograms so that it can
run in bounded memory; these functions compute the same quantities the slow,
obvious way (all samples of a group in memory, ``numpy.percentile``), from the
definitions in ``analysis/chunks.py`` and ``analysis/buffering.py``.  Tests
compare the two: verdicts equal, numbers within the documented 1%.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.buffering import HOLD_MS, RATE_MIN_CHUNKS, Evidence
from analysis.chunks import ChunkSeries, chunk_series, first_burst_lead
from stream_harness.contract.summary import LATENCY_KEYS, LATENCY_PERCENTILES


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else math.nan


def exact_latency(values: np.ndarray) -> dict[str, float | None]:
    values = values[np.isfinite(values)]
    if not values.size:
        return dict.fromkeys(LATENCY_KEYS)
    return dict(zip(LATENCY_KEYS, (float(v) for v in np.percentile(values, LATENCY_PERCENTILES))))


def exact_series(streams: pd.DataFrame, events: pd.DataFrame) -> ChunkSeries:
    """The chunk series of a whole run held in memory (events grouped by stream key = row)."""
    events = events.sort_values("stream_key", kind="stable", ignore_index=True)
    return chunk_series(streams, events)


def exact_pooled(streams: pd.DataFrame, events: pd.DataFrame, mask: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Gap, staleness and jitter latency objects of the streams in ``mask``, from every chunk."""
    series = exact_series(streams, events)
    chunks = mask[series.stream]
    return {
        "gap_ms": exact_latency(series.gap_ms[chunks]),
        "staleness_ms": exact_latency(series.staleness_ms[chunks]),
        "jitter_ms": exact_latency(series.jitter_ms[chunks]),
    }


def exact_evidence(streams: pd.DataFrame, events: pd.DataFrame, mask: np.ndarray) -> Evidence:
    """The buffering evidence of the streams in ``mask``, every median and share exact."""
    series = exact_series(streams, events)
    chunks = mask[series.stream]
    gap, staleness = series.gap_ms[chunks], series.staleness_ms[chunks]
    has_previous = np.isfinite(gap)
    known = np.isfinite(staleness)
    burst_size = series.burst_size[chunks]
    lead = np.where(burst_size >= 2, series.burst_lead_ms[chunks], np.nan)
    starts = series.stream_starts
    keys = series.stream_keys
    last = np.r_[starts[1:] - 1, series.n_chunks - 1]
    n_chunks = last - starts + 1
    span = series.t_ms[last] - series.t_ms[starts]
    silence = first_burst_lead(series.t_ms[last], streams["time_to_headers_ms"].to_numpy(dtype=np.float64)[keys])
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(
            span > 0, (n_chunks - 1) * 1000.0 / span, np.where(silence > 0, n_chunks * 1000.0 / silence, np.nan)
        )
    mine = mask[keys]
    ttfc = streams["ttfc_ms"].to_numpy(dtype=np.float64)[mask]
    headers = streams["time_to_headers_ms"].to_numpy(dtype=np.float64)[mask]
    encodings = sorted(
        {e for e in streams["content_encoding"][mask].fillna("").astype(str) if e not in ("", "identity")}
    )
    stale_p99_max = np.percentile(staleness[known], (99, 100)) if known.any() else (math.nan, math.nan)
    return Evidence(
        streams=int(mask.sum()),
        chunks=int(chunks.sum()),
        chunk_rate_per_s=_median(np.where(n_chunks[mine] >= RATE_MIN_CHUNKS, rate[mine], np.nan)),
        coalesced_share=float((series.coalesced[chunks] & has_previous).sum() / has_previous.sum())
        if has_previous.any()
        else math.nan,
        chunks_per_burst=_median(burst_size.astype(np.float64)),
        burst_lead_ms=_median(lead),
        first_burst_chunks=_median(series.burst_size[starts][mine].astype(np.float64)),
        headers_to_first_chunk_ms=_median(ttfc - headers),
        staleness_p99_ms=float(stale_p99_max[0]),
        staleness_max_ms=float(stale_p99_max[1]),
        stale_share=float((staleness[known] >= HOLD_MS).mean()) if known.any() else math.nan,
        encodings=tuple(encodings),
        ttfc_ms=_median(ttfc),
    )
