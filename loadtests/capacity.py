"""The capacity search as a Locust load shape: the most concurrent streams that meet an SLO, per transport.

:class:`CapacitySearchShape` runs ``analysis.capacity``'s search live, one
transport after the other (``--transport``; ``both`` searches NDJSON, then
Socket.io).  Locust calls its ``tick`` about once a second; each step:

1. asks for the step's number of users of the transport's user class, and
   waits until Locust has them all running;
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

When every transport's search is over it writes ``capacity.json`` and
``capacity.png`` (``--capacity-file``, default the run's results directory)
and stops the run, which writes the sweep's raw data as any run does; a run
stopped earlier writes what its searches found so far.

Select it in the web UI with Locust's class picker::

    locust -f loadtests/locustfile.py,loadtests/capacity_locustfile.py --class-picker

(pick ``CapacitySearchShape``; the ``--slo`` and ``--sweep-*`` flags are
custom parameters).  ``stream-harness sweep`` runs the same shape headless.
It runs in the process that runs the users: a local run, not ``--master``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from locust import LoadTestShape, User
from locust.env import Environment
from locust.runners import STATE_RUNNING, MasterRunner

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
from loadtests.harness_run import harness_run
from loadtests.hooks import stream_finished_hook, stream_started_hook
from loadtests.live.stats import verdict
from loadtests.live.tracker import StreamTracker
from loadtests.options import OptionError, RunOptions, SweepOptions
from loadtests.results.record import StreamRecord
from loadtests.selfcheck import STARVED_CPU_PERCENT, summarize
from loadtests.users import NdjsonStreamUser, SocketIOStreamUser, StreamUser
from stream_harness.contract.capacity import CAPACITY_SCHEMA_VERSION, Capacity, CapacityStep
from stream_harness.contract.kinds import StepDecision, StreamStatus
from stream_harness.contract.schema import CHUNK

logger = logging.getLogger("stream_harness")

CAPACITY_FILE: Final = "capacity.json"
#: A step saturated by a machine short of CPU (not by this process) is measured again this many times.
STARVED_RETRIES: Final = 1
CAPACITY_CHART: Final = "capacity.png"
USER_CLASSES: Final[dict[str, type[StreamUser]]] = {
    NdjsonStreamUser.transport: NdjsonStreamUser,
    SocketIOStreamUser.transport: SocketIOStreamUser,
}


class SweepError(OptionError):
    """The capacity search cannot run as asked (one line)."""


def sweep_settings(environment: Environment) -> tuple[RunOptions, SweepOptions, Slo]:
    """The run's options, the search's options and the SLO (defaults from ./pyproject.toml), checked."""
    ns = environment.parsed_options
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

    def started(self, record: StreamRecord, **_: Any) -> None:
        if record.transport == self.transport:
            self.in_flight[id(record)] = record

    def finished(self, record: StreamRecord, **_: Any) -> None:
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
    """One run's searches, one transport after the other; :meth:`tick` is the shape's tick."""

    def __init__(self, environment: Environment) -> None:
        if isinstance(environment.runner, MasterRunner):
            raise SweepError("the capacity search runs in the process that runs the users, not with --master")
        run, options, slo = sweep_settings(environment)
        self.environment = environment
        self.options = options
        self.slo = slo
        self.policy = StepPolicy(options.step_s, options.max_step_s, options.min_streams, options.settle_s)
        self.transports = list(run.transports)
        self.searches = {
            t: CapacitySearch(options.start, options.max_streams, options.tolerance) for t in self.transports
        }
        self.results_dir = run.results_dir
        self.index = 0
        self.recorder: StepRecorder | None = None
        self.draining = False  # between two transports: no user of the last one may run on
        self.retried: dict[tuple[str, int], list[str]] = {}  # why a level was measured again
        self.lag_from = 0
        self.cpu_from = 0
        self.finished = False
        events = environment.events
        stream_started_hook(events).add_listener(self._on_started)
        stream_finished_hook(events).add_listener(self._on_finished)
        events.test_stop.add_listener(self._on_test_stop)
        print(
            f"capacity search: {', '.join(self.transports)} under {slo.describe()} "
            f"(Wilson {slo.confidence:.0%}); steps of {options.step_s:g}..{options.max_step_s:g} s",
            flush=True,
        )

    # -- hooks ---------------------------------------------------------------------
    def _on_started(self, record: StreamRecord, **kw: Any) -> None:
        if self.recorder is not None:
            self.recorder.started(record, **kw)

    def _on_finished(self, record: StreamRecord, **kw: Any) -> None:
        if self.recorder is not None:
            self.recorder.finished(record, **kw)

    def _on_test_stop(self, **_: Any) -> None:
        """Stopped before the searches ended (Stop in the web UI, Ctrl-C): write what was found."""
        self.finish()

    # -- the shape ----------------------------------------------------------------------
    @property
    def transport(self) -> str | None:
        return self.transports[self.index] if self.index < len(self.transports) else None

    def tick(self) -> tuple[int, float, list[type[User]] | None] | None:
        transport = self.transport
        if transport is None:
            return None
        search = self.searches[transport]
        level = search.next_level()
        assert level is not None
        classes: list[type[User]] | None = [USER_CLASSES[transport]]
        if self.draining:  # Locust keeps running users of a class it is no longer given: stop them all first
            runner = self.environment.runner
            if runner is not None and runner.user_count > 0:
                return (0, float(max(runner.user_count, 1)), classes)
            self.draining = False
        target = (level, float(level), classes)
        now = time.time()
        if self.recorder is None:
            if not self._all_running(transport, level):
                return target
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
        print(_step_line(transport, step), flush=True)
        if search.next_level() is None:
            print(f"capacity search: {transport}: {search.summary()}", flush=True)
            self.index += 1
            self.draining = True
            if self.transport is None:
                self.finish()
                return None
        return self.tick()

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
        print(
            f"capacity search: {transport} {level:>4} streams: measuring again, the machine was short of CPU: {reason}",
            flush=True,
        )
        return True

    def _all_running(self, transport: str, level: int) -> bool:
        runner = self.environment.runner
        if runner is None or runner.state != STATE_RUNNING:
            return False
        counts = runner.user_classes_count
        return counts.get(USER_CLASSES[transport].__name__, 0) == level and sum(counts.values()) == level

    def _begin_step(self, transport: str, now: float) -> None:
        self.recorder = StepRecorder(transport, now + self.options.settle_s, self.slo.ttfc_p99_ms)
        check = self._selfcheck()
        self.lag_from = len(check.lag_ms) if check is not None else 0
        self.cpu_from = len(check.cpu_percent) if check is not None else 0

    def _selfcheck(self) -> Any:
        run = harness_run(self.environment)
        return run.selfcheck if run is not None else None

    def _harness(self) -> dict[str, Any]:
        """The load generator's self-check over the step so far."""
        check = self._selfcheck()
        if check is None:
            return summarize([], [])
        return summarize(check.cpu_percent[self.cpu_from :], check.lag_ms[self.lag_from :])

    # -- the end ------------------------------------------------------------------------
    def capacity(self) -> Capacity:
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
            "host": self.environment.host or "",
        }

    def capacity_path(self) -> Path:
        if self.options.capacity_file:
            return Path(self.options.capacity_file)
        run = harness_run(self.environment)
        collector = run.collector if run is not None else None
        if collector is not None and collector.run is not None:
            return collector.results_dir(collector.run) / CAPACITY_FILE
        return Path(self.results_dir or "results") / CAPACITY_FILE

    def finish(self) -> None:
        """Write capacity.json and its chart, once; forget the hooks."""
        if self.finished:
            return
        self.finished = True
        events = self.environment.events
        stream_started_hook(events).remove_listener(self._on_started)
        stream_finished_hook(events).remove_listener(self._on_finished)
        events.test_stop.remove_listener(self._on_test_stop)
        path = self.capacity_path()
        try:
            write_capacity(path, self.capacity())
        except OSError as exc:
            logger.error("capacity search: cannot write %s: %s", path, exc.strerror or exc)
            self.environment.process_exit_code = 2
            return
        print(f"capacity search: wrote {path} and {path.with_name(CAPACITY_CHART)}", flush=True)


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


def _step_line(transport: str, step: CapacityStep) -> str:
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


class CapacitySearchShape(LoadTestShape):
    """Capacity under an SLO: doubling, then bisection, of concurrent streams, per transport."""

    def __init__(self) -> None:
        super().__init__()
        self.sweep: Sweep | None = None

    def reset_time(self) -> None:
        """Locust calls this when a run starts: a new run, a new search."""
        super().reset_time()
        if self.sweep is not None:
            self.sweep.finish()
        self.sweep = None

    def tick(self) -> tuple[int, float, list[type[User]] | None] | None:
        assert self.runner is not None
        if self.sweep is None:
            try:
                self.sweep = Sweep(self.runner.environment)
            except OptionError as exc:
                logger.error("capacity search: %s; stopping", exc)
                return None
        return self.sweep.tick()


def capacity_json(path: Path) -> Capacity:
    """A capacity.json read back."""
    data: Capacity = json.loads(path.read_text())
    return data
