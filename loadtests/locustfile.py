"""Locust entry point of the stream-latency harness.

    locust -f loadtests/locustfile.py --headless -u 10 -r 10 -t 30s \\
        --host http://127.0.0.1:8000 --transport both --results-dir results/run1

Only wiring lives here: the user classes, the harness flags, and the
listeners that turn finished streams into Locust stats rows, the live
"Streams" tab and result files.
"""
from __future__ import annotations

import sys
from typing import Any

import gevent
from locust import events
from locust.env import Environment

from loadtests.results.collector import StreamCollector
from loadtests.selfcheck import HarnessMonitor
from loadtests.shutdown import hold_interrupts_while_stopping
from loadtests.options import OptionError, add_arguments, check_startup
from loadtests.redaction import protect_secrets
from loadtests.stats_rows import let_csv_catch_up, report_stream
from loadtests.hooks import stream_finished_hook
from loadtests.users import NdjsonStreamUser, SocketIOStreamUser, select_user_classes
from loadtests.live.webui import register as register_streams_tab

__all__ = ["NdjsonStreamUser", "SocketIOStreamUser"]

events.init_command_line_parser.add_listener(add_arguments)


@events.init.add_listener
def _install(environment: Environment, runner: Any = None, **_: Any) -> None:
    try:
        check_startup(environment.parsed_options, environment.host)
    except OptionError as exc:
        print(f"locust: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    protect_secrets(environment)        # before the web UI serves its first page
    environment.events.test_start.add_listener(select_user_classes)
    stream_finished_hook(environment.events).add_listener(
        lambda record, **_kw: report_stream(environment, record))
    let_csv_catch_up(environment)
    if runner is not None:
        environment.stream_collector = StreamCollector(environment, runner, HarnessMonitor())
    hold_interrupts_while_stopping(environment)   # after the collector: see its docstring
    register_streams_tab(environment)   # the live "Streams" tab (uses the collector's monitor)
    # The hub's clock is cached and has not ticked since the loop was created
    # (before this locustfile's imports); the -t timer Locust arms next would
    # fire early by that much (a 3 s run ended after 0.3 s on a busy machine).
    gevent.get_hub().loop.update_now()
