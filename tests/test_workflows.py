"""The GitHub workflows: actionlint-clean, least privilege, and calling only
commands that exist here, so a broken workflow step fails in `make test` first.

actionlint (and shellcheck, which it runs on every `run:` script) come from the
test extras in pyproject.toml as wheels that carry their binaries; nothing is
downloaded at run time. A missing binary fails the test: a lint that silently
skips would let a broken workflow through.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from tests.support import REPO

WORKFLOWS = REPO / ".github" / "workflows"
NIGHTLY = WORKFLOWS / "nightly.yml"
PR_BENCH = WORKFLOWS / "pr-bench.yml"


def _tool(name: str) -> str:
    """The venv's copy first (pytest may run without the venv on PATH)."""
    for directory in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which(name, path=directory)
        if found:
            return found
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run `make install` (it comes with the test extras)")
    return found


def actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("actionlint"), "-no-color", "-shellcheck", _tool("shellcheck"), "-pyflakes=", *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(path: Path) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); map it back.
    data = yaml.safe_load(path.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


def run_scripts(workflow: dict) -> str:
    return "\n".join(step.get("run", "") for job in workflow["jobs"].values() for step in job.get("steps", []))


def test_both_workflows_exist() -> None:
    assert NIGHTLY.is_file() and PR_BENCH.is_file()


def test_actionlint_passes_on_every_workflow() -> None:
    done = actionlint(*sorted(WORKFLOWS.glob("*.yml")))
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The lint can fail: an unknown context property and an unquoted variable."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "permissions: {}\n"
        "jobs:\n"
        "  bench:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: make bench-compare BASE=${{ github.base_shaa }}\n"
        "      - run: cat $RUN_DIR/report.md\n"
    )
    done = actionlint(broken)
    assert done.returncode == 1
    assert "base_shaa" in done.stdout  # expression type check
    assert "SC2086" in done.stdout  # shellcheck ran on the run: script


def test_pr_workflow_is_least_privilege() -> None:
    pr = load(PR_BENCH)
    assert pr["permissions"] == {}
    jobs = pr["jobs"]
    assert jobs["bench"]["permissions"] == {"contents": "read"}
    assert jobs["comment"]["permissions"] == {"pull-requests": "write"}
    assert jobs["comment"]["needs"] == "bench"
    # The comment is skipped for forks (their token cannot write), the benchmark is not.
    assert "head.repo.full_name == github.repository" in jobs["comment"]["if"]
    assert "if" not in jobs["bench"]
    assert "secrets." not in PR_BENCH.read_text()
    assert "pull_request_target" not in pr["on"]


def test_pr_workflow_runs_bench_compare_and_keeps_one_sticky_comment() -> None:
    pr = load(PR_BENCH)
    bench_script = run_scripts({"jobs": {"bench": pr["jobs"]["bench"]}})
    assert 'make bench-compare BASE="$BASE_SHA"' in bench_script
    compare_env = [s for s in pr["jobs"]["bench"]["steps"] if s.get("id") == "compare"][0]["env"]
    assert compare_env["BASE_SHA"] == "${{ github.event.pull_request.base.sha }}"
    assert "GITHUB_STEP_SUMMARY" in bench_script
    comment_script = run_scripts({"jobs": {"comment": pr["jobs"]["comment"]}})
    marker = "<!-- stream-latency-harness:pr-bench -->"
    assert marker in comment_script
    assert "-X PATCH" in comment_script and "issues/comments/$id" in comment_script
    assert "REPORT_URL" in comment_script


def test_nightly_workflow_schedule_baseline_and_gate() -> None:
    nightly = load(NIGHTLY)
    assert "schedule" in nightly["on"] and "workflow_dispatch" in nightly["on"]
    assert nightly["permissions"] == {"contents": "read", "actions": "read"}
    script = run_scripts(nightly)
    assert "make bench " in script
    assert "make bench-nightly" in script
    assert "GITHUB_STEP_SUMMARY" in script
    uses = [s.get("uses", "") for s in nightly["jobs"]["bench"]["steps"]]
    assert any(u.startswith("actions/download-artifact@") for u in uses)
    assert sum(u.startswith("actions/upload-artifact@") for u in uses) == 2


def test_nightly_history_chart_never_decides() -> None:
    """benchmark.json goes to github-action-benchmark's chart; only the statistical gate fails the night."""
    nightly = load(NIGHTLY)
    history = nightly["jobs"]["history"]
    assert history["needs"] == "bench"
    assert history["permissions"] == {"contents": "write"}
    assert "default_branch" in history["if"] and "!cancelled()" in history["if"]
    action = "benchmark-action/github-action-benchmark@"
    (publish,) = [s for s in history["steps"] if s.get("uses", "").startswith(action)]
    options = publish["with"]
    assert options["tool"] == "customSmallerIsBetter"
    assert options["output-file-path"].endswith("benchmark.json")
    assert options["fail-on-alert"] is False and options["comment-on-alert"] is False
    assert options["auto-push"] is True
    (download,) = [s for s in history["steps"] if s.get("uses", "").startswith("actions/download-artifact@")]
    uploads = [s["with"]["name"] for s in nightly["jobs"]["bench"]["steps"] if "upload-artifact" in s.get("uses", "")]
    assert download["with"]["name"] in uploads


def test_workflows_install_from_the_lock_file() -> None:
    """make install is the only installer, and the pip cache is keyed on the lock."""
    for workflow in (NIGHTLY, PR_BENCH):
        text = workflow.read_text()
        assert "pip install" not in text, workflow.name
        setups = [
            step
            for job in load(workflow)["jobs"].values()
            for step in job.get("steps", [])
            if step.get("uses", "").startswith("actions/setup-python@")
        ]
        assert setups and all(s["with"]["cache-dependency-path"] == "requirements/test.txt" for s in setups)
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes --no-deps -r $(LOCK)" in makefile


def test_commands_the_workflows_call_exist() -> None:
    """`make -n` knows the targets; the modules parse their flags."""
    for target in ("bench", "bench-compare"):
        done = subprocess.run(
            ["make", "-n", target, "BASE=HEAD", "ROUNDS=1"], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    for module in ("stream_harness.cli.run", "stream_harness.cli.compare_refs", "stream_harness.cli.nightly"):
        done = subprocess.run(
            [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "stream_harness", "nightly", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for flag in ("--baseline", "--run", "--keep"):
        assert flag in help_text
