"""NDJSON against Socket.io in one run: is the new path at least as good for the user?

Same run, same load, per endpoint: each transport's streams are the samples
and the statistics are the regression gate's (:func:`analysis.compare.sample_shift`:
one-sided Mann-Whitney U, a bootstrap interval of the difference in medians,
and the practical thresholds of ``[tool.stream_harness.regression]``), with
Socket.io, the path being retired, in the baseline's place.  Compared:

- per-stream TTFC, p99 chunk gap and staleness p99 (a metric neither
  transport measured, e.g. staleness against a real backend, is left out);
- the failed share of streams (worse when NDJSON's is higher by more than
  ``failure_rate_tolerance`` and a one-sided Fisher's exact test has
  p < ``alpha``: two transports of one run are two samples, not a baseline);
- the buffering verdicts (NDJSON ``buffered`` where Socket.io is not is worse).

The verdict is ``ndjson_worse`` when any check finds NDJSON worse,
``ndjson_better`` when checks find it better and none worse, ``inconclusive``
when something could not be judged (too few streams, an inconclusive
buffering verdict) or the load generator was saturated, else ``parity``.
The run's verdict is the worst of all its streams' and of each endpoint's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import pandas as pd

from analysis.compare import METRICS, RegressionThresholds, comparable_streams, failures_of, finite, sample_shift
from stream_harness.contract.kinds import ParityVerdict, Transport, Verdict
from stream_harness.contract.summary import (
    Parity,
    ParityBuffering,
    ParityFailures,
    ParityJudgement,
    ParityMetric,
    TransportSummary,
)

#: Verdicts from the most to the least telling: a run's verdict is the first one any part has.
PRECEDENCE: Final = (
    ParityVerdict.NDJSON_WORSE,
    ParityVerdict.NDJSON_BETTER,
    ParityVerdict.INCONCLUSIVE,
    ParityVerdict.PARITY,
)
_BY_DIRECTION: Final = {
    "worse": ParityVerdict.NDJSON_WORSE,
    "better": ParityVerdict.NDJSON_BETTER,
    "same": ParityVerdict.PARITY,
}
SATURATED_REASON: Final = "the load generator was saturated: its latencies are not trustworthy"


def judge_parity(
    transports: Mapping[str, TransportSummary],
    streams: pd.DataFrame,
    thresholds: RegressionThresholds,
    *,
    saturated: bool = False,
) -> Parity | None:
    """The run's parity object, or None unless both transports ran.

    ``transports`` are summary.json's transport objects (with ``endpoints``),
    ``streams`` the filled streams table of the run.
    """
    ndjson, socketio = transports.get(Transport.NDJSON), transports.get(Transport.SOCKETIO)
    if ndjson is None or socketio is None:
        return None
    run, run_found = _judge(streams, ndjson, socketio, thresholds, saturated)
    endpoints: dict[str, ParityJudgement] = {}
    found: list[tuple[ParityVerdict, str]] = []
    shared = sorted(set(ndjson.get("endpoints") or {}) & set(socketio.get("endpoints") or {}))
    for endpoint in shared:
        mine = streams[(streams["endpoint"] == endpoint).fillna(False).to_numpy(dtype=bool)]
        endpoints[endpoint], part = _judge(
            mine, ndjson["endpoints"][endpoint], socketio["endpoints"][endpoint], thresholds, saturated
        )
        found += [(verdict, f"{endpoint}: {reason}") for verdict, reason in part]
    verdict = worst([run["verdict"], *(item["verdict"] for item in endpoints.values())])
    reasons = list(run["reasons"])
    if len(endpoints) > 1:
        # several endpoints: each one's findings, worst first, then the pooled ones
        found += [(v, f"all endpoints together: {reason}") for v, reason in run_found]
        reasons = [reason for _, reason in sorted(found, key=lambda item: PRECEDENCE.index(item[0]))]
        if verdict == ParityVerdict.INCONCLUSIVE:
            reasons = [f"{name}: {what}" for name, item in endpoints.items() for what in item.get("inconclusive", [])]
    out: Parity = {**run, "verdict": str(verdict), "reasons": reasons, "endpoints": endpoints}
    return out


def worst(verdicts: list[str]) -> ParityVerdict:
    """The first verdict of :data:`PRECEDENCE` among ``verdicts`` (``parity`` when empty)."""
    found = {ParityVerdict(v) for v in verdicts}
    return next((v for v in PRECEDENCE if v in found), ParityVerdict.PARITY)


def headline(parity: Mapping[str, Any] | None) -> str:
    """One line: the verdict and its first reason (what report.md, the PR comment and the tab lead with)."""
    if not parity:
        return "parity: not judged (the run drove one transport)"
    reasons = parity.get("reasons") or parity.get("inconclusive") or []
    text = f"parity (NDJSON vs Socket.io): {parity['verdict']}"
    return f"{text}: {reasons[0]}" if reasons else text


def _judge(
    streams: pd.DataFrame,
    ndjson: Mapping[str, Any],
    socketio: Mapping[str, Any],
    thresholds: RegressionThresholds,
    saturated: bool,
) -> tuple[ParityJudgement, list[tuple[ParityVerdict, str]]]:
    """One set of streams judged, and its findings (verdict, reason) worst first."""
    new = comparable_streams(streams, Transport.NDJSON)
    old = comparable_streams(streams, Transport.SOCKETIO)
    found: list[tuple[ParityVerdict, str]] = []
    unknown: list[str] = []
    buffering = _buffering(ndjson, socketio, found, unknown)  # first: the reason a reader acts on
    failures = _failures(new, old, thresholds, found, unknown)
    metrics: dict[str, ParityMetric] = {}
    for check, column, label, prefix in METRICS:
        after, before = finite(new[column]), finite(old[column])
        if after.size == 0 and before.size == 0:
            continue  # neither transport measured it (e.g. staleness without emit times)
        if min(after.size, before.size) < thresholds.min_streams:
            unknown.append(f"{label}: too few streams to compare ({after.size} NDJSON, {before.size} Socket.io)")
            continue
        min_ms, min_pct = getattr(thresholds, f"{prefix}_ms"), getattr(thresholds, f"{prefix}_pct")
        shift = sample_shift(before, after, alpha=thresholds.alpha, min_ms=min_ms, min_pct=min_pct)
        result = _BY_DIRECTION[shift.direction]
        metrics[check] = {
            "ndjson_median": shift.current_median,
            "socketio_median": shift.base_median,
            "difference": shift.delta,
            "ci": [shift.ci_low, shift.ci_high],
            "p_value": shift.p_value,
            "significant": shift.significant,
            "practical": shift.practical,
            "streams": {Transport.NDJSON: int(after.size), Transport.SOCKETIO: int(before.size)},
            "result": str(result),
        }
        if result != ParityVerdict.PARITY:
            found.append(
                (
                    result,
                    f"{label} per stream: NDJSON median {shift.current_median:.1f} ms, Socket.io "
                    f"{shift.base_median:.1f} ms ({shift.delta:+.1f} ms, 95% CI {shift.ci_low:+.1f}.."
                    f"{shift.ci_high:+.1f} ms, Mann-Whitney p={shift.p_value:.2g}; thresholds {min_ms:g} ms "
                    f"and {min_pct:g}%)",
                )
            )
    if saturated:
        unknown.insert(0, SATURATED_REASON)
    verdict = worst([str(result) for result, _ in found])
    if saturated or (verdict == ParityVerdict.PARITY and unknown):
        verdict = ParityVerdict.INCONCLUSIVE
    ranked = sorted(found, key=lambda item: PRECEDENCE.index(item[0]))
    reasons = [reason for _, reason in ranked]
    if verdict == ParityVerdict.INCONCLUSIVE:
        reasons = unknown + reasons
    out: ParityJudgement = {
        "verdict": str(verdict),
        "reasons": reasons,
        "metrics": metrics,
        "failures": failures,
        "buffering": buffering,
    }
    if unknown:
        out["inconclusive"] = unknown
    return out, ranked


def _failures(
    new: pd.DataFrame,
    old: pd.DataFrame,
    thresholds: RegressionThresholds,
    found: list[tuple[ParityVerdict, str]],
    unknown: list[str],
) -> ParityFailures:
    """Failed shares: a difference counts beyond the tolerance and when Fisher's exact test agrees."""
    new_failed, new_rate = failures_of(new)
    old_failed, old_rate = failures_of(old)
    difference = new_rate - old_rate
    tolerance = thresholds.failure_rate_tolerance
    result = ParityVerdict.PARITY
    p_value = 1.0
    if min(len(new), len(old)) < thresholds.min_streams:
        result = ParityVerdict.INCONCLUSIVE
        unknown.append(f"failures: too few streams to compare ({len(new)} NDJSON, {len(old)} Socket.io)")
    elif abs(difference) > tolerance:
        table = [[new_failed, len(new) - new_failed], [old_failed, len(old) - old_failed]]
        p_value = fisher_exact(table, "greater" if difference > 0 else "less")
        if p_value < thresholds.alpha:
            result = ParityVerdict.NDJSON_WORSE if difference > 0 else ParityVerdict.NDJSON_BETTER
            found.append(
                (
                    result,
                    f"failed streams: NDJSON {new_failed} of {len(new)} ({new_rate:.1%}), Socket.io "
                    f"{old_failed} of {len(old)} ({old_rate:.1%}; tolerance {tolerance:.1%}, "
                    f"Fisher's exact p={p_value:.2g})",
                )
            )
    return {
        "ndjson_rate": new_rate,
        "socketio_rate": old_rate,
        "difference": difference,
        "tolerance": tolerance,
        "p_value": p_value,
        "result": str(result),
    }


def fisher_exact(table: list[list[int]], alternative: str) -> float:
    """One-sided Fisher's exact test on a 2x2 table (scipy, imported on first use like the gate's test)."""
    from scipy.stats import fisher_exact as test

    return float(test(table, alternative=alternative).pvalue)


def _buffering(
    ndjson: Mapping[str, Any],
    socketio: Mapping[str, Any],
    found: list[tuple[ParityVerdict, str]],
    unknown: list[str],
) -> ParityBuffering:
    new, old = ndjson["buffering"], socketio["buffering"]
    new_verdict, old_verdict = str(new["verdict"]), str(old["verdict"])
    result = ParityVerdict.PARITY
    if new_verdict == Verdict.BUFFERED and old_verdict != Verdict.BUFFERED:
        result = ParityVerdict.NDJSON_WORSE
        found.append((result, f"NDJSON buffering verdict buffered, Socket.io {old_verdict}{_first(new)}"))
    elif old_verdict == Verdict.BUFFERED and new_verdict != Verdict.BUFFERED:
        result = ParityVerdict.NDJSON_BETTER
        found.append((result, f"Socket.io buffering verdict buffered, NDJSON {new_verdict}{_first(old)}"))
    elif Verdict.INCONCLUSIVE in (new_verdict, old_verdict):
        result = ParityVerdict.INCONCLUSIVE
        side, item = ("NDJSON", new) if new_verdict == Verdict.INCONCLUSIVE else ("Socket.io", old)
        unknown.append(f"{side} buffering verdict inconclusive{_first(item)}")
    return {"ndjson": new_verdict, "socketio": old_verdict, "result": str(result)}


def _first(buffering: Mapping[str, Any]) -> str:
    reasons = buffering.get("reasons") or []
    return f" ({reasons[0]})" if reasons else ""
