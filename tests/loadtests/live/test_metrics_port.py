"""--metrics-port: a headless run serves its live metrics there; a bad port stops Locust at start-up
with one line and exit code 2."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fake_backend.process import BackendProcess
from tests.support.locust_runs import finish, free_port, popen_locust, run_locust

pytestmark = pytest.mark.timeout(120)


def start(*args: str) -> subprocess.CompletedProcess[str]:
    return run_locust("--headless", "-u", "1", "-t", "1s", "--host", "http://127.0.0.1:9", *args, timeout=60)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("locust: error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    return errors[0]


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_bad_metrics_port_value(value: str) -> None:
    assert "--metrics-port" in one_error_line(start("--metrics-port", value))


def test_metrics_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_error_line(start("--metrics-port", str(port), "--metrics-host", "127.0.0.1"))
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}" in line


def test_headless_run_serves_live_metrics_on_the_port(backend: BackendProcess, tmp_path: Path) -> None:
    """A headless local run keeps live totals only for an exporter: --metrics-port feeds them."""
    port = free_port()
    log = tmp_path / "locust.log"
    process = popen_locust(
        "--headless",
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "20s",
        "--host",
        backend.url,
        "--chunks",
        "30",
        "--stream-seconds",
        "0.3",
        "--results-dir",
        str(tmp_path / "run"),
        "--metrics-port",
        str(port),
        "--metrics-host",
        "127.0.0.1",
        log=log,
    )
    try:
        deadline = time.monotonic() + 30
        chunks: dict[str, float] = {}
        while time.monotonic() < deadline and len(chunks) < 2:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    assert response.headers["Content-Type"].startswith("text/plain")
                    text = response.read().decode()
            except OSError:
                text = ""
            chunks = {
                sample.labels["transport"]: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "stream_harness_chunks_received_total" and sample.value > 0
            }
            time.sleep(0.5)
        assert set(chunks) == {"ndjson", "socketio"}, log.read_text()[-3000:]
    finally:
        process.terminate()
        finish(process, timeout=60, log=log)
