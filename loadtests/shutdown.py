"""A second Ctrl-C must not throw away a run's results.

Locust turns the first SIGINT into ``KeyboardInterrupt`` in its main greenlet
and shuts down: ``quitting`` -> users stopped -> ``test_stop`` -> our result
files are written (``loadtests.results.collector``).  An impatient double Ctrl-C used
to raise a second ``KeyboardInterrupt`` in the middle of that: no results, a
traceback.  With :func:`hold_interrupts_while_stopping`:

- the first SIGINT does what it always did (``KeyboardInterrupt`` thrown into
  the main greenlet, as gevent's hub does by default);
- once a shutdown has begun (that SIGINT, a SIGTERM, ``-t`` running out: anything
  that fires ``quitting``), a SIGINT is only logged; the shutdown finishes and
  writes what was measured;
- the SIGINT after that one exits at once (exit code 130), for a shutdown
  that hangs.  The files on disk are whole either way: each one is written to
  a temporary name and renamed (``analysis.results.write_atomic``).
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Final

import gevent

logger = logging.getLogger("stream_harness")

#: SIGINTs during a shutdown before the process gives up on it.
PATIENCE: Final = 2


def hold_interrupts_while_stopping(environment: Any) -> None:
    """Install the SIGINT policy above (call once, from the ``init`` listener).

    Register it after the result collector: ``quitting`` listeners run in
    reverse order, so this one then marks the shutdown before the results
    are written.
    """
    state = {"stopping": False, "held": 0}

    def on_quitting(**_: Any) -> None:
        state["stopping"] = True

    def on_sigint() -> None:
        if not state["stopping"]:
            state["stopping"] = True
            gevent.get_hub().parent.throw(KeyboardInterrupt)  # Locust's own Ctrl-C path
            return
        state["held"] += 1
        if state["held"] >= PATIENCE:
            logger.error("stream harness: interrupted again; exiting without waiting for the shutdown")
            os._exit(130)
        logger.warning("stream harness: stopping, writing the results first (Ctrl-C again to exit without them)")

    environment.events.quitting.add_listener(on_quitting)
    gevent.signal_handler(signal.SIGINT, on_sigint)
