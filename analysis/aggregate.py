"""Mergeable statistics of a group of streams: counters and 1% log histograms.

One :class:`Aggregate` per transport x endpoint x client holds everything the
summary and the buffering verdict need that cannot be kept per stream:
chunk-level distributions (gaps, staleness, jitter, bursts, events per read)
as :class:`~analysis.histogram.LogHistogram` s and counters.  Merging is
adding, so the aggregates of several batches, several load processes or
several workers are the aggregate of the whole run, and the live Streams tab
and the post-run summary read the same quantities.

Definitions are ``analysis/chunks.py``'s: gap = arrival minus the previous
chunk's arrival in the same stream; staleness = transit minus the stream's
smallest transit; jitter = |transit(i) - transit(i-1)|; a burst = chunks that
arrived together (same read, or reads under ``BURST_GAP_MS`` apart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from analysis.histogram import LogHistogram

#: The aggregate's histograms: name -> what one sample is.
HISTOGRAMS: Final[dict[str, str]] = {
    "ttfc": "per stream: request sent -> first chunk (ms)",
    "headers": "per stream: request sent -> headers / ack (ms)",
    "first_event": "per stream: request sent -> first event of any kind (ms)",
    "gap": "per chunk after the first: gap to the previous chunk (ms)",
    "staleness": "per chunk with an emit time: staleness (ms)",
    "jitter": "per chunk with an emit time after the first: jitter (ms)",
    "events_per_read": "per socket read that completed events: how many",
    "burst_size": "per chunk: chunks in the burst it arrived in",
    "burst_lead": "per chunk of a burst of >= 2: silence before the burst (ms)",
    "first_burst": "per stream with chunks: chunks in its first burst",
    "headers_to_first": "per stream with a chunk: ttfc - time to headers (ms)",
    "stream_rate": "per stream with >= RATE_MIN_CHUNKS chunks: chunks/s while streaming",
}
#: The aggregate's counters.
COUNTERS: Final[tuple[str, ...]] = (
    "started",  # streams (warm-up streams excluded)
    "completed",
    "failed",
    "cancelled",
    "warmup",  # streams left out because they started in the warm-up
    "events",
    "chunks",
    "reads",  # socket reads of finished streams (record.n_reads)
    "malformed_lines",
    "coalesced",  # chunks <= BURST_GAP_MS after the previous chunk of their stream
    "stale",  # chunks with staleness >= HOLD_MS
    "promised_chunks",  # chunks promised by the backend, over streams that said
    "delivered_promised",  # chunks delivered by those streams
    "delivered_chunks",  # chunks of streams that count for chunks_per_stream
    "delivered_streams",  # streams that count for chunks_per_stream
)


@dataclass(slots=True)
class TimeBin:
    """What arrived during one slice of wall-clock time (the live chart, the drift chart)."""

    chunks: int = 0
    gap: LogHistogram = field(default_factory=LogHistogram)
    staleness: LogHistogram = field(default_factory=LogHistogram)
    ttfc: LogHistogram = field(default_factory=LogHistogram)

    def merge(self, other: TimeBin) -> None:
        self.chunks += other.chunks
        self.gap.merge(other.gap)
        self.staleness.merge(other.staleness)
        self.ttfc.merge(other.ttfc)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunks": self.chunks,
            "gap": self.gap.to_dict(),
            "staleness": self.staleness.to_dict(),
            "ttfc": self.ttfc.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TimeBin:
        empty = LogHistogram().to_dict()
        return cls(
            int(data["chunks"]),
            LogHistogram.from_dict(data["gap"]),
            LogHistogram.from_dict(data["staleness"]),
            LogHistogram.from_dict(data.get("ttfc", empty)),
        )


def _histograms() -> dict[str, LogHistogram]:
    return {name: LogHistogram() for name in HISTOGRAMS}


@dataclass(slots=True)
class Aggregate:
    """Mergeable statistics of one group of streams (a delta or a running total)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    errors: dict[str, int] = field(default_factory=dict)
    encodings: set[str] = field(default_factory=set)  # non-identity Content-Encodings seen
    hist: dict[str, LogHistogram] = field(default_factory=_histograms)
    bins: dict[int, TimeBin] = field(default_factory=dict)  # by bin start (epoch s)

    def add(self, counter: str, n: int) -> None:
        self.counts[counter] += n

    def bin(self, start: int) -> TimeBin:
        found = self.bins.get(start)
        if found is None:
            found = self.bins[start] = TimeBin()
        return found

    def merge(self, other: Aggregate) -> None:
        for name, n in other.counts.items():
            self.counts[name] = self.counts.get(name, 0) + n
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        self.encodings.update(other.encodings)
        for name, histogram in other.hist.items():
            self.hist[name].merge(histogram)
        for start, other_bin in other.bins.items():
            self.bin(start).merge(other_bin)

    def prune_bins(self, before: int) -> None:
        """Forget time bins older than ``before`` (epoch s); totals are unaffected."""
        for start in [s for s in self.bins if s < before]:
            del self.bins[start]

    @property
    def finished(self) -> int:
        return self.counts["completed"] + self.counts["failed"] + self.counts["cancelled"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "errors": dict(self.errors),
            "encodings": sorted(self.encodings),
            "hist": {name: histogram.to_dict() for name, histogram in self.hist.items()},
            "bins": [[start, b.to_dict()] for start, b in sorted(self.bins.items())],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Aggregate:
        agg = cls()
        for name, n in data["counts"].items():
            agg.counts[str(name)] = int(n)
        agg.errors = {str(k): int(v) for k, v in data["errors"].items()}
        agg.encodings = {str(e) for e in data["encodings"]}
        for name, histogram in data["hist"].items():
            agg.hist[str(name)] = LogHistogram.from_dict(histogram)
        agg.bins = {int(start): TimeBin.from_dict(b) for start, b in data["bins"]}
        return agg
