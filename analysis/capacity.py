"""Capacity under an SLO: the most concurrent streams of one transport that still meet it.

The search is GuideLLM's goodput profile applied to what the user of a chat
stream feels, one transport at a time.

**A step** runs one transport at a fixed number of concurrent streams.  A
stream *misses* the TTFC objective when its first chunk came later than
``ttfc_p99_ms`` (or had not come that long after it started when the step
ended), the gap objective when its own p99 chunk gap is above ``gap_p99_ms``,
and the failure objective when it failed.  A p99 objective lets 1% of the
streams miss it, the failure objective ``failure_rate`` of them, and the
step's buffering verdict must be ``clean``.  The share of streams that missed
an objective is a binomial proportion; its Wilson interval at ``confidence``
decides: the objective *breaks with confidence* when the interval's low end is
above the allowed share and *holds with confidence* when its high end is at
or below it.  A step goes on until it is decided with confidence (an
objective broke, or every one held) or its time is up, when the point
estimates decide and the step records that it was not resolved.  (Showing
that a 1% tail holds with 95% confidence takes about 300 streams without a
miss, so low steps of a short search are usually decided on their point
estimates; breaks are resolved within a few streams.)

**The search** doubles the streams from ``start`` while the SLO holds, then
bisects between the highest level that held and the lowest that did not,
until the two are within ``max(1, tolerance x held)`` streams.  A step at
which the load generator saturated says nothing about the backend: it caps
the search as a break does, and an answer capped by it (or by
``max_streams``) is a lower bound and says so.

Everything here is pure: the capacity load shape (``loadtests.capacity``)
feeds it the streams of each step and runs what it decides.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from statistics import NormalDist
from typing import Any, Final

import numpy as np

from analysis.errors import AnalysisError
from analysis.quantiles import optional_float, selected_percentiles
from stream_harness.contract.capacity import (
    CapacityStep,
    ObjectiveResult,
    SloSpec,
    StepMetrics,
    TransportCapacity,
)
from stream_harness.contract.kinds import StepDecision, Verdict
from stream_harness.contract.schema import CHUNK

#: Share of streams a p99 objective lets miss its limit.
P99_ALLOWED: Final = 0.01
#: The objectives of a step, in the order reports list them.
OBJECTIVES: Final = ("ttfc", "gap", "failures", "buffering")


class SloError(AnalysisError):
    """An SLO that cannot be used (one line for the user)."""


@dataclass(frozen=True)
class Slo:
    """What every step must meet; defaults from ``[tool.stream_harness.slo]`` in pyproject.toml."""

    ttfc_p99_ms: float = 1000.0
    gap_p99_ms: float = 250.0
    failure_rate: float = 0.01
    clean: bool = True
    confidence: float = 0.95

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], where: str = "[tool.stream_harness.slo]") -> Slo:
        """Checked values from a TOML table or parsed overrides."""
        known = {item.name for item in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                raise SloError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
            if key == "clean":
                if not isinstance(value, bool):
                    raise SloError(f"{where}: clean must be true or false, got {value!r}")
                values[key] = value
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SloError(f"{where}: {key} must be a number, got {value!r}")
            values[key] = float(value)
        slo = cls(**{**_as_dict(cls()), **values})
        if slo.ttfc_p99_ms <= 0 or slo.gap_p99_ms <= 0:
            raise SloError(f"{where}: ttfc_p99_ms and gap_p99_ms must be > 0")
        if not 0 <= slo.failure_rate < 1:
            raise SloError(f"{where}: failure_rate must be in [0, 1), got {slo.failure_rate:g}")
        if not 0.5 <= slo.confidence < 1:
            raise SloError(f"{where}: confidence must be in [0.5, 1), got {slo.confidence:g}")
        return slo

    def with_overrides(self, text: str) -> Slo:
        """This SLO with ``key=value,key=value`` overrides (the ``--slo`` flag)."""
        overrides: dict[str, Any] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, raw = (s.strip() for s in part.partition("="))
            if not sep or not key or not raw:
                raise SloError(f"--slo: {part!r} is not key=value (e.g. ttfc_p99_ms=1000,failure_rate=0.01)")
            overrides[key] = _parse_value(key, raw)
        return Slo.from_mapping({**_as_dict(self), **overrides}, where="--slo")

    def as_json(self) -> SloSpec:
        return {
            "ttfc_p99_ms": self.ttfc_p99_ms,
            "gap_p99_ms": self.gap_p99_ms,
            "failure_rate": self.failure_rate,
            "clean": self.clean,
            "confidence": self.confidence,
        }

    def flag(self) -> str:
        """The ``--slo`` value that gives exactly this SLO."""
        return ",".join(f"{key}={str(value).lower()}" for key, value in _as_dict(self).items())

    def describe(self) -> str:
        parts = [
            f"TTFC p99 <= {self.ttfc_p99_ms:g} ms",
            f"gap p99 <= {self.gap_p99_ms:g} ms",
            f"failures <= {self.failure_rate:.1%}",
        ]
        if self.clean:
            parts.append("buffering clean")
        return ", ".join(parts)


def _as_dict(slo: Slo) -> dict[str, Any]:
    return {item.name: getattr(slo, item.name) for item in fields(slo)}


def _parse_value(key: str, raw: str) -> Any:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return float(raw)
    except ValueError:
        raise SloError(f"--slo: {key} must be a number, got {raw!r}") from None


def load_slo(pyproject: str | Path | None = None) -> Slo:
    """The SLO of ``[tool.stream_harness.slo]`` in ``pyproject`` (default ./pyproject.toml), or the defaults."""
    path = Path(pyproject) if pyproject is not None else Path.cwd() / "pyproject.toml"
    if not path.is_file():
        return Slo()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise SloError(f"{path}: unreadable TOML ({error})") from None
    table = data.get("tool", {}).get("stream_harness", {}).get("slo", {})
    if not isinstance(table, dict):
        raise SloError(f"{path}: [tool.stream_harness.slo] must be a table")
    return Slo.from_mapping(table)


def wilson_interval(missed: int, trials: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of the proportion ``missed / trials`` (two-sided ``confidence``).

    Unlike the normal approximation it stays inside [0, 1] and is honest for
    the small counts and extreme shares (0 of 40) a step produces.
    """
    if trials <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = missed / trials
    denominator = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    spread = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - spread), min(1.0, centre + spread)


def stream_sample(kinds: np.ndarray, t_ms: np.ndarray) -> tuple[float, float]:
    """(TTFC, own p99 chunk gap) of one stream from its events, as the streams table defines them.

    NaN when the stream has no chunk / fewer than two chunks.
    """
    chunks = np.asarray(t_ms, dtype=np.float64)[np.asarray(kinds) == CHUNK]
    if chunks.size == 0:
        return math.nan, math.nan
    gap = selected_percentiles(np.diff(chunks), (99.0,))[0] if chunks.size > 1 else math.nan
    return float(chunks[0]), float(gap)


@dataclass(frozen=True)
class StepSamples:
    """The streams of one step: one value per stream that started after the settle time and ended."""

    failed: np.ndarray  # bool
    ttfc_ms: np.ndarray  # NaN: no chunk
    gap_p99_ms: np.ndarray  # NaN: fewer than two chunks
    late_first_chunks: int = 0  # streams still waiting for a first chunk past the TTFC limit at the end
    verdict: str = Verdict.CLEAN  # buffering verdict of these streams
    verdict_reason: str = ""
    saturated: bool = False  # the load generator's self-check during the step
    saturated_reason: str = ""
    measured_s: float = 0.0
    chunks: int = 0


@dataclass(frozen=True)
class StepJudgement:
    decision: StepDecision
    resolved: bool
    objectives: dict[str, ObjectiveResult]
    metrics: StepMetrics
    reasons: list[str]

    def step(self, streams: int, measured_s: float, harness: Mapping[str, Any]) -> CapacityStep:
        """The ``capacity.json`` step of this judgement at ``streams`` concurrent streams."""
        return {
            "streams": streams,
            "decision": str(self.decision),
            "resolved": self.resolved,
            "measured_s": round(measured_s, 3),
            "metrics": self.metrics,
            "objectives": self.objectives,
            "harness": dict(harness),
            "reasons": list(self.reasons),
        }


def judge_step(samples: StepSamples, slo: Slo) -> StepJudgement:
    """Decide one step (see the module docstring)."""
    ttfc = samples.ttfc_ms[np.isfinite(samples.ttfc_ms)]
    gaps = samples.gap_p99_ms[np.isfinite(samples.gap_p99_ms)]
    judged = int(samples.failed.size)
    failed = int(np.count_nonzero(samples.failed))
    ttfc_p99 = _p99(ttfc)
    gap_p99 = _p99(gaps)
    objectives: dict[str, ObjectiveResult] = {
        "ttfc": _objective(
            int(np.count_nonzero(ttfc > slo.ttfc_p99_ms)) + samples.late_first_chunks,
            int(ttfc.size) + samples.late_first_chunks,
            P99_ALLOWED,
            slo.ttfc_p99_ms,
            ttfc_p99,
            slo.confidence,
        ),
        "gap": _objective(
            int(np.count_nonzero(gaps > slo.gap_p99_ms)), int(gaps.size), P99_ALLOWED, slo.gap_p99_ms, gap_p99,
            slo.confidence,
        ),
        "failures": _objective(
            failed, judged, slo.failure_rate, slo.failure_rate, failed / judged if judged else None, slo.confidence
        ),
    }  # fmt: skip
    if slo.clean:
        objectives["buffering"] = _buffering(samples.verdict)
    reasons = _reasons(objectives, slo, samples)
    metrics: StepMetrics = {
        "ttfc_p99_ms": ttfc_p99,
        "gap_p99_ms": gap_p99,
        "failure_rate": failed / judged if judged else None,
        "verdict": samples.verdict,
        "streams": judged,
        "chunks_per_s": samples.chunks / samples.measured_s if samples.measured_s > 0 else None,
    }
    if samples.saturated:
        why = f": {samples.saturated_reason}" if samples.saturated_reason else ""
        reason = f"the load generator was saturated{why}"
        return StepJudgement(StepDecision.SATURATED, True, objectives, metrics, [reason, *reasons])
    missed = [item for item in objectives.values() if not item["holds"]]
    if missed:
        resolved = any(item["resolved"] for item in missed)
        return StepJudgement(StepDecision.BREAKS, resolved, objectives, metrics, reasons)
    resolved = all(item["resolved"] for item in objectives.values())
    return StepJudgement(StepDecision.HOLDS, resolved, objectives, metrics, reasons)


def _p99(values: np.ndarray) -> float | None:
    return optional_float(float(selected_percentiles(values.copy(), (99.0,))[0])) if values.size else None


def _objective(
    missed: int, trials: int, allowed: float, limit: float, observed: float | None, confidence: float
) -> ObjectiveResult:
    low, high = wilson_interval(missed, trials, confidence)
    share = missed / trials if trials else None
    holds = share is None or share <= allowed
    resolved = trials > 0 and (high <= allowed if holds else low > allowed)
    return {
        "limit": limit,
        "observed": observed,
        "allowed": allowed,
        "missed": missed,
        "trials": trials,
        "share": share,
        "interval": [low, high],
        "holds": holds,
        "resolved": resolved,
    }


def _buffering(verdict: str) -> ObjectiveResult:
    """The buffering objective: ``clean`` holds, ``buffered`` breaks, ``inconclusive`` is undecided."""
    buffered = verdict == Verdict.BUFFERED
    return {
        "limit": 1.0,
        "observed": None,
        "allowed": 0.0,
        "missed": int(buffered),
        "trials": int(verdict != Verdict.INCONCLUSIVE),
        "share": None,
        "interval": [0.0, 1.0],
        "holds": not buffered,
        "resolved": verdict != Verdict.INCONCLUSIVE,
        "verdict": verdict,
    }


def _reasons(objectives: Mapping[str, ObjectiveResult], slo: Slo, samples: StepSamples) -> list[str]:
    """One line per objective missed (point estimate), most telling first."""
    out = []
    labels = {"ttfc": ("TTFC", "ms"), "gap": ("own p99 gap", "ms"), "failures": ("failed", "")}
    for name, (label, unit) in labels.items():
        item = objectives[name]
        if item["holds"] or item["share"] is None:
            continue
        low, high = item["interval"]
        over = f"{label} over {item['limit']:g} {unit}".strip() if unit else label
        certainty = "with confidence" if item["resolved"] else "not resolved"
        out.append(
            f"{item['missed']} of {item['trials']} streams {over} ({item['share']:.1%}, "
            f"{slo.confidence:.0%} interval {low:.1%}..{high:.1%}; allowed {item['allowed']:.1%}, {certainty})"
        )
    buffering = objectives.get("buffering")
    if buffering is not None and not buffering["holds"]:
        out.append("buffering verdict buffered" + (f": {samples.verdict_reason}" if samples.verdict_reason else ""))
    return out


@dataclass(frozen=True)
class StepPolicy:
    """How long a step runs: decided with confidence, within ``min_s``..``max_s`` of measuring."""

    min_s: float = 10.0  # a step that holds runs at least this long
    max_s: float = 30.0  # then its point estimates decide
    min_streams: int = 10  # no decision on fewer streams
    settle_s: float = 1.0  # after the level is reached, before streams count

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s or self.min_streams < 1 or self.settle_s < 0:
            raise SloError("step timings: need 0 < min <= max seconds, min streams >= 1, settle >= 0")

    def done(self, judgement: StepJudgement, measured_s: float) -> bool:
        if measured_s >= self.max_s:
            return True
        if judgement.decision == StepDecision.SATURATED:
            return measured_s >= self.min_s
        if not judgement.resolved or judgement.metrics["streams"] < self.min_streams:
            return False
        return judgement.decision == StepDecision.BREAKS or measured_s >= self.min_s


@dataclass
class CapacitySearch:
    """Doubling, then bisection, over concurrent streams (see the module docstring)."""

    start: int = 4
    max_streams: int = 256
    tolerance: float = 0.1
    max_steps: int = 16
    steps: list[CapacityStep] = field(default_factory=list)
    held: int | None = None  # highest level at which the SLO held
    broke: int | None = None  # lowest level at which it broke
    saturated: int | None = None  # lowest level at which the load generator saturated
    stop_reason: str | None = None
    _next: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.start <= self.max_streams:
            raise SloError(f"need 1 <= start ({self.start}) <= max streams ({self.max_streams})")
        if not 0 <= self.tolerance < 1 or self.max_steps < 1:
            raise SloError("tolerance must be in [0, 1) and max steps >= 1")
        self._next = self.start

    def next_level(self) -> int | None:
        """Concurrent streams of the next step; None when the search is over."""
        return self._next

    def record(self, step: CapacityStep) -> None:
        """The step at ``next_level()`` is done: move the bounds, choose the next level."""
        level, decision = step["streams"], StepDecision(step["decision"])
        self.steps.append(step)
        if decision == StepDecision.HOLDS:
            self.held = max(self.held or 0, level)
        elif decision == StepDecision.BREAKS:
            self.broke = level if self.broke is None else min(self.broke, level)
        else:
            self.saturated = level if self.saturated is None else min(self.saturated, level)
        self._next = self._advance()

    @property
    def ceiling(self) -> int | None:
        """The lowest level known not to hold with the harness trustworthy."""
        known = [level for level in (self.broke, self.saturated) if level is not None]
        return min(known) if known else None

    def _advance(self) -> int | None:
        ceiling = self.ceiling
        if ceiling is None:
            assert self.held is not None
            if self.held >= self.max_streams:
                self.stop_reason = "max_streams_reached"
                return None
            level = min(2 * self.held, self.max_streams)
        elif self.held is None:
            if ceiling <= 1:
                self.stop_reason = "saturated_at_one_stream" if ceiling == self.saturated else "slo_unmet_at_one_stream"
                return None
            level = ceiling // 2
        elif ceiling - self.held <= max(1.0, self.tolerance * self.held):
            self.stop_reason = "converged"
            return None
        else:
            level = (self.held + ceiling) // 2
        if len(self.steps) >= self.max_steps:
            self.stop_reason = "max_steps"
            return None
        return level

    @property
    def lower_bound(self) -> bool:
        """True when the capacity may be higher: the generator saturated first, or the search hit a limit."""
        if self.stop_reason in ("max_streams_reached", "max_steps", "saturated_at_one_stream"):
            return True
        return self.saturated is not None and (self.broke is None or self.saturated <= self.broke)

    def result(self) -> TransportCapacity:
        return {
            "max_streams_meeting_slo": self.held or 0,
            "lower_bound": self.lower_bound,
            "breaks_at": self.broke,
            "saturated_at": self.saturated,
            "stop_reason": self.stop_reason or "stopped",
            "summary": self.summary(),
            "steps": list(self.steps),
        }

    def summary(self) -> str:
        """One line: the capacity, what bounds it, and why the step above it failed."""
        held = self.held or 0
        if self.lower_bound:
            if self.stop_reason == "max_streams_reached":
                why = f"the search stopped at its ceiling of {self.max_streams} streams"
            elif self.stop_reason == "max_steps":
                why = f"the search stopped after {self.max_steps} steps"
            else:
                why = f"the load generator saturated at {self.saturated} streams"
            return f"at least {held} concurrent streams meet the SLO (a lower bound: {why})"
        if self.broke is None:
            return f"{held} concurrent streams meet the SLO (the search stopped: {self.stop_reason or 'stopped'})"
        reasons = next((s["reasons"] for s in self.steps if s["streams"] == self.broke), [])
        because = f": {reasons[0]}" if reasons else ""
        if not held:
            return f"the SLO is not met even at {self.broke} concurrent stream(s){because}"
        return f"{held} concurrent streams meet the SLO; {self.broke} break it{because}"
