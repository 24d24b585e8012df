"""The nightly job's regression gate against a rolling baseline of past nights.

``make bench`` measures tonight; this judges it against the last ``--keep``
good nights pooled into one sample set (one night on a fast or slow runner
then weighs 1/K), with ``python -m analysis compare``, and rotates the
baseline: tonight joins it only when it passed, so a regression never becomes
the yardstick; the oldest night leaves. The baseline directory is what the
workflow keeps as an artifact between nights.

    stream-harness nightly --baseline DIR --run results/latest [--keep 7] [--out DIR]

Exit codes as ``analysis compare``: 0 no regression (or no baseline yet),
1 regression, 2 unusable input. ``--out`` gets ``base/`` (the pooled
baseline), ``compare.md`` and ``nightly.md`` (the job summary).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.merge import MergeError, merge_runs
from analysis.results import SUMMARY_FILE, copy_raw, is_result_set
from stream_harness.cli.compare_refs import EXIT_OK, EXIT_UNUSABLE, REPO, VERDICTS, Unusable, judge
from stream_harness.cli.errors import CommandError

#: Files of a night kept in the baseline beside its raw data (what the gate compares).
KEPT_FILES = (SUMMARY_FILE, "benchmark.json")


def baseline_runs(baseline: Path) -> list[Path]:
    """Past nights in the baseline, oldest first (run ids sort by start time)."""
    if not baseline.is_dir():
        return []
    return sorted(p for p in baseline.iterdir() if p.is_dir() and is_result_set(p))


def add_to_baseline(baseline: Path, run_dir: Path, keep: int) -> list[Path]:
    """Copy tonight's raw data in, drop the oldest nights beyond ``keep``; the nights kept."""
    baseline.mkdir(parents=True, exist_ok=True)
    target = baseline / run_dir.resolve().name
    if target.exists():
        shutil.rmtree(target)
    copy_raw(run_dir, target)
    for name in KEPT_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, target / name)
    runs = baseline_runs(baseline)
    for old in runs[:-keep]:
        shutil.rmtree(old)
    return runs[-keep:]


def nightly_markdown(code: int, nights: Sequence[Path], run_dir: Path, analysis_md: str, note: str) -> str:
    """The job summary: the gate's markdown (heading one level down) under ours."""
    lines = ["## Nightly stream latency benchmark", ""]
    if not analysis_md:
        lines += [VERDICTS[code] + (f": {note}" if note else ""), ""]
    lines += [
        f"Tonight's run `{run_dir.resolve().name}` against a baseline of {len(nights)} past "
        f"night(s): {', '.join(f'`{n.name}`' for n in nights) or 'none'}.",
        "",
    ]
    if analysis_md:
        body = analysis_md.strip()
        lines += ["#" + body if body.startswith("## ") else body, ""]
    return "\n".join(lines)


SUMMARY = "the nightly gate: tonight's run against a rolling baseline of past good nights"
EXAMPLES = """\
  stream-harness nightly --baseline .bench/baseline --run results/latest
  stream-harness nightly --baseline base/ --run results/latest --keep 5 --out results/nightly
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", type=Path, required=True, help="directory of past nights (the artifact)")
    p.add_argument("--run", type=Path, required=True, help="tonight's results directory")
    p.add_argument("--keep", type=int, default=7, help="nights in the rolling baseline (default 7)")
    p.add_argument("--out", type=Path, default=None, help="default: RUN/nightly")


def check(args: argparse.Namespace) -> None:
    if args.keep < 1:
        raise CommandError("--keep must be at least 1")
    if not is_result_set(args.run):
        raise CommandError(f"--run {args.run} is not a results directory (run.json, streams.parquet and events needed)")


def execute(args: argparse.Namespace) -> int:
    check(args)
    run_dir = args.run.resolve()
    out = (args.out or run_dir / "nightly").resolve()
    out.mkdir(parents=True, exist_ok=True)
    nights = baseline_runs(args.baseline)
    code, note, analysis_md = EXIT_OK, "", ""
    try:
        if not nights:
            note = "no baseline yet: tonight starts it"
        else:
            base = merge_runs(nights, out / "base", run_id="nightly-baseline")
            code, note = judge(REPO, base, run_dir, out / "compare.md")
            analysis_md = (out / "compare.md").read_text()
    except (Unusable, MergeError) as exc:
        code, note = EXIT_UNUSABLE, str(exc)
        print(f"nightly: {note}", file=sys.stderr)
    if code == EXIT_OK:
        kept = add_to_baseline(args.baseline, run_dir, args.keep)
        print(f"nightly: baseline now {len(kept)} night(s) in {args.baseline}")
    else:
        print(f"nightly: tonight not added to the baseline (exit {code})")
    text = nightly_markdown(code, nights, run_dir, analysis_md, note)
    (out / "nightly.md").write_text(text)
    (out / "nightly.json").write_text(
        json.dumps({"exit_code": code, "note": note, "baseline": [n.name for n in nights]}, indent=2) + "\n"
    )
    print(f"nightly: exit {code}; summary {out / 'nightly.md'}")
    return code
