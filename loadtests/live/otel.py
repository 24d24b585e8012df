"""The live stream statistics for Locust's own ``--otel`` exporter.

Locust's ``--otel`` sets up an OpenTelemetry meter provider and records its
``locust.client.duration`` histogram from request events.  The harness's
stream metrics do not go through request events (every request event is also
counted in Locust's "Aggregated" row, which must count streams, not first
chunks or gaps), so they go to the same meter provider as *observable*
instruments instead, read from the live totals at each export
(:func:`~loadtests.live.metrics.metrics_view`):

- ``stream_harness.streams`` (counter; ``status``: completed, failed,
  cancelled), ``stream_harness.stream.errors`` (counter; ``error``),
  ``stream_harness.chunks`` (counter), ``stream_harness.streams.running``;
- ``stream_harness.ttfc``, ``stream_harness.chunk_gap``,
  ``stream_harness.staleness`` (gauges in seconds, one point per
  ``quantile``: p50, p95, p99, max), within the 1 % bucket precision of the
  live histograms;
- ``stream_harness.buffering_verdict`` (1 for the current ``verdict``) and
  ``stream_harness.load_generator.saturated``.

Attributes ``transport``, ``endpoint`` and ``client`` on every point.  A histogram per
chunk would need one ``record`` call per chunk on the load process's hot
path; quantile gauges cost one read per export.  Only the process that holds
the totals (a local runner or the master) reports them, so distributed runs
are merged before they are exported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Final

from analysis.histogram import LogHistogram
from loadtests.live.metrics import MetricsView, StreamRow
from stream_harness.contract.kinds import StreamStatus, Verdict

METER: Final = "stream_harness"
QUANTILES: Final = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
#: One view serves every instrument of one export (they are read back to back).
VIEW_MAX_AGE_S: Final = 0.5


class _CachedView:
    def __init__(self, read: Callable[[], MetricsView]) -> None:
        self._read = read
        self._at = -1.0
        self._view: MetricsView | None = None

    def __call__(self) -> MetricsView:
        now = time.monotonic()
        if self._view is None or now - self._at > VIEW_MAX_AGE_S:
            self._view, self._at = self._read(), now
        return self._view


def _attributes(row: StreamRow, **extra: str) -> dict[str, str]:
    return {"transport": row.transport, "endpoint": row.endpoint, "client": row.client, **extra}


def install(read: Callable[[], MetricsView]) -> None:
    """Register the observable instruments with the global meter provider (set by ``--otel``)."""
    from opentelemetry.metrics import CallbackOptions, Observation, get_meter

    view = _CachedView(read)
    meter = get_meter(METER)

    def streams(_options: CallbackOptions) -> Iterable[Observation]:
        for row in view().rows:
            yield Observation(row.completed, _attributes(row, status=str(StreamStatus.COMPLETED)))
            yield Observation(row.failed, _attributes(row, status=str(StreamStatus.FAILED)))
            yield Observation(row.cancelled, _attributes(row, status=str(StreamStatus.CANCELLED)))

    def errors(_options: CallbackOptions) -> Iterable[Observation]:
        for row in view().rows:
            for kind, count in sorted(row.errors.items()):
                yield Observation(count, _attributes(row, error=kind))

    def chunks(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(row.chunks, _attributes(row)) for row in view().rows]

    def running(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(row.running, _attributes(row)) for row in view().rows]

    def quantiles(pick: Callable[[StreamRow], LogHistogram]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            for row in view().rows:
                hist = pick(row)
                if not hist.count:
                    continue
                values = hist.quantiles(tuple(q for _name, q in QUANTILES))
                for (name, _q), value in zip(QUANTILES, values):
                    if value is not None:
                        yield Observation(value / 1000.0, _attributes(row, quantile=name))
                yield Observation(hist.max / 1000.0, _attributes(row, quantile="max"))

        return observe

    def verdicts(_options: CallbackOptions) -> Iterable[Observation]:
        for row in view().rows:
            for candidate in Verdict:
                yield Observation(1 if row.verdict == candidate else 0, _attributes(row, verdict=str(candidate)))

    def saturated(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1 if view().saturated else 0)]

    meter.create_observable_counter(
        "stream_harness.streams", [streams], unit="{stream}", description="Finished streams by status"
    )
    meter.create_observable_counter(
        "stream_harness.stream.errors", [errors], unit="{stream}", description="Failed streams by error kind"
    )
    meter.create_observable_counter(
        "stream_harness.chunks", [chunks], unit="{chunk}", description="Chunk events received"
    )
    meter.create_observable_up_down_counter(
        "stream_harness.streams.running", [running], unit="{stream}", description="Streams in flight"
    )
    meter.create_observable_gauge(
        "stream_harness.ttfc", [quantiles(lambda r: r.ttfc)], unit="s", description="Time to first chunk quantiles"
    )
    meter.create_observable_gauge(
        "stream_harness.chunk_gap", [quantiles(lambda r: r.gap)], unit="s", description="Chunk gap quantiles"
    )
    meter.create_observable_gauge(
        "stream_harness.staleness", [quantiles(lambda r: r.staleness)], unit="s", description="Staleness quantiles"
    )
    meter.create_observable_gauge(
        "stream_harness.buffering_verdict", [verdicts], description="1 for the live buffering verdict"
    )
    meter.create_observable_gauge(
        "stream_harness.load_generator.saturated", [saturated], description="1 while a load process is saturated"
    )
