"""The harness's collaborators of one Locust environment, created and wired in one place.

Locust hands the harness an ``Environment`` at ``events.init``;
:meth:`HarnessRun.install` checks the command line, then creates the
self-check, the result collector and the live Streams feed, and registers
their listeners in the order they depend on each other.  :func:`harness_run`
gives the object of an environment back (tests, the metrics endpoint).
"""

from __future__ import annotations

import sys
import weakref
from dataclasses import dataclass
from typing import Any

from locust.env import Environment
from locust.runners import MasterRunner

from loadtests.clock import ClockKeeper
from loadtests.hooks import stream_finished_hook
from loadtests.live import metrics, otel
from loadtests.live.webui import LiveFeed
from loadtests.live.webui import register as register_live_feed
from loadtests.options import OptionError, RunOptions, check_startup
from loadtests.redaction import protect_secrets
from loadtests.results.collector import StreamCollector
from loadtests.selfcheck import SelfCheck
from loadtests.shutdown import hold_interrupts_while_stopping
from loadtests.stats_rows import let_csv_catch_up, report_stream
from loadtests.users import select_user_classes

_RUNS: weakref.WeakKeyDictionary[Environment, HarnessRun] = weakref.WeakKeyDictionary()


@dataclass
class HarnessRun:
    """What the harness adds to one Locust environment."""

    environment: Environment
    selfcheck: SelfCheck
    clock: ClockKeeper | None  # None on a master (it runs no users)
    collector: StreamCollector | None  # None without a runner (nothing to collect)
    live: LiveFeed | None  # None when nobody watches (headless local run or master without exporters)
    metrics_server: metrics.MetricsServer | None  # --metrics-port

    @classmethod
    def install(cls, environment: Environment, runner: Any = None) -> HarnessRun:
        """The ``events.init`` listener's work; a bad flag exits with one line and code 2."""
        try:
            check_startup(environment.parsed_options, environment.host)
        except OptionError as exc:
            print(f"locust: error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)
        protect_secrets(environment)  # before the web UI serves its first page
        environment.events.test_start.add_listener(select_user_classes)
        stream_finished_hook(environment.events).add_listener(lambda record, **_kw: report_stream(environment, record))
        let_csv_catch_up(environment)
        selfcheck = SelfCheck()
        clock = None if isinstance(runner, MasterRunner) else ClockKeeper(environment)
        collector = StreamCollector(environment, runner, selfcheck, clock) if runner is not None else None
        # quitting listeners run in reverse order of registration: registered after
        # the collector, the SIGINT policy marks the shutdown before the results are written
        hold_interrupts_while_stopping(environment)
        options = RunOptions.from_namespace(environment.parsed_options)
        live = register_live_feed(environment, selfcheck, keep_totals=metrics.wanted(options))
        try:
            metrics_server = metrics.install(environment, live)
        except OptionError as exc:
            print(f"locust: error: {exc}", file=sys.stderr, flush=True)
            sys.exit(2)
        if options.otel and live is not None and live.live is not None:
            otel.install(lambda: metrics.metrics_view(live))
        run = cls(environment, selfcheck, clock, collector, live, metrics_server)
        _RUNS[environment] = run
        return run


def harness_run(environment: Environment) -> HarnessRun | None:
    """The :class:`HarnessRun` installed on ``environment``, if any."""
    return _RUNS.get(environment)
