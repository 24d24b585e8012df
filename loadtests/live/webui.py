"""The "Streams" tab in Locust's own web UI, and the plumbing that feeds it.

Locust's React UI takes extra tabs from its template arguments
(``extended_tabs`` / ``extended_tables`` / ``extended_csv_files``) and the
rows of such a table from an ``extended_stats`` list in the ``/stats/requests``
poll; that carries the per transport x endpoint (x client, when browser
users run) numbers and the live buffering verdict.  What a table cannot show, the harness banner (CPU, loop
lag, "saturated") and the small gap/staleness chart per transport, is drawn
into the same tab by one small script (``static/streams_tab.js``) from
``streams/live.json``.  Downloads (CSV, JSON) sit beside Locust's own on the
"Download Data" tab.

Where the numbers come from (``loadtests.live.tracker`` -> ``loadtests.live.stats``):

- local run with a web UI: a ``StreamTracker`` listens to the stream hooks
  (``loadtests.hooks``) and every ``POLL_S`` its delta goes into the
  process's ``LiveStats``;
- distributed: each worker adds its delta, running streams and harness
  self-check to Locust's regular worker report (``events.report_to_master``,
  key ``REPORT_KEY``); the master merges them (``events.worker_report``);
- headless local runs and masters keep nothing (nobody would see it), unless
  an exporter reads the totals (``loadtests.live.metrics``: ``--metrics-port``,
  ``--otel``).

The totals reset with Locust's "Reset stats" (``events.reset_stats``) and at
the start of every new run.

The tab's first line is the transports' parity (``analysis.parity``) of the
last *finished* run, and "after the run" while one runs: parity compares
per-stream samples (each stream's TTFC, own p99 gap and own staleness p99)
with rank tests, and the live totals keep pooled histograms, not those
samples, so a live parity line would be a different, weaker test under the
same name.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import gevent
from flask import Blueprint, Response, jsonify, make_response, request, send_file
from locust.env import Environment
from locust.runners import STATE_MISSING, STATE_RUNNING, STATE_SPAWNING, STATE_STOPPING, MasterRunner, WorkerRunner

from loadtests.hooks import stream_finished_hook, stream_started_hook
from loadtests.live.stats import LiveStats, Snapshot, live_key, parity_banner, selfcheck_gauge
from loadtests.live.tracker import POLL_S, StreamTracker
from loadtests.selfcheck import SelfCheck
from stream_harness.contract.kinds import Client

logger = logging.getLogger("stream_harness")

TAB_KEY: Final = "streams"
#: Key of our part of a worker's report dict (Locust owns "stats", "errors", ...).
REPORT_KEY: Final = "stream_harness_live"
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
#: Runner states in which a run is under way (its parity comes after it).
RUNNING_STATES: Final = (STATE_SPAWNING, STATE_RUNNING, STATE_STOPPING)
#: The view served to the UI is recomputed at most this often.
VIEW_MAX_AGE_S: Final = 1.0

#: Table columns: (row key, title); times in ms.  Keys are snake_case: Locust's
#: UI camel-cases both the structure and the rows, so they keep matching.
COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("stream", "Transport · endpoint"),
    ("running", "Running"),
    ("completed", "Completed"),
    ("failed", "Failed"),
    ("ttfc_p50", "TTFC p50"),
    ("ttfc_p95", "TTFC p95"),
    ("ttfc_p99", "TTFC p99"),
    ("gap_p50", "Gap p50"),
    ("gap_p99", "Gap p99"),
    ("gap_max", "Gap max"),
    ("staleness_p99", "Staleness p99"),
    ("events_per_read", "Events / read"),
    ("chunks_per_s", "Chunks/s"),
    ("verdict", "Buffering"),
    ("reason", "Why (first reason)"),
)
#: The CSV download: the table's numbers with transport and endpoint apart, all reasons.
CSV_COLUMNS: Final[tuple[str, ...]] = (
    "transport",
    "endpoint",
    "running",
    "started",
    "completed",
    "failed",
    "ttfc_p50",
    "ttfc_p95",
    "ttfc_p99",
    "gap_p50",
    "gap_p99",
    "gap_max",
    "staleness_p99",
    "events_per_read",
    "events_per_read_p99",
    "chunks_per_s",
    "verdict",
    "reasons",
    "client",  # last: scripts written before browser users read the columns by position
)


# --------------------------------------------------------------------------- table rows


def _num(value: float | None, digits: int = 1) -> float | str:
    if value is None or not math.isfinite(value):
        return "–"
    return round(value, digits)


def table_rows(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The Streams table's rows from :meth:`LiveStats.view` (one per transport x endpoint x client;
    a browser users' row says so)."""
    rows = []
    for row in view["rows"]:
        streams, ttfc, gap = row["streams"], row["ttfc_ms"], row["gap_ms"]
        staleness = row["staleness_ms"] or {}
        reasons = row["buffering"]["reasons"]
        browser = row.get("client") == Client.BROWSER
        rows.append(
            {
                "name": f"{row['transport']} {row['endpoint']}" + (" browser" if browser else ""),
                "stream": f"{row['transport']} · {row['endpoint']}" + (" · browser" if browser else ""),
                "transport": row["transport"],
                "endpoint": row["endpoint"],
                "client": row.get("client", Client.PROTOCOL),
                "running": streams["running"],
                "started": streams["started"],
                "completed": streams["completed"],
                "failed": streams["failed"],
                "ttfc_p50": _num(ttfc["p50"]),
                "ttfc_p95": _num(ttfc["p95"]),
                "ttfc_p99": _num(ttfc["p99"]),
                "gap_p50": _num(gap["p50"], 2),
                "gap_p99": _num(gap["p99"]),
                "gap_max": _num(gap["max"]),
                "staleness_p99": _num(staleness.get("p99")),
                "events_per_read": _num(row["events_per_read"]["mean"], 2),
                "events_per_read_p99": _num(row["events_per_read"]["p99"], 0),
                "chunks_per_s": _num(row["chunks_per_s"], 0),
                "verdict": row["buffering"]["verdict"],
                "reason": reasons[0] if reasons else "",
                "reasons": "; ".join(reasons),
            }
        )
    return rows


def rows_csv(view: dict[str, Any]) -> str:
    """The Streams numbers as CSV, one row per transport x endpoint x client."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in table_rows(view):
        writer.writerow([row[key] for key in CSV_COLUMNS])
    return out.getvalue()


# --------------------------------------------------------------------------- feeding


def _yield() -> None:
    gevent.sleep(0)


class LiveFeed:
    """Keeps one environment's live stats fed, in whatever role its runner has."""

    def __init__(
        self,
        environment: Environment,
        selfcheck: SelfCheck | None,
        last_summary: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.environment = environment
        self.selfcheck = selfcheck
        self.last_summary = last_summary or (lambda: None)
        self.runner = environment.runner
        self.live: LiveStats | None = None
        self.tracker: StreamTracker | None = None
        self._poller: gevent.Greenlet | None = None
        self._view: tuple[float, dict[str, Any]] | None = None
        events = environment.events
        is_master = isinstance(self.runner, MasterRunner)
        if not is_master:  # this process runs users
            self.tracker = StreamTracker()
            stream_started_hook(events).add_listener(self._on_started)
            stream_finished_hook(events).add_listener(self._on_finished)
        if isinstance(self.runner, WorkerRunner):
            events.report_to_master.add_listener(self._on_report_to_master)
            events.test_stop.add_listener(self._on_worker_test_stop)
            return
        self.live = LiveStats()
        events.reset_stats.add_listener(self._on_reset)
        events.test_start.add_listener(self._on_test_start)
        if is_master:
            events.worker_report.add_listener(self._on_worker_report)
        else:
            events.test_stop.add_listener(self._on_local_test_stop)

    # -- users' process ----------------------------------------------------------
    def _on_started(self, record: Any, **_: Any) -> None:
        assert self.tracker is not None
        self.tracker.started(record)

    def _on_finished(self, record: Any, **_: Any) -> None:
        assert self.tracker is not None
        self.tracker.finished(record)

    # -- worker ------------------------------------------------------------------
    def _on_report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        assert self.tracker is not None
        self.tracker.poll(_yield)
        data[REPORT_KEY] = {
            "delta": self.tracker.take().to_list(),
            "running": [[t, e, c, n] for (t, e, c), n in sorted(self.tracker.running().items())],
            "harness": selfcheck_gauge(self.selfcheck),
        }

    def _on_worker_test_stop(self, **_: Any) -> None:
        assert self.tracker is not None
        self.tracker.forget_open()

    # -- master ------------------------------------------------------------------
    def _on_worker_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        part = data.get(REPORT_KEY)
        if not part or self.live is None:
            return
        try:
            delta = Snapshot.from_list(part.get("delta", []))
            running = {live_key(*names): int(n) for *names, n in part.get("running", [])}
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("stream harness: ignored a malformed live report from %s: %s", client_id, exc)
            return
        self.live.absorb(client_id, delta, running=running, harness=part.get("harness") or None)

    def forget_gone_workers(self) -> None:
        """Running streams of workers that quit or went missing no longer count."""
        if self.live is None or not isinstance(self.runner, MasterRunner):
            return
        clients = self.runner.clients
        for node in list(self.live.running):
            client = clients.get(node)
            if client is None or client.state == STATE_MISSING:
                self.live.forget_node(node)

    # -- local -------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while True:
            gevent.sleep(POLL_S)
            self.flush_local()

    def flush_local(self) -> None:
        """Local run: move the tracker's delta into the live totals now."""
        if self.tracker is None or self.live is None:
            return
        self.tracker.poll(_yield)
        self.live.absorb(
            "local", self.tracker.take(), running=self.tracker.running(), harness=selfcheck_gauge(self.selfcheck)
        )

    def _on_local_test_stop(self, **_: Any) -> None:
        if self._poller is not None:
            self._poller.kill(block=False)
            self._poller = None
        assert self.tracker is not None
        self.tracker.forget_open()
        self.flush_local()

    # -- both --------------------------------------------------------------------
    def _on_test_start(self, **_: Any) -> None:
        """A new run (first start, or start after stop) begins with empty totals."""
        assert self.live is not None
        self.live.reset()
        self._view = None
        if self.tracker is not None:
            self.tracker.take()
            if self._poller is None:
                self._poller = gevent.spawn(self._poll_loop)

    def _on_reset(self, **_: Any) -> None:
        assert self.live is not None
        if self.tracker is not None:
            self.tracker.poll(_yield)
            self.tracker.take()
        self.live.reset()
        self._view = None

    def view(self) -> dict[str, Any]:
        """The live view, JSON-safe (no NaN), at most ``VIEW_MAX_AGE_S`` old.

        The table poll and the tab script each ask every 2 s, maybe from
        several browsers: computing it once per interval keeps the UI's CPU
        out of the load process's event loop.
        """
        assert self.live is not None
        now = time.monotonic()
        if self._view is not None and now - self._view[0] < VIEW_MAX_AGE_S:
            return self._view[1]
        self.flush_local()
        self.forget_gone_workers()
        view = self.live.view()
        view["state"] = getattr(self.runner, "state", None)
        view["parity"] = parity_banner(self.last_summary(), running=view["state"] in RUNNING_STATES)
        self._view = (now, _json_safe(view))
        return self._view[1]


# --------------------------------------------------------------------------- web UI


def _download(body: str, mimetype: str, filename: str) -> Response:
    response = make_response(body)
    response.headers["Content-Type"] = mimetype
    response.headers["Content-Disposition"] = f"attachment;filename={filename}"
    return response


def _install_ui(environment: Environment, feed: LiveFeed) -> None:
    web_ui = environment.web_ui
    assert web_ui is not None and web_ui.app is not None
    web_ui.template_args["extended_tabs"] = [{"title": "Streams", "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB_KEY, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}
    ]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./streams/csv", "title": "Download stream statistics CSV"},
        {"href": "./streams/json", "title": "Download stream statistics JSON (with live series)"},
    ]
    base = getattr(environment.parsed_options, "web_base_path", None) or None
    bp = Blueprint("stream_harness", __name__, url_prefix=base)
    auth = web_ui.auth_required_if_enabled

    @bp.route("/streams/live.json")
    @auth
    def streams_live() -> Response:
        return jsonify(feed.view())

    @bp.route("/streams/csv")
    @auth
    def streams_csv() -> Response:
        return _download(rows_csv(feed.view()), "text/csv", "stream_stats.csv")

    @bp.route("/streams/json")
    @auth
    def streams_json() -> Response:
        body = json.dumps(feed.view(), indent=2, allow_nan=False)
        return _download(body, "application/json", "stream_stats.json")

    @bp.route("/streams/tab.js")
    @auth
    def streams_script() -> Response:
        return send_file(STATIC_DIR / "streams_tab.js", mimetype="text/javascript", max_age=0)

    @web_ui.app.after_request
    def _extend(response: Response) -> Response:
        endpoint = request.endpoint or ""
        if endpoint == "locust.request_stats" and response.mimetype == "application/json":
            payload = response.get_json(silent=True)
            if isinstance(payload, dict):
                payload["extended_stats"] = [{"key": TAB_KEY, "data": table_rows(feed.view())}]
                response.set_data(json.dumps(payload))
        elif endpoint == "locust.index" and response.mimetype == "text/html":
            html = response.get_data(as_text=True)
            tag = '<script src="./streams/tab.js" defer></script>'
            if "</body>" in html and tag not in html:
                response.set_data(html.replace("</body>", f"{tag}\n</body>", 1))
        return response

    web_ui.app.register_blueprint(bp)


def _json_safe(value: Any) -> Any:
    """``value`` with NaN/inf replaced by None (browsers reject NaN in JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def register(
    environment: Environment,
    selfcheck: SelfCheck | None,
    last_summary: Callable[[], Mapping[str, Any] | None] | None = None,
    *,
    keep_totals: bool = False,
) -> LiveFeed | None:
    """Set up the live stream statistics of ``environment`` (call on ``events.init``).

    Every role gets its part: processes running users track their streams,
    workers report to the master (which may have a UI: they cannot tell), the
    master or local runner keeps the totals and shows the Streams tab.  A
    local run or master without a web UI (``--headless``) keeps nothing unless
    an exporter reads the totals (``keep_totals``: ``--metrics-port``,
    ``--otel``).  Returns the feed (None when nothing is kept, or without a
    runner); ``feed.live`` holds the totals.
    ``last_summary`` gives the summary.json of the last finished run (its parity).
    """
    runner = environment.runner
    if runner is None or (environment.web_ui is None and not isinstance(runner, WorkerRunner) and not keep_totals):
        return None
    feed = LiveFeed(environment, selfcheck, last_summary)
    if feed.live is not None and environment.web_ui is not None:
        _install_ui(environment, feed)
    return feed
