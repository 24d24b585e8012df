"""The regression gate: identical runs pass, real regressions fail with a clear line.

Runs are simulated (tests.support.synthetic) and written as results directories;
the gate is driven through ``python -m analysis compare``'s ``main``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from analysis.__main__ import main
from analysis.compare import RegressionThresholds, ThresholdsError, load_thresholds
from tests.support import REPO
from tests.support.synthetic import SyntheticSpec, write_synthetic_run

BASE = SyntheticSpec(streams=20, chunks=(300, 400), seed=1)

VARIANTS = {
    "base": BASE,
    "same_code": replace(BASE, seed=2),
    "ttfc_plus_100ms": replace(BASE, seed=3, first_chunk_delay_ms=BASE.first_chunk_delay_ms + 100),
    "buffer_window": replace(BASE, seed=4, transport_overrides={"ndjson": {"buffer_ms": 100}}),
    "chunk_loss_5pct": replace(BASE, seed=5, loss=0.05),
    "failures": replace(BASE, seed=6, failure_share=0.3),
    "ndjson_only": replace(BASE, seed=7, transports=("ndjson",)),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    for name, spec in VARIANTS.items():
        write_synthetic_run(root / name, spec)
    return {name: root / name for name in VARIANTS}


def compare(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["compare", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def regression_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("REGRESSION")]


def test_a_run_against_itself_passes(runs, capsys):
    code, out, _ = compare(capsys, runs["base"], runs["base"])
    assert code == 0, out
    assert out.splitlines()[-1] == "no regression"


def test_two_runs_of_the_same_code_pass(runs, capsys):
    code, out, _ = compare(capsys, runs["base"], runs["same_code"])
    assert code == 0, out
    assert not regression_lines(out)


def test_a_100_ms_ttfc_increase_fails_with_a_ttfc_line(runs, capsys):
    code, out, _ = compare(capsys, runs["base"], runs["ttfc_plus_100ms"])
    assert code == 1
    lines = regression_lines(out)
    assert lines and all("TTFC per stream" in line for line in lines), out
    assert re.search(r"ndjson: TTFC per stream, median [\d.]+ -> [\d.]+ ms \(\+(99|100)\.\d ms", out), out


def test_a_buffering_window_fails_with_the_verdict_line(runs, capsys):
    code, out, _ = compare(capsys, runs["base"], runs["buffer_window"])
    assert code == 1
    lines = regression_lines(out)
    assert "ndjson: buffering verdict clean -> buffered: chunks arrive" in lines[0], out
    assert not any(line.split()[1] == "socketio:" for line in lines), out


def test_five_percent_chunk_loss_fails_with_a_chunks_line(runs, capsys):
    code, out, _ = compare(capsys, runs["base"], runs["chunk_loss_5pct"])
    assert code == 1
    assert any(
        re.search(r"ndjson: 9[45]\.\d% of promised chunks delivered, baseline 100\.0%", line)
        for line in regression_lines(out)
    ), out


def test_new_failures_fail(runs, capsys):
    code, out, _ = compare(capsys, runs["base"], runs["failures"])
    assert code == 1
    text = "\n".join(regression_lines(out))
    assert "new failure kind 'disconnect'" in text and "streams failed" in text, out


def test_a_transport_missing_from_the_current_run_fails(runs, capsys):
    code, out, _ = compare(capsys, runs["base"], runs["ndjson_only"])
    assert code == 1
    assert "socketio: streams in the baseline, none in this run" in out


def test_thresholds_are_read_from_the_working_directorys_pyproject(runs, capsys, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.stream_harness.regression]\nttfc_ms = 500.0\n")
    monkeypatch.chdir(tmp_path)
    assert load_thresholds().ttfc_ms == 500.0
    code, out, _ = compare(capsys, runs["base"], runs["ttfc_plus_100ms"])
    assert code == 0, out
    assert "below 500 ms / 10%" in out


def test_the_repositorys_pyproject_has_the_documented_defaults():
    assert load_thresholds(REPO / "pyproject.toml") == RegressionThresholds()


def test_a_bad_threshold_table_is_unusable_input(runs, capsys, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.stream_harness.regression]\nttfc_msec = 5\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ThresholdsError):
        load_thresholds()
    code, out, err = compare(capsys, runs["base"], runs["base"])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unknown key 'ttfc_msec'" in err


def test_markdown_has_the_verdict_table_mermaid_charts_and_artifact_links(runs, capsys, tmp_path):
    target = tmp_path / "comment" / "pr.md"
    code, _, _ = compare(
        capsys,
        runs["base"],
        runs["buffer_window"],
        "--markdown",
        target,
        "--artifact-url",
        "https://ci.example/artifacts/",
    )
    assert code == 1
    text = target.read_text()
    assert text.startswith("## Stream latency: :x: **Regression**")
    assert "| ndjson | clean → buffered |" in text
    assert "](https://ci.example/artifacts/compare_overlay.png)" in text
    assert (target.parent / "compare_overlay.png").stat().st_size > 10_000
    blocks = re.findall(r"```mermaid\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 4  # TTFC and p99 gap for both transports
    for block in blocks:
        assert_valid_xychart(block)


def assert_valid_xychart(block: str) -> None:
    """The xychart-beta grammar we emit: title, categorical x-axis, ranged y-axis, series."""
    lines = block.strip().splitlines()
    assert lines[0] == "xychart-beta"
    assert re.fullmatch(r'    title "[^"\n]+"', lines[1]), lines[1]
    x_axis = re.fullmatch(r'    x-axis \[("[^"\n]+"(, "[^"\n]+")*)\]', lines[2])
    assert x_axis, lines[2]
    n = len(re.findall(r'"[^"]+"', x_axis.group(1)))
    assert re.fullmatch(r'    y-axis "[^"\n]+" 0 --> \d+(\.\d+)?', lines[3]), lines[3]
    number = r"\d+(\.\d+)?"
    for line in lines[4:]:
        series = re.fullmatch(rf"    (bar|line) \[({number}(, {number})*)\]", line)
        assert series, line
        assert len(series.group(2).split(", ")) == n


def test_exit_code_1_from_a_real_process(runs):
    process = subprocess.run(
        [sys.executable, "-m", "analysis", "compare", str(runs["base"]), str(runs["ttfc_plus_100ms"])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1, process.stderr
    assert process.stdout.splitlines()[-1] == "2 regression(s)"


def test_the_bootstrap_interval_of_a_run_with_very_many_streams_takes_bounded_memory():
    import tracemalloc

    import numpy as np

    from analysis.compare import _bootstrap_ci

    rng = np.random.default_rng(1)
    before, after = rng.normal(100.0, 10.0, 100_000), rng.normal(105.0, 10.0, 100_000)
    tracemalloc.start()
    try:
        low, high = _bootstrap_ci(before, after)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert low < 5.0 < high  # the true shift of the medians
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB"  # drawn at once: 200 x 100,000 values = 320 MB
