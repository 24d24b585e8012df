"""Self-check of the load process: is the harness, not the backend, the limit?

Every chunk's arrival time is taken by a greenlet.  If the process is short of
CPU, or the gevent hub is busy running other greenlets, that greenlet runs
late and every gap, TTFC and staleness number grows with it.  So while a test
runs, one greenlet samples:

- **loop lag**: how much ``gevent.sleep(0.1)`` overshoots.  That is the time a
  ready greenlet waits for the hub, i.e. the error added to a timestamp.
- **CPU**: this process's CPU % (``psutil``; 100 = one full core, gevent runs
  on one core) once per second.

Sampling starts ``WARMUP_S`` (2 s) after the test starts: imports, forks and
the first connections make one-off hiccups that say nothing about the run.
But nothing can hide a blocked loop from the monitor: every sleep's real
length is measured (the warm-up's too, so a stall that outlasts the
warm-up counts), and a sleep still overdue when a summary is taken (the loop
was blocked until the test stopped) counts as the lag it has reached.

A run is marked ``saturated`` when any of

- one stall: a single loop-lag sample of at least ``STALL_MS`` (250 ms, far
  beyond any gap a stream is judged on), whatever the number of samples;
  the reason says how long ("event loop blocked for 12.0 s");
- loop-lag p99 >= ``LAG_P99_SATURATED_MS`` (25 ms: several times the 3 ms
  inter-chunk gap of a 10,000-chunk 30-second stream, so gap and jitter
  numbers are then about the harness), judged once there are
  ``MIN_LAG_SAMPLES`` (3 s worth), or
- CPU >= ``CPU_SATURATED_PERCENT`` (90 % of one core) in at least
  ``CPU_SATURATED_SHARE`` (25 %) of at least ``MIN_CPU_SAMPLES`` one-second
  samples (a single busy second does not count).

Very short runs (under ~5 s) therefore never count as saturated: too few
samples to tell a hiccup from a limit.

In distributed mode every worker runs its own monitor and sends its summary
to the master, which keeps the worst (:func:`worst`).

Other parts of the load generator with their own limits add a
:class:`Probe` (``SelfCheck.probes``): the browser pages
(``loadtests.browser.monitor``) are one.  A probe's summary goes under its
name, and its reasons, when it is saturated, make the run saturated too.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Mapping
from typing import Any, Final, Protocol

import gevent
import numpy as np
import psutil

LAG_INTERVAL_S: Final = 0.1
CPU_INTERVAL_S: Final = 1.0
WARMUP_S: Final = 2.0
LAG_P99_SATURATED_MS: Final = 25.0
#: One loop-lag sample this long marks the run saturated by itself.
STALL_MS: Final = 250.0
MIN_LAG_SAMPLES: Final = 30
CPU_SATURATED_PERCENT: Final = 90.0
CPU_SATURATED_SHARE: Final = 0.25
MIN_CPU_SAMPLES: Final = 3
#: Below this mean CPU, loop lag is blamed on the machine rather than our own code.
STARVED_CPU_PERCENT: Final = 50.0


class Probe(Protocol):
    """Another part of the load generator that can be the limit (e.g. the browser pages)."""

    name: str

    def reset(self) -> None:
        """Forget earlier samples (a run starts)."""

    def summary(self) -> dict[str, Any]:
        """At least ``saturated`` and ``reasons``."""
        ...


class SelfCheck:
    """Samples loop lag and CPU of this process while a test runs."""

    def __init__(
        self, *, lag_interval: float = LAG_INTERVAL_S, cpu_interval: float = CPU_INTERVAL_S, warmup: float = WARMUP_S
    ) -> None:
        self._lag_interval = lag_interval
        self._cpu_interval = cpu_interval
        self._warmup = warmup
        self._process = psutil.Process()
        self._greenlet: gevent.Greenlet | None = None
        self._asleep_until = 0.0  # perf_counter when the sampler's current sleep should end (0: awake)
        self.lag_ms = array("d")
        self.cpu_percent = array("d")
        self.probes: list[Probe] = []

    @property
    def running(self) -> bool:
        return self._greenlet is not None and not self._greenlet.dead

    def start(self) -> None:
        """Forget earlier samples and start sampling (idempotent while running)."""
        if self.running:
            return
        self.lag_ms = array("d")
        self.cpu_percent = array("d")
        for probe in self.probes:
            probe.reset()
        self._greenlet = gevent.spawn(self._sample)

    def stop(self) -> dict[str, Any]:
        """Stop sampling and return the summary (an overdue sleep counts as its lag so far)."""
        if self._greenlet is not None:
            overdue, samples = self._overdue_ms(), len(self.lag_ms)
            self._greenlet.kill(block=True)
            self._greenlet = None
            if overdue and len(self.lag_ms) == samples:  # (it may have woken up to record it itself)
                self.lag_ms.append(overdue)
            self._asleep_until = 0.0
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The samples so far, summarised (see :func:`summarize`), an overdue sleep included, with the probes'."""
        overdue = self._overdue_ms()
        lag = [*self.lag_ms, overdue] if overdue else self.lag_ms
        return with_probes(summarize(self.cpu_percent, lag), self.probes)

    def _overdue_ms(self) -> float:
        """How late the sampler's current sleep already is (0 when awake or on time)."""
        if not self._asleep_until:
            return 0.0
        return max(0.0, (time.perf_counter() - self._asleep_until) * 1000.0)

    def _sleep(self, seconds: float) -> float:
        """Sleep; the lag in ms (how much longer than ``seconds`` the sleep really took)."""
        before = time.perf_counter()
        self._asleep_until = before + seconds
        gevent.sleep(seconds)
        self._asleep_until = 0.0
        return max(0.0, (time.perf_counter() - before - seconds) * 1000.0)

    def _sample(self) -> None:
        # The warm-up's own overshoot is run time (past the warm-up) the loop was blocked.
        self.lag_ms.append(self._sleep(self._warmup))
        self._process.cpu_percent(None)  # primes psutil: the first reading is meaningless
        last_cpu = time.perf_counter()
        while True:
            self.lag_ms.append(self._sleep(self._lag_interval))
            now = time.perf_counter()
            if now - last_cpu >= self._cpu_interval:
                last_cpu = now
                self.cpu_percent.append(self._process.cpu_percent(None))


def summarize(cpu_percent: Any, lag_ms: Any) -> dict[str, Any]:
    """``run.harness`` fields of one process, with the reasons when saturated."""
    cpu = np.asarray(cpu_percent, dtype=float)
    lag = np.asarray(lag_ms, dtype=float)
    lag_p99 = float(np.percentile(lag, 99)) if lag.size else None
    busy_share = float(np.mean(cpu >= CPU_SATURATED_PERCENT)) if cpu.size else 0.0
    reasons = []
    lag_max = float(lag.max()) if lag.size else None
    if lag_max is not None and lag_max >= STALL_MS:
        reasons.append(f"event loop blocked for {_duration(lag_max)} (one stall >= {STALL_MS:g} ms)")
    if lag.size >= MIN_LAG_SAMPLES and lag_p99 is not None and lag_p99 >= LAG_P99_SATURATED_MS:
        reason = f"event-loop lag p99 {lag_p99:.1f} ms >= {LAG_P99_SATURATED_MS:g} ms"
        if cpu.size and float(cpu.mean()) < STARVED_CPU_PERCENT:
            # Late wake-ups while this process hardly ran: it was waiting for a CPU.
            reason += (
                f" while this process averaged {float(cpu.mean()):.0f}% CPU "
                "(the machine is short of CPU, e.g. the backend or other jobs on it)"
            )
        reasons.append(reason)
    if cpu.size >= MIN_CPU_SAMPLES and busy_share >= CPU_SATURATED_SHARE:
        reasons.append(f"CPU >= {CPU_SATURATED_PERCENT:g}% of a core in {busy_share:.0%} of the run")
    return {
        "saturated": bool(reasons),
        "cpu_percent_max": float(cpu.max()) if cpu.size else None,
        "cpu_percent_mean": float(cpu.mean()) if cpu.size else None,
        "cpu_busy_share": busy_share,
        "loop_lag_ms_p50": float(np.percentile(lag, 50)) if lag.size else None,
        "loop_lag_ms_p99": lag_p99,
        "loop_lag_ms_max": lag_max,
        "samples": int(lag.size),
        "reasons": reasons,
    }


def with_probes(summary: dict[str, Any], probes: list[Probe]) -> dict[str, Any]:
    """``summary`` with each probe's summary under its name; a saturated probe saturates it."""
    for probe in probes:
        found = probe.summary()
        summary[probe.name] = found
        if found.get("saturated"):
            summary["saturated"] = True
            summary["reasons"] = [*summary.get("reasons", []), *found.get("reasons", [])]
    return summary


def _duration(ms: float) -> str:
    return f"{ms / 1000.0:.1f} s" if ms >= 1000.0 else f"{ms:.0f} ms"


def worst(per_process: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The run's harness verdict from each load process's summary: the worst wins."""
    summaries = [s for s in per_process.values() if s]
    if not summaries:
        return {**summarize([], []), "processes": {}}

    def highest(key: str) -> float | None:
        values = [s[key] for s in summaries if s.get(key) is not None]
        return max(values) if values else None

    reasons = [
        f"{name}: {reason}" if len(per_process) > 1 else reason
        for name, s in per_process.items()
        for reason in s.get("reasons", [])
    ]
    return {
        "saturated": any(s.get("saturated") for s in summaries),
        "cpu_percent_max": highest("cpu_percent_max"),
        "cpu_percent_mean": highest("cpu_percent_mean"),
        "cpu_busy_share": highest("cpu_busy_share"),
        "loop_lag_ms_p50": highest("loop_lag_ms_p50"),
        "loop_lag_ms_p99": highest("loop_lag_ms_p99"),
        "loop_lag_ms_max": highest("loop_lag_ms_max"),
        "samples": sum(int(s.get("samples") or 0) for s in summaries),
        "reasons": reasons,
        "processes": {name: dict(s) for name, s in per_process.items()},
        **_worst_probes(summaries),
    }


def _worst_probes(summaries: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Probe summaries (``pages``, ...) over processes: one as it is; several, the highest numbers."""
    out: dict[str, Any] = {}
    names = {key for s in summaries for key, value in s.items() if isinstance(value, Mapping) and "saturated" in value}
    for name in sorted(names):
        found = [s[name] for s in summaries if isinstance(s.get(name), Mapping)]
        if len(found) == 1:
            out[name] = dict(found[0])
            continue
        merged: dict[str, Any] = {"saturated": any(f.get("saturated") for f in found)}
        merged["reasons"] = [r for f in found for r in f.get("reasons", [])]
        for key in {k for f in found for k, v in f.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}:
            values = [f[key] for f in found if isinstance(f.get(key), (int, float))]
            merged[key] = sum(values) if key == "pages" else max(values)
        out[name] = merged
    return out
