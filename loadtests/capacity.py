"""The capacity search as a Locust load shape: the most concurrent streams that meet an SLO, per transport.

:class:`CapacitySearchShape` wires ``loadtests.sweep.Sweep`` (the search run
live, Locust-free) into Locust: each ``tick`` hands it the users running per
transport and turns its answer into Locust's (users, spawn rate, user
classes); the stream hooks feed it every stream; the self-check of the run
judges each step's load generator.  When the searches are over it writes
``capacity.json`` and ``capacity.png`` (``--capacity-file``, default the run's
results directory) and stops the run, which writes the sweep's raw data as
any run does; a run stopped earlier writes what its searches found so far.

Select it in the web UI with Locust's class picker::

    locust -f loadtests/locustfile.py,loadtests/capacity_locustfile.py --class-picker

(pick ``CapacitySearchShape``; the ``--slo`` and ``--sweep-*`` flags are
custom parameters).  ``stream-harness sweep`` runs the same shape headless.
It runs in the process that runs the users: a local run, not ``--master``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

from locust import LoadTestShape, User
from locust.env import Environment
from locust.runners import STATE_RUNNING, MasterRunner

from loadtests.harness_run import harness_run
from loadtests.hooks import stream_finished_hook, stream_started_hook
from loadtests.options import OptionError
from loadtests.results.record import StreamRecord
from loadtests.sweep import CAPACITY_CHART, CAPACITY_FILE, Sweep, SweepError, sweep_settings, write_capacity
from loadtests.users import NdjsonStreamUser, SocketIOStreamUser, StreamUser

logger = logging.getLogger("stream_harness")

USER_CLASSES: Final[dict[str, type[StreamUser]]] = {
    NdjsonStreamUser.transport: NdjsonStreamUser,
    SocketIOStreamUser.transport: SocketIOStreamUser,
}


class LocustSweep:
    """One run's :class:`Sweep` in one Locust environment: hooks in, ticks out, capacity.json at the end."""

    def __init__(self, environment: Environment) -> None:
        if isinstance(environment.runner, MasterRunner):
            raise SweepError("the capacity search runs in the process that runs the users, not with --master")
        run, options, slo = sweep_settings(environment.parsed_options)
        self.environment = environment
        self.capacity_file = options.capacity_file
        self.results_dir = run.results_dir
        harness = harness_run(environment)
        self.sweep = Sweep(list(run.transports), options, slo, selfcheck=harness.selfcheck if harness else None)
        self.finished = False
        events = environment.events
        stream_started_hook(events).add_listener(self._on_started)
        stream_finished_hook(events).add_listener(self._on_finished)
        events.test_stop.add_listener(self._on_test_stop)

    def _on_started(self, record: StreamRecord, **_: Any) -> None:
        self.sweep.started(record)

    def _on_finished(self, record: StreamRecord, **_: Any) -> None:
        self.sweep.finished(record)

    def _on_test_stop(self, **_: Any) -> None:
        """Stopped before the searches ended (Stop in the web UI, Ctrl-C): write what was found."""
        self.finish()

    def tick(self) -> tuple[int, float, list[type[User]] | None] | None:
        runner = self.environment.runner
        counts = dict(getattr(runner, "user_classes_count", {}) or {})
        running = {transport: counts.get(cls.__name__, 0) for transport, cls in USER_CLASSES.items()}
        ready = runner is not None and runner.state == STATE_RUNNING
        target = self.sweep.tick(running, ready)
        if target is None:
            self.finish()
            return None
        users, rate, transport = target
        return users, rate, [USER_CLASSES[transport]]

    def capacity_path(self) -> Path:
        if self.capacity_file:
            return Path(self.capacity_file)
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
            write_capacity(path, self.sweep.capacity(self.environment.host or ""))
        except OSError as exc:
            logger.error("capacity search: cannot write %s: %s", path, exc.strerror or exc)
            self.environment.process_exit_code = 2
            return
        print(f"capacity search: wrote {path} and {path.with_name(CAPACITY_CHART)}", flush=True)


class CapacitySearchShape(LoadTestShape):
    """Capacity under an SLO: doubling, then bisection, of concurrent streams, per transport."""

    def __init__(self) -> None:
        super().__init__()
        self.search: LocustSweep | None = None

    def reset_time(self) -> None:
        """Locust calls this when a run starts: a new run, a new search."""
        super().reset_time()
        if self.search is not None:
            self.search.finish()
        self.search = None

    def tick(self) -> tuple[int, float, list[type[User]] | None] | None:
        assert self.runner is not None
        if self.search is None:
            try:
                self.search = LocustSweep(self.runner.environment)
            except OptionError as exc:
                logger.error("capacity search: %s; stopping", exc)
                return None
        return self.search.tick()
