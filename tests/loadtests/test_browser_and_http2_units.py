"""Units of the browser users and HTTP/2 options: flags, the spread of browser users, the pages in the
self-check, the live calibration line, and the fake backend's HTTP/2 flags."""

from __future__ import annotations

import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from analysis.calibration import AGREE_LINE
from fake_backend.process import start_backend
from loadtests.browser.chromium import spki_hashes, trust_args
from loadtests.live.stats import LiveStats, Snapshot, live_key
from loadtests.live.tracker import StreamTracker
from loadtests.options import OptionError, RunOptions
from loadtests.results.record import StreamRecord
from loadtests.selfcheck import SelfCheck, with_probes, worst
from stream_harness.contract.schema import CHUNK, END
from tests.support.tls import self_signed_certificate

# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("flags", "ndjson", "socketio"),
    [
        ({"browser_users": "0"}, 0, 0),
        ({"browser_users": "1"}, 1, 0),
        ({"browser_users": "3"}, 2, 1),
        ({"browser_users": "3", "transport": "socketio"}, 0, 3),
        ({"browser_users": "4", "ndjson_weight": "3"}, 3, 1),
        ({"browser_users": "2", "socketio_weight": "0"}, 2, 0),
    ],
)
def test_browser_users_are_spread_over_the_transports_by_weight(flags: dict, ndjson: int, socketio: int):
    options = RunOptions.from_namespace(Namespace(**flags))
    assert (options.browser_count("ndjson"), options.browser_count("socketio")) == (ndjson, socketio)


def test_http2_flags_are_converted_and_checked():
    options = RunOptions.from_namespace(Namespace(http2="true", h2_streams_per_connection="2"))
    assert options.http2 and options.h2_streams_per_connection == 2
    assert options.public()["http2"] is True and options.public()["browser_users"] == 0
    assert RunOptions.from_namespace(Namespace()).h2_streams_per_connection == 6
    for flags, message in (
        ({"h2_streams_per_connection": "0"}, "--h2-streams-per-connection must be in 1..inf"),
        ({"browser_users": "x"}, "--browser-users must be an integer"),
    ):
        with pytest.raises(OptionError, match=message):
            RunOptions.from_namespace(Namespace(**flags))


# --------------------------------------------------------------------------- TLS trust for Chromium


def test_chromium_trusts_the_certificates_the_protocol_clients_trust(tmp_path: Path):
    cert, _key = self_signed_certificate(tmp_path)
    (spki,) = spki_hashes(cert)
    assert trust_args(str(cert), environ={}) == [f"--ignore-certificate-errors-spki-list={spki}"]
    assert trust_args(None, environ={"SSL_CERT_FILE": str(cert)}) == trust_args(str(cert), environ={})
    assert trust_args(None, environ={}) == [] and trust_args(str(tmp_path / "none.pem"), environ={}) == []


# --------------------------------------------------------------------------- the self-check


class FakePages:
    name = "pages"

    def __init__(self, saturated: bool) -> None:
        self.saturated = saturated
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def summary(self) -> dict:
        reasons = ["browser pages: event-loop lag p99 40.0 ms >= 25 ms"] if self.saturated else []
        return {"saturated": self.saturated, "reasons": reasons, "pages": 2, "page_lag_ms_p99": 40.0}


def test_a_page_that_cannot_keep_up_saturates_the_run():
    calm = with_probes({"saturated": False, "reasons": []}, [FakePages(False)])
    assert calm["saturated"] is False and calm["pages"]["pages"] == 2
    busy = with_probes({"saturated": False, "reasons": []}, [FakePages(True)])
    assert busy["saturated"] is True and busy["reasons"] == ["browser pages: event-loop lag p99 40.0 ms >= 25 ms"]
    check = SelfCheck()
    probe = FakePages(True)
    check.probes.append(probe)
    assert check.summary()["saturated"] is True
    check.start()
    check.stop()
    assert probe.resets == 1
    merged = worst({"w1": busy, "w2": calm})
    assert merged["saturated"] is True and merged["pages"]["pages"] == 4
    assert merged["pages"]["page_lag_ms_p99"] == 40.0
    assert worst({"local": busy})["pages"]["saturated"] is True


# --------------------------------------------------------------------------- live calibration


def _stream(client: str, index: int, gap_ms: float) -> StreamRecord:
    record = StreamRecord(
        "ndjson", "chat", f"{client}-{index}", client=client, started_at=1000.0 + index, time_to_headers_ms=1.0
    )
    for i in range(60):
        record.add_event(CHUNK, 2.0 + i * gap_ms, i)
    record.add_event(END, 2.0 + 60 * gap_ms, 60)
    record.status, record.n_reads = "completed", 61
    return record


def test_the_streams_tab_compares_the_clients_live():
    tracker = StreamTracker()
    for index in range(4):
        for client in ("protocol", "browser"):
            record = _stream(client, index, 10.0)
            tracker.started(record)
            tracker.finished(record)
    live = LiveStats(clock=lambda: 2000.0)
    live.absorb("local", Snapshot.from_list(tracker.take().to_list()))
    report = live.view()
    assert {(row["transport"], row["client"]) for row in report["rows"]} == {
        ("ndjson", "protocol"),
        ("ndjson", "browser"),
    }
    found = report["calibration"]["ndjson"]
    assert found["streams"] == {"protocol": 4, "browser": 4}
    assert found["agree"] is True and found["line"] == AGREE_LINE
    assert found["ttfc_ms"]["p50"]["delta"] == pytest.approx(0.0, abs=0.1)


def test_an_older_workers_rows_are_the_protocol_clients():
    snapshot = Snapshot.from_list([["ndjson", "chat", Snapshot().row(live_key("ndjson", "chat")).to_dict()]])
    assert list(snapshot.rows) == [("ndjson", "chat", "protocol")]


# --------------------------------------------------------------------------- the fake backend's HTTP/2


def test_the_fake_backend_serves_http2_over_tls_and_names_a_bad_certificate(tmp_path: Path):
    cert, key = self_signed_certificate(tmp_path)
    with start_backend("--http2", "--tls-cert", str(cert), "--tls-key", str(key)) as backend:
        assert backend.url.startswith("https://127.0.0.1:")
    command = [sys.executable, "-m", "fake_backend", "--port", "0", "--http2"]
    done = subprocess.run(
        [*command, "--tls-cert", str(key), "--tls-key", str(key)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1 and "cannot serve TLS" in done.stderr and done.stderr.strip().count("\n") == 0
