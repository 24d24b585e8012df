"""``python -m analysis`` as users and CI run it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analysis.results import EVENTS_DIR, RUN_FILE, STREAMS_FILE, event_parts
from tests.support import REPO
from tests.support.synthetic import SyntheticSpec, write_synthetic_run


def analysis_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def assert_unusable(process: subprocess.CompletedProcess[str], *words: str) -> None:
    assert process.returncode == 2, process
    assert "Traceback" not in process.stderr
    assert process.stderr.count("\n") == 1, process.stderr
    for word in words:
        assert word in process.stderr, process.stderr


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "good"
    write_synthetic_run(directory, SyntheticSpec(streams=4, chunks=(80, 100), seed=4))
    return directory


def test_report_writes_summary_report_and_charts(good: Path):
    (good / "summary.json").unlink()
    process = analysis_cli("report", good)
    assert process.returncode == 0, process.stderr
    assert process.stdout.splitlines()[0].startswith("ndjson: clean")
    assert (good / "summary.json").is_file() and (good / "report.md").is_file()
    assert len(list(good.glob("*.png"))) == 5


def test_report_of_a_missing_directory(tmp_path: Path):
    assert_unusable(analysis_cli("report", tmp_path / "nope"), "no such results directory")


def test_compare_with_a_corrupt_parquet(good: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in (RUN_FILE, STREAMS_FILE):
        (broken / name).write_bytes((good / name).read_bytes())
    part = event_parts(good)[0]
    (broken / EVENTS_DIR).mkdir()
    (broken / EVENTS_DIR / part.name).write_bytes(part.read_bytes()[:300])
    assert_unusable(analysis_cli("compare", good, broken), part.name, "unreadable")


def test_compare_with_partial_files(good: Path, tmp_path: Path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / RUN_FILE).write_bytes((good / RUN_FILE).read_bytes())
    assert_unusable(analysis_cli("compare", partial, good), "missing streams.parquet", "events/")


@pytest.mark.parametrize(
    "args", [(), ("report",), ("compare", "only-one"), ("frobnicate",), ("report", "x", "--bogus")]
)
def test_usage_errors_are_one_line(args: tuple[str, ...]):
    assert_unusable(analysis_cli(*args), "error:")
