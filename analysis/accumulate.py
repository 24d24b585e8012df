"""Batches of whole streams -> per-stream columns and per-group aggregates, in bounded memory.

The one reduction every path shares: the load process folds each batch of
finished streams as it writes them to disk (``loadtests.results.sink``), and
``stream-harness report`` folds a result set batch by batch as it reads it
back (``analysis.results.iter_event_batches`` into
``analysis.metrics.fold_directory``).  A batch is any set of streams together
with *all* of their events; nothing here ever needs two batches at once, so a run of any
length is analysed in the memory of one batch.

Per stream (exact, from that stream's own events): event and chunk counts,
TTFC, first event, gap p50/p99/max, staleness p99, first burst, chunk rate,
and ``short_stream`` when it delivered fewer chunks than promised.

Per group of streams (``GroupKey``: transport, endpoint, client): an
:class:`~analysis.aggregate.Aggregate`; chunk-level distributions go into 1%
log histograms, so pooled chunk percentiles are within 1% of exact.  Streams
that started in the warm-up are kept and flagged but left out of every
statistic.  Optionally, chunk arrivals per second and per-window TTFC and gap
histograms (for the report's throughput and drift charts).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pandas as pd

from analysis.aggregate import Aggregate, TimeBin
from analysis.buffering import HOLD_MS, RATE_MIN_CHUNKS
from analysis.chunks import ChunkSeries, chunk_series, first_burst_lead
from analysis.errors import AnalysisError
from analysis.frames import stream_event_columns
from analysis.histogram import Prepared, prepare_grouped
from analysis.quantiles import segment_percentiles
from stream_harness.contract.kinds import ErrorKind, StreamStatus

#: (transport, endpoint, client)
GroupKey = tuple[str, str, str]

#: Per-stream gap percentiles filled into the streams table.
STREAM_GAP_PERCENTILES: Final = (50.0, 99.0, 100.0)
#: Streams cut short by the test or cancelled say nothing about delivery.
_NOT_DELIVERY: Final = frozenset({ErrorKind.STOPPED})
_IDENTITY_ENCODINGS: Final = frozenset({"", "identity"})


@dataclass
class RunAccumulator:
    """Folds batches of whole streams; ``aggregates`` holds the run so far."""

    warmup_until: float = -math.inf  # epoch s: streams started before it are warm-up
    timeline: bool = False  # count chunk arrivals per second per transport
    drift_window_s: float | None = None  # per-window TTFC and gap histograms per transport
    aggregates: dict[GroupKey, Aggregate] = field(default_factory=dict)
    arrivals: dict[str, Counter[int]] = field(default_factory=dict)  # transport -> second -> chunks
    drift: dict[str, dict[int, TimeBin]] = field(default_factory=dict)  # transport -> window -> bin

    def add_batch(self, streams: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
        """Fold one batch; returns ``streams`` with the derived columns filled.

        ``streams`` are coerced stream rows with unique ascending ``stream_key`` s;
        ``events`` are all of their events, grouped by stream in arrival order.
        """
        streams = streams.reset_index(drop=True)
        keys = streams["stream_key"].to_numpy(dtype=np.int64)
        local = _local_keys(keys, events["stream_key"].to_numpy())
        local_events = events.assign(stream_key=local)
        streams = streams.assign(**stream_event_columns(local_events, np.arange(len(streams))))
        series = chunk_series(streams, local_events)
        streams = _fill_stream_columns(streams, series)
        streams["warmup"] = streams["started_at"].to_numpy(dtype=np.float64) < self.warmup_until
        self._fold(streams, series)
        return streams

    def merge(self, other: RunAccumulator) -> None:
        """Add another accumulator's aggregates, arrivals and drift windows (sums: exact)."""
        for key, agg in other.aggregates.items():
            self._aggregate(key).merge(agg)
        for transport, counts in other.arrivals.items():
            self.arrivals.setdefault(transport, Counter()).update(counts)
        for transport, bins in other.drift.items():
            mine = self.drift.setdefault(transport, {})
            for start, time_bin in bins.items():
                mine.setdefault(start, TimeBin()).merge(time_bin)

    # ------------------------------------------------------------------ folding
    def _fold(self, streams: pd.DataFrame, series: ChunkSeries) -> None:
        labels = _group_labels(streams)
        if not len(labels):
            return
        names, all_codes = np.unique(labels, return_inverse=True)
        warmup = streams["warmup"].to_numpy(dtype=bool)
        codes = np.where(warmup, -1, all_codes).astype(np.int64)
        groups = [self._aggregate(_group_key(str(name))) for name in names]
        n_groups = len(groups)
        if not n_groups:
            return
        for g, count in enumerate(np.bincount(all_codes[warmup], minlength=n_groups)):
            groups[g].add("warmup", int(count))
        self._fold_streams(streams, codes, groups)
        self._fold_chunks(streams, series, codes, groups)

    def _aggregate(self, key: GroupKey) -> Aggregate:
        found = self.aggregates.get(key)
        if found is None:
            found = self.aggregates[key] = Aggregate()
        return found

    def _fold_streams(self, streams: pd.DataFrame, codes: np.ndarray, groups: list[Aggregate]) -> None:
        n_groups = len(groups)

        def per_group(values: np.ndarray) -> np.ndarray:
            return _bincount(codes, values, n_groups)

        status = _text(streams, "status")
        error = _text(streams, "error")
        n_chunks = streams["n_chunks"].to_numpy(dtype=np.float64)
        expected = streams["expected_chunks"].to_numpy(dtype=np.float64)
        delivery = (status != StreamStatus.CANCELLED) & ~np.isin(error, list(_NOT_DELIVERY))
        promised = delivery & (expected > 0)
        totals = {
            "started": per_group(np.ones(len(streams))),
            "completed": per_group(status == StreamStatus.COMPLETED),
            "failed": per_group(status == StreamStatus.FAILED),
            "cancelled": per_group(status == StreamStatus.CANCELLED),
            "events": per_group(streams["n_events"].to_numpy(dtype=np.float64)),
            "chunks": per_group(n_chunks),
            "reads": per_group(streams["n_reads"].to_numpy(dtype=np.float64)),
            "malformed_lines": per_group(streams["malformed_lines"].to_numpy(dtype=np.float64)),
            "delivered_streams": per_group(delivery),
            "delivered_chunks": per_group(np.where(delivery, n_chunks, 0.0)),
            "promised_chunks": per_group(np.where(promised, expected, 0.0)),
            "delivered_promised": per_group(np.where(promised, n_chunks, 0.0)),
        }
        ttfc = streams["ttfc_ms"].to_numpy(dtype=np.float64)
        headers = streams["time_to_headers_ms"].to_numpy(dtype=np.float64)
        rate = np.where(n_chunks >= RATE_MIN_CHUNKS, streams["chunk_rate_per_s"].to_numpy(dtype=np.float64), np.nan)
        first_burst = np.where(n_chunks > 0, streams["first_burst_chunks"].to_numpy(dtype=np.float64), np.nan)
        per_stream = {
            "ttfc": ttfc,
            "headers": headers,
            "first_event": streams["first_event_ms"].to_numpy(dtype=np.float64),
            "headers_to_first": ttfc - headers,
            "stream_rate": rate,
            "first_burst": first_burst,
        }
        encoding = _text(streams, "content_encoding")
        for g, agg in enumerate(groups):
            mine = codes == g
            if not mine.any():
                continue
            for name, values in totals.items():
                agg.add(name, int(round(values[g])))
            for name, values in per_stream.items():
                agg.hist[name].add_array(values[mine])
            for kind, count in Counter(e for e in error[mine & (status == StreamStatus.FAILED)] if e).items():
                agg.errors[str(kind)] = agg.errors.get(str(kind), 0) + count
            agg.encodings.update(set(encoding[mine]) - _IDENTITY_ENCODINGS)

    def _fold_chunks(
        self, streams: pd.DataFrame, series: ChunkSeries, codes: np.ndarray, groups: list[Aggregate]
    ) -> None:
        if series.n_chunks == 0 and series.read_stream.size == 0:
            return
        chunk_group = codes[series.stream]
        read_group = codes[series.read_stream]
        chunk_slices = _group_slices(chunk_group, len(groups))
        read_slices = _group_slices(read_group, len(groups))
        burst_lead = np.where(series.burst_size >= 2, series.burst_lead_ms, np.nan)
        stale = series.staleness_ms >= HOLD_MS
        for agg, chunks, reads in zip(groups, chunk_slices, read_slices):
            if chunks.size:
                agg.hist["gap"].add_array(series.gap_ms[chunks])
                agg.hist["staleness"].add_array(series.staleness_ms[chunks])
                agg.hist["jitter"].add_array(series.jitter_ms[chunks])
                agg.hist["burst_size"].add_integers(series.burst_size[chunks])
                agg.hist["burst_lead"].add_array(burst_lead[chunks])
                agg.add("coalesced", int(np.count_nonzero(series.coalesced[chunks])))
                agg.add("stale", int(np.count_nonzero(stale[chunks])))
            if reads.size:
                agg.hist["events_per_read"].add_integers(series.read_events[reads])
        if self.timeline or self.drift_window_s:
            self._fold_time(streams, series, chunk_group)

    def _fold_time(self, streams: pd.DataFrame, series: ChunkSeries, chunk_group: np.ndarray) -> None:
        """Chunk arrivals per second, and per-window TTFC and gap, per transport."""
        transport = _text(streams, "transport")
        names, transport_code = np.unique(transport, return_inverse=True)  # per stream: few and cheap
        started = streams["started_at"].to_numpy(dtype=np.float64)
        counted = (chunk_group >= 0) & np.isfinite(started[series.stream])
        chunk_transport = transport_code[series.stream]
        arrival = started[series.stream] + series.t_ms / 1000.0
        present: list[int] = (
            np.flatnonzero(np.bincount(chunk_transport[counted], minlength=len(names))).tolist()
            if series.n_chunks
            else []
        )
        for code in present:
            name = names[code]
            mine = counted & (chunk_transport == code)
            if self.timeline:
                self.arrivals.setdefault(str(name), Counter()).update(_per_unit(arrival[mine], 1.0))
            if self.drift_window_s:
                bins = self.drift.setdefault(str(name), {})
                for start, (chunks, prepared) in _per_window(
                    arrival[mine], series.gap_ms[mine], self.drift_window_s
                ).items():
                    target = bins.setdefault(start, TimeBin())
                    target.chunks += chunks
                    target.gap.add_prepared(prepared)
        if self.drift_window_s:
            ttfc = streams["ttfc_ms"].to_numpy(dtype=np.float64)
            counted_streams = ~streams["warmup"].to_numpy(dtype=bool) & np.isfinite(ttfc) & np.isfinite(started)
            for name in np.unique(transport[counted_streams]).tolist():
                mine = counted_streams & (transport == name)
                bins = self.drift.setdefault(str(name), {})
                for start, (_, prepared) in _per_window(started[mine], ttfc[mine], self.drift_window_s).items():
                    bins.setdefault(start, TimeBin()).ttfc.add_prepared(prepared)


def merged(aggregates: dict[GroupKey, Aggregate], keep: tuple[str | None, str | None, str | None]) -> Aggregate:
    """One aggregate over every group matching ``keep`` (None: any value in that place)."""
    out = Aggregate()
    for key, agg in aggregates.items():
        if all(want is None or want == have for want, have in zip(keep, key)):
            out.merge(agg)
    return out


# --------------------------------------------------------------------------- per stream


def _fill_stream_columns(streams: pd.DataFrame, series: ChunkSeries) -> pd.DataFrame:
    """Gap/staleness percentiles, first burst and chunk rate per stream; short streams failed.

    A stream that ``completed`` but carried fewer chunks than the backend
    promised (``expected_chunks``) becomes ``failed`` with ``short_stream``:
    the stream ended cleanly yet the user lost text.
    """
    n = len(streams)
    at = series.stream_keys
    gap = np.full((n, len(STREAM_GAP_PERCENTILES)), np.nan)
    gap[at] = segment_percentiles(series.gap_ms, series.stream_starts, STREAM_GAP_PERCENTILES)
    staleness = np.full(n, np.nan)
    staleness[at] = segment_percentiles(series.staleness_ms, series.stream_starts, (99.0,))[:, 0]
    rate, first_burst = _rates_and_first_bursts(series, streams)
    out = streams.assign(
        gap_p50_ms=gap[:, 0],
        gap_p99_ms=gap[:, 1],
        gap_max_ms=gap[:, 2],
        staleness_p99_ms=staleness,
        chunk_rate_per_s=rate,
        first_burst_chunks=first_burst.astype(np.int32),
    )
    expected = out["expected_chunks"].to_numpy()
    delivered = out["n_chunks"].to_numpy()
    short = (out["status"] == StreamStatus.COMPLETED).to_numpy(dtype=bool) & (expected >= 0) & (delivered < expected)
    if short.any():
        out.loc[short, "status"] = str(StreamStatus.FAILED)
        out.loc[short, "error"] = str(ErrorKind.SHORT_STREAM)
        out.loc[short, "error_detail"] = [
            f"received {got} of {want} promised chunks" for got, want in zip(delivered[short], expected[short])
        ]
    return out


def _rates_and_first_bursts(series: ChunkSeries, streams: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per stream: chunks/s while streaming, and the size of its first burst (0 without chunks).

    A stream whose chunks all came in one burst (e.g. one gzip block) gets its
    rate over the silence before that burst instead.
    """
    n = len(streams)
    rate = np.full(n, np.nan)
    first_burst = np.zeros(n, dtype=np.int64)
    if series.n_chunks:
        starts = series.stream_starts
        last = np.r_[starts[1:] - 1, series.n_chunks - 1]
        keys = series.stream_keys
        n_chunks = last - starts + 1
        span_ms = series.t_ms[last] - series.t_ms[starts]
        silence = first_burst_lead(series.t_ms[last], streams["time_to_headers_ms"].to_numpy(dtype=np.float64)[keys])
        with np.errstate(divide="ignore", invalid="ignore"):
            rate[keys] = np.where(
                span_ms > 0,
                (n_chunks - 1) * 1000.0 / span_ms,
                np.where(silence > 0, n_chunks * 1000.0 / silence, np.nan),
            )
        first_burst[keys] = series.burst_size[starts]
    return rate, first_burst


def _local_keys(keys: np.ndarray, event_keys: np.ndarray) -> np.ndarray:
    """Position in ``keys`` of each event's stream; AnalysisError when one is not there."""
    if keys.size > 1 and not bool(np.all(keys[1:] > keys[:-1])):
        raise AnalysisError("stream keys of a batch are not unique and ascending")
    local = np.searchsorted(keys, event_keys)
    if event_keys.size and (local.max() >= keys.size or not np.array_equal(keys[local], event_keys)):
        raise AnalysisError("events refer to streams that are not in their batch (partial write?)")
    return local.astype(np.int32)


def _group_slices(codes: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """For each group, the positions of its items (codes < 0 belong to none): one stable sort."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_groups + 1))
    return [order[bounds[g] : bounds[g + 1]] for g in range(n_groups)]


def _per_unit(times: np.ndarray, width: float) -> dict[int, int]:
    """How many ``times`` (epoch s) fall into each ``width``-second slot, by slot start."""
    if not times.size:
        return {}
    slots = np.floor(times / width).astype(np.int64)
    low = int(slots.min())
    counts = np.bincount(slots - low)
    present = np.flatnonzero(counts)
    return {int((low + slot) * width): int(counts[slot]) for slot in present.tolist()}


def _per_window(times: np.ndarray, values: np.ndarray, width: float) -> dict[int, tuple[int, Prepared | None]]:
    """Per ``width``-second window of ``times``: how many, and ``values`` bucketed (one pass)."""
    if not times.size:
        return {}
    slots = np.floor(times / width).astype(np.int64)
    low = int(slots.min())
    codes = slots - low
    n = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=n)
    prepared = prepare_grouped(values, codes, n)
    return {int((low + i) * width): (int(counts[i]), prepared[i]) for i in np.flatnonzero(counts).tolist()}


def _text(streams: pd.DataFrame, column: str) -> np.ndarray:
    """A text column as an object array of ``str`` ("" where missing)."""
    return streams[column].astype(object).fillna("").astype(str).to_numpy(dtype=object)


def _group_key(label: str) -> GroupKey:
    transport, endpoint, client = label.split("\x00")
    return transport, endpoint, client


def _group_labels(streams: pd.DataFrame) -> np.ndarray:
    frame = streams[["transport", "endpoint", "client"]].astype(object).fillna("").astype(str)
    return (frame["transport"] + "\x00" + frame["endpoint"] + "\x00" + frame["client"]).to_numpy()


def _bincount(codes: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    bins = np.where(codes >= 0, codes, n_groups)
    return np.bincount(bins, weights=np.asarray(values, dtype=np.float64), minlength=n_groups + 1)[:n_groups]
