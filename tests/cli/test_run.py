"""`make bench`, the README's main command, end to end on a short profile.

It must start the fake backend itself, drive both transports, write a full
results directory, point `latest` at it, print the verdict table and leave no
process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.support import REPO

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    root = tmp_path_factory.mktemp("results")
    marker = f"make-bench-test-{uuid.uuid4().hex}"  # inherited by everything make starts
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "bench",
            "BENCH_SECONDS=8",
            "BENCH_USERS=4",
            f"BENCH_ARGS=--chunks 300 --stream-seconds 2 --results-root {root}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
        env={**os.environ, "STREAM_HARNESS_TEST_MARK": marker},
    )
    leftovers = [
        p
        for p in psutil.process_iter(["pid", "environ"])
        if (p.info["environ"] or {}).get("STREAM_HARNESS_TEST_MARK") == marker
    ]
    assert not leftovers, f"make bench left processes running: {leftovers}"
    return done, root


def test_make_bench_succeeds_and_prints_a_verdict_per_transport(bench_run) -> None:
    done, _ = bench_run
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout[done.stdout.index("transport  ") :]
    for transport in ("ndjson", "socketio"):
        row = next(line for line in table.splitlines() if line.startswith(transport))
        assert any(v in row for v in ("clean", "buffered", "inconclusive")), row


def test_make_bench_writes_a_complete_results_directory(bench_run) -> None:
    _, root = bench_run
    latest = root / "latest"
    assert latest.is_symlink()
    run_dir = latest.resolve()
    for name in (
        "run.json",
        "streams.parquet",
        "events",
        "summary.json",
        "report.md",
        "benchmark.json",
        "locust_stats.csv",
        "locust.html",
    ):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["schema"] == 1
    assert set(summary["transports"]) == {"ndjson", "socketio"}
    streams = pd.read_parquet(run_dir / "streams.parquet")
    completed = streams[streams["status"] == "completed"]
    assert len(completed) >= 4
    assert (completed["n_chunks"] == 300).all()
    assert list(run_dir.glob("*.png")), "report charts missing"
