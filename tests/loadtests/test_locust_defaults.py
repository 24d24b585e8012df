"""``locust`` run in the repository root, without ``-f``, runs the harness's users.

pyproject.toml's ``[tool.locust]`` names the locustfile; Locust reads it
from the working directory like a ``locust.conf``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from fake_backend.process import BackendProcess
from tests.support import REPO
from tests.support.locust_runs import LocustRun

pytestmark = pytest.mark.timeout(120)


def locust_script() -> str:
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("locust", path=directory)
        if found:
            return found
    pytest.fail("the locust console script is not installed: run `make install`")


def test_locust_headless_without_f_runs_both_transports(backend: BackendProcess, tmp_path: Path) -> None:
    results = tmp_path / "run"
    command = [
        locust_script(),
        "--headless",
        "-u",
        "2",
        "-r",
        "2",
        "-t",
        "5s",
        "--host",
        backend.url,
        "--chunks",
        "40",
        "--stream-seconds",
        "0.3",
        "--results-dir",
        str(results),
        "--csv",
        str(results / "locust"),
        "--only-summary",
    ]
    assert "-f" not in command and "--locustfile" not in command
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LOCUST_LOCUSTFILE", None)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=90)
    run = LocustRun(done.returncode, done.stdout + done.stderr, results)
    assert (results / "streams.parquet").is_file(), run.output[-3000:]
    streams = run.streams
    assert set(streams["transport"]) == {"ndjson", "socketio"}
    assert (streams["status"] == "completed").sum() >= 2
    names = set(zip(run.stats_csv()["Type"], run.stats_csv()["Name"]))
    assert {("ndjson", "chat stream"), ("socketio", "chat stream")} <= names
