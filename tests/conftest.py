"""Fixtures every test folder shares: the fake backend, gevent's clock set, the Mermaid checker."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest

from fake_backend.process import BackendProcess, start_backend
from tests.support import REPO

MERMAID_CHECK = REPO / "tools" / "mermaid-check"


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    """The fake backend as a subprocess on a free loopback port, for one test module."""
    with start_backend() as process:
        yield process


@pytest.fixture(scope="session")
def mermaid_check() -> Path:
    """tools/mermaid-check (mermaid's own parser) with its locked node_modules; the script's path."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed to parse the Mermaid charts (apt-get install nodejs npm)")
    installed = MERMAID_CHECK / "node_modules" / ".package-lock.json"
    lock = MERMAID_CHECK / "package-lock.json"
    # the test processes of one `make test` share the folder: one installs while the others wait
    with open(MERMAID_CHECK / ".npm-ci.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=MERMAID_CHECK,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"npm ci in {MERMAID_CHECK} failed: {done.stderr[-2000:]}"
    return MERMAID_CHECK / "check.mjs"


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
