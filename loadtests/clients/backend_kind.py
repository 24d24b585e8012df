"""Whether a backend is the harness's fake backend: asked once per process and origin.

The fake backend has measurement endpoints a real backend lacks (emit times,
its clock).  A load process must not send those requests to a real backend,
so it decides once per origin, by one ``GET STATS_PATH`` (the fake backend
answers with its counters; a real one with a 404 or a page that is not them),
and remembers the answer.  No credentials are sent: the fake backend's
measurement endpoints are never protected.
"""

from __future__ import annotations

import orjson
from gevent import ssl as gssl
from gevent.event import AsyncResult

from loadtests.clients.connection import simple_request
from loadtests.protocol.errors import ProtocolError
from loadtests.protocol.http1 import Origin
from stream_harness.contract.protocol import STATS_PATH

#: The most of a stats reply the probe reads (the fake backend's is a few hundred bytes).
PROBE_BODY_LIMIT = 64 * 1024

_verdicts: dict[Origin, bool] = {}  # origin -> is the fake backend (definite answers only)
_probes: dict[Origin, AsyncResult] = {}  # probes in flight, for greenlets that ask meanwhile


def is_fake_backend(origin: Origin, timeout: float, ssl_context: gssl.SSLContext | None) -> bool:
    """Whether ``origin`` is the fake backend: asked once per process, then remembered.

    An unreachable backend is not an answer: it is asked again next time.
    """
    known = _verdicts.get(origin)
    if known is not None:
        return known
    running = _probes.get(origin)
    if running is not None:
        return bool(running.get())
    running = _probes[origin] = AsyncResult()
    verdict: bool | None = None
    try:
        verdict = _probe(origin, timeout, ssl_context)
        if verdict is not None:
            _verdicts[origin] = verdict
    finally:
        del _probes[origin]
        running.set(bool(verdict))
    return bool(verdict)


def known_fake_backend(origin: Origin) -> bool | None:
    """The remembered answer for ``origin`` (None: not decided yet)."""
    return _verdicts.get(origin)


def _probe(origin: Origin, timeout: float, ssl_context: gssl.SSLContext | None) -> bool | None:
    try:
        response = simple_request(
            origin, "GET", STATS_PATH, timeout=timeout, ssl_context=ssl_context, max_body=PROBE_BODY_LIMIT
        )
    except (OSError, ProtocolError):
        return None
    if response.status != 200:
        return False
    try:
        doc = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return False
    return type(doc) is dict and type(doc.get("active")) is dict and "emit_log" in doc


def forget_backends() -> None:
    """Forget every answer (tests whose servers may reuse a port)."""
    _verdicts.clear()
