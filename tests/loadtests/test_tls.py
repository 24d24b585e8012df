"""--ca-file and --insecure against an https fake backend with a self-signed certificate.

Without either, every stream fails in the TLS handshake, and the failure is
named (OpenSSL's reason) in the stream records, Locust's failure row and on
the console.  With the certificate as --ca-file, or with --insecure, both
transports (NDJSON over https, Socket.io over wss, plus its emit-times side
requests) complete.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fake_backend.process import BackendProcess, start_backend
from tests.support.locust_runs import finished_streams, run_headless, run_locust
from tests.support.tls import self_signed_certificate

pytestmark = pytest.mark.timeout(180)

UNTRUSTED = re.compile(r"certificate verify failed: self[- ]signed certificate")
SHORT = ("--transport", "both", "--chunks", "30", "--stream-seconds", "0.2", "--stop-timeout", "5")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_backend(certificate: tuple[Path, Path]) -> Iterator[BackendProcess]:
    cert, key = certificate
    with start_backend("--tls-cert", str(cert), "--tls-key", str(key)) as backend:
        assert backend.url.startswith("https://127.0.0.1:")
        yield backend


def test_without_ca_file_the_failure_names_the_certificate(tls_backend: BackendProcess, tmp_path: Path) -> None:
    run = run_headless(tls_backend, tmp_path, *SHORT)
    streams = run.streams
    assert set(streams["transport"]) == {"ndjson", "socketio"}, run.output[-3000:]
    assert (streams["error"] == "connect").all()
    assert streams["error_detail"].map(lambda d: bool(UNTRUSTED.search(d))).all(), streams["error_detail"]
    failures = pd.read_csv(tmp_path / "locust_failures.csv", keep_default_na=False)
    assert failures["Error"].map(lambda e: bool(UNTRUSTED.search(e))).all(), failures
    assert set(failures["Method"]) == {"ndjson", "socketio"}
    console = [line for line in run.output.splitlines() if "could not connect to https://" in line]
    assert console and UNTRUSTED.search(console[0]) and "--ca-file" in console[0], run.output[-3000:]


def test_with_the_certificate_as_ca_file_both_transports_complete(
    tls_backend: BackendProcess, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    run = run_headless(tls_backend, tmp_path, *SHORT, "--ca-file", str(certificate[0]))
    streams = finished_streams(run.streams, users=2)
    assert set(streams["transport"]) == {"ndjson", "socketio"}, run.output[-3000:]
    assert (streams["status"] == "completed").all(), streams[["transport", "error", "error_detail"]]
    assert (streams["n_chunks"] == 30).all()
    # Socket.io emit times come from a side request over the same TLS context
    socketio = run.streams[run.streams["transport"] == "socketio"]
    assert socketio["staleness_p99_ms"].notna().any()
    assert run.run["options"]["ca_file"] == str(certificate[0])


def test_insecure_skips_verification(tls_backend: BackendProcess, tmp_path: Path) -> None:
    run = run_headless(tls_backend, tmp_path, *SHORT, "--insecure")
    streams = finished_streams(run.streams, users=2)
    assert set(streams["transport"]) == {"ndjson", "socketio"}, run.output[-3000:]
    assert (streams["status"] == "completed").all(), streams[["transport", "error", "error_detail"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--ca-file", "/nonexistent/ca.pem"), "--ca-file /nonexistent/ca.pem: no such file"),
        (("--ca-file", "pyproject.toml"), "--ca-file pyproject.toml: not a PEM certificate file"),
        (("--ca-file", "x.pem", "--insecure"), "--ca-file and --insecure contradict each other"),
    ],
)
def test_bad_tls_options_stop_at_start_with_one_line(args: tuple[str, ...], message: str) -> None:
    done = run_locust("--headless", "-u", "1", "-t", "1s", "--host", "https://127.0.0.1:9", *args, timeout=60)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("locust: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
