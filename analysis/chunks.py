"""Per-chunk series derived once from ``events``: gaps, staleness, jitter, bursts.

Every metric and the buffering detector read these arrays instead of going
back to the events, so each quantity has one definition (docs/RESULTS.md):

- gap: arrival of a chunk minus arrival of the previous chunk of its stream;
- transit: arrival minus server emit time (both ms since the request was sent);
- staleness: transit minus the smallest transit of the stream's chunks;
- jitter: |transit(i) - transit(i-1)| over consecutive chunks (RFC 3550's D);
- burst: a run of chunks of one stream that arrived together (same socket
  read, or reads less than ``BURST_GAP_MS`` apart, i.e. already waiting in
  the socket buffer); ``burst_lead_ms`` is the time since the stream's
  previous burst (for the first burst: since the headers / ack, or since the
  request was sent when the headers arrived with it).

All arrays are aligned on the run's chunks in arrival order, grouped by
stream; "no value" is NaN.  Everything is vectorised: no Python loop over
chunks or streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import pandas as pd

from stream_harness.contract.schema import CHUNK

#: Two chunks closer than this arrived together: reads that close were
#: served from data already in the socket buffer (a read plus parsing one
#: NDJSON line takes tens of microseconds), so nothing separated them on the wire.
BURST_GAP_MS: Final = 0.1


@dataclass(frozen=True, slots=True)
class ChunkSeries:
    """Per-chunk arrays of one run plus per-read event counts."""

    stream: np.ndarray  # int32 stream_key of each chunk
    t_ms: np.ndarray  # arrival (ms since request sent)
    gap_ms: np.ndarray  # since previous chunk of the stream; NaN for the first
    staleness_ms: np.ndarray  # NaN without emit times
    jitter_ms: np.ndarray  # NaN for the first chunk / without emit times
    burst_size: np.ndarray  # int32: chunks in the burst this chunk arrived in
    burst_lead_ms: np.ndarray  # time since the previous burst (first: since headers)
    stream_starts: np.ndarray  # index of each stream's first chunk (streams with chunks)
    read_stream: np.ndarray  # int32 stream_key of each socket read that completed events
    read_events: np.ndarray  # int32 events that read completed

    @property
    def n_chunks(self) -> int:
        return int(self.stream.size)

    @property
    def coalesced(self) -> np.ndarray:
        """True where a chunk arrived together with the previous chunk of its stream."""
        return self.gap_ms <= BURST_GAP_MS

    @property
    def stream_keys(self) -> np.ndarray:
        """Stream key of each segment that ``stream_starts`` opens."""
        return np.asarray(self.stream[self.stream_starts])


def chunk_series(streams: pd.DataFrame, events: pd.DataFrame) -> ChunkSeries:
    """Derive every per-chunk series from ``events`` (sorted by stream, arrival order)."""
    keys = events["stream_key"].to_numpy()
    read_stream, read_events = _events_per_read(keys, events["read"].to_numpy())

    is_chunk = events["kind"].to_numpy() == CHUNK
    stream = keys[is_chunk].astype(np.int32, copy=False)
    t_ms = events["t_ms"].to_numpy()[is_chunk]
    first = np.ones(stream.size, dtype=bool)
    if stream.size:
        first[1:] = stream[1:] != stream[:-1]
    starts = np.flatnonzero(first)
    lengths = np.diff(starts, append=stream.size)

    gap = _diff_within(t_ms, first)
    transit = events["emit_ms"].to_numpy()[is_chunk]
    np.subtract(t_ms, transit, out=transit)
    jitter = _diff_within(transit, first)
    np.abs(jitter, out=jitter)
    staleness = transit
    if staleness.size:
        with np.errstate(invalid="ignore"):
            staleness -= np.repeat(np.fmin.reduceat(transit, starts), lengths)

    headers_ms = streams["time_to_headers_ms"].to_numpy(dtype=np.float64)
    burst_size, burst_lead = _bursts(t_ms, gap, first, stream, headers_ms)
    return ChunkSeries(
        stream=stream,
        t_ms=t_ms,
        gap_ms=gap,
        staleness_ms=staleness,
        jitter_ms=jitter,
        burst_size=burst_size,
        burst_lead_ms=burst_lead,
        stream_starts=starts,
        read_stream=read_stream,
        read_events=read_events,
    )


def _diff_within(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """values[i] - values[i-1] inside a stream, NaN at each stream's first element."""
    out = np.empty(values.size)
    if values.size:
        np.subtract(values[1:], values[:-1], out=out[1:])
        out[first] = np.nan
    return out


def _bursts(
    t_ms: np.ndarray, gap: np.ndarray, first: np.ndarray, stream: np.ndarray, headers_ms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per chunk: size of its burst and the time since the previous burst (or headers)."""
    if t_ms.size == 0:
        return np.empty(0, dtype=np.int32), np.empty(0)
    burst_starts = np.flatnonzero(~(gap <= BURST_GAP_MS))  # NaN gap: a stream's first
    sizes = np.diff(burst_starts, append=t_ms.size)
    lead = gap[burst_starts]  # since the previous burst's (last) chunk arrived
    opens_stream = first[burst_starts]
    opening = burst_starts[opens_stream]
    lead[opens_stream] = first_burst_lead(t_ms[opening], headers_ms[stream[opening]])
    return np.repeat(sizes.astype(np.int32), sizes), np.repeat(lead, sizes)


def first_burst_lead(t_ms: np.ndarray, headers_ms: np.ndarray) -> np.ndarray:
    """Silence before a stream's first burst: since the headers (or ack) arrived, or
    since the request was sent when the headers came with the burst (a buffer held
    them too, e.g. a gzip layer) or are unknown."""
    since_headers = t_ms - headers_ms
    return np.where(since_headers > BURST_GAP_MS, since_headers, t_ms)


def _events_per_read(keys: np.ndarray, reads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stream and event count of every socket read that completed at least one event."""
    if keys.size == 0:
        return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int32)
    new_read = np.ones(keys.size, dtype=bool)
    new_read[1:] = (keys[1:] != keys[:-1]) | (reads[1:] != reads[:-1])
    starts = np.flatnonzero(new_read)
    counts = np.diff(starts, append=keys.size).astype(np.int32)
    return keys[starts].astype(np.int32, copy=False), counts
