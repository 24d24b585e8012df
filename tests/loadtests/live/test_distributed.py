"""The Streams tab's numbers in distributed mode, through the web UI's HTTP API.

A master with the web UI and two workers (all ``locust -f
loadtests/locustfile.py`` subprocesses) drive both transports against the fake
backend, a 100 ms buffer on NDJSON only, started the way the Start button
starts a run (``POST /swarm`` with the custom parameters).  The master's tab
must show the merge of both workers (their harness self-checks, the right
verdicts), offer the downloads beside Locust's, and after Stop hold exactly
the streams and chunks the post-run result set counts, and so must its
Prometheus ``/metrics``; "Reset stats" empties it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fake_backend.process import start_backend
from stream_harness.cli.ui import start_web_ui
from stream_harness.paths import LOCUSTFILE
from tests.support import REPO
from tests.support.loopback import free_port

#: The CSV download's columns: people script against these, so they are spelled out.
CSV_HEADER = [
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
    "client",
]

pytestmark = pytest.mark.timeout(240)


def start_worker(master_port: int, log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 - handed to the worker process, closed below
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(LOCUSTFILE),
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(master_port),
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
    finally:
        out.close()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")


def rows_by_transport(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["transport"]: row for row in report["rows"]}


def test_master_tab_merges_workers_and_matches_the_result_set(tmp_path: Path) -> None:
    master_port = free_port()
    results = tmp_path / "results"
    with ExitStack() as stack:
        backend = stack.enter_context(start_backend())
        ui = stack.enter_context(
            start_web_ui(
                backend.url,
                "--master",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(master_port),
                log_path=tmp_path / "master.log",
            )
        )
        for n in (1, 2):
            worker = start_worker(master_port, tmp_path / f"worker{n}.log")
            stack.callback(stop_process, worker)
        client = stack.enter_context(httpx.Client(base_url=ui.url, timeout=10))
        live = lambda: client.get("streams/live.json").json()  # noqa: E731

        wait_until(lambda: client.get("stats/requests").json().get("worker_count") == 2, 60, "two workers")
        started = client.post(
            "swarm",
            data={
                "user_count": 4,
                "spawn_rate": 4,
                "host": backend.url,
                "transport": "both",
                "chunks": 300,
                "stream_seconds": 3,
                "results_dir": str(results),
                "ndjson_backend_options": json.dumps({"buffer_ms": 100}),
            },
        ).json()
        assert started["success"], started

        def verdicts_settled() -> dict[str, Any] | None:
            """Buffered NDJSON, clean Socket.io; or, on a saturated harness, no verdict at all."""
            report = live()
            verdicts = {t: r["buffering"]["verdict"] for t, r in rows_by_transport(report).items()}
            if report["harness"]["saturated"]:
                expected = {"ndjson": "inconclusive", "socketio": "inconclusive"}
            else:
                expected = {"ndjson": "buffered", "socketio": "clean"}
            return report if verdicts == expected else None

        report = wait_until(verdicts_settled, 60, "the verdicts")
        # both workers' self-checks are in, merged
        assert len(report["harness"]["processes"]) == 2
        assert report["harness"]["cpu_percent_now"] is not None

        # the table rows ride on Locust's own stats poll; downloads sit beside Locust's
        extended = client.get("stats/requests").json()["extended_stats"]
        (table,) = [part for part in extended if part["key"] == "streams"]
        assert {row["transport"] for row in table["data"]} == {"ndjson", "socketio"}
        index = client.get("").text
        assert "./streams/tab.js" in index
        assert client.get("streams/tab.js").status_code == 200
        listing = csv.reader(io.StringIO(client.get("streams/csv").text))
        header, *csv_rows = list(listing)
        assert header == CSV_HEADER and len(csv_rows) == 2
        download = client.get("streams/json")
        assert "attachment" in download.headers["content-disposition"]
        assert {r["transport"] for r in json.loads(download.text)["rows"]} == {"ndjson", "socketio"}

        assert client.post("stop").json()["success"]
        summary_path = results / "summary.json"
        wait_until(summary_path.exists, 90, "the result set")
        summary = json.loads(summary_path.read_text())

        def settled() -> dict[str, Any] | None:
            """Workers report every 3 s: wait until nothing runs and totals stop moving."""
            first = live()
            if any(r["streams"]["running"] for r in first["rows"]):
                return None
            time.sleep(3.5)
            second = live()
            same = [r["streams"] for r in first["rows"]] == [r["streams"] for r in second["rows"]]
            return second if same else None

        final = rows_by_transport(wait_until(settled, 60, "final worker reports"))
        for transport in ("ndjson", "socketio"):
            written = summary["transports"][transport]
            shown = final[transport]
            for key in ("started", "completed", "failed"):
                assert shown["streams"][key] == written["streams"][key], (transport, key)
            assert shown["events"]["chunks"] == written["events"]["chunks"], transport
            assert shown["streams"]["started"] > 0

        # Prometheus /metrics on the master's web UI: the same merged totals
        exposition = client.get("metrics")
        assert exposition.status_code == 200 and exposition.headers["content-type"].startswith("text/plain")
        values = {
            (sample.name, sample.labels.get("transport"), sample.labels.get("status")): sample.value
            for family in text_string_to_metric_families(exposition.text)
            for sample in family.samples
        }
        for transport in ("ndjson", "socketio"):
            written = summary["transports"][transport]
            assert values[("stream_harness_streams_started_total", transport, None)] == written["streams"]["started"]
            assert values[("stream_harness_streams_total", transport, "completed")] == written["streams"]["completed"]
            assert values[("stream_harness_chunks_received_total", transport, None)] == written["events"]["chunks"]
            assert values[("stream_harness_ttfc_seconds_count", transport, None)] > 0

        assert client.post("stats/reset").status_code == 200
        after = live()
        assert after["reset_at"] > report["reset_at"]
        assert after["rows"] == [] and after["series"] == {}
