"""Hostile backends (issue 15) on whole Locust runs, the way people run the harness.

Locust is a subprocess pointed at ``tests/support/badserver.py`` (in this
process, on loopback): with ``--host <bad>/fault/<name>`` every stream of the
run gets that misbehaviour.  Checked here what only a whole run shows: the
run ends on time and says it was saturated, the load process's peak memory
under decompression bombs, and the requests a real-looking backend receives.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from stream_harness.contract.protocol import EMIT_TIMES_PATH, STATS_PATH
from tests.support.badserver import BadServer
from tests.support.locust_runs import LocustRun, finished_streams, popen_locust

pytestmark = pytest.mark.timeout(240)

#: The peak RSS of the load process under a bomb may exceed a normal run's by at most this.
RSS_SLACK_MB = 200.0


@pytest.fixture(scope="module")
def bad() -> Iterator[BadServer]:
    with BadServer() as server:
        yield server


def run_watched(url: str, results: Path, *args: str, users: int = 2, run_time: str = "5s") -> tuple[LocustRun, float]:
    """A headless run whose peak RSS (MB) is sampled with psutil every 20 ms while it runs."""
    process = popen_locust(
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        run_time,
        "--host",
        url,
        "--results-dir",
        str(results),
        "--only-summary",
        *args,
    )
    peak = 0
    watched = psutil.Process(process.pid)
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)
        output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"locust did not exit in time:\n{output[-3000:]}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return LocustRun(process.returncode, output, results), peak / 2**20


@pytest.mark.exclusive  # saturated means this process used a whole core: other tests must not share the CPU
def test_a_run_against_a_fast_endless_body_ends_on_time_and_says_it_was_saturated(bad: BadServer, tmp_path: Path):
    run, _ = run_watched(
        bad.url + "/fault/fast-endless",
        tmp_path / "out",
        "--transport",
        "ndjson",
        "--stream-timeout",
        "1.5",
        run_time="6s",
    )
    assert "Traceback" not in run.output, run.output[-3000:]  # (exit code 1: every stream failed)
    summary = run.summary
    assert summary["run"]["duration_s"] < 6 + 1.5, summary["run"]  # Locust's own run timer was not starved
    streams = finished_streams(run.streams, users=2)
    assert len(streams) >= 4 and (streams["error"] == "timeout").all()
    assert streams["duration_ms"].between(1500, 2000).all(), streams["duration_ms"].describe()
    harness = summary["run"]["harness"]
    assert harness["saturated"] is True and harness["reasons"], harness  # reading as fast as it can: CPU-bound


@pytest.mark.exclusive  # two 64 MiB decodes per run: on a shared CPU the run can end after one
def test_decompression_bombs_keep_the_load_process_within_200_mb_of_a_normal_run(bad: BadServer, tmp_path: Path):
    normal, normal_peak = run_watched(bad.url + "/fault/gzip-lines", tmp_path / "normal", "--transport", "ndjson")
    assert (finished_streams(normal.streams, users=2)["status"] == "completed").all()
    for bomb in ("brotli-bomb", "gzip-bomb"):
        run, peak = run_watched(bad.url + f"/fault/{bomb}", tmp_path / bomb, "--transport", "ndjson")
        assert "Traceback" not in run.output, run.output[-3000:]
        streams = finished_streams(run.streams, users=2)
        assert len(streams) >= 2 and (streams["error"] == "malformed").all(), streams["error_detail"]
        assert (streams["error_detail"] == "decompressed size exceeds 64 MiB per stream").all()
        assert peak <= normal_peak + RSS_SLACK_MB, f"{bomb}: peak RSS {peak:.0f} MB, a normal run {normal_peak:.0f} MB"


def test_a_backend_that_is_not_the_fake_one_gets_no_emit_time_requests(bad: BadServer, tmp_path: Path):
    before = {path: bad.count(path) for path in (STATS_PATH, EMIT_TIMES_PATH.split("{")[0])}
    run, _ = run_watched(bad.url, tmp_path / "out", "--transport", "socketio", run_time="4s")
    assert "Traceback" not in run.output, run.output[-3000:]
    completed = (run.streams["status"] == "completed").sum()
    assert completed >= 10, run.streams[["status", "error", "error_detail"]]
    assert bad.count(EMIT_TIMES_PATH.split("{")[0]) == before[EMIT_TIMES_PATH.split("{")[0]]  # none at all
    assert bad.count(STATS_PATH) - before[STATS_PATH] == 1  # one question per load process
    assert run.run["options"]["emit_times"] is True
