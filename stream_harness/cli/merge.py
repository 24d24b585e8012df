"""``stream-harness merge``: several runs of one profile as one result set (for the regression gate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream_harness.cli.errors import CommandError

SUMMARY = "merge runs of one load profile into one result set (rounds, or nights of a baseline)"
EXAMPLES = """\
  stream-harness merge results/r1 results/r2 results/r3 --out results/merged
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", type=Path, required=True, help="the merged result set")
    parser.add_argument("--run-id", default="", help="id of the merged run (default: the out name)")


def execute(args: argparse.Namespace) -> int:
    from analysis.errors import AnalysisError
    from analysis.merge import merge_runs

    try:
        path = merge_runs(args.runs, args.out, run_id=args.run_id or args.out.name)
    except AnalysisError as error:
        raise CommandError(str(error)) from None
    print(f"wrote {path}")
    return 0
