"""The Locust load users, run the way people and the nightly job run them.

Every test starts Locust as a subprocess (``locust -f loadtests/locustfile.py``)
against the fake backend, also a subprocess, on loopback port 0.  Runs are a
few seconds of short streams; the assertions are about counting and
classification, and the only timing check (a 250 ms first-chunk delay) has a
generous window.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from fake_backend.process import BackendProcess
from tests.support.locust_runs import (
    LocustRun,
    finish,
    finished_streams,
    free_port,
    master_flags,
    popen_locust,
    processes_flags,
    run_headless,
    run_locust,
    start_workers,
    stats_row,
    stop_all,
    wait_for_spawning,
)
from tests.support.waiting import started_counts, streams_started, wait_until

pytestmark = pytest.mark.timeout(180)


# --------------------------------------------------------------------------- a normal run


@pytest.fixture(scope="module")
def both_run(backend: BackendProcess, tmp_path_factory: pytest.TempPathFactory) -> LocustRun:
    """-u 2 --transport both; a stop timeout lets the last streams finish."""
    results = tmp_path_factory.mktemp("both")
    return run_headless(
        backend, results, "--transport", "both", "--chunks", "40", "--stream-seconds", "0.3", "--stop-timeout", "5"
    )


def test_headless_run_writes_summary_and_streams(both_run: LocustRun):
    assert (both_run.results / "summary.json").is_file(), both_run.output[-3000:]
    assert (both_run.results / "streams.parquet").is_file()
    summary = both_run.summary
    assert summary["schema"] == 1
    assert set(summary["transports"]) == {"ndjson", "socketio"}
    assert summary["run"]["users"] == 2 and summary["run"]["workers"] == 0
    assert set(summary["run"]["harness"]) >= {"saturated", "cpu_percent_max", "loop_lag_ms_p99"}
    # the fake backend has a clock: the process that ran the users measured its offset to it
    clock = both_run.run["clock"]["local"]
    assert clock["rounds"] >= 1 and abs(clock["offset_ms"]) <= clock["uncertainty_ms"] + 0.5
    assert both_run.run["allocator"] == {"local": "mimalloc"}  # started as the harness's commands start Locust


def test_every_chunk_the_backend_sent_is_counted(both_run: LocustRun):
    streams = finished_streams(both_run.streams, users=2)
    assert len(streams) >= 4
    assert (streams["status"] == "completed").all(), streams[["stream_id", "status", "error"]]
    assert (streams["expected_chunks"] == 40).all()
    assert (streams["n_chunks"] == streams["expected_chunks"]).all()
    assert streams["has_emit_times"].all()  # NDJSON ts keys / Socket.io emit-times endpoint
    for name in ("ndjson", "socketio"):
        counts = both_run.summary["transports"][name]
        mine = streams[streams["transport"] == name]
        assert counts["streams"]["completed"] == len(mine)
        stopped = both_run.streams.query("transport == @name and error == 'stopped'")
        assert counts["events"]["chunks"] == 40 * len(mine) + stopped["n_chunks"].sum()


def test_transport_both_with_two_users_runs_one_user_of_each_class(both_run: LocustRun):
    assert '"NdjsonStreamUser": 1' in both_run.output and '"SocketIOStreamUser": 1' in both_run.output
    assert '"NdjsonBrowserUser": 0' in both_run.output  # no --browser-users: none of those
    users = both_run.streams.groupby("transport")["user"].nunique()
    assert users.to_dict() == {"ndjson": 1, "socketio": 1}


def test_locust_stats_have_rows_per_transport_and_aggregated_counts_streams(both_run: LocustRun):
    stats = both_run.stats_csv()
    streams = both_run.streams
    for name in ("ndjson", "socketio"):
        mine = streams[streams["transport"] == name]
        assert stats_row(stats, name, "chat stream")["Request Count"] == len(mine)
        # the TTFC row counts the streams that got a first chunk
        assert stats_row(stats, name, "chat TTFC")["Request Count"] == (mine["n_chunks"] > 0).sum()
    aggregated = stats[stats["Name"] == "Aggregated"].iloc[0]
    assert aggregated["Request Count"] == len(streams)  # not doubled by the TTFC rows
    assert aggregated["Failure Count"] == (streams["status"] == "failed").sum()


def test_flags_reach_the_wire_and_run_json_has_no_secrets(backend: BackendProcess, tmp_path: Path):
    run = run_headless(
        backend,
        tmp_path,
        "--transport",
        "both",
        "--chunks",
        "5",
        "--stream-seconds",
        "0",
        "--auth-token",
        "jwt-SECRET-123",
        "--fingerprint-id",
        "fp-SECRET-456",
        "--accept-encoding",
        "identity",
        "--ndjson-backend-options",
        '{"gzip": true}',
        "--no-emit-times",
        run_time="2s",
    )
    text = (tmp_path / "run.json").read_text() + (tmp_path / "summary.json").read_text()
    assert "SECRET" not in text
    assert run.run["options"]["auth"] == "token" and run.run["options"]["emit_times"] is False
    streams = finished_streams(run.streams, users=2)
    ndjson = streams[streams["transport"] == "ndjson"]
    sio = streams[streams["transport"] == "socketio"]
    # the backend gzips only for clients that accept it: 'identity' means plain bytes
    assert len(ndjson) and (ndjson["content_encoding"] == "").all() and (ndjson["n_chunks"] == 5).all()
    # NDJSON lines carry their own emit times; Socket.io's are not fetched with --no-emit-times
    assert ndjson["has_emit_times"].all()
    assert len(sio) and not sio["has_emit_times"].any()


# --------------------------------------------------------------------------- timing


def test_ttfc_of_a_250_ms_first_chunk_delay_is_measured_as_250_ms(backend: BackendProcess, tmp_path: Path):
    run = run_headless(
        backend,
        tmp_path,
        "--transport",
        "both",
        "--chunks",
        "5",
        "--stream-seconds",
        "0.05",
        "--stop-timeout",
        "5",
        "--backend-options",
        '{"first_chunk_delay_ms": 250}',
    )
    streams = finished_streams(run.streams, users=2)
    assert (streams["status"] == "completed").all()
    for name, group in streams.groupby("transport"):
        p50 = group["ttfc_ms"].median()
        assert 240 <= p50 <= 290, f"{name} TTFC p50 {p50:.1f} ms"
        assert (group["ttfc_ms"] >= 249).all()  # never earlier than the backend's delay
    stats = run.stats_csv()
    for name in ("ndjson", "socketio"):
        assert 240 <= stats_row(stats, name, "chat TTFC")["Median Response Time"] <= 290


# --------------------------------------------------------------------------- faults


def test_failures_are_classified_and_the_socketio_user_reconnects(backend: BackendProcess, tmp_path: Path):
    run = run_headless(
        backend,
        tmp_path,
        "--transport",
        "both",
        "--chunks",
        "20",
        "--stream-seconds",
        "0.1",
        "--stop-timeout",
        "5",
        "--ndjson-backend-options",
        '{"error_at": 3, "gzip": true}',
        "--socketio-backend-options",
        '{"disconnect_at": 5}',
    )
    streams = finished_streams(run.streams, users=2)
    ndjson = streams[streams["transport"] == "ndjson"]
    sio = streams[streams["transport"] == "socketio"]
    assert (ndjson["error"] == "stream_error_event").all() and (ndjson["n_chunks"] == 3).all()
    # a browser's Accept-Encoding by default, so the compressing layer is met and recorded
    assert (ndjson["content_encoding"] == "gzip").all()
    assert (sio["error"] == "disconnect").all() and (sio["n_chunks"] == 5).all()
    # the server drops the socket every task: each new task needed a reconnect
    assert len(sio) >= 3 and sio["user"].nunique() == 1
    stats = run.stats_csv()
    for name in ("ndjson", "socketio"):
        every = run.streams[run.streams["transport"] == name]
        assert stats_row(stats, name, "chat stream")["Failure Count"] == len(every)
    failures = pd.read_csv(tmp_path / "locust_failures.csv")
    reasons = set(failures["Error"])
    assert any("error event in stream" in r for r in reasons), reasons
    assert any("connection dropped before end" in r for r in reasons), reasons
    assert run.summary["transports"]["socketio"]["streams"]["errors"]["disconnect"] == len(sio)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--transport", "foo"), "--transport"),
        (("--chunks", "many"), "--chunks must be an integer"),
        (("--backend-options", '{"bufer_ms": 1}'), "unknown harness key 'bufer_ms'"),
        (("--results-dir", "/dev/null/results"), "--results-dir /dev/null/results: cannot create it"),
    ],
)
def test_bad_flags_give_one_error_line_and_a_nonzero_exit(args: tuple[str, ...], message: str, tmp_path: Path):
    process = run_locust(
        "--headless",
        "-u",
        "1",
        "-t",
        "1s",
        "--host",
        "http://127.0.0.1:9",
        "--results-dir",
        str(tmp_path / "out"),
        *args,
        timeout=60,
    )
    assert process.returncode != 0
    errors = [line for line in process.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and message in errors[0], process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


# --------------------------------------------------------------------------- interrupted runs


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "run-time"])
def test_interrupted_run_still_writes_results_with_unfinished_streams_stopped(
    how: str, backend: BackendProcess, tmp_path: Path
):
    args = [
        "--headless",
        "-u",
        "2",
        "-r",
        "2",
        "--host",
        backend.url,
        "--transport",
        "both",
        "--chunks",
        "200",
        "--stream-seconds",
        "20",
        "--results-dir",
        str(tmp_path / "out"),
        "--only-summary",
    ]
    log = tmp_path / "locust.log"
    if how == "run-time":
        process = popen_locust(*args, "-t", "3s", log=log)
    else:
        before = started_counts(backend.url)
        process = popen_locust(*args, "-t", "60s", log=log)
        wait_for_spawning(log)
        wait_until(lambda: streams_started(backend.url, 1, before), 30, "a stream of each transport under way")
        time.sleep(1.0)  # the scenario: interrupted one second into its 20 s streams
        process.send_signal(getattr(signal, how))
    output = finish(process, timeout=60, log=log)
    run = LocustRun(process.returncode, output, tmp_path / "out")
    assert (run.results / "summary.json").is_file(), output[-3000:]
    streams = run.streams
    assert set(streams["transport"]) == {"ndjson", "socketio"}
    assert (streams["status"] == "failed").all() and (streams["error"] == "stopped").all()
    # what they measured is kept: chunks arrived (10/s), but not all 200
    assert ((streams["n_chunks"] > 0) & (streams["n_chunks"] < 200)).all(), streams
    assert (streams["duration_ms"] > 500).all()
    for name in ("ndjson", "socketio"):
        assert run.summary["transports"][name]["streams"]["errors"] == {"stopped": 1}
    assert run.run["stopped_early"] is (how != "run-time")


# --------------------------------------------------------------------------- distributed


def test_master_and_two_workers_merge_all_streams_into_one_result(backend: BackendProcess, tmp_path: Path):
    port = free_port()
    workers = start_workers(port, 2)
    try:
        master = popen_locust(
            "--headless",
            *master_flags(port, 2),
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "4s",
            "--host",
            backend.url,
            "--transport",
            "both",
            "--chunks",
            "30",
            "--stream-seconds",
            "0.3",
            "--results-dir",
            str(tmp_path),
            "--csv",
            str(tmp_path / "locust"),
            "--only-summary",
        )
        output = finish(master)
    finally:
        stop_all(workers)
    run = LocustRun(master.returncode, output, tmp_path)
    assert (tmp_path / "summary.json").is_file(), output[-3000:]
    assert (tmp_path / "locust_stats.csv").is_file()
    info = run.run
    assert info["workers"] == 2 and info["worker_problems"] == []
    assert info["allocator"] == dict.fromkeys(info["worker_ids"], "mimalloc")
    streams = run.streams
    assert set(streams["worker"]) == set(info["worker_ids"]) and len(info["worker_ids"]) == 2
    assert streams["stream_id"].is_unique
    # the master's Locust stats (shipped by Locust) and our records (shipped by us) agree
    stats = run.stats_csv()
    aggregated = stats.query("Name == 'Aggregated'").iloc[0]
    assert aggregated["Request Count"] == len(streams)
    for name in ("ndjson", "socketio"):  # the TTFC rows travel from the workers too
        got_chunk = streams[(streams["transport"] == name) & (streams["n_chunks"] > 0)]
        assert stats_row(stats, name, "chat TTFC")["Request Count"] == len(got_chunk)
    assert set(streams["transport"]) == {"ndjson", "socketio"}
    done = streams[streams["status"] == "completed"]
    assert len(done) >= 8 and (done["n_chunks"] == 30).all()
    assert set(streams.loc[streams["status"] != "completed", "error"]) <= {"stopped"}


def test_processes_2_writes_one_result_set_with_streams_of_both_worker_processes(
    backend: BackendProcess, tmp_path: Path
):
    process = popen_locust(
        "--headless",
        *processes_flags(free_port(), 2),
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        "4s",
        "--host",
        backend.url,
        "--transport",
        "both",
        "--chunks",
        "30",
        "--stream-seconds",
        "0.3",
        "--stop-timeout",
        "3",
        "--results-dir",
        str(tmp_path),
        "--only-summary",
    )
    output = finish(process)
    run = LocustRun(process.returncode, output, tmp_path)
    assert (tmp_path / "summary.json").is_file(), output[-3000:]
    info = run.run
    assert info["workers"] == 2 and info["worker_problems"] == [], info
    assert info["allocator"] == dict.fromkeys(info["worker_ids"], "mimalloc")  # forked: they keep it
    streams = run.streams
    assert set(streams["worker"]) == set(info["worker_ids"]) and len(info["worker_ids"]) == 2
    assert streams["stream_id"].is_unique and list(streams["stream_key"]) == list(range(len(streams)))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_a_worker_that_dies_is_named_and_its_streams_so_far_are_kept(backend: BackendProcess, tmp_path: Path):
    port = free_port()
    workers = start_workers(port, 2)
    log = tmp_path / "master.log"
    before = started_counts(backend.url).get("ndjson", 0)
    try:
        master = popen_locust(
            "--headless",
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            "2",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "10s",
            "--host",
            backend.url,
            "--transport",
            "ndjson",
            "--chunks",
            "10",
            "--stream-seconds",
            "0.2",
            "--results-dir",
            str(tmp_path),
            "--only-summary",
            log=log,
        )
        wait_for_spawning(log)
        # 2 users of 0.2 s streams: 20 streams take 2 s, the workers ship theirs every 0.5 s
        wait_until(lambda: started_counts(backend.url).get("ndjson", 0) - before >= 20, 30, "20 streams under way")
        workers[0].kill()
        output = finish(master, log=log)
    finally:
        stop_all(workers)
    run = LocustRun(master.returncode, output, tmp_path)
    assert (tmp_path / "summary.json").is_file(), output[-3000:]
    problems = run.run["worker_problems"]
    assert len(problems) == 1, problems
    dead = problems[0]["worker"]
    assert "missing" in problems[0]["problem"]
    streams = run.streams
    kept = streams[streams["worker"] == dead]
    assert problems[0]["streams_received"] == len(kept) > 0
    alive = streams[streams["worker"] != dead]
    assert alive["started_at"].max() > kept["started_at"].max() + 2  # the other worker went on


# --------------------------------------------------------------------------- web UI


def test_run_started_from_the_web_ui_records_streams_and_stats_rows(backend: BackendProcess, tmp_path: Path):
    port = free_port()
    process = popen_locust("--web-host", "127.0.0.1", "--web-port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as web:
            deadline = time.monotonic() + 30
            while True:
                try:
                    web.get("/")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "web UI did not come up"
                    time.sleep(0.1)
            # what the Start button posts, custom parameters included as form fields
            started = web.post(
                "/swarm",
                data={
                    "user_count": "2",
                    "spawn_rate": "2",
                    "host": backend.url,
                    "transport": "both",
                    "endpoint": "chat",
                    "chunks": "25",
                    "stream_seconds": "0.2",
                    "results_dir": str(tmp_path),
                    "backend_options": '{"first_chunk_delay_ms": 100}',
                },
            )
            assert started.json()["success"], started.text
            rows: dict[tuple[str, str], int] = {}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                stats = web.get("/stats/requests").json()["stats"]
                rows = {(e["method"], e["name"]): e["num_requests"] for e in stats}
                if rows.get(("ndjson", "chat stream"), 0) >= 2 and rows.get(("socketio", "chat stream"), 0) >= 2:
                    break
                time.sleep(0.3)
            assert rows.get(("ndjson", "chat TTFC"), 0) >= 2 and rows.get(("socketio", "chat TTFC"), 0) >= 2, rows
            assert web.post("/stop").json()["success"]
            deadline = time.monotonic() + 20
            while not (tmp_path / "summary.json").exists():
                assert time.monotonic() < deadline, "no results after /stop"
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        finish(process, timeout=30)
    run = LocustRun(process.returncode, "", tmp_path)
    streams = run.streams
    assert set(streams["transport"]) == {"ndjson", "socketio"}
    done = streams[streams["status"] == "completed"]
    assert len(done) >= 4 and (done["n_chunks"] == 25).all()
    assert (done["ttfc_ms"] >= 80).all()  # the web form's backend options reached the backend (else ~2 ms)
    assert run.run["options"]["chunks"] == 25
