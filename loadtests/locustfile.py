"""Locust entry point of the stream-latency harness.

    locust -f loadtests/locustfile.py --headless -u 10 -r 10 -t 30s \\
        --host http://127.0.0.1:8000 --transport both --results-dir results/run1

Only wiring lives here: the user classes, the harness flags, and the
listeners that turn finished streams into Locust stats rows, the live
"Streams" tab and result files.
"""

from __future__ import annotations

from typing import Any

import gevent
from locust import events
from locust.env import Environment

from loadtests.browser.users import NdjsonBrowserUser, SocketIOBrowserUser
from loadtests.harness_run import HarnessRun
from loadtests.options import add_arguments
from loadtests.users import NdjsonStreamUser, SocketIOStreamUser
from stream_harness.allocator import keep_preload_to_myself

__all__ = ["NdjsonBrowserUser", "NdjsonStreamUser", "SocketIOBrowserUser", "SocketIOStreamUser"]

# This process runs on the allocator the harness's commands preloaded (mimalloc);
# the result writer and browsers it starts run on the C library's malloc.
keep_preload_to_myself()
events.init_command_line_parser.add_listener(add_arguments)


@events.init.add_listener
def _install(environment: Environment, runner: Any = None, **_: Any) -> None:
    HarnessRun.install(environment, runner)
    # The hub's clock is cached and has not ticked since the loop was created
    # (before this locustfile's imports); the -t timer Locust arms next would
    # fire early by that much (a 3 s run ended after 0.3 s on a busy machine).
    gevent.get_hub().loop.update_now()
