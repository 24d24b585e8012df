"""The live stream statistics as Prometheus metrics: ``/metrics`` of the web UI and ``--metrics-port``.

What the Streams tab shows, per transport x endpoint x client, in the shape Prometheus
and Grafana expect (names under ``stream_harness_``, times in seconds):

- histograms ``ttfc_seconds``, ``chunk_gap_seconds`` and ``staleness_seconds``
  (one observation per stream, chunk gap and chunk);
- counters ``streams_started_total``, ``streams_total{status}`` (completed,
  failed, cancelled), ``stream_errors_total{error}`` and
  ``chunks_received_total``; a gauge ``streams_running``;
- ``buffering_verdict{verdict}``: 1 for the live verdict (the post-run
  detector on the live histograms), 0 for the others;
- ``load_generator_saturated`` (1 while the harness's own numbers are not to
  be trusted), with the CPU and event-loop lag it is judged from.

Histogram buckets.  The live statistics keep
:class:`~analysis.histogram.LogHistogram` s (1 % buckets ``[GAMMA**k,
GAMMA**(k+1))`` in ms); every ``BUCKET_STEP``-th bucket edge between
``LOW_MS`` and ``HIGH_MS`` becomes an ``le`` bound, so each cumulative count
is exact (no bucket is split) and ``histogram_quantile`` over them is within
one bound step (about 10 %) of the harness's own percentile.

The numbers are the live totals of the process that holds them (a local
runner, or the master merging its workers' reports), so they start afresh with
every run and with Locust's "Reset stats" (Prometheus treats that as a
counter reset).  They are read through :func:`metrics_view`, the one place
that looks inside the live aggregates; everything else works on
:class:`MetricsView`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
from gevent.pywsgi import WSGIServer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from analysis.aggregate import Aggregate
from analysis.histogram import GAMMA, LogHistogram
from loadtests.live.stats import verdict
from loadtests.options import OptionError, RunOptions
from stream_harness.contract.kinds import Client, StreamStatus, Verdict

if TYPE_CHECKING:  # importing locust monkey-patches the process: at run time only inside install()
    from locust.env import Environment

    from loadtests.live.webui import LiveFeed

logger = logging.getLogger("stream_harness")

PREFIX: Final = "stream_harness"
#: Every BUCKET_STEP-th edge of the 1 % log buckets is an ``le`` bound (ratio 1.01**10 ~ 1.105).
BUCKET_STEP: Final = 10
#: Range covered by explicit bounds (ms); below: the first bound, above: only ``+Inf``.
LOW_MS: Final = 0.1
HIGH_MS: Final = 300_000.0
_LOG_GAMMA: Final = math.log(GAMMA)
#: The bucket keys k whose lower edge GAMMA**k is a bound: values below it are exactly the buckets < k.
BOUND_KEYS: Final = np.arange(
    math.floor(math.log(LOW_MS) / _LOG_GAMMA / BUCKET_STEP) * BUCKET_STEP,
    math.ceil(math.log(HIGH_MS) / _LOG_GAMMA / BUCKET_STEP) * BUCKET_STEP + 1,
    BUCKET_STEP,
    dtype=np.int64,
)
#: The same bounds in seconds, as Prometheus ``le`` label values.
BOUND_LABELS: Final = tuple(floatToGoString(GAMMA ** float(k) / 1000.0) for k in BOUND_KEYS)
LABELS: Final = ("transport", "endpoint", "client")  # client: protocol, or browser (--browser-users)


# --------------------------------------------------------------------------- the narrow interface


@dataclass(frozen=True, slots=True)
class StreamRow:
    """One transport x endpoint x client of the live totals (histograms in ms)."""

    transport: str
    endpoint: str
    running: int
    started: int
    completed: int
    failed: int
    cancelled: int
    errors: Mapping[str, int]
    chunks: int
    ttfc: LogHistogram
    gap: LogHistogram
    staleness: LogHistogram
    verdict: str
    client: str = Client.PROTOCOL  # or browser (--browser-users)


@dataclass(frozen=True, slots=True)
class MetricsView:
    """Everything the exporters publish, read at one moment."""

    rows: tuple[StreamRow, ...]
    saturated: bool
    cpu_percent: float | None
    loop_lag_ms_p99: float | None


def metrics_view(feed: LiveFeed) -> MetricsView:
    """The live totals of a :class:`~loadtests.live.webui.LiveFeed` now (in-flight streams included)."""
    feed.flush_local()
    feed.forget_gone_workers()
    live = feed.live
    assert live is not None, "the feed of a worker holds no totals"
    harness = live.selfcheck_state()
    rows = []
    keys = live.keys()  # LiveStats.keys(): the rows with streams (a list, not a dict view)
    for key in keys:
        agg = live.total.rows.get(key) or Aggregate()
        running = live.running_streams(key)
        counts, hist = agg.counts, agg.hist
        rows.append(
            StreamRow(
                transport=key[0],
                endpoint=key[1],
                client=key[2],
                running=running,
                started=counts["started"],
                completed=counts["completed"],
                failed=counts["failed"],
                cancelled=counts["cancelled"],
                errors=dict(agg.errors),
                chunks=counts["chunks"],
                ttfc=hist["ttfc"],
                gap=hist["gap"],
                staleness=hist["staleness"],
                verdict=verdict(agg, harness, streams_running=running).verdict,
            )
        )
    return MetricsView(
        rows=tuple(rows),
        saturated=bool(harness.get("saturated")),
        cpu_percent=harness.get("cpu_percent_now"),
        loop_lag_ms_p99=harness.get("loop_lag_ms_recent_p99"),
    )


# --------------------------------------------------------------------------- Prometheus families


def cumulative_buckets(hist: LogHistogram) -> list[tuple[str, float]]:
    """``(le, count of values <= le)`` at every bound, then ``+Inf``: exact, from the 1 % buckets."""
    if hist.buckets:
        keys = np.fromiter(hist.buckets.keys(), dtype=np.int64, count=len(hist.buckets))
        counts = np.fromiter(hist.buckets.values(), dtype=np.int64, count=len(hist.buckets))
        order = np.argsort(keys)
        keys, running = keys[order], np.concatenate(([0], np.cumsum(counts[order])))
        below = running[np.searchsorted(keys, BOUND_KEYS, side="left")] + hist.zeros
    else:
        below = np.full(BOUND_KEYS.size, hist.zeros, dtype=np.int64)
    return [*zip(BOUND_LABELS, below.tolist()), ("+Inf", hist.count)]


def _histogram(name: str, doc: str, rows: tuple[StreamRow, ...], pick: Callable[[StreamRow], LogHistogram]) -> Metric:
    family = HistogramMetricFamily(f"{PREFIX}_{name}", doc, labels=LABELS)
    for row in rows:
        hist = pick(row)
        family.add_metric([row.transport, row.endpoint, row.client], cumulative_buckets(hist), hist.total / 1000.0)
    return family


def families(view: MetricsView) -> Iterator[Metric]:
    """The Prometheus metric families of ``view``."""
    rows = view.rows
    yield _histogram("ttfc_seconds", "Time to first chunk per stream (request sent -> first chunk).", rows, _ttfc)
    yield _histogram("chunk_gap_seconds", "Time between consecutive chunks of a stream.", rows, _gap)
    yield _histogram(
        "staleness_seconds", "Per chunk: transit time minus the stream's fastest transit (emit times).", rows, _stale
    )
    started = CounterMetricFamily(f"{PREFIX}_streams_started", "Streams whose request was sent.", labels=LABELS)
    ended = CounterMetricFamily(f"{PREFIX}_streams", "Finished streams by status.", labels=(*LABELS, "status"))
    errors = CounterMetricFamily(f"{PREFIX}_stream_errors", "Failed streams by error kind.", labels=(*LABELS, "error"))
    chunks = CounterMetricFamily(f"{PREFIX}_chunks_received", "Chunk events received.", labels=LABELS)
    running = GaugeMetricFamily(f"{PREFIX}_streams_running", "Streams in flight now.", labels=LABELS)
    verdicts = GaugeMetricFamily(
        f"{PREFIX}_buffering_verdict",
        "The live buffering verdict: 1 for the current one, 0 for the others.",
        labels=(*LABELS, "verdict"),
    )
    for row in rows:
        labels = [row.transport, row.endpoint, row.client]
        started.add_metric(labels, row.started)
        for status, count in (
            (StreamStatus.COMPLETED, row.completed),
            (StreamStatus.FAILED, row.failed),
            (StreamStatus.CANCELLED, row.cancelled),
        ):
            ended.add_metric([*labels, str(status)], count)
        for kind, count in sorted(row.errors.items()):
            errors.add_metric([*labels, kind], count)
        chunks.add_metric(labels, row.chunks)
        running.add_metric(labels, row.running)
        for candidate in Verdict:
            verdicts.add_metric([*labels, str(candidate)], 1.0 if row.verdict == candidate else 0.0)
    yield from (started, ended, errors, chunks, running, verdicts)
    yield GaugeMetricFamily(
        f"{PREFIX}_load_generator_saturated",
        "1 while a load process is saturated (CPU or event-loop lag): its latency numbers are not to be trusted.",
        value=1.0 if view.saturated else 0.0,
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_load_generator_cpu_percent",
        "CPU of the busiest load process now (percent of one core).",
        value=math.nan if view.cpu_percent is None else view.cpu_percent,
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_load_generator_loop_lag_seconds",
        "Recent p99 event-loop lag of the most lagging load process.",
        value=math.nan if view.loop_lag_ms_p99 is None else view.loop_lag_ms_p99 / 1000.0,
    )


def _ttfc(row: StreamRow) -> LogHistogram:
    return row.ttfc


def _gap(row: StreamRow) -> LogHistogram:
    return row.gap


def _stale(row: StreamRow) -> LogHistogram:
    return row.staleness


class StreamMetricsCollector(Collector):
    """A prometheus_client collector that reads a fresh :class:`MetricsView` at every scrape."""

    def __init__(self, view: Callable[[], MetricsView]) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        yield from families(self._view())


def make_registry(view: Callable[[], MetricsView]) -> CollectorRegistry:
    """A registry holding only the stream metrics (no process or platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamMetricsCollector(view))
    return registry


# --------------------------------------------------------------------------- serving


def wanted(options: RunOptions) -> bool:
    """Whether this process must keep live totals for an exporter (--metrics-port or --otel)."""
    return options.metrics_port is not None or options.otel


class MetricsServer:
    """``--metrics-port``: the registry over HTTP on the load process's own event loop (gevent)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.server = WSGIServer((host, port), make_wsgi_app(registry), log=None, error_log=logger)
        try:
            self.server.start()  # binds now: a taken port fails at start-up, not mid-run
        except OSError as exc:
            where = f"{host or '*'}:{port}"
            raise OptionError(f"--metrics-port {port}: cannot listen on {where} ({exc.strerror or exc})") from None

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.stop(timeout=1)


def install(environment: Environment, feed: LiveFeed | None) -> MetricsServer | None:
    """Serve the metrics of ``feed`` (a LiveFeed holding totals): on the web UI's ``/metrics``
    and, with ``--metrics-port``, on a port of its own.  Raises OptionError for a bad port."""
    from locust.runners import WorkerRunner

    options = RunOptions.from_namespace(environment.parsed_options)
    port = options.metrics_port
    if feed is None or feed.live is None:
        # A worker holds no totals.  With --processes N the workers inherit the
        # master's --metrics-port, so this is no mistake worth a warning.
        if port is not None and isinstance(environment.runner, WorkerRunner):
            logger.debug("stream harness: --metrics-port is not served by a worker: the master serves the metrics")
        return None
    registry = make_registry(lambda: metrics_view(feed))
    if environment.web_ui is not None:
        _add_web_ui_route(environment, registry)
    if port is None:
        return None
    server = MetricsServer(registry, options.metrics_host, port)
    environment.events.quit.add_listener(lambda **_: server.stop())
    logger.info("stream harness: Prometheus metrics on port %d (/metrics)", server.port)
    return server


def _add_web_ui_route(environment: Environment, registry: CollectorRegistry) -> None:
    from flask import Blueprint, Response

    web_ui = environment.web_ui
    assert web_ui is not None and web_ui.app is not None
    base = getattr(environment.parsed_options, "web_base_path", None) or None
    blueprint = Blueprint("stream_harness_metrics", __name__, url_prefix=base)

    @blueprint.route("/metrics")
    @web_ui.auth_required_if_enabled
    def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)

    web_ui.app.register_blueprint(blueprint)
