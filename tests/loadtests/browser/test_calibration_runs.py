"""Browser users beside protocol users, run as people run them: does the harness see what a browser sees?

Locust runs (subprocesses) with ``--browser-users``: real Chromium pages and
the protocol clients on the same streams.

- Straight against the fake backend, every stream the same (one seed, a
  150 ms first-chunk delay): a browser user and a protocol user count the
  same chunks, exactly, and their TTFC agrees within the calibration
  thresholds.
- Behind nginx (TLS, HTTP/2; ``tests.support.edge``), NDJSON with
  ``--http2``: passing every byte through, browsers and HTTP/2 protocol
  users both say ``clean`` and the calibration agrees; with proxy buffering
  and gzip on, both say ``buffered``.  (Socket.io rides a websocket that an
  edge passes through either way.)

The machine is small and shared: a run whose load generator (or browser)
was saturated makes every verdict ``inconclusive`` by design, so a verdict
test starts a fresh run, a bounded number of times.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from analysis.calibration import AGREE_LINE, CalibrationThresholds
from fake_backend.process import BackendProcess, start_backend
from loadtests.browser.chromium import CHROMIUM
from tests.support import edge
from tests.support.locust_runs import LocustRun, finished_streams, run_headless, stats_row

pytestmark = [
    pytest.mark.exclusive,
    pytest.mark.timeout(400),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (`make browser`)"),
]
ATTEMPTS = 3


def run_until_unsaturated(run: Callable[[Path], LocustRun], tmp_path: Path) -> LocustRun:
    """``run`` again (fresh results) while the load generator was saturated, at most ATTEMPTS times."""
    seen = []
    for attempt in range(1, ATTEMPTS + 1):
        result = run(tmp_path / f"attempt-{attempt}")
        # (the exit code counts a stream the stop cut short as a failure: finished_streams leaves those out)
        assert (result.results / "summary.json").exists(), result.output[-3000:]
        harness = result.summary["run"]["harness"]
        if not harness["saturated"]:
            return result
        seen.append(harness.get("reasons"))
    pytest.fail(f"the load generator was saturated in every attempt: {seen}")


def per_client(result: LocustRun, transport: str) -> dict[str, object]:
    streams = finished_streams(result.streams, users=4)
    mine = streams[streams["transport"] == transport]
    return {client: mine[mine["client"] == client] for client in ("protocol", "browser")}


# --------------------------------------------------------------------------- the same stream, both clients


def test_a_browser_and_a_protocol_user_agree_on_the_same_stream(backend: BackendProcess, tmp_path: Path):
    same_stream = {"seed": 7, "first_chunk_delay_ms": 150, "chunks": 60, "duration_s": 0.6}
    result = run_headless(
        backend,
        tmp_path,
        "--transport",
        "both",
        "--browser-users",
        "2",
        "--backend-options",
        json.dumps(same_stream),
        "--stop-timeout",
        "10",
        users=4,
        run_time="8s",
    )
    assert (result.results / "summary.json").exists(), result.output[-3000:]
    assert '"NdjsonBrowserUser": 1' in result.output and '"SocketIOBrowserUser": 1' in result.output
    limits = CalibrationThresholds()
    for transport in ("ndjson", "socketio"):
        clients = per_client(result, transport)
        for client, rows in clients.items():
            assert len(rows) >= 2, (transport, client, result.output[-2000:])
            assert (rows["status"] == "completed").all(), rows[["stream_id", "error", "error_detail"]]
            assert (rows["n_chunks"] == 60).all() and (rows["expected_chunks"] == 60).all()
        browser, protocol = clients["browser"], clients["protocol"]
        assert set(browser["http_version"]) == {"1.1"}
        protocol_ttfc = float(np.median(protocol["ttfc_ms"]))
        browser_ttfc = float(np.median(browser["ttfc_ms"]))
        assert protocol_ttfc >= 140  # the backend's delay is in both
        assert abs(browser_ttfc - protocol_ttfc) <= limits.allowed_ms("ttfc_p50", protocol_ttfc), transport
        found = result.summary["transports"][transport]["calibration"]
        assert found["streams"] == {"protocol": len(protocol), "browser": len(browser)}
        assert found["ttfc_ms"]["p50"]["browser"] == pytest.approx(browser_ttfc)
        # Locust's own table keeps the two kinds of client apart
        stats = result.stats_csv()
        assert stats_row(stats, transport, "chat (browser) stream")["Request Count"] >= len(browser)
        assert stats_row(stats, transport, "chat stream")["Request Count"] >= len(protocol)


# --------------------------------------------------------------------------- behind a TLS + HTTP/2 edge


@pytest.fixture(scope="module")
def edge_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[edge.Edge]:
    if not edge.available():
        pytest.skip("Debian's nginx is not installed (`make nginx` installs it as root)")
    with start_backend() as plain, edge.start_edge(plain.url, tmp_path_factory.mktemp("edge")) as running:
        yield running


def edge_run(edge_proxy: edge.Edge, profile: str, transport: str, users: int, browsers: int, seconds: str):
    host = SimpleNamespace(url=edge_proxy.urls[profile])

    def run(results: Path) -> LocustRun:
        return run_headless(
            host,  # type: ignore[arg-type]  # run_headless only reads .url
            results,
            "--transport",
            transport,
            "--http2",
            "--browser-users",
            str(browsers),
            "--chunks",
            "150",
            "--stream-seconds",
            "3",
            "--stop-timeout",
            "10",
            users=users,
            run_time=seconds,
        )

    return run


def test_behind_a_pass_through_edge_both_clients_say_clean_and_agree(
    edge_proxy: edge.Edge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(edge_proxy.ca_file))  # trusted by OpenSSL and, so, by the pages
    result = run_until_unsaturated(edge_run(edge_proxy, "passthrough", "ndjson", 2, 1, "14s"), tmp_path)
    item = result.summary["transports"]["ndjson"]
    verdicts = {client: found["buffering"]["verdict"] for client, found in item["by_client"].items()}
    assert verdicts == {"protocol": "clean", "browser": "clean"}, {
        c: o["buffering"]["reasons"] for c, o in item["by_client"].items()
    }
    assert item["calibration"]["agree"] is True, item["calibration"]["reasons"]
    assert item["calibration"]["line"] == AGREE_LINE
    ndjson = per_client(result, "ndjson")
    assert set(ndjson["protocol"]["http_version"]) == {"2"} and set(ndjson["browser"]["http_version"]) == {"2"}


def test_behind_a_buffering_compressing_edge_both_clients_say_buffered(
    edge_proxy: edge.Edge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(edge_proxy.ca_file))
    result = run_until_unsaturated(edge_run(edge_proxy, "buffering", "ndjson", 2, 1, "12s"), tmp_path)
    item = result.summary["transports"]["ndjson"]
    verdicts = {client: found["buffering"]["verdict"] for client, found in item["by_client"].items()}
    assert verdicts == {"protocol": "buffered", "browser": "buffered"}, {
        c: o["buffering"]["reasons"] for c, o in item["by_client"].items()
    }
    clients = per_client(result, "ndjson")
    assert set(clients["browser"]["content_encoding"]) == {"gzip"} == set(clients["protocol"]["content_encoding"])
