"""Running the harness's Locust users as a subprocess, the way people and CI run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from fake_backend.process import BackendProcess
from stream_harness.allocator import locust_env
from stream_harness.paths import LOCUSTFILE
from tests.support import REPO
from tests.support.loopback import free_port

__all__ = [
    "LOCUSTFILE",
    "LocustRun",
    "finish",
    "finished_streams",
    "free_port",
    "locust_command",
    "popen_locust",
    "run_headless",
    "start_workers",
    "stats_row",
    "stop_all",
    "wait_for_output",
]


@dataclass
class LocustRun:
    returncode: int
    output: str
    results: Path

    def file(self, name: str) -> Path:
        """A file of the result set; a run that did not write it fails with the end of its output."""
        path = self.results / name
        if not path.exists():
            pytest.fail(f"the run (exit {self.returncode}) wrote no {name}; its output ends:\n{self.output[-3000:]}")
        return path

    @property
    def streams(self) -> pd.DataFrame:
        """streams.parquet with plain-object text columns: a missing error is
        None, so ``== "x"`` is False for it (pandas' NA would be skipped by .all())."""
        frame = pd.read_parquet(self.file("streams.parquet"))
        for name in frame.columns:
            if isinstance(frame[name].dtype, pd.StringDtype):
                frame[name] = frame[name].astype(object).where(frame[name].notna(), None)
        return frame

    @property
    def run(self) -> dict:
        return json.loads(self.file("run.json").read_text())

    @property
    def summary(self) -> dict:
        return json.loads(self.file("summary.json").read_text())

    def stats_csv(self) -> pd.DataFrame:
        return pd.read_csv(self.file("locust_stats.csv"), keep_default_na=False)


def locust_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]


def popen_locust(*args: str, log: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Locust in a subprocess, on the allocator the harness's commands give it; its output is piped,
    or goes to ``log`` to be watched while it runs.  ``env`` adds to (or overrides) this process's environment."""
    env = locust_env({**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    out = subprocess.PIPE if log is None else log.open("w")
    return subprocess.Popen(locust_command(*args), cwd=REPO, env=env, text=True, stdout=out, stderr=subprocess.STDOUT)


def run_locust(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Locust to its end, on the allocator the harness's commands give it; output captured."""
    return subprocess.run(
        locust_command(*args), cwd=REPO, env=locust_env(), capture_output=True, text=True, timeout=timeout
    )


def finish(process: subprocess.Popen[str], timeout: float = 90, log: Path | None = None) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        output = log.read_text() if log else output
        pytest.fail(f"locust did not exit within {timeout} s:\n{output[-3000:]}")
    return log.read_text() if log else output


def wait_for_output(log: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


#: Locust's log line once it has spawned every user.  A master whose workers
#: report late (a busy machine) logs the second form instead.
SPAWNED_LINES = ("All users spawned", "Spawning is complete and report waittime is expired")


def wait_for_spawning(log: Path, timeout: float = 30) -> None:
    """Wait until Locust logged that it spawned its users."""
    deadline = time.monotonic() + timeout
    while not any(line in log.read_text() for line in SPAWNED_LINES):
        assert time.monotonic() < deadline, f"no {SPAWNED_LINES[0]!r} in:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def run_headless(backend: BackendProcess, results: Path, *args: str, users: int = 2, run_time: str = "3s") -> LocustRun:
    process = popen_locust(
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        run_time,
        "--host",
        backend.url,
        "--results-dir",
        str(results),
        "--csv",
        str(results / "locust"),
        "--only-summary",
        *args,
    )
    output = finish(process)
    return LocustRun(process.returncode, output, results)


def finished_streams(streams: pd.DataFrame, users: int) -> pd.DataFrame:
    """The streams that were not cut by the test's stop.

    Even with --stop-timeout a user can be killed a moment after starting its
    next stream (Locust kills a waiting user; the kill can land just after its
    wait ended), so at most one stream per user may be "stopped".
    """
    stopped = streams["error"] == "stopped"
    assert stopped.sum() <= users, streams[stopped]
    return streams[~stopped]


def stats_row(stats: pd.DataFrame, request_type: str, name: str) -> pd.Series:
    rows = stats[(stats["Type"] == request_type) & (stats["Name"] == name)]
    assert len(rows) == 1, f"no single {request_type} {name!r} row in:\n{stats[['Type', 'Name']]}"
    return rows.iloc[0]


def master_flags(port: int, workers: int) -> tuple[str, ...]:
    """A master on ``port`` of the loopback that waits for ``workers`` workers."""
    return ("--master", *_bind_loopback(port), "--expect-workers", str(workers))


def processes_flags(port: int, processes: int) -> tuple[str, ...]:
    """``--processes``, its master on ``port`` of the loopback: not Locust's 5557, other tests run masters."""
    return ("--processes", str(processes), *_bind_loopback(port), "--master-port", str(port))


def _bind_loopback(port: int) -> tuple[str, ...]:
    return ("--master-bind-host", "127.0.0.1", "--master-bind-port", str(port))


def start_workers(port: int, count: int) -> list[subprocess.Popen[str]]:
    return [popen_locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port)) for _ in range(count)]


def stop_all(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        finish(process, timeout=30)
