"""`make bench-compare` end to end, on loopback, with a short profile.

What the PR job promises, checked the way it runs there:

* the tree against itself (BASE = a git revision, so through `git worktree`)
  passes with exit 0 and leaves no worktree behind;
* against a copy whose fake backend buffers chunks by default (a code change,
  as a real regression would be) it fails with exit 1 and says "buffered";
* the PR comment's Mermaid blocks parse with mermaid's own parser;
* the nightly gate, fed the same rounds, passes a clean night and rejects a
  buffered one without letting it into the baseline.

Each comparison is 2 interleaved rounds x 2 sides of ~8 s of load: about a
minute and a half each on this 2-core machine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from analysis.results import SUMMARY_FILE, copy_raw
from bench.false_alarms import COPY_IGNORE
from stream_harness.cli.compare_refs import tree_env
from tests.support import REPO

PROFILE = ("--rounds", "2", "--seconds", "8", "--users", "4", "--chunks", "300", "--stream-seconds", "2")
#: What the buffering regression changes in the copy's fake backend: the
#: built-in default of the buffering fault (normally off).
BUFFER_DEFAULT_OFF = "    buffer_ms: float | None = None\n"
BUFFER_DEFAULT_ON = "    buffer_ms: float | None = 150.0\n"

pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class CompareRun:
    tree: Path
    out: Path
    exit_code: int
    output: str

    @property
    def markdown(self) -> str:
        return (self.out / "pr-comment.md").read_text()

    @property
    def record(self) -> dict:
        return json.loads((self.out / "compare.json").read_text())


def copy_tree(destination: Path) -> Path:
    """This checkout's files (not its venv, results or git history)."""
    shutil.copytree(REPO, destination, symlinks=True, ignore=COPY_IGNORE)
    (destination / "results").mkdir()
    return destination


def git(tree: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=bench-test", "-c", "user.email=bench@test", "-C", str(tree), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def run_compare(tree: Path, base: str, out: Path) -> CompareRun:
    """`python -m stream_harness.cli.compare_refs` exactly as `make bench-compare` calls it, from ``tree``."""
    done = subprocess.run(
        [sys.executable, "-m", "stream_harness", "compare-refs", "--base", base, *PROFILE, "--out", str(out)],
        cwd=tree,
        env=tree_env(tree),
        capture_output=True,
        text=True,
        timeout=800,
    )
    return CompareRun(tree, out, done.returncode, done.stdout + done.stderr)


@pytest.fixture(scope="module")
def self_compare(tmp_path_factory: pytest.TempPathFactory) -> CompareRun:
    """A committed copy of this tree against its own HEAD (through a git worktree)."""
    tree = copy_tree(tmp_path_factory.mktemp("self") / "tree")
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "snapshot")
    return run_compare(tree, "HEAD", tree.parent / "out")


@pytest.fixture(scope="module")
def buffered_compare(tmp_path_factory: pytest.TempPathFactory) -> CompareRun:
    """A copy whose fake backend buffers by default, judged against this tree (a path)."""
    tree = copy_tree(tmp_path_factory.mktemp("buffered") / "tree")
    control = tree / "fake_backend" / "control.py"
    text = control.read_text()
    assert text.count(BUFFER_DEFAULT_OFF) == 1, "the fake backend's buffering default moved"
    control.write_text(text.replace(BUFFER_DEFAULT_OFF, BUFFER_DEFAULT_ON))
    return run_compare(tree, str(REPO), tree.parent / "out")


def parse_mermaid(check: Path, markdown: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["node", str(check), str(markdown)], capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------- same code


def test_same_code_passes(self_compare: CompareRun) -> None:
    assert self_compare.exit_code == 0, self_compare.output
    assert ":white_check_mark: **No regression**" in self_compare.markdown


def test_rounds_are_interleaved_base_first(self_compare: CompareRun) -> None:
    runs = self_compare.record["runs"]
    # A run whose load generator was saturated is repeated in place (and discarded).
    kept = [(r["side"], r["round"]) for r in runs if not r["discarded"]]
    assert kept == [("base", 1), ("current", 1), ("base", 2), ("current", 2)]
    assert [(r["side"], r["round"]) for r in runs] == sorted(
        ((r["side"], r["round"]) for r in runs), key=lambda sr: (sr[1], sr[0] != "base")
    )
    assert all(r["exit_code"] == 0 for r in runs)
    assert all(r["saturated"] for r in runs if r["discarded"])


def test_base_ran_from_a_temporary_worktree_that_is_gone(self_compare: CompareRun) -> None:
    base = self_compare.record["trees"]["base"]
    head = git(self_compare.tree, "rev-parse", "HEAD").strip()
    assert base["commit"] == head
    assert base["label"].startswith("HEAD @ ")
    assert Path(base["path"]) != self_compare.tree
    assert not Path(base["path"]).exists()
    worktrees = git(self_compare.tree, "worktree", "list", "--porcelain")
    assert worktrees.count("worktree ") == 1, worktrees


def test_merged_sides_hold_every_round(self_compare: CompareRun) -> None:
    import pandas as pd

    for side in ("base", "current"):
        merged = self_compare.out / side
        summary = json.loads((merged / "summary.json").read_text())
        kept = [Path(r["run_dir"]) for r in self_compare.record["runs"] if r["side"] == side and not r["discarded"]]
        assert len(kept) == 2
        rounds = [json.loads((run_dir / "summary.json").read_text()) for run_dir in kept]
        for transport in ("ndjson", "socketio"):
            started = sum(r["transports"][transport]["streams"]["started"] for r in rounds)
            assert started > 0
            assert summary["transports"][transport]["streams"]["started"] == started
        streams = pd.read_parquet(merged / "streams.parquet")
        assert streams["stream_id"].is_unique
        assert set(streams["stream_id"].str.split("/").str[0]) == {d.name for d in kept}


def test_pr_comment_names_both_sides_and_the_profile(self_compare: CompareRun) -> None:
    md = self_compare.markdown
    assert "2 of 2 interleaved rounds" in md
    assert "8 s of load, 4 users" in md
    assert "Round by round" in md
    assert len(md) < 60_000


# --------------------------------------------------------------------------- buffering regression


def test_buffering_regression_fails_with_the_buffering_line(buffered_compare: CompareRun) -> None:
    assert buffered_compare.exit_code == 1, buffered_compare.output
    md = buffered_compare.markdown
    assert ":x: **Regression**" in md
    # "inconclusive ->" when the base rounds' load generator was starved (busy machine).
    assert re.search(r"^- :x: ndjson: buffering verdict (clean|inconclusive) -> buffered", md, re.M), md


def test_base_path_and_current_copy_ran_their_own_code(buffered_compare: CompareRun) -> None:
    trees = buffered_compare.record["trees"]
    assert Path(trees["base"]["path"]) == REPO
    assert Path(trees["current"]["path"]) == buffered_compare.tree
    # Only the current side's own backend buffered: base never did ("inconclusive"
    # is a run whose load generator was starved by a busy machine).
    verdicts: dict[str, set[str]] = {"base": set(), "current": set()}
    for run in buffered_compare.record["runs"]:
        summary = json.loads((Path(run["run_dir"]) / "summary.json").read_text())
        verdicts[run["side"]] |= {t["buffering"]["verdict"] for t in summary["transports"].values()}
    assert verdicts["base"] <= {"clean", "inconclusive"}
    assert verdicts["current"] <= {"buffered", "inconclusive"}
    assert "buffered" in verdicts["current"]


# --------------------------------------------------------------------------- charts


def test_pr_comment_mermaid_blocks_parse(
    self_compare: CompareRun, buffered_compare: CompareRun, mermaid_check: Path
) -> None:
    for run in (self_compare, buffered_compare):
        assert "```mermaid" in run.markdown
        done = parse_mermaid(mermaid_check, run.out / "pr-comment.md")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok (xychart)" in done.stdout


def test_mermaid_checker_rejects_a_broken_chart(tmp_path: Path, mermaid_check: Path) -> None:
    broken = tmp_path / "broken.md"
    broken.write_text('```mermaid\nxychart-beta\n    x-axis ["a", "b"\n    bar [1, 2]\n```\n')
    done = parse_mermaid(mermaid_check, broken)
    assert done.returncode == 1
    assert "Parse error" in done.stdout


# --------------------------------------------------------------------------- nightly gate


def _night(source: Path, baseline_root: Path, name: str) -> Path:
    """A past night in the baseline layout (raw files of one round)."""
    night = baseline_root / name
    copy_raw(source, night)
    shutil.copy2(source / SUMMARY_FILE, night / SUMMARY_FILE)
    return night


def run_nightly(baseline: Path, run: Path, out: Path, keep: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_harness",
            "nightly",
            "--baseline",
            str(baseline),
            "--run",
            str(run),
            "--keep",
            str(keep),
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=tree_env(REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_nightly_gate_rotates_a_clean_night_in(self_compare: CompareRun, tmp_path: Path) -> None:
    runs = self_compare.out / "runs"
    baseline = tmp_path / "baseline"
    _night(runs / "base-r1", baseline, "20250101T031700Z-1")
    _night(runs / "base-r2", baseline, "20250102T031700Z-1")
    tonight = shutil.copytree(runs / "current-r1", tmp_path / "20250103T031700Z-1")
    done = run_nightly(baseline, tonight, tmp_path / "out", keep=2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in baseline.iterdir()) == ["20250102T031700Z-1", "20250103T031700Z-1"]
    assert "No regression" in (tmp_path / "out" / "nightly.md").read_text()


def test_nightly_gate_keeps_a_buffered_night_out(
    self_compare: CompareRun, buffered_compare: CompareRun, tmp_path: Path
) -> None:
    baseline = tmp_path / "baseline"
    _night(self_compare.out / "runs" / "current-r1", baseline, "20250101T031700Z-1")
    _night(self_compare.out / "runs" / "current-r2", baseline, "20250102T031700Z-1")
    tonight = shutil.copytree(buffered_compare.out / "runs" / "current-r1", tmp_path / "20250103T031700Z-1")
    done = run_nightly(baseline, tonight, tmp_path / "out", keep=7)
    assert done.returncode == 1, done.stdout + done.stderr
    assert sorted(p.name for p in baseline.iterdir()) == ["20250101T031700Z-1", "20250102T031700Z-1"]
    summary = (tmp_path / "out" / "nightly.md").read_text()
    assert "Regression" in summary
    assert "TTFC per stream" in summary and "slower beyond" in summary


def test_nightly_without_baseline_starts_one(self_compare: CompareRun, tmp_path: Path) -> None:
    tonight = shutil.copytree(self_compare.out / "runs" / "current-r2", tmp_path / "20250103T031700Z-1")
    done = run_nightly(tmp_path / "baseline", tonight, tmp_path / "out", keep=7)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in (tmp_path / "baseline").iterdir()] == ["20250103T031700Z-1"]
    assert "no baseline yet" in (tmp_path / "out" / "nightly.md").read_text()


# --------------------------------------------------------------------------- unusable input


def test_unknown_base_is_unusable_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_harness",
            "compare-refs",
            "--base",
            "no-such-ref-xyz",
            *PROFILE,
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        env=tree_env(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.strip()]) == 1, done.stderr
    assert "no-such-ref-xyz" in done.stderr
    assert ":warning: **No verdict**" in (tmp_path / "out" / "pr-comment.md").read_text()


def test_base_that_cannot_run_is_unusable(tmp_path: Path) -> None:
    base = tmp_path / "old-checkout"
    (base / "bench").mkdir(parents=True)
    (base / "bench" / "__init__.py").write_text("")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_harness",
            "compare-refs",
            "--base",
            str(base),
            *PROFILE,
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        env=tree_env(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "base tree" in done.stderr
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["runs"] == []
