"""The buffering detector and the gate on real runs: fake backend + the real Locust users.

Each scenario is a short headless Locust run (4 users, both transports, about
8 streams of 300 chunks at 333 chunks/s per transport) against the fake backend on loopback, with one buffering fault
injected through ``--backend-options`` (or a buffering TCP proxy put on the
path), then ``python -m analysis report``.  The clean control must be clean;
every fault must be called buffered; ``compare`` must fail the buffered run
against the clean one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from analysis.buffering import Evidence, classify
from analysis.histogram import GAMMA
from analysis.metrics import analyse
from analysis.results import load_results
from tests.support import REPO
from tests.support.exact_reference import exact_evidence
from tests.support.locust_runs import run_locust

pytestmark = pytest.mark.timeout(300)

SCENARIOS = {
    "clean": {},
    "buffer_50ms": {"buffer_ms": 50},
    "buffer_20_chunks": {"buffer_chunks": 20},
    "gzip": {"gzip": True},
}


#: One transport given a buffering fault: (flag, fault, parity verdict expected).
PARITY_SCENARIOS = {
    "ndjson_buffered": ("--ndjson-backend-options", {"buffer_ms": 50}, "ndjson_worse"),
    "socketio_buffered": ("--socketio-backend-options", {"buffer_ms": 50}, "ndjson_better"),
}


class BufferingProxy:
    """A TCP proxy on loopback that forwards responses only in ``block``-byte pieces
    (or after ``max_hold_s``, so a keep-alive response's tail cannot wait forever):
    the behaviour of a reverse proxy with response buffering on."""

    def __init__(self, upstream_port: int, block: int = 8192, max_hold_s: float = 0.5):
        self.upstream_port = upstream_port
        self.block = block
        self.max_hold_s = max_hold_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._buffered, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                sock.close()

    def _buffered(self, source: socket.socket, target: socket.socket) -> None:
        held = bytearray()
        since = 0.0
        try:
            source.settimeout(0.05)
            while not self.closed.is_set():
                try:
                    data = source.recv(65536)
                except TimeoutError:
                    data = None
                if data == b"":
                    break
                if data:
                    since = since if held else time.monotonic()
                    held += data
                if held and (len(held) >= self.block or time.monotonic() - since >= self.max_hold_s):
                    target.sendall(held)
                    held.clear()
            if held:
                target.sendall(held)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                sock.close()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


def run_and_report(url: str, results: Path, options: dict, attempts: int = 2, flag: str = "--backend-options") -> dict:
    """One run (repeated, up to ``attempts``, while the harness reports itself saturated:
    other test processes share the 2 cores and a saturated run has no verdict)."""
    for _ in range(attempts):
        summary = run_once(url, results, options, flag)
        if not summary["run"]["harness"]["saturated"]:
            break
    return summary


def run_once(url: str, results: Path, options: dict, flag: str = "--backend-options") -> dict:
    args = [
        "--headless",
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        "4s",
        "--host",
        url,
        "--transport",
        "both",
        "--chunks",
        "300",
        "--stream-seconds",
        "0.9",
        "--stop-timeout",
        "3",
        "--results-dir",
        str(results),
        "--only-summary",
    ]
    if options:
        args += [flag, json.dumps(options)]
    locust = run_locust(*args, timeout=120)
    assert (results / "streams.parquet").is_file(), locust.stdout[-3000:] + locust.stderr[-3000:]
    report = subprocess.run(
        [sys.executable, "-m", "analysis", "report", str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    return json.loads((results / "summary.json").read_text())


@pytest.fixture(scope="module")
def summaries(backend, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    out = {}
    for name, options in SCENARIOS.items():
        results = tmp_path_factory.mktemp(name)
        out[name] = (results, run_and_report(backend.url, results, options))
    for name, (flag, options, _verdict) in PARITY_SCENARIOS.items():
        results = tmp_path_factory.mktemp(name)
        out[name] = (results, run_and_report(backend.url, results, options, flag=flag))
    port = int(backend.url.rsplit(":", 1)[1])
    proxy = BufferingProxy(port)
    try:
        results = tmp_path_factory.mktemp("proxy")
        out["proxy"] = (results, run_and_report(f"http://127.0.0.1:{proxy.port}", results, {}))
    finally:
        proxy.close()
    return out


def verdicts(summary: dict) -> dict[str, str]:
    return {name: item["buffering"]["verdict"] for name, item in summary["transports"].items()}


def expect(summary: dict, verdict: str) -> str:
    """``verdict``, or ``inconclusive`` when the load generator was saturated after all."""
    return "inconclusive" if summary["run"]["harness"]["saturated"] else verdict


def test_the_clean_control_is_clean(summaries):
    summary = summaries["clean"][1]
    assert verdicts(summary) == dict.fromkeys(("ndjson", "socketio"), expect(summary, "clean"))


def test_identical_transports_give_parity(summaries):
    summary = summaries["clean"][1]
    assert summary["parity"]["verdict"] == expect(summary, "parity"), summary["parity"]["reasons"]


@pytest.mark.parametrize("scenario", list(PARITY_SCENARIOS))
def test_a_buffering_fault_on_one_transport_decides_parity_with_the_reason(summaries, scenario):
    summary = summaries[scenario][1]
    _flag, _fault, verdict = PARITY_SCENARIOS[scenario]
    parity = summary["parity"]
    assert parity["verdict"] == expect(summary, verdict), parity["reasons"]
    if not summary["run"]["harness"]["saturated"]:
        faulty = "NDJSON" if verdict == "ndjson_worse" else "Socket.io"
        assert parity["reasons"][0].startswith(f"{faulty} buffering verdict buffered"), parity["reasons"]
        assert parity["buffering"]["result"] == verdict
        report = (summaries[scenario][0] / "report.md").read_text().splitlines()
        assert report[2].startswith(f"**Parity (NDJSON vs Socket.io): {verdict}**: {faulty} buffering"), report[2]


@pytest.mark.parametrize("fault", ["buffer_50ms", "buffer_20_chunks"])
def test_buffering_faults_are_buffered_on_both_transports(summaries, fault):
    summary = summaries[fault][1]
    assert verdicts(summary) == dict.fromkeys(("ndjson", "socketio"), expect(summary, "buffered"))


def test_gzip_on_the_ndjson_path_is_buffered(summaries):
    summary = summaries["gzip"][1]
    assert verdicts(summary)["ndjson"] == expect(summary, "buffered")
    if not summary["run"]["harness"]["saturated"]:
        reasons = " ".join(summary["transports"]["ndjson"]["buffering"]["reasons"])
        assert "gzip" in reasons


def test_a_buffering_proxy_on_the_path_is_buffered(summaries):
    summary = summaries["proxy"][1]
    assert verdicts(summary)["ndjson"] == expect(summary, "buffered"), summary["transports"]["ndjson"]["buffering"]


def test_compare_fails_the_buffered_run_against_the_clean_one(summaries):
    process = subprocess.run(
        [sys.executable, "-m", "analysis", "compare", str(summaries["clean"][0]), str(summaries["buffer_50ms"][0])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1, process.stdout + process.stderr
    assert "ndjson: buffering verdict clean -> buffered" in process.stdout


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_the_bounded_memory_verdict_is_the_exact_detector_verdict_on_every_recorded_run(summaries, scenario):
    """On each run recorded above: the verdict from 1% histograms equals the exact detector's,
    and every number of its evidence is within one bucket of the exact one."""
    directory, summary = summaries[scenario]
    results = load_results(directory)
    filled = analyse(results.run, results.streams, results.events).streams
    for transport, item in summary["transports"].items():
        want = exact_evidence(filled, results.events, (filled["transport"] == transport).to_numpy(dtype=bool))
        expected_verdict = classify(want, saturated=summary["run"]["harness"]["saturated"]).verdict
        assert item["buffering"]["verdict"] == expected_verdict, (scenario, transport)
        got = item["buffering"]["evidence"]
        for field in dataclasses.fields(Evidence):
            exact, bucketed = getattr(want, field.name), got[field.name]
            if isinstance(exact, tuple):
                assert tuple(bucketed) == exact, field.name
            elif isinstance(exact, float) and math.isnan(exact):
                assert bucketed is None, field.name
            else:
                assert bucketed == pytest.approx(exact, rel=GAMMA - 1.0, abs=1e-6), (scenario, transport, field.name)
