"""The capacity search run live, without Locust: the state machine the capacity load shape drives.

:class:`Sweep` runs ``analysis.capacity``'s search one transport after the
other (``--transport``; ``both`` searches NDJSON, then Socket.io).  The load
shape (``loadtests.capacity``) calls :meth:`Sweep.tick` about once a second
with the users running per transport, hands it every stream's record from the
stream hooks, and applies what it asks for.  Each step:

1. asks for the step's number of users of its transport and waits until they
   all run (between two transports, first for no user at all: Locust keeps
   running users of a class it is no longer given);
2. after ``--sweep-settle-seconds``, counts every stream of that transport
   that starts from then on and ends before the step does (streams the step
   change cut short, ``stopped``, count nowhere): its TTFC and own p99 gap
   (``analysis.capacity.stream_sample``), whether it failed, and its events
   in a live aggregate whose buffering verdict is the Streams tab's
   (``loadtests.live.stats.verdict``); streams still waiting for their first
   chunk past the TTFC limit when the step is judged count as misses;
3. every tick, judges the step (``analysis.capacity.judge_step``, with the
   load generator's self-check over the step) and moves on when
   ``StepPolicy`` says it is decided.  A step saturated while this process
   hardly ran (the machine was short of CPU: other jobs) is measured once
   more before it caps the search; one saturated by this process's own work
   stands.

When every search is over, :meth:`Sweep.capacity` is the ``capacity.json``
object (:func:`write_capacity` writes it with its chart).
"""

from __future__ import annotations

import math
import time
from argparse import Namespace
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from analysis.aggregate import Aggregate
from analysis.capacity import (
    CapacitySearch,
    Slo,
    SloError,
    StepPolicy,
    StepSamples,
    judge_step,
    load_slo,
    stream_sample,
)
from analysis.compare import IGNORED_ERROR_KINDS
from loadtests.live.stats import verdict
from loadtests.live.tracker import StreamTracker
from loadtests.options import OptionError, RunOptions, SweepOptions
from loadtests.results.record import StreamRecord
from loadtests.selfcheck import STARVED_CPU_PERCENT, SelfCheck, summarize
from stream_harness.contract.capacity import CAPACITY_SCHEMA_VERSION, Capacity, CapacityStep
from stream_harness.contract.kinds import StepDecision, StreamStatus
from stream_harness.contract.schema import CHUNK

CAPACITY_FILE: Final = "capacity.json"
CAPACITY_CHART: Final = "capacity.png"
#: A step saturated by a machine short of CPU (not by this process) is measured again this many times.
STARVED_RETRIES: Final = 1

#: What a tick asks for: (users, spawn rate, transport of the users).
Target = tuple[int, float, str]


class SweepError(OptionError):
    """The capacity search cannot run as asked (one line)."""


def sweep_settings(ns: Namespace | None) -> tuple[RunOptions, SweepOptions, Slo]:
    """The run's options, the search's options and the SLO (defaults from ./pyproject.toml), checked."""
    run = RunOptions.from_namespace(ns)
    options = SweepOptions.from_namespace(ns)
    try:
        slo = load_slo().with_overrides(options.slo)
        StepPolicy(options.step_s, options.max_step_s, options.min_streams, options.settle_s)
        CapacitySearch(options.start, options.max_streams, options.tolerance)
    except SloError as exc:
        raise SweepError(str(exc)) from None
    return run, options, slo


@dataclass
class StepRecorder:
    """The streams of one step of one transport (see the module docstring)."""

    transport: str
    measure_from: float  # epoch s: streams that started earlier do not count
    ttfc_limit_ms: float
    failed: list[bool] = field(default_factory=list)
    ttfc_ms: list[float] = field(default_factory=list)
    gap_p99_ms: list[float] = field(default_factory=list)
    chunks: int = 0
    tracker: StreamTracker = field(default_factory=StreamTracker)
    in_flight: dict[int, StreamRecord] = field(default_factory=dict)

    def started(self, record: StreamRecord) -> None:
        if record.transport == self.transport:
            self.in_flight[id(record)] = record

    def finished(self, record: StreamRecord) -> None:
        self.in_flight.pop(id(record), None)
        if record.transport != self.transport or not record.started_at >= self.measure_from:
            return
        if record.error in IGNORED_ERROR_KINDS or record.status == StreamStatus.CANCELLED:
            return  # cut short by a step change or the end of the test: says nothing
        kinds = np.frombuffer(record.kinds, dtype=np.int8)
        ttfc, gap = stream_sample(kinds, np.frombuffer(record.t_ms, dtype=np.float64))
        self.failed.append(record.status == StreamStatus.FAILED)
        self.ttfc_ms.append(ttfc)
        self.gap_p99_ms.append(gap)
        self.chunks += int(np.count_nonzero(kinds == CHUNK))
        self.tracker.finished(record)

    def late_first_chunks(self, now: float) -> int:
        """Streams of the step in flight, with no chunk yet, for longer than the TTFC limit."""
        oldest = now - self.ttfc_limit_ms / 1000.0
        return sum(
            1
            for record in self.in_flight.values()
            if self.measure_from <= record.started_at < oldest and CHUNK not in record.kinds
        )

    def samples(self, now: float, harness: dict[str, Any]) -> StepSamples:
        aggregate = Aggregate()
        for agg in self.tracker.delta.rows.values():
            aggregate.merge(agg)
        judged = verdict(aggregate, harness)
        return StepSamples(
            failed=np.array(self.failed, dtype=bool),
            ttfc_ms=np.array(self.ttfc_ms, dtype=np.float64),
            gap_p99_ms=np.array(self.gap_p99_ms, dtype=np.float64),
            late_first_chunks=self.late_first_chunks(now),
            verdict=str(judged.verdict),
            verdict_reason=judged.reasons[0] if judged.reasons else "",
            saturated=bool(harness.get("saturated")),
            saturated_reason="; ".join(harness.get("reasons") or []),
            measured_s=max(0.0, now - self.measure_from),
            chunks=self.chunks,
        )


class Sweep:
    """One run's searches, one transport after the other (see the module docstring)."""

    def __init__(
        self,
        transports: list[str],
        options: SweepOptions,
        slo: Slo,
        *,
        selfcheck: SelfCheck | None = None,
        clock: Callable[[], float] = time.time,
        say: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        self.options = options
        self.slo = slo
        self.selfcheck = selfcheck
        self.clock = clock
        self.say = say
        self.policy = StepPolicy(options.step_s, options.max_step_s, options.min_streams, options.settle_s)
        self.transports = list(transports)
        self.searches = {
            t: CapacitySearch(options.start, options.max_streams, options.tolerance) for t in self.transports
        }
        self.index = 0
        self.recorder: StepRecorder | None = None
        self.draining = False  # between two transports: no user of the last one may run on
        self.retried: dict[tuple[str, int], list[str]] = {}  # why a level was measured again
        self.lag_from = 0
        self.cpu_from = 0
        say(
            f"capacity search: {', '.join(self.transports)} under {slo.describe()} "
            f"(Wilson {slo.confidence:.0%}); steps of {options.step_s:g}..{options.max_step_s:g} s"
        )

    # -- streams (from the stream hooks) -------------------------------------------------
    def started(self, record: StreamRecord) -> None:
        if self.recorder is not None:
            self.recorder.started(record)

    def finished(self, record: StreamRecord) -> None:
        if self.recorder is not None:
            self.recorder.finished(record)

    # -- the shape's tick -----------------------------------------------------------------
    @property
    def transport(self) -> str | None:
        return self.transports[self.index] if self.index < len(self.transports) else None

    @property
    def done(self) -> bool:
        return self.transport is None

    def tick(self, running: Mapping[str, int], ready: bool) -> Target | None:
        """What Locust should run now; None when every search is over.

        ``running``: users running per transport; ``ready``: Locust is not
        spawning or stopping users.
        """
        transport = self.transport
        if transport is None:
            return None
        if self.draining:
            if any(running.values()):
                return (0, float(max(sum(running.values()), 1)), transport)
            self.draining = False
        search = self.searches[transport]
        level = search.next_level()
        assert level is not None
        target = (level, float(level), transport)
        now = self.clock()
        if self.recorder is None:
            if ready and running.get(transport, 0) == level and sum(running.values()) == level:
                self._begin_step(transport, now)
            return target
        if now < self.recorder.measure_from:
            return target
        harness = self._harness()
        judgement = judge_step(self.recorder.samples(now, harness), self.slo)
        measured_s = now - self.recorder.measure_from
        if not self.policy.done(judgement, measured_s):
            return target
        if judgement.decision == StepDecision.SATURATED and self._measure_again(transport, level, harness):
            self.recorder = None  # the same level again, from scratch
            return target
        step = judgement.step(level, measured_s, _harness_brief(harness))
        retried = self.retried.pop((transport, level), [])
        if retried:
            step["retried"] = retried
        search.record(step)
        self.recorder = None
        self.say(step_line(transport, step))
        if search.next_level() is None:
            self.say(f"capacity search: {transport}: {search.summary()}")
            self.index += 1
            self.draining = True
        return self.tick(running, ready)

    def _begin_step(self, transport: str, now: float) -> None:
        self.recorder = StepRecorder(transport, now + self.options.settle_s, self.slo.ttfc_p99_ms)
        self.lag_from = len(self.selfcheck.lag_ms) if self.selfcheck is not None else 0
        self.cpu_from = len(self.selfcheck.cpu_percent) if self.selfcheck is not None else 0

    def _harness(self) -> dict[str, Any]:
        """The load generator's self-check over the step so far."""
        if self.selfcheck is None:
            return summarize([], [])
        return summarize(self.selfcheck.cpu_percent[self.cpu_from :], self.selfcheck.lag_ms[self.lag_from :])

    def _measure_again(self, transport: str, level: int, harness: dict[str, Any]) -> bool:
        """A step saturated while this process hardly ran (other jobs took the CPU) is measured again, once.

        When the load process itself was busy the saturation is its own limit
        and stands; when it averaged under ``STARVED_CPU_PERCENT`` the machine
        was short of CPU for a while, which says nothing about the backend.
        """
        mean = harness.get("cpu_percent_mean")
        tried = self.retried.setdefault((transport, level), [])
        if mean is None or mean >= STARVED_CPU_PERCENT or len(tried) >= STARVED_RETRIES:
            return False
        reason = "; ".join(harness.get("reasons") or []) or "saturated"
        tried.append(reason)
        self.say(f"capacity search: {transport} {level:>4} streams: measuring again, the machine was short of CPU")
        return True

    # -- the answer ---------------------------------------------------------------------
    def capacity(self, host: str = "") -> Capacity:
        """The ``capacity.json`` object of the searches so far."""
        return {
            "schema": CAPACITY_SCHEMA_VERSION,
            "slo": self.slo.as_json(),
            "search": {
                "start": self.options.start,
                "max_streams": self.options.max_streams,
                "tolerance": self.options.tolerance,
                "step_s": self.options.step_s,
                "max_step_s": self.options.max_step_s,
                "settle_s": self.options.settle_s,
                "min_streams": self.options.min_streams,
            },
            "transports": {t: search.result() for t, search in self.searches.items() if search.steps},
            "host": host,
        }


def write_capacity(path: Path, capacity: Capacity) -> None:
    """capacity.json (atomically) and its chart beside it."""
    from analysis.charts import draw_capacity_chart
    from analysis.results import json_safe, write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, json_safe(capacity))
    draw_capacity_chart(capacity, path.with_name(CAPACITY_CHART))


def _harness_brief(harness: dict[str, Any]) -> dict[str, Any]:
    keys = ("saturated", "cpu_percent_max", "cpu_percent_mean", "loop_lag_ms_p99", "reasons")
    return {key: harness.get(key) for key in keys}


def step_line(transport: str, step: CapacityStep) -> str:
    """One progress line per step."""
    metrics = step["metrics"]

    def ms(value: float | None) -> str:
        return "-" if value is None or not math.isfinite(value) else f"{value:.0f} ms"

    resolved = "" if step["resolved"] else " (not resolved: point estimates)"
    line = (
        f"capacity search: {transport} {step['streams']:>4} streams: {step['decision']}{resolved} · "
        f"{metrics['streams']} streams in {step['measured_s']:.0f} s · TTFC p99 {ms(metrics['ttfc_p99_ms'])} · "
        f"gap p99 {ms(metrics['gap_p99_ms'])} · failed {metrics['failure_rate'] or 0:.1%} · {metrics['verdict']}"
    )
    return line + (f" · {step['reasons'][0]}" if step["reasons"] and step["decision"] != "holds" else "")
