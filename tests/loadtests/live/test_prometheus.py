"""A real Prometheus server scrapes a running harness and answers a TTFC quantile.

Debian's ``prometheus`` (``make prometheus``, part of ``make test``) runs on
loopback with a generated configuration (1 s scrape interval) against a
headless run's ``--metrics-port``.  The fake backend holds every stream's first
chunk back by 250 ms, so ``histogram_quantile`` over the TTFC buckets must
land near 0.25 s: that checks the bucket bounds (seconds, cumulative) end to
end, the way a Grafana panel asks.  Every query of docs/grafana-dashboard.json
then runs against the same server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from fake_backend.process import BackendProcess
from tests.support.dashboard import queries as dashboard_queries
from tests.support.locust_runs import finish, free_port, popen_locust

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
FIRST_CHUNK_DELAY_MS = 250

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not Path(PROMETHEUS).exists(), reason="Debian's prometheus is not installed (make prometheus installs it)"
    ),
]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:  # not listening yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


def start_prometheus(tmp_path: Path, target_port: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: stream-harness\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    return process, f"http://127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_prometheus_scrapes_the_harness_and_answers_a_ttfc_quantile(backend: BackendProcess, tmp_path: Path) -> None:
    metrics_port = free_port()
    locust = popen_locust(
        "--headless",
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        "40s",
        "--host",
        backend.url,
        "--chunks",
        "20",
        "--stream-seconds",
        "0.3",
        "--backend-options",
        json.dumps({"first_chunk_delay_ms": FIRST_CHUNK_DELAY_MS}),
        "--results-dir",
        str(tmp_path / "run"),
        "--metrics-port",
        str(metrics_port),
        "--metrics-host",
        "127.0.0.1",
        "--only-summary",
        log=tmp_path / "locust.log",
    )
    prometheus, api = start_prometheus(tmp_path, metrics_port)
    try:
        wait_for(lambda: urllib.request.urlopen(f"{api}/-/ready", timeout=2).status == 200, 30, "Prometheus ready")
        query = "histogram_quantile(0.5, sum by (le, transport) (stream_harness_ttfc_seconds_bucket))"
        url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": query})

        def answered() -> dict[str, float] | None:
            result = get_json(url)["data"]["result"]
            values = {r["metric"]["transport"]: float(r["value"][1]) for r in result}
            return values if set(values) == {"ndjson", "socketio"} and all(v == v for v in values.values()) else None

        medians = wait_for(answered, 40, "a TTFC median per transport from Prometheus")
        for transport, median in medians.items():
            assert 0.8 * FIRST_CHUNK_DELAY_MS / 1000 < median < 1.6 * FIRST_CHUNK_DELAY_MS / 1000, (transport, median)

        targets = get_json(f"{api}/api/v1/targets")["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], targets
        up = get_json(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": "stream_harness_streams_total"}))
        statuses = {r["metric"]["status"] for r in up["data"]["result"]}
        assert statuses == {"completed", "failed", "cancelled"}

        # every panel of docs/grafana-dashboard.json runs, and answers once its rate window has samples
        empty_allowed = ("Stream errors", "Failure share")  # no stream fails in this run

        def unanswered() -> list[str]:
            titles = []
            for title, expr in dashboard_queries().items():
                reply = get_json(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
                assert reply["status"] == "success", (title, reply)
                if not reply["data"]["result"] and not title.startswith(empty_allowed):
                    titles.append(title)
            return titles

        deadline = time.monotonic() + 30
        while (missing := unanswered()) and time.monotonic() < deadline:
            time.sleep(1)
        assert not missing, f"dashboard panels without data: {missing}"
    finally:
        stop(prometheus)
        locust.terminate()
        finish(locust, timeout=60, log=tmp_path / "locust.log")
