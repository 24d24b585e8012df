"""``stream-harness compare BASE CURRENT``: the regression gate (exit 0 none, 1 regression, 2 unusable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream_harness.cli.errors import EXIT_OK, EXIT_REGRESSION, CommandError

SUMMARY = "regression gate: exit 0 no regression, 1 regression, 2 unusable input"
EXAMPLES = """\
  stream-harness compare results/base results/latest
  stream-harness compare base/ current/ --markdown pr-comment.md --artifact-url https://ci/artifacts
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", type=Path, metavar="BASE_DIR")
    parser.add_argument("current", type=Path, metavar="CURRENT_DIR")
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="write a PR-comment markdown (and the overlay PNG next to it)"
    )
    parser.add_argument(
        "--artifact-url", metavar="URL", help="prefix for PNG links in the markdown (where CI uploads them)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PYPROJECT",
        help="read [tool.stream_harness.regression] from this file (default: ./pyproject.toml)",
    )


def execute(args: argparse.Namespace) -> int:
    from analysis.compare import compare_runs, load_thresholds
    from analysis.errors import AnalysisError
    from analysis.metrics import analyse_directory
    from analysis.report import write_compare_outputs

    if args.config is not None and not args.config.is_file():
        raise CommandError(f"{args.config}: no such config file")
    try:
        thresholds = load_thresholds(args.config)
        analyses = []
        for directory in (args.base, args.current):
            analysis = analyse_directory(directory)
            if not analysis.summary["transports"]:
                raise CommandError(f"{directory}: the run has no streams")
            analyses.append(analysis)
    except AnalysisError as error:
        raise CommandError(str(error)) from None
    base, current = analyses
    comparison = compare_runs(base, current, thresholds)
    for line in comparison.lines():
        print(line)
    if args.markdown is not None:
        path = write_compare_outputs(comparison, base, current, args.markdown, artifact_url=args.artifact_url)
        print(f"wrote {path}")
    regressions = len(comparison.regressions)
    print(f"{regressions} regression(s)" if regressions else "no regression")
    return EXIT_REGRESSION if regressions else EXIT_OK
