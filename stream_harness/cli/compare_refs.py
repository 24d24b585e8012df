"""``stream-harness compare-refs --base REF`` (``make bench-compare``): is this checkout slower than BASE?

Comparing tonight's numbers with last night's on a shared runner raises false
alarms (the same commit can vary 1.5x from one machine or minute to the next).
So both sides run here, on the same machine, *interleaved*: base, current,
base, current, ... for N rounds, each a short ``stream-harness run`` against its own
fake backend with the same profile. A slow minute then hits both sides alike.
Each side's rounds are merged into one results directory and judged by
``stream-harness compare`` (per-stream samples, significance *and* a
practical threshold), whose exit code this command returns: 0 no regression,
1 regression, 2 unusable input.

BASE is a git revision (checked out into a temporary ``git worktree``) or a
path to another checkout. The base tree runs with *this* virtualenv's Python,
its own code first on ``PYTHONPATH``, so building a second venv is not needed.

Output (``--out``, default ``results/compare-<id>/``, ``results/compare-latest``
points at it): ``runs/<side>-r<i>/`` raw rounds and ``logs/``, ``base/`` and
``current/`` merged runs with reports and charts, ``compare.md`` (analysis),
``pr-comment.md`` (the PR comment body) and ``compare.json`` (what ran).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from analysis.merge import MergeError, merge_runs
from stream_harness.cli.errors import CommandError
from stream_harness.cli.run import new_run_id, point_latest
from stream_harness.paths import PACKAGES_ROOT

REPO = PACKAGES_ROOT
SIDES = ("base", "current")
EXIT_OK, EXIT_REGRESSION, EXIT_UNUSABLE = 0, 1, 2
#: GitHub refuses comment bodies over 65,536 characters; leave room for the
#: workflow's marker and artifact link.
MAX_COMMENT_CHARS = 60_000
#: Per code layout: (file that marks it, command that runs one round, modules the
#: tree must provide from its own files).  Trees from before the
#: ``stream-harness`` command are still comparable.
LAYOUTS: Final = (
    (
        "stream_harness/cli/run.py",
        ("-m", "stream_harness", "run"),
        ("stream_harness.cli.run", "fake_backend.process", "loadtests", "analysis"),
    ),
    ("bench/run.py", ("-m", "bench.run"), ("bench.run", "fake_backend.testing", "loadtests", "analysis")),
)

SUMMARY = "base and current code interleaved on this machine, then the regression gate and PR markdown"
EXAMPLES = """\
  stream-harness compare-refs --base origin/main                 # what `make bench-compare` does
  stream-harness compare-refs --base HEAD~1 --rounds 2 --seconds 10 --markdown pr.md
"""


class Unusable(CommandError):
    """The comparison cannot be made; the message is one line for stderr."""


@dataclass(frozen=True)
class LoadProfile:
    """The short load both sides get, passed to ``stream_harness.cli.run`` as flags."""

    seconds: float = 20.0
    users: int = 8
    transport: str = "both"
    chunks: int = 1000
    stream_seconds: float = 4.0
    backend_options: str = ""
    backend_profile: str = ""

    def bench_args(self) -> list[str]:
        args = [
            "--seconds",
            f"{self.seconds:g}",
            "--users",
            str(self.users),
            "--transport",
            self.transport,
            "--chunks",
            str(self.chunks),
            "--stream-seconds",
            f"{self.stream_seconds:g}",
        ]
        if self.backend_options:
            args += ["--backend-options", self.backend_options]
        if self.backend_profile:
            args += ["--backend-profile", self.backend_profile]
        return args

    def describe(self) -> str:
        text = (
            f"{self.seconds:g} s of load, {self.users} users, transport {self.transport}, "
            f"{self.chunks} chunks per stream over {self.stream_seconds:g} s"
        )
        if self.backend_profile:
            text += f", backend profile `{self.backend_profile}`"
        if self.backend_options:
            text += f", request options `{self.backend_options}`"
        return text


@dataclass(frozen=True)
class Tree:
    """One side of the comparison: a directory with the project's code."""

    side: str
    path: Path
    label: str  # what a reader is told: "origin/main @ 1a2b3c4", a path, ...
    commit: str = ""  # full sha when known

    @property
    def layout(self) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        """The tree's code layout (``LAYOUTS``); Unusable when it has none of them."""
        for layout in LAYOUTS:
            if (self.path / layout[0]).is_file():
                return layout
        raise Unusable(f"the {self.side} tree ({self.label}) is not a checkout of this project")


@dataclass
class RoundResult:
    side: str
    round: int
    run_dir: Path
    exit_code: int
    seconds: float
    summary: dict[str, Any] = field(default_factory=dict)
    discarded: bool = False  # saturated and run again

    @property
    def saturated(self) -> bool:
        return bool(self.summary.get("run", {}).get("harness", {}).get("saturated"))


# --------------------------------------------------------------------------- trees


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True)


def describe_checkout(side: str, path: Path) -> Tree:
    """Label a directory by its git HEAD (and say so when it has local changes)."""
    head = _git(path, "rev-parse", "HEAD")
    if head.returncode != 0:
        return Tree(side, path, str(path))
    sha = head.stdout.strip()
    dirty = _git(path, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    label = f"{sha[:10]}" + (" + uncommitted changes" if dirty else "")
    return Tree(side, path, label, sha)


@contextlib.contextmanager
def base_tree(ref: str, current: Path) -> Iterator[Tree]:
    """BASE as a directory: the path itself, or a temporary worktree of a revision.

    The worktree is removed again whatever happens (also on Ctrl-C).
    """
    as_path = Path(ref).expanduser()
    if as_path.is_dir():
        yield describe_checkout("base", as_path.resolve())
        return
    resolved = _git(current, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if resolved.returncode != 0:
        raise Unusable(
            f"BASE {ref!r} is neither a directory nor a commit known to {current} "
            f"(fetch it first, e.g. `git fetch origin main`)"
        )
    sha = resolved.stdout.strip()
    parent = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    worktree = parent / "base"
    added = _git(current, "worktree", "add", "--detach", str(worktree), sha)
    if added.returncode != 0:
        shutil.rmtree(parent, ignore_errors=True)
        reason = (added.stderr.strip().splitlines() or [f"git exit {added.returncode}"])[-1]
        raise Unusable(f"cannot check out {ref} into a worktree: {reason}")
    try:
        yield Tree("base", worktree, f"{ref} @ {sha[:10]}", sha)
    finally:
        _git(current, "worktree", "remove", "--force", str(worktree))
        shutil.rmtree(parent, ignore_errors=True)
        _git(current, "worktree", "prune")


def tree_env(tree: Path) -> dict[str, str]:
    """Environment that makes ``python -m ...`` import the tree's own modules.

    PYTHONPATH is searched before site-packages, so it wins over this venv's
    editable install of the current checkout.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    env.pop("PYTHONHOME", None)
    return env


def check_tree(tree: Tree, profile: LoadProfile) -> None:
    """Make sure the tree's code imports from the tree and takes our flags."""
    probe = (
        "import importlib, json, sys\n"
        f"mods = {tree.layout[2]!r}\n"
        "print(json.dumps({m: getattr(importlib.import_module(m), '__file__', None) or "
        "list(importlib.import_module(m).__path__)[0] for m in mods}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tree.path,
        env=tree_env(tree.path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unusable(f"the {tree.side} tree ({tree.label}) cannot run with this venv: {last}")
    root = tree.path.resolve()
    for module, location in json.loads(done.stdout.strip().splitlines()[-1]).items():
        if location is None or root not in Path(location).resolve().parents:
            raise Unusable(f"the {tree.side} tree's {module} was imported from {location}, not from {root}")
    usage = subprocess.run(
        [sys.executable, *tree.layout[1], "--help"],
        cwd=tree.path,
        env=tree_env(tree.path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    wanted = [arg for arg in profile.bench_args() if arg.startswith("--")]
    wanted += ["--results-root", "--run-id", "--no-report"]
    missing = [flag for flag in wanted if flag not in usage.stdout]
    if usage.returncode != 0 or missing:
        raise Unusable(f"the {tree.side} tree's run command does not take {', '.join(missing) or 'our flags'}")


# --------------------------------------------------------------------------- rounds


def _stop(process: subprocess.Popen[bytes], grace_s: float = 60.0) -> int:
    """Ask a run to stop the way Ctrl-C does (it then writes what it has), then insist."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


def run_round(
    tree: Tree, profile: LoadProfile, runs_root: Path, round_no: int, log_dir: Path, attempt: int = 0
) -> RoundResult:
    """One run command of one tree, in its own process group, output to a log file.

    A KeyboardInterrupt while it runs stops the run (it still writes what it
    measured) and is re-raised once the run has exited.
    """
    run_id = f"{tree.side}-r{round_no}" + (f"-retry{attempt}" if attempt else "")
    cmd = [
        sys.executable,
        *tree.layout[1],
        *profile.bench_args(),
        "--results-root",
        str(runs_root),
        "--run-id",
        run_id,
        "--no-report",
    ]
    # Generous: the load, streams finishing, backend and Locust start-up and stop.
    timeout = profile.seconds + 2 * profile.stream_seconds + 180
    started = time.monotonic()
    with open(log_dir / f"{run_id}.log", "wb") as log:
        process = subprocess.Popen(
            cmd, cwd=tree.path, env=tree_env(tree.path), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            exit_code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            exit_code = _stop(process)
            log.write(f"\ncompare-refs: stopped after {timeout:.0f} s\n".encode())
            exit_code = exit_code or EXIT_UNUSABLE
        except BaseException:
            _stop(process)
            raise
    result = RoundResult(tree.side, round_no, runs_root / run_id, exit_code, time.monotonic() - started)
    summary = result.run_dir / "summary.json"
    if exit_code == 0 and summary.exists():
        result.summary = json.loads(summary.read_text())
    return result


def run_interleaved(
    trees: Mapping[str, Tree], profile: LoadProfile, rounds: int, out: Path, retries: int
) -> tuple[list[RoundResult], bool]:
    """Base, current, base, current, ...; stops at the first failed run.

    A run whose load generator was saturated measured the harness, not the
    code (its buffering verdict is "inconclusive"): it is run again right
    away, at most ``retries`` times over the whole comparison.
    Returns every run (discarded ones marked) and whether the user interrupted.
    """
    runs_root, log_dir = out / "runs", out / "logs"
    runs_root.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[RoundResult] = []
    try:
        for round_no in range(1, rounds + 1):
            for side in SIDES:
                attempt = 0
                while True:
                    result = run_round(trees[side], profile, runs_root, round_no, log_dir, attempt)
                    results.append(result)
                    status = "ok" if result.exit_code == 0 else f"FAILED (exit {result.exit_code})"
                    if result.saturated:
                        status += ", load generator saturated"
                    print(
                        f"compare-refs: round {round_no}/{rounds} {side:<7} {status} in {result.seconds:.0f} s",
                        flush=True,
                    )
                    if result.exit_code != 0:
                        return results, False
                    if not result.saturated or retries == 0:
                        break
                    result.discarded = True
                    retries -= 1
                    attempt += 1
    except KeyboardInterrupt:
        print("compare-refs: interrupted; comparing the rounds that finished", flush=True)
        return results, True
    return results, False


def paired_rounds(results: Sequence[RoundResult]) -> dict[str, list[RoundResult]]:
    """Successful rounds per side, keeping only rounds both sides finished (fair pairs)."""
    ok = {(r.side, r.round): r for r in results if r.exit_code == 0 and r.summary and not r.discarded}
    both = sorted({n for (_, n) in ok if all((s, n) in ok for s in SIDES)})
    return {side: [ok[(side, n)] for n in both] for side in SIDES}


# --------------------------------------------------------------------------- judging


def analysis_call(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``stream-harness report|compare ...`` of the current tree: one judge for both sides."""
    return subprocess.run(
        [sys.executable, "-m", "stream_harness", *args], cwd=tree, env=tree_env(tree), capture_output=True, text=True
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stderr or done.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit {done.returncode}"


def judge(analysis_tree: Path, base_dir: Path, current_dir: Path, markdown: Path) -> tuple[int, str]:
    """Reports for both sides, then the regression gate: (exit code 0/1, its last line).

    Raises Unusable when either step cannot judge (the gate's exit 2 included).
    """
    for run_dir in (base_dir, current_dir):
        done = analysis_call(analysis_tree, "report", str(run_dir))
        if done.returncode != 0:
            raise Unusable(f"analysis report of {run_dir} failed: {_one_line(done)}")
    done = analysis_call(analysis_tree, "compare", str(base_dir), str(current_dir), "--markdown", str(markdown))
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode not in (EXIT_OK, EXIT_REGRESSION) or not markdown.exists():
        raise Unusable(f"analysis compare could not compare the runs: {_one_line(done)}")
    return done.returncode, _one_line(done)


# --------------------------------------------------------------------------- markdown

VERDICTS = {
    EXIT_OK: ":white_check_mark: **No regression**",
    EXIT_REGRESSION: ":x: **Regression**",
    EXIT_UNUSABLE: ":warning: **No verdict** (the benchmark could not be compared)",
}


def _ms(summary: Mapping[str, Any], transport: str, metric: str, pct: str) -> str:
    value = (summary.get("transports", {}).get(transport, {}).get(metric) or {}).get(pct)
    return "–" if value is None else f"{value:.1f}"


def rounds_table(pairs: Mapping[str, Sequence[RoundResult]]) -> str:
    """Per-round numbers of both sides: shows the noise the gate had to see through."""
    rows = [
        "| round | side | transport | streams ok/failed | TTFC p50 ms | TTFC p99 ms | gap p99 ms | verdict |",
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for base_round, current_round in zip(pairs["base"], pairs["current"]):
        for result in (base_round, current_round):
            for transport, t in result.summary.get("transports", {}).items():
                streams = t.get("streams", {})
                rows.append(
                    f"| {result.round} | {result.side} | {transport} | "
                    f"{streams.get('completed', 0)}/{streams.get('failed', 0)} | "
                    f"{_ms(result.summary, transport, 'ttfc_ms', 'p50')} | "
                    f"{_ms(result.summary, transport, 'ttfc_ms', 'p99')} | "
                    f"{_ms(result.summary, transport, 'gap_ms', 'p99')} | "
                    f"{t.get('buffering', {}).get('verdict', '?')} |"
                )
    return "\n".join(rows)


def pr_markdown(
    code: int,
    trees: Mapping[str, Tree],
    profile: LoadProfile,
    rounds: int,
    pairs: Mapping[str, Sequence[RoundResult]],
    analysis_md: str,
    note: str,
    repeated: int = 0,
) -> str:
    """The PR comment body (without the workflow's sticky marker and artifact link).

    The gate's own markdown (verdict heading, findings, table, Mermaid charts)
    is the core, its heading moved one level down under ours; without it (no
    verdict) our heading carries the reason.
    """
    done = len(pairs["base"])
    lines = ["## Stream latency benchmark (`make bench-compare`)", ""]
    if not analysis_md:
        lines += [VERDICTS[code] + (f": {note}" if note else ""), ""]
    elif "interrupted" in note:
        lines += [f":warning: {note}", ""]
    lines += [
        f"Base **{trees['base'].label}** vs this change **{trees['current'].label}**: "
        f"{done} of {rounds} interleaved rounds (base, current, base, current, ...) on one machine; "
        f"each round {profile.describe()}."
        + (f" {repeated} run(s) whose load generator was saturated were repeated." if repeated else ""),
        "",
    ]
    if analysis_md:
        body = analysis_md.strip()
        if body.startswith("## "):
            body = "#" + body
        lines += [body, ""]
    if done:
        lines += ["<details><summary>Round by round</summary>", "", rounds_table(pairs), "", "</details>", ""]
    text = "\n".join(lines)
    return truncate_markdown(text, MAX_COMMENT_CHARS)


def truncate_markdown(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a line and never inside a fenced block."""
    if len(text) <= limit:
        return text
    head = text[: text.rfind("\n", 0, limit - 100)]
    if head.count("```") % 2:
        head = head[: head.rfind("```")]
    return head.rstrip() + "\n\n_(truncated: the full report is in the artifact)_\n"


# --------------------------------------------------------------------------- main


def configure(p: argparse.ArgumentParser) -> None:
    defaults = LoadProfile()
    p.add_argument("--base", required=True, help="git revision or path to another checkout")
    p.add_argument(
        "--current", type=Path, default=REPO, help="checkout to judge (default: this one, uncommitted changes included)"
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side (default 3)")
    p.add_argument("--seconds", type=float, default=defaults.seconds, help="load per round")
    p.add_argument("--users", type=int, default=defaults.users)
    p.add_argument("--transport", choices=("ndjson", "socketio", "both"), default=defaults.transport)
    p.add_argument("--chunks", type=int, default=defaults.chunks, help="chunks per stream")
    p.add_argument("--stream-seconds", type=float, default=defaults.stream_seconds)
    p.add_argument("--backend-options", default="", help="extra harness fields (JSON), both sides")
    p.add_argument("--backend-profile", default="", help="fake backend default profile (JSON), both sides")
    p.add_argument(
        "--retries",
        type=int,
        default=None,
        help="extra runs allowed for rounds whose load generator was saturated (default: --rounds)",
    )
    p.add_argument("--out", type=Path, default=None, help="default: results/compare-<id>")
    p.add_argument("--markdown", type=Path, default=None, help="also write the PR comment here")


def check(args: argparse.Namespace) -> None:
    args.retries = args.rounds if args.retries is None else args.retries
    if args.retries < 0:
        raise CommandError("--retries must be >= 0")
    if args.rounds < 1 or args.seconds <= 0 or args.users < 1 or args.chunks < 1 or args.stream_seconds < 0:
        raise CommandError("--rounds, --seconds, --users and --chunks must be positive, --stream-seconds >= 0")
    for name in ("backend_options", "backend_profile"):
        text = getattr(args, name)
        try:
            if text and not isinstance(json.loads(text), dict):
                raise ValueError
        except ValueError:
            raise CommandError(f"--{name.replace('_', '-')} must be a JSON object") from None
    if not (args.current / LAYOUTS[0][0]).is_file():
        raise CommandError(f"--current {args.current} is not a checkout of this project")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def compare(args: argparse.Namespace) -> int:
    profile = LoadProfile(
        args.seconds,
        args.users,
        args.transport,
        args.chunks,
        args.stream_seconds,
        args.backend_options,
        args.backend_profile,
    )
    current = describe_checkout("current", args.current.resolve())
    out = (args.out or current.path / "results" / f"compare-{new_run_id()}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.out is None:
        point_latest(out.parent, out, "compare-latest")
    code, note, trees = EXIT_UNUSABLE, "", {"current": current}
    pairs: dict[str, list[RoundResult]] = {side: [] for side in SIDES}
    analysis_md = ""
    results: list[RoundResult] = []
    try:
        with base_tree(args.base, current.path) as base:
            trees["base"] = base
            for tree in (base, current):
                check_tree(tree, profile)
            print(
                f"compare-refs: base {base.label} vs current {current.label}, "
                f"{args.rounds} interleaved rounds; output in {out}",
                flush=True,
            )
            results, interrupted = run_interleaved(trees, profile, args.rounds, out, args.retries)
        failed = [r for r in results if r.exit_code != 0 or not r.summary]
        pairs = paired_rounds(results)
        if failed:
            first = failed[0]
            raise Unusable(
                f"the {first.side} tree's run failed in round {first.round} "
                f"(exit {first.exit_code}); log: {out / 'logs' / (first.run_dir.name + '.log')}"
            )
        if not pairs["base"]:
            raise Unusable("interrupted before both sides finished a round")
        merged = {
            side: merge_runs([r.run_dir for r in pairs[side]], out / side, run_id=f"{side}-merged") for side in SIDES
        }
        markdown = out / "compare.md"
        code, note = judge(current.path, merged["base"], merged["current"], markdown)
        analysis_md = markdown.read_text()
        if interrupted:
            note = f"interrupted after {len(pairs['base'])} of {args.rounds} rounds; {note}"
    except (Unusable, MergeError) as exc:
        code, note = EXIT_UNUSABLE, str(exc)
        print(f"compare-refs: {exc}", file=sys.stderr)
    trees.setdefault("base", Tree("base", Path(args.base), str(args.base)))
    body = pr_markdown(
        code, trees, profile, args.rounds, pairs, analysis_md, note, repeated=sum(r.discarded for r in results)
    )
    (out / "pr-comment.md").write_text(body)
    if args.markdown:
        args.markdown.write_text(body)
    record = {
        "exit_code": code,
        "note": note,
        "rounds_requested": args.rounds,
        "profile": asdict(profile),
        "trees": {side: {"label": t.label, "commit": t.commit, "path": str(t.path)} for side, t in trees.items()},
        "runs": [
            {
                "side": r.side,
                "round": r.round,
                "run_dir": str(r.run_dir),
                "exit_code": r.exit_code,
                "seconds": round(r.seconds, 1),
                "saturated": r.saturated,
                "discarded": r.discarded,
            }
            for r in results
        ],
    }
    (out / "compare.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"compare-refs: {['no regression', 'REGRESSION', 'unusable'][code]}; PR comment: {out / 'pr-comment.md'}",
        flush=True,
    )
    return code


def execute(args: argparse.Namespace) -> int:
    check(args)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # CI cancel: stop runs, clean up the worktree
    return compare(args)
