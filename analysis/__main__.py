"""Command line: ``python -m analysis report DIR`` and ``python -m analysis compare BASE CURRENT``.

Exit codes (CONTRACTS.md): 0 fine / no regression, 1 regression found,
2 unusable input.  Every problem with the input is one line on stderr, never
a traceback; set ``ANALYSIS_DEBUG=1`` to get the traceback of an unexpected
error.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_UNUSABLE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_UNUSABLE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m analysis",
                     description="Stream-latency analysis: reports and the regression gate.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    report = commands.add_parser(
        "report", help="rebuild DIR/summary.json from the raw data, write report.md and charts")
    report.add_argument("directory", type=Path, metavar="DIR")
    report.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    report.add_argument("--timings", action="store_true",
                        help="print seconds per stage on stderr")
    compare = commands.add_parser(
        "compare", help="regression gate: exit 0 none, 1 regression, 2 unusable input")
    compare.add_argument("base", type=Path, metavar="BASE_DIR")
    compare.add_argument("current", type=Path, metavar="CURRENT_DIR")
    compare.add_argument("--markdown", type=Path, metavar="FILE",
                         help="write a PR-comment markdown (and the overlay PNG next to it)")
    compare.add_argument("--artifact-url", metavar="URL",
                         help="prefix for PNG links in the markdown (where CI uploads them)")
    compare.add_argument("--config", type=Path, metavar="PYPROJECT",
                         help="read [tool.stream_harness.regression] from this file "
                              "(default: ./pyproject.toml)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from analysis.compare import ThresholdsError
    from analysis.results import ResultsError

    try:
        if args.command == "report":
            return _report(args)
        return _compare(args)
    except (ResultsError, ThresholdsError) as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return _fail("interrupted", code=130)
    except Exception as error:  # a bug must still not print a traceback wall
        if os.environ.get("ANALYSIS_DEBUG"):
            raise
        return _fail(f"unexpected error: {type(error).__name__}: {error} "
                     "(ANALYSIS_DEBUG=1 shows the traceback)")


def _report(args: argparse.Namespace) -> int:
    from analysis.report import build_report

    output = build_report(args.directory, charts=not args.no_charts)
    for name, item in output.analysis.summary["transports"].items():
        buffering = item["buffering"]
        reason = f": {buffering['reasons'][0]}" if buffering["reasons"] else ""
        print(f"{name}: {buffering['verdict']}{reason}")
    print(f"wrote {output.report_path}")
    if args.timings:
        stages = ", ".join(f"{stage} {seconds:.2f} s"
                           for stage, seconds in output.timings_s.items())
        print(f"timings: {stages}", file=sys.stderr)
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from analysis.compare import compare_runs, load_thresholds
    from analysis.metrics import analyse
    from analysis.report import write_compare_outputs
    from analysis.results import ResultsError, load_results

    if args.config is not None and not args.config.is_file():
        raise ResultsError(f"{args.config}: no such config file")
    thresholds = load_thresholds(args.config)
    analyses = []
    for directory in (args.base, args.current):
        results = load_results(directory)
        analysis = analyse(results.run, results.streams, results.events)
        if not analysis.summary["transports"]:
            raise ResultsError(f"{directory}: the run has no streams")
        analyses.append(analysis)
    base, current = analyses
    comparison = compare_runs(base, current, thresholds)
    for line in comparison.lines():
        print(line)
    if args.markdown is not None:
        path = write_compare_outputs(comparison, base, current, args.markdown,
                                     artifact_url=args.artifact_url)
        print(f"wrote {path}")
    regressions = len(comparison.regressions)
    print(f"{regressions} regression(s)" if regressions else "no regression")
    return EXIT_REGRESSION if regressions else EXIT_OK


def _fail(message: str, code: int = EXIT_UNUSABLE) -> int:
    print(f"analysis: {message}", file=sys.stderr)
    return code


def _entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
