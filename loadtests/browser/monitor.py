"""The pages' share of the harness self-check: can the browser keep up?

A page that cannot keep up stamps its reads late, exactly as a starved load
process does, and its lag would be reported as the backend's.  So while
browser users run, this monitor keeps:

- **CPU and memory of the browser**: every process of the helper's tree
  (Playwright's driver, Chromium's browser, network service and renderers),
  sampled once a second with psutil (100 = one core): the busiest process
  per sample, the whole tree's total and its resident memory;
- **the pages' event-loop lag**: each page measures how late a 100 ms timer
  fires (the load process's own loop-lag probe, in JavaScript) and ships the
  samples with its stamps;
- **paint lag**: read arrival -> the next animation frame, per read.

Browser processes run at the load process's priority (Chromium raises some
of its own when it may; see ``_no_higher_priority``).

The browser counts as saturated (the reasons say which) when

- page loop-lag p99 >= ``LAG_P99_SATURATED_MS`` (25 ms, the load process's
  threshold), judged once there are ``MIN_LAG_SAMPLES``;
- paint-lag p99 >= ``PAINT_LAG_P99_SATURATED_MS`` (50 ms: three frames at
  60 Hz; an idle page paints within one);
- one browser process at >= ``CPU_SATURATED_PERCENT`` (90 % of a core: a
  renderer's main thread or the network service is single-threaded where it
  matters) in >= ``CPU_SATURATED_SHARE`` of >= ``MIN_CPU_SAMPLES`` samples.

:meth:`PageMonitor.summary` is what ``SelfCheck`` adds to the run's
``harness`` object under ``pages``, its reasons to the harness's reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

import gevent
import numpy as np
import psutil

from analysis.histogram import LogHistogram
from loadtests.selfcheck import (
    CPU_SATURATED_PERCENT,
    CPU_SATURATED_SHARE,
    LAG_P99_SATURATED_MS,
    MIN_CPU_SAMPLES,
    MIN_LAG_SAMPLES,
)

CPU_INTERVAL_S: Final = 1.0
PAINT_LAG_P99_SATURATED_MS: Final = 50.0
MB: Final = 1024 * 1024


class PageMonitor:
    """Samples the browser's processes; collects the lag samples its pages send."""

    name = "pages"  # its key in the harness self-check (``loadtests.selfcheck.Probe``)

    def __init__(self, root_pid: Callable[[], int | None], *, interval: float = CPU_INTERVAL_S) -> None:
        self._root_pid = root_pid
        self._interval = interval
        self._processes: dict[int, psutil.Process] = {}
        self._greenlet: gevent.Greenlet | None = None
        self.pages = 0  # pages open now
        self.reset()

    def reset(self) -> None:
        """Forget every sample (a new run starts)."""
        self.page_lag = LogHistogram()
        self.paint_lag = LogHistogram()
        self.busiest_cpu: list[float] = []  # per sample: the busiest browser process (% of a core)
        self.total_cpu: list[float] = []  # per sample: the whole tree
        self.rss_mb: list[float] = []
        self.cpu_seconds = 0.0  # CPU time of the tree's processes since the reset (user + system)
        self._cpu_base: dict[int, float] = {}

    # -- from the pages ------------------------------------------------------------
    def add_page_lag(self, values: Iterable[float]) -> None:
        self.page_lag.add_array(np.asarray(list(values), dtype=np.float64))

    def add_paint_lag(self, values: np.ndarray) -> None:
        self.paint_lag.add_array(values)

    # -- sampling ------------------------------------------------------------------
    def start(self) -> None:
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._sample_loop)

    def stop(self) -> None:
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is not None:
            greenlet.kill(block=False)

    def _sample_loop(self) -> None:
        while True:
            self.sample()
            gevent.sleep(self._interval)

    def tree(self) -> list[psutil.Process]:
        """The browser's processes now (the helper, Playwright's driver, Chromium's)."""
        pid = self._root_pid()
        if pid is None:
            return []
        try:
            root = psutil.Process(pid)
            found = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        alive = {}
        for process in found:
            known = self._processes.get(process.pid)
            if known is None:
                try:
                    process.cpu_percent(None)  # primes it: the first reading is meaningless
                    _no_higher_priority(process)
                except psutil.Error:
                    continue
                known = process
            alive[process.pid] = known
        self._processes = alive
        return list(alive.values())

    def sample(self) -> None:
        """One sample of every browser process (skipped while none has been seen twice)."""
        fresh = {pid for pid in self._processes}
        processes = self.tree()
        cpu, rss, seconds = [], 0, 0.0
        for process in processes:
            try:
                with process.oneshot():
                    value = process.cpu_percent(None)
                    times = process.cpu_times()
                    rss += process.memory_info().rss
            except psutil.Error:
                continue
            total = times.user + times.system
            base = self._cpu_base.setdefault(process.pid, total)
            seconds += total - base
            if process.pid in fresh:
                cpu.append(value)
        self.cpu_seconds = max(self.cpu_seconds, seconds)
        if cpu:
            self.busiest_cpu.append(max(cpu))
            self.total_cpu.append(sum(cpu))
            self.rss_mb.append(rss / MB)

    def cpu_time_s(self) -> float:
        """CPU seconds the browser's processes used since the reset (sampled now)."""
        self.sample()
        return self.cpu_seconds

    # -- verdict -------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        busiest = np.asarray(self.busiest_cpu, dtype=np.float64)
        lag_p99 = self.page_lag.quantile(0.99)
        paint_p99 = self.paint_lag.quantile(0.99)
        busy_share = float(np.mean(busiest >= CPU_SATURATED_PERCENT)) if busiest.size else 0.0
        reasons = []
        if self.page_lag.count >= MIN_LAG_SAMPLES and lag_p99 is not None and lag_p99 >= LAG_P99_SATURATED_MS:
            reasons.append(f"browser pages: event-loop lag p99 {lag_p99:.1f} ms >= {LAG_P99_SATURATED_MS:g} ms")
        if paint_p99 is not None and paint_p99 >= PAINT_LAG_P99_SATURATED_MS:
            reasons.append(
                f"browser pages: read -> next frame p99 {paint_p99:.1f} ms >= {PAINT_LAG_P99_SATURATED_MS:g} ms"
            )
        if busiest.size >= MIN_CPU_SAMPLES and busy_share >= CPU_SATURATED_SHARE:
            reasons.append(
                f"browser: a Chromium process at >= {CPU_SATURATED_PERCENT:g}% of a core in {busy_share:.0%} of the run"
            )
        total = np.asarray(self.total_cpu, dtype=np.float64)
        return {
            "saturated": bool(reasons),
            "reasons": reasons,
            "pages": self.pages,
            "page_lag_ms_p99": lag_p99,
            "page_lag_samples": self.page_lag.count,
            "paint_lag_ms_p50": self.paint_lag.quantile(0.5),
            "paint_lag_ms_p99": paint_p99,
            "cpu_percent_max": float(busiest.max()) if busiest.size else None,
            "cpu_busy_share": busy_share,
            "tree_cpu_percent_mean": float(total.mean()) if total.size else None,
            "tree_cpu_percent_max": float(total.max()) if total.size else None,
            "rss_mb_max": max(self.rss_mb) if self.rss_mb else None,
            "samples": int(busiest.size),
        }


def _no_higher_priority(process: psutil.Process) -> None:
    """Run a browser process at this process's priority, never above it.

    Chromium raises some of its processes to nice -8 when it may (as root):
    on a busy machine the pages would then take the CPU from the load process
    whose greenlets stamp the protocol clients' reads.  Same priority, same
    chances: whichever side starves, the self-check says so.
    """
    own = psutil.Process().nice()
    if process.nice() < own:
        try:
            process.nice(own)
        except psutil.AccessDenied:
            pass
