"""``stream-harness sweep`` and the capacity load shape against a backend with a known knee.

The fake backend's load knee (``knee_streams`` 3, ``knee_delay_ms`` 100) delays
a stream's first chunk by 100 ms per stream of its transport running beyond
3; under a TTFC p99 SLO of 350 ms the true capacity is 6 concurrent streams
(6: 300 ms and a few, 7: 400 ms).  The sweep must land within one step of it,
for both transports, from the command line and from the web UI's class picker.
Steps are short (3..6 s of 1 s streams), so the whole search takes about a
minute; a step at which the shared machine starved the load generator is
``saturated`` by design, and the answer then must say it is a lower bound.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from fake_backend.process import start_backend
from stream_harness.cli.ui import start_web_ui
from tests.support import REPO

pytestmark = pytest.mark.timeout(300)

KNEE = {"knee_streams": 3, "knee_delay_ms": 100}
SLO_TTFC_MS = 350
TRUE_CAPACITY = 6  # the most streams whose first chunk meets 350 ms: 100 ms x (6 - 3) + a few ms
#: Tolerance 0: the search ends on adjacent levels, so one step is one stream.
STEP = 1


def sweep(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_harness", "sweep", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_found_the_knee(result: dict) -> None:
    """Within one step of the true crossing, or an honest lower bound when the harness saturated."""
    held = result["max_streams_meeting_slo"]
    if result["saturated_at"] is not None and result["lower_bound"]:
        assert held <= TRUE_CAPACITY + STEP, result["summary"]
        return
    assert abs(held - TRUE_CAPACITY) <= STEP, result["summary"]
    assert not result["lower_bound"] and result["stop_reason"] == "converged"
    assert held < result["breaks_at"] <= held + STEP + 1


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("sweep")
    done = sweep(
        "--transport",
        "both",
        "--backend-options",
        json.dumps(KNEE),
        "--chunks",
        "20",
        "--stream-seconds",
        "1",
        "--slo",
        f"ttfc_p99_ms={SLO_TTFC_MS}",
        "--start",
        "4",
        "--tolerance",
        "0",
        "--step-seconds",
        "3",
        "--max-step-seconds",
        "6",
        "--out",
        str(out),
    )
    return done, out


@pytest.mark.parametrize("transport", ["ndjson", "socketio"])
def test_the_sweep_finds_the_knee_within_one_step(swept, transport: str) -> None:
    done, out = swept
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    capacity = json.loads((out / "capacity.json").read_text())
    result = capacity["transports"][transport]
    assert_found_the_knee(result)
    steps = result["steps"]
    assert [s["streams"] for s in steps[:2]] == [4, 8]  # doubling from --start ...
    assert len({s["streams"] for s in steps}) == len(steps)  # ... then bisection, never a level twice
    for step in steps:
        assert step["decision"] in ("holds", "breaks", "saturated")
        assert set(step["objectives"]) == {"ttfc", "gap", "failures", "buffering"}
        assert step["metrics"]["streams"] >= 1 and step["measured_s"] > 0
        low, high = step["objectives"]["ttfc"]["interval"]
        assert 0 <= low <= high <= 1
    breaking = [s for s in steps if s["decision"] == "breaks"]
    assert all(s["metrics"]["ttfc_p99_ms"] > SLO_TTFC_MS for s in breaking)
    assert breaking or result["lower_bound"], result["summary"]  # only a saturated search may end without a break
    assert any(line == f"{transport}: {result['summary']}" for line in done.stdout.splitlines())


def test_the_sweep_writes_capacity_json_a_chart_and_its_raw_data(swept) -> None:
    done, out = swept
    capacity = json.loads((out / "capacity.json").read_text())
    assert capacity["schema"] == 1 and capacity["results"] == "run"
    assert capacity["slo"] == {
        "ttfc_p99_ms": SLO_TTFC_MS,
        "gap_p99_ms": 250.0,
        "failure_rate": 0.01,
        "clean": True,
        "confidence": 0.95,
    }
    assert capacity["host"].startswith("http://127.0.0.1:")
    assert (out / "capacity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    streams = pd.read_parquet(out / "run" / "streams.parquet")
    assert set(streams["transport"]) == {"ndjson", "socketio"}
    assert (out / "run" / "summary.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--slo", "ttfc=5"), "stream-harness sweep: --slo: unknown key 'ttfc'"),
        (("--host", "ftp://example.com"), "stream-harness sweep: --host must be an http:// or https:// base URL"),
        (("--start", "8", "--max-streams", "4"), "stream-harness sweep: need 1 <= --start <= --max-streams"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    done = sweep(*args, "--out", str(tmp_path), timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr


def test_the_capacity_shape_is_picked_and_run_from_the_web_ui(tmp_path: Path) -> None:
    """``stream-harness ui --capacity-shape``: the start form offers the shape; starting it runs the search."""
    results = tmp_path / "results"
    with (
        start_backend() as backend,
        start_web_ui(backend.url, log_path=tmp_path / "locust.log", capacity_shape=True) as ui,
    ):
        page = httpx.get(ui.url, timeout=10).text
        assert "CapacitySearchShape" in page and "sweep_step_seconds" in page
        form = {
            "user_count": "1",
            "spawn_rate": "1",
            "host": backend.url,
            "shape_class": "CapacitySearchShape",
            "transport": "ndjson",
            "chunks": "20",
            "stream_seconds": "1",
            "backend_options": json.dumps(KNEE),
            "slo": f"ttfc_p99_ms={SLO_TTFC_MS}",
            "sweep_start": "4",
            "sweep_max_streams": "8",
            "sweep_tolerance": "0",
            "sweep_step_seconds": "3",
            "sweep_max_step_seconds": "6",
            "results_dir": str(results),
        }
        data = {**form, "user_classes": ["NdjsonStreamUser", "SocketIOStreamUser"]}
        answer = httpx.post(ui.url + "swarm", data=data, timeout=10).json()
        assert answer["success"] and "CapacitySearchShape" in answer["message"], answer
        deadline = time.monotonic() + 120
        while not (results / "capacity.json").is_file():
            assert time.monotonic() < deadline, ui.log_tail()
            time.sleep(0.5)
        capacity = json.loads((results / "capacity.json").read_text())
    assert list(capacity["transports"]) == ["ndjson"]
    assert_found_the_knee(capacity["transports"]["ndjson"])


def test_the_sweep_runs_against_any_backend_with_host(tmp_path: Path) -> None:
    """--host: no backend started, no harness fields sent; the backend's own settings decide (as a real one's do)."""
    server_side = ["--chunks", "20", "--duration-s", "1", "--knee-streams", "3", "--knee-delay-ms", "100"]
    with start_backend(*server_side) as backend:
        done = sweep(
            "--host",
            backend.url,
            "--transport",
            "socketio",
            "--slo",
            f"ttfc_p99_ms={SLO_TTFC_MS}",
            "--start",
            "4",
            "--max-streams",
            "8",
            "--tolerance",
            "0",
            "--step-seconds",
            "3",
            "--max-step-seconds",
            "6",
            "--out",
            str(tmp_path),
            "--",
            "--no-emit-times",
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "fake backend on" not in done.stdout
    capacity = json.loads((tmp_path / "capacity.json").read_text())
    assert capacity["host"] == backend.url and list(capacity["transports"]) == ["socketio"]
    assert_found_the_knee(capacity["transports"]["socketio"])
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["options"]["chunks"] is None and run["options"]["emit_times"] is False
