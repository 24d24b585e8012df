"""--metrics-port problems stop Locust at start-up with one line and exit code 2."""

from __future__ import annotations

import socket
import subprocess

import pytest

from tests.support import REPO
from tests.support.locust_runs import locust_command

pytestmark = pytest.mark.timeout(120)


def start(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        locust_command("--headless", "-u", "1", "-t", "1s", "--host", "http://127.0.0.1:9", *args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


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
