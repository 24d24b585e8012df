"""Groups of streams (transport, transport x endpoint) laid out contiguously.

Per-chunk arrays come grouped by stream, but the streams of one transport
are interleaved with the others'.  Rather than masking every array once per
group, ``Layout`` computes one permutation that puts each group's chunks (or
socket reads) side by side; a metric is then gathered once and each group's
percentiles are a selection on a slice.  Groups given in nested order
(endpoints of one transport next to each other) also give the coarser
level (whole transports) as slices of the same permutation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.chunks import ChunkSeries
from analysis.quantiles import selected_percentiles


@dataclass(frozen=True)
class Layout:
    """Where each group's items sit once reordered: ``order`` (None: already in place)."""

    n_groups: int
    order: np.ndarray | None
    bounds: np.ndarray  # n_groups + 1 offsets into the reordered items

    @classmethod
    def of_segments(cls, segment_starts: np.ndarray, n_items: int, segment_group: np.ndarray, n_groups: int) -> Layout:
        """Items in contiguous segments (one per stream), each segment in one group (-1: none)."""
        lengths = np.diff(segment_starts, append=n_items).astype(np.int64)
        group = np.where(segment_group >= 0, segment_group, n_groups).astype(np.int64)
        per_group = np.bincount(group, weights=lengths, minlength=n_groups + 1).astype(np.int64)
        bounds = np.zeros(n_groups + 1, dtype=np.int64)
        np.cumsum(per_group[:n_groups], out=bounds[1:])
        if group.size == 0 or bool(np.all(group[1:] >= group[:-1])):
            return cls(n_groups, None, bounds)
        seg_order = np.argsort(group, kind="stable")
        ordered_lengths = lengths[seg_order]
        shift = segment_starts[seg_order] - (np.cumsum(ordered_lengths) - ordered_lengths)
        order = np.repeat(shift, ordered_lengths) + np.arange(int(ordered_lengths.sum()))
        return cls(n_groups, order, bounds)

    def arrange(self, values: np.ndarray) -> np.ndarray:
        """``values`` (aligned on the items) in group order."""
        return values if self.order is None else values[self.order]

    def percentiles(
        self, values: np.ndarray, percentiles: tuple[float, ...], groups: list[tuple[int, int]] | None = None
    ) -> np.ndarray:
        """Per-group percentiles of ``values`` (NaN = no sample), exactly as numpy's.

        ``groups`` lists ``(first, last)`` ranges of this layout's groups to
        merge (e.g. all endpoints of a transport); default: each group alone.
        """
        arranged = self.arrange(values)
        ranges = groups if groups is not None else [(g, g) for g in range(self.n_groups)]
        out = np.full((len(ranges), len(percentiles)), np.nan)
        for row, (first, last) in enumerate(ranges):
            if last < first:
                continue
            begin, end = self.bounds[first], self.bounds[last + 1]
            if end > begin:
                out[row] = selected_percentiles(arranged[begin:end].copy(), percentiles)
        return out


@dataclass(frozen=True)
class GroupLevel:
    """One level of aggregation (e.g. transports): which group each stream is in,
    and which slices of the chunk and read layouts hold each group."""

    stream_group: np.ndarray  # int32 group of each stream (-1: none)
    n_groups: int
    chunks: Layout
    reads: Layout
    ranges: list[tuple[int, int]]  # per group: (first, last) layout groups it spans

    @classmethod
    def of(cls, series: ChunkSeries, stream_group: np.ndarray, n_groups: int) -> GroupLevel:
        """A level with its own layouts, one layout group per group."""
        stream_group = np.asarray(stream_group, dtype=np.int32)
        chunks = Layout.of_segments(
            series.stream_starts, series.n_chunks, _segment_groups(stream_group, series.stream_keys), n_groups
        )
        read_starts, read_keys = series.read_segments()
        reads = Layout.of_segments(
            read_starts, series.read_stream.size, _segment_groups(stream_group, read_keys), n_groups
        )
        return cls(stream_group, n_groups, chunks, reads, [(g, g) for g in range(n_groups)])

    def coarser(self, parent_of_group: np.ndarray, n_parents: int) -> GroupLevel:
        """The level above (e.g. transports over transport x endpoint) on the same layouts.

        Each parent's groups must be adjacent; -1 = a group without parent.
        """
        parent_of_group = np.asarray(parent_of_group, dtype=np.int32)
        ranges = []
        for parent in range(n_parents):
            members = np.flatnonzero(parent_of_group == parent)
            if members.size and members[-1] - members[0] + 1 != members.size:
                raise ValueError("groups of one parent must be adjacent")
            ranges.append((int(members[0]), int(members[-1])) if members.size else (0, -1))
        lookup = np.r_[parent_of_group, -1]
        return GroupLevel(lookup[self.stream_group], n_parents, self.chunks, self.reads, ranges)

    def chunk_percentiles(self, values: np.ndarray, percentiles: tuple[float, ...]) -> np.ndarray:
        return self.chunks.percentiles(values, percentiles, self.ranges)

    def read_percentiles(self, values: np.ndarray, percentiles: tuple[float, ...]) -> np.ndarray:
        return self.reads.percentiles(values, percentiles, self.ranges)


def _segment_groups(stream_group: np.ndarray, keys: np.ndarray) -> np.ndarray:
    return stream_group[keys] if keys.size else np.empty(0, dtype=np.int32)
