"""Fixtures every test folder shares: one fake backend per test module, gevent's clock set."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest

from fake_backend.process import BackendProcess, start_backend


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    """The fake backend as a subprocess on a free loopback port, for one test module."""
    with start_backend() as process:
        yield process


@pytest.fixture(autouse=True)
def _gevent_clock_set() -> None:
    """gevent's loop clock is set to the real time as each test starts.

    ``gevent.joinall(timeout=...)`` and ``gevent.sleep`` time their timer from
    the loop's clock, which only moves when the loop runs (``gevent.Timeout``
    sets it first, they do not); in this process the loop may not have run for
    minutes (tests that use no gevent), and a 30 s ``joinall`` then returns at
    once, its greenlets still running ("a stream outlived its timeouts").
    """
    gevent.get_hub().loop.update_now()
