"""Live, mergeable stream statistics per transport x endpoint x client (the Streams tab's data).

The result files are written when a test stops; engineers watching a run need
the same quantities *while* it runs, from every worker at once.  So each load
process keeps a small delta instead of raw events:

- counters (streams started / completed / failed / cancelled, errors by kind,
  events, chunks, socket reads, malformed lines),
- :class:`~analysis.histogram.LogHistogram` s of TTFC, time to headers, chunk
  gap, staleness and events per read (1% buckets: they add up exactly),
- the buffering detector's evidence in mergeable form (coalesced chunks,
  burst sizes and the silence before bursts, first bursts, per-stream chunk
  rates, stale chunks, response encodings), so the *live* verdict is
  ``analysis.buffering.classify`` applied to the same numbers it reads after
  the run (:func:`evidence`, :func:`verdict`),
- per time bin (``BIN_S``, by chunk arrival time) the chunks that arrived and
  histograms of their gaps and staleness: chunks/s over a sliding window and
  the live chart's p99-over-time come from these.

The aggregate is the analysis's own (``analysis.aggregate.Aggregate``) and a
row is built by the same ``analysis.summary.transport_object`` as the post-run
summary, so the tab and ``summary.json`` agree by construction.

A :class:`~loadtests.live.tracker.StreamTracker` (on every process that runs
users) fills the deltas; :class:`LiveStats` (local runner or master) absorbs
them: directly in a local run, from Locust's worker reports in a distributed
one.  Quantity definitions are the analysis's
(``analysis/chunks.py``): gap = arrival minus the previous chunk's arrival in
the same stream; staleness = transit minus the stream's smallest transit;
events per read = events one socket read completed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Final

import numpy as np

from analysis.aggregate import Aggregate, TimeBin
from analysis.buffering import Evidence, Verdict, classify, evidence
from analysis.calibration import CalibrationThresholds, calibrate, load_calibration_thresholds
from analysis.parity import headline
from analysis.summary import transport_object
from loadtests.selfcheck import SelfCheck, worst
from stream_harness.contract.kinds import Client
from stream_harness.contract.kinds import Verdict as VerdictKind
from stream_harness.contract.summary import Calibration, TransportSummary

#: Width of a time bin of the live series (s of wall clock, by chunk arrival).
BIN_S: Final = 2
#: chunks/s is averaged over this many seconds of complete bins.
RATE_WINDOW_S: Final = 10
#: How much series history the aggregating process keeps (s).
SERIES_KEEP_S: Final = 900

Key = tuple[str, str, str]  # (transport, endpoint, client)


def bin_of(epoch_s: float) -> int:
    """Start (epoch s) of the time bin ``epoch_s`` falls in."""
    return int(epoch_s // BIN_S) * BIN_S


def chunks_per_s(agg: Aggregate, now: float) -> float | None:
    """Chunk arrival rate over the last ``RATE_WINDOW_S`` of complete bins."""
    current = bin_of(now)
    window = [s for s in agg.bins if current - RATE_WINDOW_S <= s < current]
    if not agg.bins:
        return None
    if not window:
        return 0.0
    span = min(RATE_WINDOW_S, current - min(agg.bins)) or BIN_S
    return sum(agg.bins[s].chunks for s in window) / span


class Snapshot:
    """A set of aggregates by (transport, endpoint, client): a worker's delta or a total."""

    __slots__ = ("rows",)

    def __init__(self, rows: dict[Key, Aggregate] | None = None) -> None:
        self.rows: dict[Key, Aggregate] = rows if rows is not None else {}

    def row(self, key: Key) -> Aggregate:
        found = self.rows.get(key)
        if found is None:
            found = self.rows[key] = Aggregate()
        return found

    def merge(self, other: Snapshot) -> None:
        for key, agg in other.rows.items():
            self.row(key).merge(agg)

    def __bool__(self) -> bool:
        return bool(self.rows)

    def to_list(self) -> list[list[Any]]:
        """Wire format (msgpack/JSON): ``[[transport, endpoint, client, aggregate], ...]``."""
        return [[t, e, c, agg.to_dict()] for (t, e, c), agg in sorted(self.rows.items())]

    @classmethod
    def from_list(cls, items: Iterable[Iterable[Any]]) -> Snapshot:
        """Inverse of :meth:`to_list`; an item without a client (an older worker) is the protocol clients'."""
        out = cls()
        for item in items:
            *names, data = item
            key = live_key(*names)
            out.row(key).merge(Aggregate.from_dict(data))
        return out


def live_key(transport: Any, endpoint: Any, client: Any = Client.PROTOCOL) -> Key:
    """The row key of a stream (or of an item from the wire)."""
    return str(transport), str(endpoint), str(client)


# --------------------------------------------------------------------------- verdict


def live_evidence(agg: Aggregate, *, streams_running: int = 0) -> Evidence:
    """The buffering detector's evidence from an aggregate (``analysis.buffering.evidence``).

    Until a stream has finished, the per-stream chunk rate is estimated from
    the recent arrival rate shared by the running streams.
    """
    found = evidence(agg)
    if math.isnan(found.chunk_rate_per_s) and streams_running:
        live_rate = chunks_per_s(agg, time.time())
        if live_rate:
            found = replace(found, chunk_rate_per_s=live_rate / streams_running)
    return found


#: Why a row with chunks but no finished stream has no verdict yet.
WAITING_FOR_A_STREAM: Final = (
    "no stream has finished yet: staleness needs whole streams (and Socket.io emit times arrive when a task ends)"
)


def verdict(agg: Aggregate, harness: dict[str, Any] | None = None, *, streams_running: int = 0) -> Verdict:
    """The live buffering verdict: ``analysis.buffering.classify`` on the aggregate's evidence.

    Until one stream of the row has finished, the staleness half of the
    evidence is missing (it is computed per whole stream), so the verdict
    stays ``inconclusive`` rather than judge from read batching alone.
    """
    harness = harness or {}
    found = live_evidence(agg, streams_running=streams_running)
    judged = classify(found, saturated=bool(harness.get("saturated")), harness=harness)
    if judged.verdict != VerdictKind.INCONCLUSIVE and agg.finished == 0:
        return Verdict(VerdictKind.INCONCLUSIVE, [WAITING_FOR_A_STREAM], found)
    return judged


# --------------------------------------------------------------------------- aggregation


class LiveStats:
    """The run's live totals on the process that shows them (local runner or master).

    ``absorb`` merges a process's delta and replaces its gauges (streams
    running now, its harness self-check); ``reset`` follows Locust's "reset
    stats"; ``report`` is everything the Streams tab and its downloads show.
    """

    def __init__(
        self, clock: Callable[[], float] = time.time, calibration: CalibrationThresholds | None = None
    ) -> None:
        self._clock = clock
        self._calibration = calibration
        self.total = Snapshot()
        self.running: dict[str, dict[Key, int]] = {}
        self.harness: dict[str, dict[str, Any]] = {}
        self.reset_at = clock()

    def absorb(
        self,
        node: str,
        delta: Snapshot,
        *,
        running: dict[Key, int] | None = None,
        harness: dict[str, Any] | None = None,
    ) -> None:
        self.total.merge(delta)
        if running is not None:
            self.running[node] = dict(running)
        if harness:
            self.harness[node] = dict(harness)
        keep_from = bin_of(self._clock() - SERIES_KEEP_S)
        for agg in self.total.rows.values():
            agg.prune_bins(keep_from)

    def forget_node(self, node: str) -> None:
        """A process went away: its in-flight streams are no longer running."""
        self.running.pop(node, None)

    def reset(self) -> None:
        """Start the totals and the series afresh (gauges stay: they are 'now')."""
        self.total = Snapshot()
        self.reset_at = self._clock()

    def running_streams(self, key: Key) -> int:
        return sum(per_node.get(key, 0) for per_node in self.running.values())

    def keys(self) -> list[Key]:
        keys = set(self.total.rows)
        for per_node in self.running.values():
            keys.update(k for k, n in per_node.items() if n)
        return sorted(keys)

    def selfcheck_state(self) -> dict[str, Any]:
        """All load processes' self-checks: the worst wins (``harness_monitor.worst``)."""
        merged = worst(self.harness)
        for key in ("cpu_percent_now", "loop_lag_ms_recent_p99"):
            values = [h[key] for h in self.harness.values() if h.get(key) is not None]
            merged[key] = max(values) if values else None
        merged["reported"] = bool(self.harness)
        return merged

    def series(self) -> dict[str, list[dict[str, Any]]]:
        """Per transport, one point per complete time bin: gap p99, staleness p99, chunks/s."""
        now_bin = bin_of(self._clock())
        parts: dict[str, list[dict[int, TimeBin]]] = {}
        for (transport, _endpoint, _client), agg in sorted(self.total.rows.items()):
            parts.setdefault(transport, []).append(agg.bins)
        bins_by_transport: dict[str, dict[int, TimeBin]] = {}
        for transport, bin_maps in parts.items():
            if len(bin_maps) == 1:  # the usual case, one endpoint per run: no copy
                bins_by_transport[transport] = bin_maps[0]
                continue
            merged: dict[int, TimeBin] = {}
            for bin_map in bin_maps:
                for start, b in bin_map.items():
                    merged.setdefault(start, TimeBin()).merge(b)
            bins_by_transport[transport] = merged
        out: dict[str, list[dict[str, Any]]] = {}
        for transport, bins in bins_by_transport.items():
            if not bins:
                continue
            points = []
            for start in range(max(min(bins), now_bin - SERIES_KEEP_S), now_bin, BIN_S):
                found = bins.get(start)
                points.append(
                    {
                        "t": start,
                        "gap_p99_ms": found.gap.quantile(0.99) if found else None,
                        "staleness_p99_ms": found.staleness.quantile(0.99) if found else None,
                        "chunks_per_s": (found.chunks if found else 0) / BIN_S,
                    }
                )
            out[transport] = points
        return out

    def row_view(self, key: Key, harness: dict[str, Any]) -> dict[str, Any]:
        """One transport x endpoint x client: ``summary.json``'s transport object plus the live keys."""
        agg = self.total.rows.get(key) or Aggregate()
        running = self.running_streams(key)
        row: dict[str, Any] = dict(self._live_object(agg, harness, running))
        row["streams"] = {"running": running, **row["streams"]}
        row["chunks_per_s"] = chunks_per_s(agg, self._clock())
        row["transport"], row["endpoint"], row["client"] = key
        return row

    @staticmethod
    def _live_object(agg: Aggregate, harness: dict[str, Any], running: int) -> TransportSummary:
        """``transport_object`` with the live verdict (``verdict``) as its buffering object."""
        found = transport_object(agg, harness=harness)
        found["buffering"] = verdict(agg, harness, streams_running=running).as_json()
        return found

    def calibration(self, harness: dict[str, Any]) -> dict[str, Calibration]:
        """Per transport read by both kinds of client: the post-run calibration, on the live numbers."""
        merged: dict[str, dict[str, Aggregate]] = {}
        running: dict[tuple[str, str], int] = {}
        for key in self.keys():
            transport, _endpoint, client = key
            agg = merged.setdefault(transport, {}).setdefault(client, Aggregate())
            agg.merge(self.total.rows.get(key) or Aggregate())
            running[transport, client] = running.get((transport, client), 0) + self.running_streams(key)
        out: dict[str, Calibration] = {}
        for transport, clients in merged.items():
            if not {Client.PROTOCOL, Client.BROWSER} <= set(clients):
                continue
            if self._calibration is None:
                self._calibration = load_calibration_thresholds()
            by_client = {
                client: self._live_object(agg, harness, running[transport, client]) for client, agg in clients.items()
            }
            found = calibrate(by_client, self._calibration)
            if found is not None:
                out[transport] = found
        return out

    def view(self) -> dict[str, Any]:
        """Everything the Streams tab shows, JSON-ready."""
        harness = self.selfcheck_state()
        return {
            "generated_at": self._clock(),
            "reset_at": self.reset_at,
            "bin_s": BIN_S,
            "harness": harness,
            "rows": [self.row_view(key, harness) for key in self.keys()],
            "series": self.series(),
            "calibration": self.calibration(harness),
        }


# --------------------------------------------------------------------------- harness gauge

#: Loop-lag samples in the "recent" p99 (at 10 Hz: the last ~10 s).
RECENT_LAG_SAMPLES: Final = 100


def selfcheck_gauge(monitor: SelfCheck | None) -> dict[str, Any]:
    """A process's self-check so far plus its current CPU and recent loop lag."""
    if monitor is None:
        return {}
    state = monitor.summary()
    cpu, lag = monitor.cpu_percent, monitor.lag_ms
    state["cpu_percent_now"] = float(cpu[-1]) if len(cpu) else None
    recent = np.asarray(lag[-RECENT_LAG_SAMPLES:], dtype=np.float64)
    state["loop_lag_ms_recent_p99"] = float(np.percentile(recent, 99)) if recent.size else None
    state["sampling"] = monitor.running
    return state


# --------------------------------------------------------------------------- parity


def parity_banner(last_summary: Mapping[str, Any] | None, running: bool) -> dict[str, Any]:
    """The tab's parity line: the last finished run's verdict, or "after the run"."""
    waiting = "Parity (NDJSON vs Socket.io): after the run, judged on whole streams when it stops"
    if last_summary is None:
        return {"verdict": None, "finished": False, "line": waiting}
    parity = last_summary.get("parity")
    last = headline(parity)
    if running:
        verdict = parity["verdict"] if parity else "not judged"
        return {"verdict": None, "finished": False, "line": f"{waiting} (last run: {verdict})"}
    return {"verdict": parity["verdict"] if parity else None, "finished": True, "line": f"Last run's {last}"}
