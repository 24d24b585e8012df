"""This load process's wall clock against the fake backend's, estimated NTP-style.

Staleness compares the backend's emit times (its wall clock) with arrival
times (ours).  On one machine the two clocks are the same; across machines
they differ by an offset that drifts.  A constant offset cancels out of
staleness (it is relative to each stream's fastest chunk), a drifting one does
not, and an uncertain one limits what can be measured at all.  So every
process that runs users asks the fake backend for its time
(``stream_harness.contract.protocol.CLOCK_PATH``) in rounds of a few round
trips over one kept-alive connection, keeps the round trip with the smallest
RTT of each round (the least queueing), and from the rounds:

- corrects each record's emit times by the offset at the time of each event
  (a line through the rounds: offset and drift);
- reports offset, uncertainty (half the smallest RTT: the true offset lies
  within it) and drift in ``run.json`` under ``clock``.  The analysis withholds
  staleness and jitter when the uncertainty exceeds what they measure.

Only the fake backend is asked (``backend_kind``): a real backend gets no
probes, no correction, and ``clock`` is ``null``.  Rounds run in their own
greenlet; the last round, at the end of the test, has a short time limit of
its own so that a slow backend cannot hold up the end of a run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import gevent
import numpy as np
import orjson
from gevent import ssl as gssl

from loadtests.clients.backend_kind import is_fake_backend, known_fake_backend
from loadtests.clients.connection import RECV_SIZE, make_ssl_context, open_connection, recv_head
from loadtests.protocol.errors import ProtocolError
from loadtests.protocol.http1 import USER_AGENT, Origin, encode_request, framing_for, merge_headers
from loadtests.results.record import StreamRecord
from stream_harness.contract.protocol import CLOCK_PATH

logger = logging.getLogger("stream_harness")

PROBES_PER_ROUND: Final = 8
ROUND_INTERVAL_S: Final = 30.0
#: Drift is fitted only over rounds this far apart (earlier: a constant offset).
MIN_DRIFT_SPAN_S: Final = 60.0
#: The time limit of the last round, taken while the test stops.
LAST_ROUND_TIMEOUT_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class ClockSample:
    """The best round trip of one round."""

    at: float  # our wall clock (epoch s) half-way through the round trip
    offset_ms: float  # backend clock minus ours
    rtt_ms: float


def best_exchange(exchanges: Sequence[tuple[float, float, float]]) -> ClockSample | None:
    """The sample of the round trip with the smallest RTT.

    ``exchanges``: (our wall clock at send, the backend's time, our wall clock at receipt), epoch s.
    """
    valid = [(sent, server, got) for sent, server, got in exchanges if got >= sent and math.isfinite(server)]
    if not valid:
        return None
    sent, server, got = min(valid, key=lambda e: e[2] - e[0])
    middle = (sent + got) / 2.0
    return ClockSample(at=middle, offset_ms=(server - middle) * 1000.0, rtt_ms=(got - sent) * 1000.0)


@dataclass(frozen=True, slots=True)
class ClockModel:
    """Offset as a line through the rounds' best samples."""

    offset_ms: float  # at ``at``
    drift_ppm: float  # change of the offset per second of our clock, in parts per million
    at: float
    uncertainty_ms: float
    rounds: int
    rtt_min_ms: float

    def offset_at_ms(self, when: np.ndarray) -> np.ndarray:
        return self.offset_ms + (when - self.at) * self.drift_ppm * 1e-3

    def as_json(self) -> dict[str, Any]:
        return {
            "offset_ms": round(self.offset_ms, 4),
            "uncertainty_ms": round(self.uncertainty_ms, 4),
            "drift_ppm": round(self.drift_ppm, 3),
            "rounds": self.rounds,
            "rtt_min_ms": round(self.rtt_min_ms, 4),
        }


def least_squares_slope(x: np.ndarray, y: np.ndarray) -> float:
    """The slope of the least-squares line through (x, y), x not all equal.

    In closed form, elementwise numpy only, so a load process never runs BLAS
    code (np.polyfit would page in OpenBLAS, about 1 MB of RSS).
    """
    dx = x - x.mean()
    return float((dx * (y - y.mean())).sum() / (dx * dx).sum())


def fit(samples: Sequence[ClockSample]) -> ClockModel | None:
    """The clock model of ``samples`` (None without any)."""
    if not samples:
        return None
    at = np.array([s.at for s in samples])
    offset = np.array([s.offset_ms for s in samples])
    rtt_min = min(s.rtt_ms for s in samples)
    if at.max() - at.min() >= MIN_DRIFT_SPAN_S and len(samples) >= 2:
        drift_ppm = least_squares_slope(at, offset) * 1e3  # ms per s -> ppm
        return ClockModel(float(offset.mean()), drift_ppm, float(at.mean()), rtt_min / 2.0, len(samples), rtt_min)
    best = min(samples, key=lambda s: s.rtt_ms)
    return ClockModel(best.offset_ms, 0.0, best.at, rtt_min / 2.0, len(samples), rtt_min)


class BackendClock:
    """Rounds of clock probes against one backend, and the correction they give."""

    def __init__(
        self,
        origin: Origin,
        headers: Mapping[str, str],
        *,
        timeout: float = 5.0,
        ssl_context: gssl.SSLContext | None = None,
    ) -> None:
        self._origin = origin
        self._headers = dict(headers)
        self._timeout = timeout
        self._ssl = ssl_context
        self.samples: list[ClockSample] = []
        self.available: bool | None = None  # None: not known yet; False: not the fake backend, or no clock
        self._greenlet: gevent.Greenlet | None = None
        self.model: ClockModel | None = None

    def start(self) -> None:
        """A round now, then one every ROUND_INTERVAL_S (idempotent while running)."""
        if self._greenlet is None or self._greenlet.dead:
            self.samples = []
            self.model = None
            self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> dict[str, Any] | None:
        """A last round if the backend has a clock, then the summary for run.json (None: no clock)."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True)
            self._greenlet = None
        if self.available is True:
            self._round(min(self._timeout, LAST_ROUND_TIMEOUT_S))
        return self.summary()

    def summary(self) -> dict[str, Any] | None:
        return self.model.as_json() if self.model is not None else None

    def correct(self, record: StreamRecord) -> None:
        """Emit times of ``record`` in our clock (in place): minus the offset at each event."""
        model = self.model
        if model is None or not len(record.emit_ms):
            return
        emit = np.frombuffer(record.emit_ms, dtype=np.float64)
        when = record.started_at + emit / 1000.0
        emit -= np.where(np.isfinite(emit), model.offset_at_ms(when), 0.0)

    def _loop(self) -> None:
        while True:
            if is_fake_backend(self._origin, self._timeout, self._ssl):
                self._round(self._timeout)
            elif known_fake_backend(self._origin) is False:
                self.available = False
            if self.available is False:
                return
            gevent.sleep(ROUND_INTERVAL_S)

    def _round(self, timeout: float) -> None:
        try:
            exchanges = self._exchanges(timeout)
        except (OSError, ProtocolError, ValueError) as exc:
            logger.debug("stream harness: clock probe failed: %s", exc)
            return
        sample = best_exchange(exchanges)
        if sample is not None:
            self.samples.append(sample)
            self.model = fit(self.samples)

    def _exchanges(self, timeout: float) -> list[tuple[float, float, float]]:
        defaults = [("Host", self._origin.host_header), ("User-Agent", USER_AGENT), ("Accept", "application/json")]
        request = encode_request("GET", self._origin.target(CLOCK_PATH), merge_headers(defaults, self._headers))
        sock = open_connection(self._origin, timeout, self._ssl)
        out: list[tuple[float, float, float]] = []
        try:
            for _ in range(PROBES_PER_ROUND):
                deadline = time.monotonic() + timeout
                sent = time.time()
                sock.sendall(request)
                head, rest = recv_head(sock, deadline)
                body = _read_body(sock, head, rest, deadline)
                got = time.time()
                if head.status == 404:
                    self.available = False
                    return []
                if head.status != 200:
                    return out
                self.available = True
                server = orjson.loads(body).get("ts")
                if isinstance(server, (int, float)):
                    out.append((sent, float(server), got))
                if not head.keep_alive:
                    break
        finally:
            sock.close()
        return out


def _read_body(sock: Any, head: Any, rest: bytes, deadline: float) -> bytes:
    framing = framing_for(head, "GET")
    parts = [framing.feed(rest)] if rest else []
    while not framing.done:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("clock probe timed out")
        sock.settimeout(remaining)
        data = sock.recv(RECV_SIZE)
        if not data:
            break
        parts.append(framing.feed(data))
    return b"".join(parts)


class ClockKeeper:
    """One process's clock estimate per run: started with the test, applied to every record.

    Listens to ``test_start`` (probe the target), ``stream_ending`` (correct the
    record's emit times) and ``test_stop`` (a last round; ``summary`` then holds
    what run.json reports for this process).
    """

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.clock: BackendClock | None = None
        self.summary: dict[str, Any] | None = None
        environment.events.test_start.add_listener(self._on_test_start)
        environment.events.test_stop.add_listener(self._on_test_stop)
        from loadtests.hooks import stream_ending_hook

        stream_ending_hook(environment.events).add_listener(self._on_stream_ending)

    def _on_test_start(self, **_: Any) -> None:
        from loadtests.options import OptionError, RunOptions
        from loadtests.protocol.http1 import parse_base_url

        self.summary = None
        self.clock = None
        host = self.environment.host
        try:
            origin = parse_base_url(host) if host else None
            options = RunOptions.from_namespace(self.environment.parsed_options)
        except (ValueError, OptionError):
            return
        if origin is None:
            return
        # the users' own credentials and TLS settings: what lets them through lets the probe through
        ssl_context = make_ssl_context(not options.insecure, options.ca_file) if origin.is_tls else None
        self.clock = BackendClock(origin, options.auth_headers("harness-clock"), ssl_context=ssl_context)
        self.clock.start()

    def _on_test_stop(self, **_: Any) -> None:
        if self.clock is not None:
            self.summary = self.clock.stop()

    def _on_stream_ending(self, record: StreamRecord, **_: Any) -> None:
        if self.clock is not None:
            self.clock.correct(record)
