"""Fault matrix on whole Locust runs: a backend that dies, interrupts, bad input, secrets.

Backend outages: the backend is down at start, killed mid-run, restarted: streams fail
with the right kind, the run goes on, results are written.
Interrupts: Ctrl-C / SIGTERM / Locust's stop at any moment leave whole result
files with what was measured (temp file + rename); a killed worker is named
in the summary and its streams up to its last report are kept.
Bad input: bad input is one clear line, a non-zero exit, no traceback.
Secrets: the auth token and fingerprint id never reach results, reports, logs,
CSVs or the web UI.

Locust and the backends are subprocesses on loopback, every run a few seconds
of short streams, every process killed in a ``finally``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from analysis import __main__ as analysis_cli
from analysis.results import (
    EVENTS_DIR,
    RUN_FILE,
    STREAMS_FILE,
    SUMMARY_FILE,
    copy_raw,
    event_parts,
    load_results,
    write_results,
)
from fake_backend.process import BackendProcess, start_backend
from loadtests.redaction import REDACTED, redact
from tests.support import REPO
from tests.support.badserver import BadServer
from tests.support.locust_runs import (
    finish,
    free_port,
    master_flags,
    popen_locust,
    run_locust,
    start_workers,
    stop_all,
    wait_for_output,
    wait_for_spawning,
)
from tests.support.synthetic import SyntheticSpec, synthetic_run, write_synthetic_run
from tests.support.waiting import started_counts, streams_started, wait_until

pytestmark = pytest.mark.timeout(120)

RESULT_FILES = (RUN_FILE, STREAMS_FILE, SUMMARY_FILE)  # beside the events/ directory
TOKEN = "jwt-TOKEN-3f9a1c"
FINGERPRINT = "fp-FINGERPRINT-77b2"


# --------------------------------------------------------------------------- helpers


def assert_whole_result_set(directory: Path, output: str) -> pd.DataFrame:
    """Every file there, readable, no temp file left behind, counts that agree."""
    missing = [name for name in RESULT_FILES if not (directory / name).is_file()]
    assert not missing, f"missing {missing}:\n{output[-3000:]}"
    assert event_parts(directory), f"no events:\n{output[-3000:]}"
    assert not list(directory.glob(".*")), "a staging directory or temporary file was left behind"
    results = load_results(directory)  # raises on any half-written file
    summary = json.loads((directory / SUMMARY_FILE).read_text())
    streams = results.streams
    for transport, part in summary["transports"].items():
        counts = part["streams"]
        mine = streams[streams["transport"] == transport]
        assert counts["started"] == len(mine)
        assert counts["started"] == counts["completed"] + counts["failed"] + counts.get("cancelled", 0)
    assert sum(p["streams"]["started"] for p in summary["transports"].values()) == len(streams)
    return streams


def run_with_signal(backend: BackendProcess, tmp_path: Path, moment: str) -> tuple[int, str, Path]:
    """A headless run of 5 s streams, interrupted at ``moment``."""
    out = tmp_path / "out"
    log = tmp_path / "locust.log"
    before = started_counts(backend.url)
    process = popen_locust(
        "--headless",
        "-u",
        "4",
        "-r",
        "1",
        "-t",
        "60s",
        "--host",
        backend.url,
        "--transport",
        "both",
        "--chunks",
        "100",
        "--stream-seconds",
        "5",
        "--results-dir",
        str(out),
        "--only-summary",
        log=log,
    )
    try:
        if moment == "Ctrl-C while users spawn":  # one user a second: 4 s of spawning
            wait_for_output(log, "Ramping to 4 users")
            wait_until(lambda: streams_started(backend.url, 1, before), 30, "the first streams while users spawn")
            process.send_signal(signal.SIGINT)
        else:
            wait_for_spawning(log)
            wait_until(lambda: streams_started(backend.url, 2, before), 30, "streams of both transports under way")
            if moment == "SIGTERM mid-stream":
                process.send_signal(signal.SIGTERM)
            else:  # an impatient double Ctrl-C
                process.send_signal(signal.SIGINT)
                time.sleep(0.05)
                process.send_signal(signal.SIGINT)
        output = finish(process, timeout=60, log=log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, output, out


# =========================================================================== backend outages


def test_backend_down_at_start_killed_mid_run_and_restarted(tmp_path: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "locust.log"
    process = popen_locust(
        "--headless",
        "-u",
        "6",
        "-r",
        "6",
        "-t",
        "90s",
        "--host",
        url,
        "--transport",
        "both",
        "--chunks",
        "30",
        "--stream-seconds",
        "0.6",
        "--first-chunk-timeout",
        "5",
        "--stream-timeout",
        "10",
        "--results-dir",
        str(tmp_path / "out"),
        "--only-summary",
        log=log,
    )
    backend: BackendProcess | None = None
    try:
        wait_for_spawning(log)
        time.sleep(1.0)  # phase 1: nothing listens on the port
        first_up = time.time()
        backend = start_backend("--port", str(port))
        wait_until(
            lambda: streams_started(url, 3),
            30,
            "streams of both transports to reach the backend",
        )
        killed_at = time.time()
        backend.process.kill()  # phase 2: SIGKILL mid-stream
        backend.stop()
        time.sleep(1.5)
        second_up = time.time()
        backend = start_backend("--port", str(port))  # phase 3: back on the same port
        wait_until(
            lambda: streams_started(url, 3),
            30,
            "both transports to reconnect to the restarted backend",
        )
        time.sleep(1.5)  # 0.6 s streams: let those finish
        process.send_signal(signal.SIGINT)
        output = finish(process, timeout=60, log=log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if backend is not None:
            backend.stop()
    streams = assert_whole_result_set(tmp_path / "out", output)
    assert set(streams["error"].dropna()) <= {"connect", "disconnect", "stopped"}
    for transport, mine in streams.groupby("transport"):
        down = mine[mine["started_at"] < first_up]
        assert len(down) and (down["error"] == "connect").all(), f"{transport}: unreachable at start"
        cut = mine[mine["error"] == "disconnect"]
        assert len(cut), f"{transport}: no stream was cut by the kill"
        assert (cut["started_at"] < killed_at).all() and (cut["started_at"] > first_up).all()
        assert (cut["n_chunks"] < 30).all()  # what they got before the kill is kept
        back = mine[(mine["started_at"] > second_up) & (mine["status"] == "completed")]
        assert len(back) >= 2, f"{transport}: the run did not go on after the restart"
        assert (back["n_chunks"] == 30).all()


def test_first_chunk_and_stream_timeouts_are_set_per_run(backend: BackendProcess, tmp_path: Path):
    """Row 2's timeouts, from the command line: a first chunk that comes too late (NDJSON)
    and a stream that runs too long (Socket.io) both fail as ``timeout``, on time."""
    out = tmp_path / "out"
    process = run_locust(
        "--headless",
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "3s",
        "--host",
        backend.url,
        "--transport",
        "both",
        "--first-chunk-timeout",
        "0.5",
        "--stream-timeout",
        "1.5",
        "--ndjson-backend-options",
        '{"chunks": 10, "duration_s": 0.1, "first_chunk_delay_ms": 5000}',
        "--socketio-backend-options",
        '{"chunks": 3000, "duration_s": 30}',
        "--results-dir",
        str(out),
        "--only-summary",
        timeout=90,
    )
    streams = assert_whole_result_set(out, process.stdout + process.stderr)
    timed_out = streams[streams["error"] == "timeout"]
    ndjson = timed_out[timed_out["transport"] == "ndjson"]
    sio = timed_out[timed_out["transport"] == "socketio"]
    assert len(ndjson) >= 2 and ndjson["error_detail"].str.contains("first_chunk_timeout=0.5").all()
    assert ndjson["duration_ms"].between(500, 2500).all() and (ndjson["n_chunks"] == 0).all()
    assert len(sio) >= 1 and sio["error_detail"].str.contains("stream_timeout=1.5").all()
    assert sio["duration_ms"].between(1500, 3500).all() and (sio["n_chunks"] > 0).all()
    assert set(streams["error"].dropna()) <= {"timeout", "stopped"}


# =========================================================================== interrupts, workers


@pytest.mark.parametrize("moment", ["Ctrl-C while users spawn", "SIGTERM mid-stream", "double Ctrl-C mid-stream"])
def test_interrupt_at_any_moment_leaves_whole_results_of_what_was_measured(
    moment: str, backend: BackendProcess, tmp_path: Path
):
    code, output, out = run_with_signal(backend, tmp_path, moment)
    assert "Traceback" not in output, output[-3000:]
    streams = assert_whole_result_set(out, output)
    assert len(streams) >= 1
    assert (streams["error"] == "stopped").all()  # 5 s streams: every one was cut
    events = load_results(out).events
    assert len(events) == streams["n_events"].sum()  # the events they received are all kept
    assert json.loads((out / SUMMARY_FILE).read_text())["run"]["stopped_early"] is True


def test_stop_in_the_web_ui_writes_whole_results(backend: BackendProcess, tmp_path: Path):
    before = started_counts(backend.url)
    port = free_port()
    out = tmp_path / "out"
    process = popen_locust("--web-host", "127.0.0.1", "--web-port", str(port))
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as web:
            wait_until(lambda: _reachable(web), 30, "the web UI")
            started = web.post(
                "/swarm",
                data={
                    "user_count": "2",
                    "spawn_rate": "2",
                    "host": backend.url,
                    "transport": "both",
                    "chunks": "100",
                    "stream_seconds": "5",
                    "results_dir": str(out),
                },
            )
            assert started.json()["success"], started.text
            wait_until(lambda: streams_started(backend.url, 1, before), 30, "streams of both transports under way")
            assert web.post("/stop").json()["success"]
            wait_until(lambda: (out / SUMMARY_FILE).exists(), 20, "results after Stop")
    finally:
        process.send_signal(signal.SIGTERM)
        output = finish(process, timeout=30)
    streams = assert_whole_result_set(out, output)
    assert set(streams["transport"]) == {"ndjson", "socketio"} and (streams["error"] == "stopped").all()


def _reachable(web: httpx.Client) -> bool:
    try:
        return web.get("/").status_code == 200
    except httpx.TransportError:
        return False


def every_file(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_result_files_are_replaced_atomically_never_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import analysis.results as results_module

    run, streams, events = synthetic_run(SyntheticSpec(streams=4, chunks=(50, 60), seed=1))
    write_results(tmp_path, run, streams, events)
    before = every_file(tmp_path)
    real_write_table = results_module.pq.write_table

    def interrupted_write(table, where, **kwargs):  # Ctrl-C lands half-way through a parquet file
        real_write_table(table, where, **kwargs)
        Path(where).write_bytes(Path(where).read_bytes()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(results_module.pq, "write_table", interrupted_write)
    run2, streams2, events2 = synthetic_run(SyntheticSpec(streams=9, chunks=(50, 60), seed=2))
    with pytest.raises(KeyboardInterrupt):
        write_results(tmp_path, run2, streams2, events2)
    monkeypatch.undo()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in (*RESULT_FILES, EVENTS_DIR))
    assert leftovers == [], "temporary files left behind"
    # the old set is untouched: no torn file, and no new run.json beside old parquet files
    assert every_file(tmp_path) == before
    assert load_results(tmp_path).run["id"] == run["id"]


def test_a_killed_worker_is_named_in_the_summary_and_its_streams_are_kept(backend: BackendProcess, tmp_path: Path):
    port = free_port()
    workers = start_workers(port, 2)
    log = tmp_path / "master.log"
    master = None
    try:
        master = popen_locust(
            "--headless",
            *master_flags(port, 2),
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "60s",
            "--host",
            backend.url,
            "--transport",
            "both",
            "--chunks",
            "10",
            "--stream-seconds",
            "0.2",
            "--results-dir",
            str(tmp_path / "out"),
            "--only-summary",
            log=log,
        )
        wait_for_spawning(log)
        time.sleep(2.5)  # streams ship in 1 s batches
        workers[0].kill()  # SIGKILL: no goodbye, no final report
        wait_for_output(log, "missing", timeout=30)  # Locust notices the missing heartbeat
        master.send_signal(signal.SIGTERM)
        output = finish(master, timeout=60, log=log)
    finally:
        if master is not None and master.poll() is None:
            master.kill()
            master.wait()
        stop_all(workers)
    streams = assert_whole_result_set(tmp_path / "out", output)
    problems = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())["run"]["worker_problems"]
    assert len(problems) == 1, problems
    dead = problems[0]["worker"]
    kept = streams[streams["worker"] == dead]
    assert "missing" in problems[0]["problem"] and problems[0]["last_report_at"]
    assert problems[0]["streams_received"] == len(kept) > 0
    assert (kept["status"] == "completed").sum() > 0  # its finished streams, as reported
    assert len(streams[streams["worker"] != dead]) > 0


# =========================================================================== bad input


@pytest.mark.parametrize(
    "args, message",
    [
        (("--no-such-flag",), "unrecognized arguments: --no-such-flag"),
        (("-u", "-5"), "-u/--users must be >= 0"),
        (("--transport", "foo"), "argument --transport: invalid choice: 'foo'"),
        (("--host", "127.0.0.1:8000"), "--host must be an http:// or https:// base URL"),
        (("--host", "http://[::1"), "is not a valid URL (Invalid IPv6 URL)"),
        (("--host", "http://127.0.0.1:99999"), "is not a valid URL (Port out of range"),
        (("--host", "http://exa mple.com"), "--host must be an http:// or https:// base URL"),
        (("--results-dir", "{file}/results"), "cannot create it"),
        (("--stream-timeout", "-1"), "--stream-timeout must be in"),
    ],
    ids=[
        "unknown flag",
        "negative users",
        "unknown transport",
        "host without scheme",
        "host with a broken IPv6 address",
        "host with an impossible port",
        "host with a space",
        "results dir under a file",
        "negative timeout",
    ],
)
def test_bad_command_line_is_one_clear_line_and_a_nonzero_exit(args: tuple[str, ...], message: str, tmp_path: Path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a directory")
    argv = ["--headless", "-u", "1", "-t", "1s", "--host", "http://127.0.0.1:9", "--results-dir", str(tmp_path / "out")]
    argv += [a.replace("{file}", str(in_the_way)) for a in args]
    process = run_locust(*argv, timeout=60)
    assert process.returncode != 0
    assert "Traceback" not in process.stderr + process.stdout
    errors = [line for line in process.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and message in errors[0], process.stderr[-2000:]
    assert not (tmp_path / "out" / SUMMARY_FILE).exists()


def test_results_dir_that_becomes_unwritable_fails_with_one_line_and_exit_2(backend: BackendProcess, tmp_path: Path):
    out = tmp_path / "out"
    log = tmp_path / "locust.log"
    process = popen_locust(
        "--headless",
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "60s",
        "--host",
        backend.url,
        "--transport",
        "both",
        "--chunks",
        "20",
        "--stream-seconds",
        "0.2",
        "--results-dir",
        str(out),
        "--only-summary",
        log=log,
    )
    try:
        wait_for_spawning(log)
        wait_until(lambda: list(out.glob(".partial-*/events/*.parquet")), 30, "the first events on disk")
        shutil.rmtree(out)  # the run's staged parts with it
        out.write_text("someone put a file here")  # the write at the end must fail
        process.send_signal(signal.SIGTERM)
        output = finish(process, timeout=60, log=log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-6000:]
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "could not write results to" in errors[0], errors
    assert "Error: " in errors[0], errors  # and why: the operating system's error, in one line


def _corrupt(good: Path, target: Path, how: str) -> Path:
    copy_raw(good, target)
    part = event_parts(target)[0]
    if how == "truncated streams.parquet":
        (target / STREAMS_FILE).write_bytes((good / STREAMS_FILE).read_bytes()[:200])
    elif how == "empty events part":
        part.write_bytes(b"")
    elif how == "run.json not JSON":
        (target / RUN_FILE).write_text('{"id": "half-writ')
    elif how == "run.json not an object":
        (target / RUN_FILE).write_text("[1, 2]")
    elif how == "events missing":
        part.unlink()
        part.parent.rmdir()
    elif how == "streams.parquet without its columns":
        pd.DataFrame({"x": [1, 2]}).to_parquet(target / STREAMS_FILE)
    elif how == "events of streams that are not there":
        frame = pd.read_parquet(good / STREAMS_FILE).iloc[:1]
        frame.to_parquet(target / STREAMS_FILE)
    elif how == "a file instead of a directory":
        shutil.rmtree(target)
        target.write_text("not a results directory")
    return target


@pytest.fixture(scope="module")
def good_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("faults") / "good"
    write_synthetic_run(directory, SyntheticSpec(streams=4, chunks=(60, 80), seed=5))
    return directory


CORRUPTIONS = [
    "truncated streams.parquet",
    "empty events part",
    "run.json not JSON",
    "run.json not an object",
    "events missing",
    "streams.parquet without its columns",
    "events of streams that are not there",
    "a file instead of a directory",
]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupt_or_partial_results_fed_to_report_and_compare_are_one_line_and_exit_2(
    how: str, good_results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    bad = _corrupt(good_results, tmp_path / "bad", how)
    for argv in (
        ["report", str(bad), "--no-charts"],
        ["compare", str(good_results), str(bad)],
        ["compare", str(bad), str(good_results)],
    ):
        code = analysis_cli.main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and err.startswith("analysis: "), err
        assert "unexpected error" not in err, err  # classified, not a caught crash
        assert str(bad) in err


def test_the_analysis_command_itself_prints_no_traceback(good_results: Path, tmp_path: Path):
    bad = _corrupt(good_results, tmp_path / "bad", "truncated streams.parquet")
    process = subprocess.run(
        [sys.executable, "-m", "analysis", "compare", str(good_results), str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2 and "Traceback" not in process.stderr
    assert process.stderr.count("\n") == 1 and "streams.parquet" in process.stderr


# =========================================================================== secrets


def test_redaction_catches_raw_json_and_html_escaped_forms_of_a_secret():
    secret = "tok<&>'x\"9"
    as_json = json.dumps(secret)
    as_html = as_json
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("'", "\\u0027")):
        as_html = as_html.replace(char, escape)  # what a page's |tojson writes
    scrubbed = redact(f"raw {secret} | json {as_json} | html {as_html}", [secret, "ab"])
    assert "tok" not in scrubbed and scrubbed.count(REDACTED) == 3
    assert redact("ab cd", ["ab"]) == "ab cd"  # too short to be a secret: left alone


def every_output(run_dir: Path, *texts: str) -> str:
    """Everything a run left behind, as text (binary files decoded leniently)."""
    parts = list(texts)
    for path in sorted(run_dir.rglob("*")):
        if path.is_file():
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


@pytest.mark.parametrize("flag, secret", [("--auth-token", TOKEN), ("--fingerprint-id", FINGERPRINT)])
def test_secrets_never_reach_results_reports_logs_or_csv(flag: str, secret: str, tmp_path: Path):
    """The bad server echoes the credentials in every 401 and refuses Socket.io with the token."""
    out = tmp_path / "out"
    with BadServer() as bad:
        process = run_locust(
            "--headless",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "2s",
            "--host",
            bad.url,
            "--transport",
            "both",
            flag,
            f"echo-{secret}",
            "--results-dir",
            str(out),
            "--csv",
            str(out / "locust"),
            "--html",
            str(out / "report.html"),
            "--loglevel",
            "DEBUG",
            timeout=90,
        )
        sent = [
            r.headers.get("authorization", "") + r.headers.get("x-fingerprint-id", "") for r in bad.product_requests
        ]
    assert any(secret in header for header in sent), "the credential was not even sent"
    streams = pd.read_parquet(out / STREAMS_FILE)
    assert (streams["error"] == "http_status").any()
    assert streams["error_detail"].str.contains("[redacted]", regex=False).any()  # the echo, scrubbed
    report = subprocess.run(
        [sys.executable, "-m", "analysis", "report", str(out)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    assert secret not in every_output(out, process.stdout, process.stderr, report.stdout, report.stderr)


def test_web_ui_never_shows_the_secrets_but_runs_still_use_them(tmp_path: Path):
    port = free_port()
    out = tmp_path / "out"
    with BadServer() as bad:
        process = popen_locust(
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(port),
            "--host",
            bad.url,
            "--transport",
            "ndjson",
            "--auth-token",
            TOKEN,
            "--fingerprint-id",
            FINGERPRINT,
            "--results-dir",
            str(out),
        )
        pages: list[str] = []
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as web:
                wait_until(lambda: _reachable(web), 30, "the web UI")
                index = web.get("/").text
                pages.append(index)
                # the Start button posts the form as the page filled it: the masked field's placeholder
                form = json.loads(index.split("window.templateArgs = ", 1)[1].split("\n", 1)[0])
                extra = {
                    k: str(v["default_value"])
                    for k, v in form["extra_options"].items()
                    if isinstance(v["default_value"], str)
                }
                assert extra["auth_token"] == extra["fingerprint_id"] == "[redacted]"
                started = web.post("/swarm", data={"user_count": "1", "spawn_rate": "1", "host": bad.url, **extra})
                assert started.json()["success"], started.text
                wait_until(lambda: len(bad.requests) >= 2, 20, "requests at the bad server")
                for path in (
                    "/",
                    "/stats/requests",
                    "/streams/live.json",
                    "/streams/json",
                    "/streams/csv",
                    "/stats/report",
                ):
                    pages.append(web.get(path).text)
                web.post("/stop")
                wait_until(lambda: (out / SUMMARY_FILE).exists(), 20, "results after Stop")
        finally:
            process.send_signal(signal.SIGTERM)
            output = finish(process, timeout=30)
        authorizations = {r.headers.get("authorization") for r in bad.product_requests}
    assert authorizations == {f"Bearer {TOKEN}"}  # the placeholder meant "the command line's token"
    everything = every_output(out, output, *pages)
    assert TOKEN not in everything and FINGERPRINT not in everything
