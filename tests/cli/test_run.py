"""`make bench` (`stream-harness run`), the README's main command, end to end on a fresh clone.

A fresh clone (the tracked files of this working tree, nothing else: no
.venv, no results) must install exactly the locked versions with `make
install`, then `make bench` must start the fake backend itself, drive both
transports for 10 s, write a full results directory that records the
package versions and the commit, point `latest` at it, print the verdict
table and leave no process behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import psutil
import pytest

from stream_harness.provenance import MEASURING_PACKAGES
from tests.support import REPO
from tests.support.lockfile import pinned_versions

pytestmark = pytest.mark.timeout(480)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def clone_working_tree(target: Path) -> Path:
    """The files git would commit now (tracked and new, not ignored) in a new repository."""
    for name in git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0"):
        source = REPO / name
        if name and source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name, follow_symlinks=False)
    git(target, "init", "-q")
    git(target, "add", "-A")
    git(target, "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-q", "-m", "fresh clone")
    return target


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clone = clone_working_tree(tmp_path_factory.mktemp("clone"))
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(
        ["make", "--no-print-directory", "install"], cwd=clone, capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, f"make install on a fresh clone failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return clone


@pytest.fixture(scope="module")
def bench_run(fresh_clone: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    root = tmp_path_factory.mktemp("results")
    marker = f"make-bench-test-{uuid.uuid4().hex}"  # inherited by everything make starts
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "bench",
            "BENCH_SECONDS=10",
            "BENCH_USERS=4",
            f"BENCH_ARGS=--chunks 300 --stream-seconds 2 --results-root {root}",
        ],
        cwd=fresh_clone,
        capture_output=True,
        text=True,
        timeout=220,
        env={**env, "STREAM_HARNESS_TEST_MARK": marker},
    )
    leftovers = [
        p
        for p in psutil.process_iter(["pid", "environ"])
        if (p.info["environ"] or {}).get("STREAM_HARNESS_TEST_MARK") == marker
    ]
    assert not leftovers, f"make bench left processes running: {leftovers}"
    return done, root


def installed_versions(clone: Path) -> dict[str, str]:
    script = "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    out = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-c", script, *MEASURING_PACKAGES],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def test_make_install_on_a_fresh_clone_installs_the_locked_versions(fresh_clone: Path) -> None:
    locked = pinned_versions(fresh_clone / "requirements" / "test.txt")
    installed = installed_versions(fresh_clone)
    assert installed == {name: locked[name] for name in MEASURING_PACKAGES}
    check = subprocess.run(
        [str(fresh_clone / ".venv" / "bin" / "python"), "-m", "pip", "check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout


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


def test_run_json_records_the_measuring_packages_and_the_commit(fresh_clone: Path, bench_run) -> None:
    _, root = bench_run
    run = json.loads(((root / "latest").resolve() / "run.json").read_text())
    assert run["versions"] == installed_versions(fresh_clone)
    assert run["git"] == {"commit": git(fresh_clone, "rev-parse", "HEAD").strip(), "dirty": False}
