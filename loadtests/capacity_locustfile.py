"""Locust entry point of the capacity search: add it to the harness's locustfile.

    locust -f loadtests/locustfile.py,loadtests/capacity_locustfile.py --class-picker

The web UI's class picker then offers ``CapacitySearchShape`` beside
"Default"; headless (``stream-harness sweep``), the shape runs by itself.
This file only adds the shape and its flags (``--slo``, ``--sweep-*``,
``--capacity-file``), checked once at start-up like every harness flag.
"""

from __future__ import annotations

import sys
from typing import Any

from locust import events
from locust.env import Environment

from loadtests.capacity import CapacitySearchShape
from loadtests.options import OptionError, add_sweep_arguments
from loadtests.sweep import sweep_settings

__all__ = ["CapacitySearchShape"]

events.init_command_line_parser.add_listener(add_sweep_arguments)


@events.init.add_listener
def _check(environment: Environment, **_: Any) -> None:
    try:
        sweep_settings(environment.parsed_options)
    except OptionError as exc:
        print(f"locust: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
