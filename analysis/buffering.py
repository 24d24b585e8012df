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
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

import numpy as np
import pandas as pd

from analysis.aggregate import Aggregate
from analysis.chunks import BURST_GAP_MS
from analysis.histogram import LogHistogram
from stream_harness.contract.kinds import Verdict as VerdictKind
from stream_harness.contract.summary import Buffering
from stream_harness.contract.summary import Evidence as EvidenceJson

HOLD_MS: Final = 20.0
COALESCED_SHARE_MIN: Final = 0.5
BURST_LEAD_MIN_MS: Final = HOLD_MS
STALENESS_P99_MIN_MS: Final = 25.0
STALE_SHARE_MIN: Final = 0.2
MIN_CHUNKS: Final = 50
#: Streams shorter than this are left out of the per-stream chunk-rate median.
RATE_MIN_CHUNKS: Final = 10

VERDICTS: Final = tuple(str(v) for v in VerdictKind)


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

    def without_staleness(self) -> Evidence:
        """The same evidence with the staleness half unknown (emit times not to be trusted)."""
        return replace(self, staleness_p99_ms=math.nan, staleness_max_ms=math.nan, stale_share=math.nan)

    def as_json(self) -> EvidenceJson:
        return {  # type: ignore[return-value]  # the keys are this dataclass's fields
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

    def as_json(self) -> Buffering:
        """The summary's ``buffering`` object (plus the evidence numbers)."""
        out: Buffering = {"verdict": str(self.verdict), "reasons": list(self.reasons)}
        if self.evidence is not None:
            out["evidence"] = self.evidence.as_json()
        return out


def evidence(agg: Aggregate, streams: pd.DataFrame | None = None) -> Evidence:
    """The evidence of one group: from its aggregate, per-stream medians exact from ``streams``.

    Without ``streams`` (the live Streams tab) every number comes from the
    aggregate's histograms, within their 1% precision.
    """
    counts, hist = agg.counts, agg.hist
    gaps = hist["gap"].count
    staleness = hist["staleness"]
    p99 = staleness.quantile(0.99)
    if streams is not None:
        n_chunks = streams["n_chunks"].to_numpy(dtype=np.float64)
        ttfc = streams["ttfc_ms"].to_numpy(dtype=np.float64)
        headers = streams["time_to_headers_ms"].to_numpy(dtype=np.float64)
        rate = _median(
            np.where(n_chunks >= RATE_MIN_CHUNKS, streams["chunk_rate_per_s"].to_numpy(dtype=np.float64), np.nan)
        )
        first_burst = _median(np.where(n_chunks > 0, streams["first_burst_chunks"].to_numpy(dtype=np.float64), np.nan))
        headers_to_first = _median(ttfc - headers)
        ttfc_median = _median(ttfc)
    else:
        rate = _hist_median(hist["stream_rate"])
        first_burst = _hist_median(hist["first_burst"])
        headers_to_first = _hist_median(hist["headers_to_first"])
        ttfc_median = _hist_median(hist["ttfc"])
    return Evidence(
        streams=counts["started"],
        chunks=counts["chunks"],
        chunk_rate_per_s=rate,
        coalesced_share=counts["coalesced"] / gaps if gaps else math.nan,
        chunks_per_burst=_hist_median(hist["burst_size"]),
        burst_lead_ms=_hist_median(hist["burst_lead"]),
        first_burst_chunks=first_burst,
        headers_to_first_chunk_ms=headers_to_first,
        staleness_p99_ms=math.nan if p99 is None else p99,
        staleness_max_ms=staleness.max if staleness.count else math.nan,
        stale_share=counts["stale"] / staleness.count if staleness.count else math.nan,
        encodings=tuple(sorted(agg.encodings)),
        ttfc_ms=ttfc_median,
    )


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan


def _hist_median(histogram: LogHistogram) -> float:
    value = histogram.quantile(0.5)
    return math.nan if value is None else value


def classify(evidence: Evidence, *, saturated: bool = False, harness: Mapping[str, Any] | None = None) -> Verdict:
    """Apply the documented thresholds to one group's evidence."""
    e = evidence
    if saturated:
        seen = _evidence_lines(e) if e.chunks >= MIN_CHUNKS else []
        return Verdict(VerdictKind.INCONCLUSIVE, [_saturated_reason(harness or {}), *seen], e)
    if e.chunks < MIN_CHUNKS:
        return Verdict(
            "inconclusive", [f"only {e.chunks} chunks received: at least {MIN_CHUNKS} are needed to judge buffering"], e
        )
    if not math.isfinite(e.coalesced_share):
        return Verdict("inconclusive", ["no stream had two chunks: there is no gap between chunks to judge"], e)
    batching = e.coalesced_share >= COALESCED_SHARE_MIN and _ge(e.burst_lead_ms, BURST_LEAD_MIN_MS)
    stale = _ge(e.staleness_p99_ms, STALENESS_P99_MIN_MS) and _ge(e.stale_share, STALE_SHARE_MIN)
    if not (batching or stale):
        return Verdict(VerdictKind.CLEAN, _clean_reasons(e), e)
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
    return Verdict(VerdictKind.BUFFERED, reasons, e)


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


def _ge(value: float, threshold: float) -> bool:
    return math.isfinite(value) and value >= threshold


def _seconds(ms: float) -> str:
    if not math.isfinite(ms):
        return "?"
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"
