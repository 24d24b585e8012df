"""A mergeable log-bucketed histogram (HDR-like) for live percentiles.

Live views cannot keep every gap of every chunk of every worker, and averages
of percentiles are meaningless; bucket counts, however, add up.  Values fall
into buckets ``[GAMMA**k, GAMMA**(k+1))`` with ``GAMMA = 1.01``; a bucket also
keeps the sum of its values and is reported as their mean, so any quantile is
within one bucket (1%) of the observed value of the right rank, and exact
when a bucket holds one distinct value (small integers such as events per
read each have a bucket of their own).  Merging two histograms is adding
their counts and sums, so a worker's snapshot, the master's total and a
histogram of the concatenated raw data are the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Bucket growth factor: 1% wide buckets.
GAMMA = 1.01
_INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
#: Values below this (ms) count as zero: finer than any clock we read.
ZERO_BELOW = 1e-3

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.50),
    ("p90", 0.90),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p999", 0.999),
)


@dataclass(frozen=True, slots=True)
class Prepared:
    """Values already bucketed, ready to add to any number of histograms."""

    count: int
    total: float
    min: float
    max: float
    zeros: int
    keys: list[int]
    counts: list[int]
    sums: list[float]


def prepare(values: np.ndarray | Iterable[float], weights: np.ndarray | Iterable[int] | None = None) -> Prepared | None:
    """Bucket ``values`` (NaN ignored; ``weights`` repeat value i w[i] times); None when empty."""
    v = np.asarray(values, dtype=np.float64)
    w = None if weights is None else np.asarray(weights, dtype=np.int64)
    keep = ~np.isnan(v)
    if w is not None:
        keep &= w > 0
    if not keep.all():
        v = v[keep]
        w = None if w is None else w[keep]
    if v.size == 0:
        return None
    count = int(v.size) if w is None else int(w.sum())
    total = float(v.sum()) if w is None else float(v @ w)
    low_value, high_value = float(v.min()), float(v.max())
    zeros = 0
    small = v < ZERO_BELOW
    if small.any():
        zeros = int(small.sum()) if w is None else int(w[small].sum())
        v = v[~small]
        if w is not None:
            w = w[~small]
    if v.size == 0:
        return Prepared(count, total, low_value, high_value, zeros, [], [], [])
    keys = np.floor(np.log(v) * _INV_LOG_GAMMA).astype(np.int64)
    low = int(keys.min())
    offsets = keys - low  # a small range: values span a few decades
    counts = np.bincount(offsets, weights=w)
    sums = np.bincount(offsets, weights=v if w is None else v * w)
    present = np.flatnonzero(counts)
    return Prepared(
        count,
        total,
        low_value,
        high_value,
        zeros,
        (present + low).tolist(),
        counts[present].astype(np.int64).tolist(),
        sums[present].tolist(),
    )


class LogHistogram:
    """Counts of non-negative values in 1% log buckets, plus exact count/sum/min/max."""

    __slots__ = ("buckets", "sums", "zeros", "count", "total", "min", "max")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}  # bucket key -> count
        self.sums: dict[int, float] = {}  # bucket key -> sum of its values
        self.zeros = 0
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    # -- recording -----------------------------------------------------------
    def add(self, value: float, weight: int = 1) -> None:
        """Record one value ``weight`` times (NaN is ignored: it means 'not measured')."""
        if value != value or weight <= 0:  # NaN
            return
        self.count += weight
        self.total += value * weight
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value < ZERO_BELOW:
            self.zeros += weight
            return
        k = math.floor(math.log(value) * _INV_LOG_GAMMA)
        self.buckets[k] = self.buckets.get(k, 0) + weight
        self.sums[k] = self.sums.get(k, 0.0) + value * weight

    def add_array(
        self, values: np.ndarray | Iterable[float], weights: np.ndarray | Iterable[int] | None = None
    ) -> None:
        """Record many values at once (one numpy pass); ``weights`` repeats value i w[i] times."""
        self.add_prepared(prepare(values, weights))

    def add_integers(self, values: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Record non-negative integers (counts such as events per read) without bucketing
        them one by one: one ``bincount``, one bucket update per distinct value."""
        v = np.asarray(values, dtype=np.int64)
        if v.size == 0:
            return
        tally = np.bincount(v, weights=weights)
        for value in np.flatnonzero(tally).tolist():
            self.add(float(value), int(tally[value]))

    def add_prepared(self, prepared: Prepared | None) -> None:
        """Record values bucketed by :func:`prepare` (to add the same values to several histograms)."""
        if prepared is None:
            return
        self.count += prepared.count
        self.total += prepared.total
        self.min = min(self.min, prepared.min)
        self.max = max(self.max, prepared.max)
        self.zeros += prepared.zeros
        buckets, bucket_sums = self.buckets, self.sums
        for k, c, total in zip(prepared.keys, prepared.counts, prepared.sums):
            buckets[k] = buckets.get(k, 0) + c
            bucket_sums[k] = bucket_sums.get(k, 0.0) + total

    def merge(self, other: LogHistogram) -> None:
        """Add ``other``'s counts into this histogram."""
        if other.count == 0:
            return
        for k, c in other.buckets.items():
            self.buckets[k] = self.buckets.get(k, 0) + c
            self.sums[k] = self.sums.get(k, 0.0) + other.sums[k]
        self.zeros += other.zeros
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def clear(self) -> None:
        LogHistogram.__init__(self)

    # -- reading -------------------------------------------------------------
    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) like ``numpy.percentile``'s default, None when empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Several quantiles in one pass (all None when empty).

        Same rank arithmetic as numpy's linear interpolation (position
        ``q * (n - 1)``), with each rank's value read as its bucket's mean,
        so the result is within the bucket precision of what the analysis
        computes from the raw samples.  The extremes are exact (min and max).
        """
        if self.count == 0:
            return [None] * len(qs)
        keys = sorted(self.buckets)
        counts = np.fromiter((self.buckets[k] for k in keys), dtype=np.int64, count=len(keys))
        means = np.fromiter((self.sums[k] for k in keys), dtype=np.float64, count=len(keys))
        means = np.clip(means / np.maximum(counts, 1), self.min, self.max)
        # values in rank order: zeros, then each bucket; ends[i] = ranks below the end of i
        ends = self.zeros + np.cumsum(counts)

        def value_at(rank: int) -> float:
            if rank <= 0:
                return self.min
            if rank >= self.count - 1:
                return self.max
            if rank < self.zeros:
                return 0.0
            return float(means[int(np.searchsorted(ends, rank, side="right"))])

        out: list[float | None] = []
        for q in qs:
            position = min(max(q, 0.0), 1.0) * (self.count - 1)
            below = math.floor(position)
            fraction = position - below
            low = value_at(below)
            out.append(low if fraction == 0.0 else low + (value_at(below + 1) - low) * fraction)
        return out

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def summary(self) -> dict[str, float | None]:
        """The contract's latency object: p50, p90, p95, p99, p999, max (None when empty)."""
        values = self.quantiles(tuple(q for _name, q in PERCENTILES))
        out: dict[str, float | None] = {name: v for (name, _q), v in zip(PERCENTILES, values)}
        out["max"] = self.max if self.count else None
        return out

    # -- wire format (msgpack/JSON friendly) ----------------------------------
    def to_dict(self) -> dict[str, Any]:
        keys = sorted(self.buckets)
        return {
            "k": keys,
            "c": [self.buckets[k] for k in keys],
            "v": [self.sums[k] for k in keys],
            "z": self.zeros,
            "n": self.count,
            "s": self.total,
            "lo": self.min if self.count else None,
            "hi": self.max if self.count else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogHistogram:
        h = cls()
        h.buckets = {int(k): int(c) for k, c in zip(data["k"], data["c"])}
        h.sums = {int(k): float(v) for k, v in zip(data["k"], data["v"])}
        h.zeros = int(data["z"])
        h.count = int(data["n"])
        h.total = float(data["s"])
        if h.count:
            h.min = float(data["lo"])
            h.max = float(data["hi"])
        return h

    def __repr__(self) -> str:
        return f"LogHistogram(count={self.count}, p50={self.quantile(0.5)}, max={self.max})"


def prepare_grouped(values: np.ndarray, groups: np.ndarray, n_groups: int) -> list[Prepared | None]:
    """:func:`prepare` for each group of ``values`` at once (``groups``: ints in 0..n_groups-1).

    One pass of bincounts over (group, bucket) instead of one mask per group,
    for callers with many groups (time windows).  Each group's min and max are
    its extreme buckets' means (within 1% of the exact extremes): good enough
    for quantiles, which are all these histograms are read for.
    """
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups, dtype=np.int64)
    keep = ~np.isnan(v)
    v, g = v[keep], g[keep]
    out: list[Prepared | None] = [None] * n_groups
    if v.size == 0:
        return out
    counts = np.bincount(g, minlength=n_groups)
    totals = np.bincount(g, weights=v, minlength=n_groups)
    small = v < ZERO_BELOW
    zeros = np.bincount(g[small], minlength=n_groups)
    big = ~small
    keys = np.floor(np.log(v[big]) * _INV_LOG_GAMMA).astype(np.int64)
    key_low = int(keys.min()) if keys.size else 0
    span = int(keys.max()) - key_low + 1 if keys.size else 1
    cells = g[big] * span + (keys - key_low)
    cell_counts = np.bincount(cells, minlength=n_groups * span).reshape(n_groups, span)
    cell_sums = np.bincount(cells, weights=v[big], minlength=n_groups * span).reshape(n_groups, span)
    for group in np.flatnonzero(counts).tolist():
        present = np.flatnonzero(cell_counts[group])
        group_counts = cell_counts[group, present]
        group_sums = cell_sums[group, present]
        means = group_sums / group_counts if present.size else group_sums
        low = 0.0 if zeros[group] or not present.size else float(means[0])
        high = float(means[-1]) if present.size else 0.0
        out[group] = Prepared(
            int(counts[group]),
            float(totals[group]),
            low,
            high,
            int(zeros[group]),
            (present + key_low).tolist(),
            group_counts.tolist(),
            group_sums.tolist(),
        )
    return out
