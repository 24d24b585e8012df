"""Waiting on a condition instead of sleeping a guess."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx


def wait_until(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.05,
    sleep: Callable[[float], Any] = time.sleep,
) -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail naming ``what`` after ``timeout`` s.

    ``sleep=gevent.sleep`` waits on greenlets of this thread (in a process gevent has not patched).
    """
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        sleep(interval)


def backend_stats(url: str) -> dict[str, Any] | None:
    """The fake backend's /api/_harness/stats (None while it does not answer)."""
    try:
        response = httpx.get(f"{url}/api/_harness/stats", timeout=5)
        return response.json() if response.status_code == 200 else None
    except httpx.HTTPError:
        return None


def started_counts(url: str) -> dict[str, int]:
    """Streams the fake backend has started so far, per transport."""
    stats = backend_stats(url) or {}
    return {transport: int(n) for transport, n in (stats.get("started") or {}).items()}


def streams_started(url: str, at_least: int, since: dict[str, int] | None = None) -> bool:
    """Whether the fake backend started ``at_least`` streams of each transport (after ``since``)."""
    now = started_counts(url)
    before = since or {}
    return all(now.get(t, 0) - before.get(t, 0) >= at_least for t in ("ndjson", "socketio"))
