"""The ``stream-harness`` command: one subcommand per entry point of the harness.

Each subcommand lives in its own module with ``SUMMARY`` (one line),
``EXAMPLES`` (shown by ``--help``), ``configure(parser)`` and
``execute(args) -> exit code``.  Problems with the input end as one line on
stderr and exit code 2 (:class:`CommandError`); ``STREAM_HARNESS_DEBUG=1``
shows the traceback of an unexpected error instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Final, NoReturn

from stream_harness.cli.errors import EXIT_UNUSABLE, CommandError

#: (subcommand, module) in the order ``--help`` lists them.
COMMANDS: Final = (
    ("run", "stream_harness.cli.run"),
    ("sweep", "stream_harness.cli.sweep"),
    ("report", "stream_harness.cli.report"),
    ("compare", "stream_harness.cli.compare"),
    ("backend", "stream_harness.cli.backend"),
    ("ui", "stream_harness.cli.ui"),
    ("compare-refs", "stream_harness.cli.compare_refs"),
    ("nightly", "stream_harness.cli.nightly"),
    ("merge", "stream_harness.cli.merge"),
    ("benchmark-json", "stream_harness.cli.benchmark_json"),
)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_UNUSABLE, f"{self.prog}: error: {message} (see --help)\n")


def command_module(name: str) -> ModuleType:
    return importlib.import_module(dict(COMMANDS)[name])


def build_parser(prog: str = "stream-harness", only: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Load NDJSON and Socket.io chat streams, time every chunk, and judge them.",
        epilog="Run 'stream-harness COMMAND --help' for a command's options and examples.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name, _module in COMMANDS:
        if only is not None and name not in only:
            continue
        module = command_module(name)
        sub = commands.add_parser(
            name,
            help=module.SUMMARY,
            description=module.SUMMARY,
            epilog="examples:\n" + module.EXAMPLES.rstrip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
        sub.set_defaults(execute=module.execute)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = "stream-harness",
    only: Sequence[str] | None = None,
    error_prefix: str = "",
) -> int:
    """Parse ``argv`` and run the subcommand; returns its exit code.

    Errors are one line starting with ``error_prefix`` (default: the program
    and the subcommand, e.g. ``stream-harness report:``).
    """
    args = build_parser(prog, only).parse_args(argv)
    prefix = error_prefix or f"{prog} {args.command}"
    try:
        return int(args.execute(args))
    except CommandError as error:
        print(f"{prefix}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug must still not print a traceback wall
        if os.environ.get("STREAM_HARNESS_DEBUG") or os.environ.get("ANALYSIS_DEBUG"):
            raise
        print(
            f"{prefix}: unexpected error: {type(error).__name__}: {error} (STREAM_HARNESS_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE


def entry() -> NoReturn:
    """The console script."""
    sys.exit(main())
