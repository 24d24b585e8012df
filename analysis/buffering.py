"""Buffering detector: is something on the path holding chunks and releasing them together?

A buffer shows up in two independent ways, and the detector reads both:

* **Read batching** (needs nothing from the server, works on a real backend).
  A clean stream's chunks each arrive in their own socket read, because the
  server writes them one by one; a buffer releases many at once, so they
  complete in one read (or reads microseconds apart).  The gap shape becomes
  bimodal: ~0 ms gaps inside a burst, then a long gap until the next flush.
  LLM-like pacing is bursty too, but each token is still its own write, so
  its bursts are separate reads; what remains is the occasional 2-3 lines a
  busy client picks up in one read.  Evidence: the share of chunks that
  arrived together with the previous chunk (``coalesced_share``) and how long
  the path was silent before such a burst (``burst_lead_ms``, the median over
  chunks that arrived in bursts: about the buffer's flush interval).
* **Staleness** (needs the fake backend's emit times).  A chunk's staleness
  is how much longer it took than the stream's fastest chunk; a buffer makes
  it a sawtooth from 0 up to the flush interval, so a large share of chunks
  is stale by tens of milliseconds, where a clean stream has a few
  milliseconds of loopback and scheduler noise.

Thresholds (calibrated on ``tests.support.synthetic`` series, see
tests/test_analysis_buffering.py and the table ``make bench-analysis`` writes
to docs/PERFORMANCE.md; checked through the fake backend and the real Locust
users in tests/test_analysis_real_backend.py, where 20 users of LLM-paced
streams at 333 chunks/s gave a coalesced share of 0.33 with a 2 ms burst lead,
and a 100 ms buffer gave 0.97 with a 100 ms lead):

* ``HOLD_MS = 20``: a chunk held 20 ms or more is visible as a stutter (a 60 Hz
  frame is 16.7 ms) and is well above the noise of a clean loopback stream.
  The smallest fault we must catch, a 50 ms window, holds chunks 0-50 ms.
* batching fires when ``coalesced_share >= 0.5`` and ``burst_lead_ms >= 20``.
  A buffer releasing k chunks at a time gives (k-1)/k >= 0.5 for k >= 2; clean
  streams at 333 chunks/s with a loaded client stay below ~0.25 (LLM-like
  bursts at 0.6 ms spacing are the worst case); their rare coalesced pairs
  follow a gap of one pacing interval, far below 20 ms.
* staleness fires when ``staleness p99 >= 25 ms`` and at least 20 % of chunks
  are stale by ``HOLD_MS``: a 50 ms window makes ~60 % of chunks stale by
  20 ms and p99 ~50 ms; clean streams, even with a 10-50 ms client stall now
  and then, have well under 1 % of chunks that stale.
* fewer than ``MIN_CHUNKS`` chunks, or a saturated harness
  (``run.harness.saturated``), give ``inconclusive``: a load generator that
  cannot keep up reads many lines at once late, which is exactly what a buffer
  looks like.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd

from analysis.chunks import BURST_GAP_MS, ChunkSeries, first_burst_lead
from analysis.groups import GroupLevel
from analysis.quantiles import grouped_percentiles

HOLD_MS: Final = 20.0
COALESCED_SHARE_MIN: Final = 0.5
BURST_LEAD_MIN_MS: Final = HOLD_MS
STALENESS_P99_MIN_MS: Final = 25.0
STALE_SHARE_MIN: Final = 0.2
MIN_CHUNKS: Final = 50
#: Streams shorter than this are left out of the per-stream chunk-rate median.
RATE_MIN_CHUNKS: Final = 10

VERDICTS: Final = ("clean", "buffered", "inconclusive")
_IDENTITY_ENCODINGS: Final = frozenset({"", "identity"})


@dataclass(frozen=True)
class Evidence:
    """The numbers a verdict rests on (all pooled over the group's streams)."""

    streams: int
    chunks: int
    chunk_rate_per_s: float  # median over streams of chunks/s while streaming
    coalesced_share: float  # chunks that arrived together with the previous one
    chunks_per_burst: float  # chunk-weighted median burst size
    burst_lead_ms: float  # median silence before a multi-chunk burst (NaN: none)
    first_burst_chunks: float  # median size of each stream's first burst
    headers_to_first_chunk_ms: float  # median ttfc - time_to_headers
    staleness_p99_ms: float  # NaN without emit times
    staleness_max_ms: float
    stale_share: float  # chunks stale by HOLD_MS or more (NaN without emit times)
    encodings: tuple[str, ...] = ()
    ttfc_ms: float = math.nan  # median time to first chunk

    def as_json(self) -> dict[str, Any]:
        return {
            key: (
                None
                if isinstance(value, float) and not math.isfinite(value)
                else (list(value) if isinstance(value, tuple) else value)
            )
            for key, value in asdict(self).items()
        }


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reasons: list[str] = field(default_factory=list)
    evidence: Evidence | None = None

    def as_json(self) -> dict[str, Any]:
        """The summary's ``buffering`` object (plus the evidence numbers)."""
        out: dict[str, Any] = {"verdict": self.verdict, "reasons": list(self.reasons)}
        if self.evidence is not None:
            out["evidence"] = self.evidence.as_json()
        return out


def detect_buffering(
    series: ChunkSeries,
    streams: pd.DataFrame,
    stream_group: np.ndarray,
    n_groups: int,
    harness: Mapping[str, Any] | None = None,
    staleness_p99_max: np.ndarray | None = None,
    level: GroupLevel | None = None,
) -> list[Verdict]:
    """A verdict for each group of streams (``stream_group[stream_key]``, -1 = none).

    ``staleness_p99_max`` (per-group ``[p99, max]`` staleness) and ``level``
    (the groups' chunk layout) let a caller that has them skip recomputing.
    """
    evidence = evidence_by_group(series, streams, stream_group, n_groups, staleness_p99_max, level=level)
    saturated = bool((harness or {}).get("saturated", False))
    return [classify(item, saturated=saturated, harness=harness) for item in evidence]


def evidence_by_group(
    series: ChunkSeries,
    streams: pd.DataFrame,
    stream_group: np.ndarray,
    n_groups: int,
    staleness_p99_max: np.ndarray | None = None,
    *,
    level: GroupLevel | None = None,
) -> list[Evidence]:
    """Every group's ``Evidence``: sums per stream segment, then per group of streams."""
    stream_group = np.asarray(stream_group, dtype=np.int32)
    if level is None:
        level = GroupLevel.of(series, stream_group, n_groups)
    segment_group = stream_group[series.stream_keys]
    bins = np.where(segment_group >= 0, segment_group, n_groups)  # overflow bin: no group

    def per_group(per_chunk: np.ndarray) -> np.ndarray:
        return np.bincount(bins, weights=series.per_stream_sum(per_chunk), minlength=n_groups + 1)[:n_groups]

    def share(flags: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return per_group(flags & eligible) / per_group(eligible)

    has_previous = np.isfinite(series.gap_ms)
    coalesced = share(series.coalesced, has_previous)
    chunks = np.bincount(bins, weights=np.diff(series.stream_starts, append=series.n_chunks), minlength=n_groups + 1)[
        :n_groups
    ]
    burst_size = level.chunk_percentiles(series.burst_size, (50.0,))[:, 0]
    lead = level.chunk_percentiles(np.where(series.burst_size >= 2, series.burst_lead_ms, np.nan), (50.0,))[:, 0]
    if staleness_p99_max is None:
        staleness_p99_max = level.chunk_percentiles(series.staleness_ms, (99.0, 100.0))
    stale = share(series.staleness_ms >= HOLD_MS, np.isfinite(series.staleness_ms))

    per_stream = _per_stream(series, streams)
    stream_codes = stream_group[: len(streams)]
    rate = grouped_percentiles(
        np.where(per_stream["n_chunks"] >= RATE_MIN_CHUNKS, per_stream["rate"], np.nan), stream_codes, n_groups, (50.0,)
    )[:, 0]
    first_burst = grouped_percentiles(per_stream["first_burst"], stream_codes, n_groups, (50.0,))[:, 0]
    headers_gap = grouped_percentiles(
        streams["ttfc_ms"].to_numpy(dtype=np.float64) - streams["time_to_headers_ms"].to_numpy(dtype=np.float64),
        stream_codes,
        n_groups,
        (50.0,),
    )[:, 0]
    ttfc = grouped_percentiles(streams["ttfc_ms"].to_numpy(dtype=np.float64), stream_codes, n_groups, (50.0,))[:, 0]
    n_streams = np.bincount(np.where(stream_codes >= 0, stream_codes, n_groups), minlength=n_groups + 1)[:n_groups]
    encodings = _encodings_by_group(streams, stream_codes, n_groups)
    return [
        Evidence(
            streams=int(n_streams[g]),
            chunks=int(chunks[g]),
            chunk_rate_per_s=float(rate[g]),
            coalesced_share=float(coalesced[g]),
            chunks_per_burst=float(burst_size[g]),
            burst_lead_ms=float(lead[g]),
            first_burst_chunks=float(first_burst[g]),
            headers_to_first_chunk_ms=float(headers_gap[g]),
            staleness_p99_ms=float(staleness_p99_max[g, 0]),
            staleness_max_ms=float(staleness_p99_max[g, 1]),
            stale_share=float(stale[g]) if np.isfinite(staleness_p99_max[g, 0]) else math.nan,
            encodings=encodings[g],
            ttfc_ms=float(ttfc[g]),
        )
        for g in range(n_groups)
    ]


def classify(evidence: Evidence, *, saturated: bool = False, harness: Mapping[str, Any] | None = None) -> Verdict:
    """Apply the documented thresholds to one group's evidence."""
    e = evidence
    if saturated:
        seen = _evidence_lines(e) if e.chunks >= MIN_CHUNKS else []
        return Verdict("inconclusive", [_saturated_reason(harness or {}), *seen], e)
    if e.chunks < MIN_CHUNKS:
        return Verdict(
            "inconclusive", [f"only {e.chunks} chunks received: at least {MIN_CHUNKS} are needed to judge buffering"], e
        )
    if not math.isfinite(e.coalesced_share):
        return Verdict("inconclusive", ["no stream had two chunks: there is no gap between chunks to judge"], e)
    batching = e.coalesced_share >= COALESCED_SHARE_MIN and _ge(e.burst_lead_ms, BURST_LEAD_MIN_MS)
    stale = _ge(e.staleness_p99_ms, STALENESS_P99_MIN_MS) and _ge(e.stale_share, STALE_SHARE_MIN)
    if not (batching or stale):
        return Verdict("clean", _clean_reasons(e), e)
    reasons: list[str] = []
    if batching:
        reasons.append(f"chunks arrive {e.chunks_per_burst:.0f} per socket read{_at_rate(e)} (clean streams: ~1)")
        reasons.append(
            f"{e.coalesced_share:.0%} of chunk gaps are ~0 ms and bursts come after "
            f"{e.burst_lead_ms:.0f} ms of silence: the shape of a buffer flushing "
            f"every ~{_seconds(e.burst_lead_ms)}"
        )
    if math.isfinite(e.staleness_p99_ms):
        if stale:
            reasons.append(
                f"staleness p99 {e.staleness_p99_ms:.0f} ms; {e.stale_share:.0%} of chunks "
                f"wait {HOLD_MS:.0f} ms or more, up to {_seconds(e.staleness_max_ms)}, "
                "in a buffer"
            )
        else:
            reasons.append(f"staleness p99 {e.staleness_p99_ms:.0f} ms")
    else:
        reasons.append("no server emit times (real backend): verdict from read batching alone")
    if e.encodings:
        reasons.append(
            f"responses are {'/'.join(e.encodings)}-encoded: a compressor that flushes only "
            "full blocks holds chunks back"
        )
    if e.first_burst_chunks >= 10 and _ge(e.headers_to_first_chunk_ms, HOLD_MS):
        reasons.append(
            f"the first chunk arrives {e.headers_to_first_chunk_ms:.0f} ms after the "
            f"headers, together with {e.first_burst_chunks - 1:.0f} more"
        )
    elif e.first_burst_chunks >= 10 and _ge(e.ttfc_ms, HOLD_MS) and not e.headers_to_first_chunk_ms > BURST_GAP_MS:
        reasons.append(
            f"the headers arrive only with the first chunk, {_seconds(e.ttfc_ms)} after the "
            f"request, together with {e.first_burst_chunks - 1:.0f} more chunks: the "
            "response is held from its start"
        )
    return Verdict("buffered", reasons, e)


def _clean_reasons(e: Evidence) -> list[str]:
    if e.coalesced_share >= COALESCED_SHARE_MIN:
        reasons = [
            f"chunks arrive in groups of {e.chunks_per_burst:.0f} ({e.coalesced_share:.0%} "
            f"shared a read with the previous chunk) but only {e.burst_lead_ms:.0f} ms apart: "
            f"below the {BURST_LEAD_MIN_MS:.0f} ms a reader notices"
        ]
    else:
        reasons = [
            f"chunks arrive one at a time: {e.chunks_per_burst:.0f} per socket read{_at_rate(e)}; "
            f"{e.coalesced_share:.0%} shared a read with "
            f"the previous chunk (buffering: >= {COALESCED_SHARE_MIN:.0%})"
        ]
    if math.isfinite(e.staleness_p99_ms):
        reasons.append(
            f"staleness p99 {e.staleness_p99_ms:.1f} ms: no chunk waits in a buffer "
            f"({e.stale_share:.1%} of chunks stale by {HOLD_MS:.0f} ms or more)"
        )
    else:
        reasons.append("no server emit times (real backend): verdict from read batching alone")
    return reasons


def _at_rate(e: Evidence) -> str:
    """`` at 333 chunks/s``, or nothing when no stream had enough chunks to give a rate."""
    return f" at {e.chunk_rate_per_s:.0f} chunks/s" if math.isfinite(e.chunk_rate_per_s) else ""


def _evidence_lines(e: Evidence) -> list[str]:
    lines = [
        f"seen anyway: {e.chunks_per_burst:.0f} chunks per read, "
        f"{e.coalesced_share:.0%} of chunks shared a read with the previous one"
    ]
    if math.isfinite(e.staleness_p99_ms):
        lines.append(f"seen anyway: staleness p99 {e.staleness_p99_ms:.0f} ms")
    return lines


def _saturated_reason(harness: Mapping[str, Any]) -> str:
    details = []
    cpu = harness.get("cpu_percent_max")
    lag = harness.get("loop_lag_ms_p99")
    if isinstance(cpu, (int, float)):
        details.append(f"CPU max {cpu:.0f}%")
    if isinstance(lag, (int, float)):
        details.append(f"event-loop lag p99 {lag:.0f} ms")
    suffix = f" ({', '.join(details)})" if details else ""
    return (
        f"the load generator was saturated{suffix}: a client that cannot keep up reads "
        "many lines late, just like a buffer, so no verdict"
    )


def _per_stream(series: ChunkSeries, streams: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per stream: chunks, chunk rate while streaming, size of the first burst."""
    n = len(streams)
    rate = np.full(n, np.nan)
    first_burst = np.full(n, np.nan)
    n_chunks = np.zeros(n, dtype=np.int64)
    if series.n_chunks:
        starts = series.stream_starts
        last = np.r_[starts[1:] - 1, series.n_chunks - 1]
        keys = series.stream_keys
        n_chunks[keys] = last - starts + 1
        span_ms = series.t_ms[last] - series.t_ms[starts]
        # all chunks in one burst (e.g. one gzip block): over the silence before it instead
        silence = first_burst_lead(series.t_ms[last], streams["time_to_headers_ms"].to_numpy(dtype=np.float64)[keys])
        with np.errstate(divide="ignore", invalid="ignore"):
            rate[keys] = np.where(
                span_ms > 0,
                (n_chunks[keys] - 1) * 1000.0 / span_ms,
                np.where(silence > 0, n_chunks[keys] * 1000.0 / silence, np.nan),
            )
        first_burst[keys] = series.burst_size[starts]
    return {"n_chunks": n_chunks, "rate": rate, "first_burst": first_burst}


def _encodings_by_group(streams: pd.DataFrame, stream_codes: np.ndarray, n_groups: int) -> list[tuple[str, ...]]:
    frame = pd.DataFrame({"group": stream_codes, "encoding": streams["content_encoding"].fillna("").astype(str)})
    frame = frame[(frame["group"] >= 0) & ~frame["encoding"].isin(_IDENTITY_ENCODINGS)]
    found: list[tuple[str, ...]] = [() for _ in range(n_groups)]
    for group, values in frame.groupby("group")["encoding"]:
        found[int(group)] = tuple(sorted(set(values)))  # type: ignore[arg-type]
    return found


def _ge(value: float, threshold: float) -> bool:
    return math.isfinite(value) and value >= threshold


def _seconds(ms: float) -> str:
    if not math.isfinite(ms):
        return "?"
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"
