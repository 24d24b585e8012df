"""Regression gate: compare two runs on per-stream samples, not on their percentiles.

On a noisy 2-core runner a run's p99 moves by several percent between two
runs of the same code, so comparing percentiles flags noise.  Instead, for
each transport, every stream contributes one sample per metric (its TTFC,
its own p99 gap, its own staleness p99), and a change counts only when it is

* **significant**: one-sided Mann-Whitney U, p < ``alpha`` (robust to the
  skewed, heavy-tailed distributions latencies have), and
* **large enough to matter**: the median moved by at least ``*_ms`` *and* by
  at least ``*_pct`` percent of the baseline median.

Some changes are regressions whatever their size: a ``buffered`` verdict the
baseline did not have, a failure rate up by more than
``failure_rate_tolerance``, an error kind the baseline did not have, fewer
chunks delivered per stream (``chunk_loss_pct``), a transport that vanished.

Thresholds come from ``[tool.stream_harness.regression]`` in the
``pyproject.toml`` of the current directory when present; defaults are
``RegressionThresholds()``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from stream_harness.contract.kinds import ErrorKind
from stream_harness.contract.summary import TransportSummary

if TYPE_CHECKING:
    from analysis.metrics import Analysis

#: Error kinds that say nothing about the system under test.
IGNORED_ERROR_KINDS: Final = (str(ErrorKind.STOPPED),)
#: Bootstrap resamples for the confidence interval shown next to a change.
BOOTSTRAP_RESAMPLES: Final = 2000
#: Values drawn at once while resampling (8 MB of float64; the index array as much again).
BOOTSTRAP_BLOCK_VALUES: Final = 1_000_000


class ThresholdsError(AnalysisError):
    """The regression table in pyproject.toml is unusable (one-line message)."""


@dataclass(frozen=True)
class RegressionThresholds:
    """When a difference between two runs is a regression (see module docstring)."""

    alpha: float = 0.01  # significance level of the Mann-Whitney test
    ttfc_ms: float = 50.0  # per-stream TTFC median must rise by >= 50 ms ...
    ttfc_pct: float = 10.0  # ... and by >= 10 % of the baseline median
    gap_p99_ms: float = 10.0  # per-stream p99 gap
    gap_p99_pct: float = 25.0
    staleness_p99_ms: float = 10.0  # per-stream staleness p99
    staleness_p99_pct: float = 25.0
    failure_rate_tolerance: float = 0.01  # failed share of streams may rise by 1 point
    chunk_loss_pct: float = 2.0  # chunks delivered per stream may drop by 2 %
    min_streams: int = 5  # fewer streams in a run: no statistical test

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> RegressionThresholds:
        known = {item.name: item.type for item in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise ThresholdsError(
                    f"[tool.stream_harness.regression]: unknown key {key!r} (known: {', '.join(known)})"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ThresholdsError(f"[tool.stream_harness.regression]: {key} must be a number >= 0, got {value!r}")
            values[key] = int(value) if key == "min_streams" else float(value)
        if not 0 < values.get("alpha", cls.alpha) < 1:
            raise ThresholdsError("[tool.stream_harness.regression]: alpha must be in (0, 1)")
        return cls(**values)


def load_thresholds(pyproject: str | Path | None = None) -> RegressionThresholds:
    """Thresholds from ``pyproject`` (default: ./pyproject.toml), or the defaults."""
    path = Path(pyproject) if pyproject is not None else Path.cwd() / "pyproject.toml"
    if not path.is_file():
        return RegressionThresholds()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ThresholdsError(f"{path}: unreadable TOML ({error})") from None
    table = data.get("tool", {}).get("stream_harness", {}).get("regression", {})
    if not isinstance(table, dict):
        raise ThresholdsError(f"{path}: [tool.stream_harness.regression] must be a table")
    return RegressionThresholds.from_mapping(table)


def configured_thresholds() -> RegressionThresholds:
    """:func:`load_thresholds` of the current directory, or the defaults when that table is unusable.

    For summaries, which must be written whatever the configuration; the
    regression gate reads the table with :func:`load_thresholds` and stops on
    an error instead.
    """
    try:
        return load_thresholds()
    except ThresholdsError:
        return RegressionThresholds()


@dataclass(frozen=True)
class Finding:
    """One line of the verdict: what was compared and what came out."""

    transport: str
    check: str  # ttfc | gap_p99 | staleness_p99 | buffering | failures | ...
    status: str  # regression | improvement | ok | note
    line: str
    base: float | None = None
    current: float | None = None
    p_value: float | None = None


@dataclass(frozen=True)
class Comparison:
    findings: list[Finding] = field(default_factory=list)

    @property
    def regression(self) -> bool:
        return any(item.status == "regression" for item in self.findings)

    @property
    def regressions(self) -> list[Finding]:
        return [item for item in self.findings if item.status == "regression"]

    def lines(self) -> list[str]:
        """Regressions first, then improvements, then the rest."""
        order = {"regression": 0, "improvement": 1, "note": 2, "ok": 3}
        ranked = sorted(self.findings, key=lambda item: order.get(item.status, 9))
        return [f"{item.status.upper():11s} {item.line}" for item in ranked]


#: The per-stream samples compared: (check, streams column, label, thresholds attribute prefix).
METRICS: Final = (
    ("ttfc", "ttfc_ms", "TTFC", "ttfc"),
    ("gap_p99", "gap_p99_ms", "p99 chunk gap", "gap_p99"),
    ("staleness_p99", "staleness_p99_ms", "staleness p99", "staleness_p99"),
)


def compare_runs(base: Analysis, current: Analysis, thresholds: RegressionThresholds | None = None) -> Comparison:
    """Every finding for every transport of the two runs."""
    thresholds = thresholds or RegressionThresholds()
    base_transports = base.summary["transports"]
    current_transports = current.summary["transports"]
    findings: list[Finding] = []
    for name, analysis in (("baseline", base), ("current", current)):
        if analysis.summary["run"]["harness"]["saturated"]:
            findings.append(
                Finding(
                    "run",
                    "harness",
                    "note",
                    f"the {name} run's load generator was saturated: its latencies are not trustworthy",
                )
            )
    for transport in base_transports:
        if transport not in current_transports:
            findings.append(
                Finding(transport, "coverage", "regression", f"{transport}: streams in the baseline, none in this run")
            )
    for transport in current_transports:
        if transport not in base_transports:
            findings.append(
                Finding(transport, "coverage", "note", f"{transport}: new in this run, nothing to compare with")
            )
            continue
        base_streams = comparable_streams(base.streams, transport)
        current_streams = comparable_streams(current.streams, transport)
        findings.extend(_buffering(transport, base_transports[transport], current_transports[transport]))
        findings.extend(_failures(transport, base_streams, current_streams, thresholds))
        findings.extend(_chunks(transport, base_streams, current_streams, thresholds))
        for check, column, label, prefix in METRICS:
            finding = _metric(
                transport,
                check,
                label,
                base_streams[column],
                current_streams[column],
                thresholds,
                getattr(thresholds, f"{prefix}_ms"),
                getattr(thresholds, f"{prefix}_pct"),
            )
            if finding is not None:
                findings.append(finding)
    return Comparison(findings)


def comparable_streams(streams: pd.DataFrame, transport: str) -> pd.DataFrame:
    """The transport's streams that count: not cut short by the test, not cancelled, not warm-up."""
    mask = (streams["transport"] == transport).fillna(False).to_numpy(dtype=bool)
    mask &= ~streams["warmup"].to_numpy(dtype=bool)
    mask &= ~streams["error"].isin(IGNORED_ERROR_KINDS).fillna(False).to_numpy(dtype=bool)
    mask &= (streams["status"] != "cancelled").fillna(True).to_numpy(dtype=bool)
    return streams[mask]


def _buffering(transport: str, base: TransportSummary, current: TransportSummary) -> list[Finding]:
    before = base["buffering"]["verdict"]
    after = current["buffering"]["verdict"]
    reasons = current["buffering"]["reasons"]
    if after == "buffered" and before != "buffered":
        evidence = f": {reasons[0]}" if reasons else ""
        return [
            Finding(
                transport, "buffering", "regression", f"{transport}: buffering verdict {before} -> buffered{evidence}"
            )
        ]
    if after == "inconclusive" and before != "inconclusive":
        return [
            Finding(
                transport,
                "buffering",
                "note",
                f"{transport}: buffering verdict {before} -> inconclusive "
                f"({reasons[0] if reasons else 'no reason given'})",
            )
        ]
    if before == "buffered" and after == "clean":
        return [Finding(transport, "buffering", "improvement", f"{transport}: buffering verdict buffered -> clean")]
    return [Finding(transport, "buffering", "ok", f"{transport}: buffering verdict {after}")]


def _failures(
    transport: str, base: pd.DataFrame, current: pd.DataFrame, thresholds: RegressionThresholds
) -> list[Finding]:
    out = []
    base_failed, base_rate = failures_of(base)
    current_failed, current_rate = failures_of(current)
    text = (
        f"{transport}: {current_failed} of {len(current)} streams failed "
        f"({current_rate:.1%}), baseline {base_failed} of {len(base)} ({base_rate:.1%})"
    )
    if current_rate - base_rate > thresholds.failure_rate_tolerance:
        out.append(Finding(transport, "failures", "regression", text, base_rate, current_rate))
    elif base_rate - current_rate > thresholds.failure_rate_tolerance:
        out.append(Finding(transport, "failures", "improvement", text, base_rate, current_rate))
    else:
        out.append(Finding(transport, "failures", "ok", text, base_rate, current_rate))
    base_kinds = set(base["error"].dropna().astype(str))
    current_kinds = current["error"].dropna().astype(str).value_counts()
    for kind, count in current_kinds.items():
        if kind not in base_kinds:
            out.append(
                Finding(
                    transport,
                    "error_kinds",
                    "regression",
                    f"{transport}: new failure kind {kind!r} ({count} streams)",
                    0.0,
                    float(count),
                )
            )
    return out


def failures_of(streams: pd.DataFrame) -> tuple[int, float]:
    """Failed streams and their share of ``streams`` (0.0 when there are none)."""
    failed = int((streams["status"] == "failed").sum())
    return failed, failed / len(streams) if len(streams) else 0.0


def _chunks(
    transport: str, base: pd.DataFrame, current: pd.DataFrame, thresholds: RegressionThresholds
) -> list[Finding]:
    """Fewer chunks per stream: exact when the backend promised counts, else tested."""
    share_base, share_current = _delivered_share(base), _delivered_share(current)
    if share_base is not None and share_current is not None:
        drop = (share_base - share_current) / share_base * 100 if share_base else 0.0
        text = f"{transport}: {share_current:.1%} of promised chunks delivered, baseline {share_base:.1%}"
        status = "regression" if drop > thresholds.chunk_loss_pct else "ok"
        return [Finding(transport, "chunks", status, text, share_base, share_current)]
    base_n = base["n_chunks"].to_numpy(dtype=np.float64)
    current_n = current["n_chunks"].to_numpy(dtype=np.float64)
    if min(base_n.size, current_n.size) < thresholds.min_streams:
        return []
    before, after = float(np.median(base_n)), float(np.median(current_n))
    drop = (before - after) / before * 100 if before else 0.0
    p_value = float(mannwhitneyu(current_n, base_n, alternative="less").pvalue)
    text = (
        f"{transport}: median {after:.0f} chunks per stream, baseline {before:.0f} "
        f"({-drop:+.1f}%, Mann-Whitney p={p_value:.2g})"
    )
    status = "regression" if drop > thresholds.chunk_loss_pct and p_value < thresholds.alpha else "ok"
    return [Finding(transport, "chunks", status, text, before, after, p_value)]


def _delivered_share(streams: pd.DataFrame) -> float | None:
    expected = streams["expected_chunks"].to_numpy(dtype=np.float64)
    known = expected > 0
    if not known.any():
        return None
    return float(streams["n_chunks"].to_numpy(dtype=np.float64)[known].sum() / expected[known].sum())


def mannwhitneyu(x: np.ndarray, y: np.ndarray, alternative: str) -> Any:
    """scipy's Mann-Whitney U, imported on first use (scipy costs ~0.7 s to import)."""
    from scipy.stats import mannwhitneyu as test

    return test(x, y, alternative=alternative)


def _metric(
    transport: str,
    check: str,
    label: str,
    base: pd.Series,
    current: pd.Series,
    thresholds: RegressionThresholds,
    min_ms: float,
    min_pct: float,
) -> Finding | None:
    before = finite(base)
    after = finite(current)
    if before.size == 0 and after.size == 0:
        return None
    if min(before.size, after.size) < thresholds.min_streams:
        return Finding(
            transport,
            check,
            "note",
            f"{transport}: {label}: too few streams to compare ({before.size} baseline, {after.size} current)",
        )
    shift = sample_shift(before, after, alpha=thresholds.alpha, min_ms=min_ms, min_pct=min_pct)
    text = (
        f"{transport}: {label} per stream, median {shift.base_median:.1f} -> "
        f"{shift.current_median:.1f} ms ({shift.delta:+.1f} ms, {_pct(shift.pct)}; 95% CI "
        f"{shift.ci_low:+.1f}..{shift.ci_high:+.1f} ms)"
    )
    if shift.direction == "worse":
        return Finding(
            transport,
            check,
            "regression",
            f"{text}, Mann-Whitney p={shift.p_worse:.2g}: slower beyond {min_ms:g} ms and {min_pct:g}%",
            shift.base_median,
            shift.current_median,
            shift.p_worse,
        )
    if shift.direction == "better":
        return Finding(
            transport,
            check,
            "improvement",
            f"{text}, Mann-Whitney p={shift.p_better:.2g}",
            shift.base_median,
            shift.current_median,
            shift.p_better,
        )
    reason = "not significant" if not shift.significant else f"below {min_ms:g} ms / {min_pct:g}%"
    return Finding(
        transport,
        check,
        "ok",
        f"{text}: {reason}",
        shift.base_median,
        shift.current_median,
        min(shift.p_worse, shift.p_better),
    )


@dataclass(frozen=True)
class Shift:
    """How per-stream samples moved from ``before`` to ``after``: the gate's statistics.

    ``significant``: the one-sided Mann-Whitney U test in the direction of the
    change has p < alpha; ``practical``: the median moved by at least
    ``min_ms`` and by at least ``min_pct`` percent of the ``before`` median.
    """

    base_median: float
    current_median: float
    delta: float  # current - base median (ms)
    pct: float  # delta in percent of the base median (inf when the base median is 0)
    ci_low: float  # 95% bootstrap interval of delta
    ci_high: float
    p_worse: float  # one-sided: after > before
    p_better: float  # one-sided: after < before
    significant: bool
    practical: bool

    @property
    def direction(self) -> str:
        """``worse`` / ``better`` when significant and practical, else ``same``."""
        if self.significant and self.practical:
            return "worse" if self.delta > 0 else "better"
        return "same"

    @property
    def p_value(self) -> float:
        """The one-sided p-value in the direction the median moved."""
        return self.p_worse if self.delta > 0 else self.p_better


def sample_shift(before: np.ndarray, after: np.ndarray, *, alpha: float, min_ms: float, min_pct: float) -> Shift:
    """The gate's verdict on two sets of finite per-stream samples (neither empty)."""
    base_median, current_median = float(np.median(before)), float(np.median(after))
    delta = current_median - base_median
    if base_median > 0:
        pct = delta / base_median * 100
    else:
        pct = 0.0 if delta == 0 else math.copysign(math.inf, delta)
    worse = float(mannwhitneyu(after, before, alternative="greater").pvalue)
    better = float(mannwhitneyu(after, before, alternative="less").pvalue)
    low, high = _bootstrap_ci(before, after)
    significant = (worse if delta > 0 else better) < alpha
    practical = delta != 0 and abs(delta) >= min_ms and abs(pct) >= min_pct
    return Shift(base_median, current_median, delta, pct, low, high, worse, better, significant, practical)


def finite(column: pd.Series) -> np.ndarray:
    """The finite values of a per-stream column."""
    values = column.to_numpy(dtype=np.float64)
    return np.asarray(values[np.isfinite(values)])


def _bootstrap_ci(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """95% bootstrap interval of the change in median (fixed seed: reproducible lines)."""
    rng = np.random.default_rng(0)
    # bound the work (resamples x streams) for runs with very many streams
    resamples = int(min(BOOTSTRAP_RESAMPLES, max(200, 4_000_000 // max(before.size, after.size))))
    base = _resampled_medians(rng, before, resamples)
    current = _resampled_medians(rng, after, resamples)
    low, high = np.percentile(current - base, [2.5, 97.5])
    return float(low), float(high)


def _resampled_medians(rng: np.random.Generator, values: np.ndarray, resamples: int) -> np.ndarray:
    """Medians of ``resamples`` resamples of ``values``, drawn in blocks of at most
    ``BOOTSTRAP_BLOCK_VALUES`` values: memory stays bounded however many streams a run has."""
    medians = np.empty(resamples)
    block = max(1, BOOTSTRAP_BLOCK_VALUES // max(values.size, 1))
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        medians[start:stop] = np.median(rng.choice(values, (stop - start, values.size)), axis=1)
    return medians


def _pct(value: float) -> str:
    return f"{value:+.0f}%" if math.isfinite(value) else "new"
