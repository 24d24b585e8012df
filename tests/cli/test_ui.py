"""`make ui`: one command gives the fake backend and the web UI; Ctrl-C stops both."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import httpx
import pytest

from tests.support import REPO

pytestmark = pytest.mark.timeout(120)


def port_open(url: str) -> bool:
    parts = urlparse(url)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((parts.hostname, parts.port)) == 0


def test_make_ui_prints_the_url_and_ctrl_c_stops_everything() -> None:
    # its own session, so a Ctrl-C can reach the whole group the way a terminal sends it
    process = subprocess.Popen(
        [sys.executable, "-m", "stream_harness", "ui"],
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        output = ""
        deadline = time.monotonic() + 60
        match = None
        while match is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            output += line
            match = re.search(r"Locust web UI: (http://127\.0\.0\.1:\d+/)\s+\(fake backend: (\S+)\)", line)
        assert match, f"no URL line:\n{output}"
        ui_url, backend_url = match.group(1), match.group(2)
        page = httpx.get(ui_url, timeout=10)
        assert page.status_code == 200 and '"extended_tabs"' in page.text and "Streams" in page.text
        assert httpx.get(backend_url.rstrip("/") + "/api/health", timeout=10).status_code == 200

        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(60) == 0, process.stdout.read()
        assert not port_open(ui_url) and not port_open(backend_url)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
