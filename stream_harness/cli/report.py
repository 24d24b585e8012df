"""``stream-harness report DIR``: rebuild summary.json, report.md and charts from a run's raw data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SUMMARY = "rebuild DIR/summary.json from the raw data, write report.md and PNG charts"
EXAMPLES = """\
  stream-harness report results/latest
  stream-harness report results/staging-run --no-charts --timings
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, metavar="DIR")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    parser.add_argument("--timings", action="store_true", help="print seconds per stage on stderr")


def execute(args: argparse.Namespace) -> int:
    from analysis.errors import AnalysisError
    from analysis.report import build_report
    from stream_harness.cli.errors import CommandError

    try:
        output = build_report(args.directory, charts=not args.no_charts)
    except AnalysisError as error:
        raise CommandError(str(error)) from None
    for name, item in output.analysis.summary["transports"].items():
        buffering = item["buffering"]
        reason = f": {buffering['reasons'][0]}" if buffering["reasons"] else ""
        print(f"{name}: {buffering['verdict']}{reason}")
    print(f"wrote {output.report_path}")
    if args.timings:
        stages = ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in output.timings_s.items())
        print(f"timings: {stages}", file=sys.stderr)
    return 0
