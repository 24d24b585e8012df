"""``python -m analysis report DIR`` / ``compare BASE CURRENT``: the ``stream-harness`` subcommands.

Exit codes: 0 fine / no regression, 1 regression found, 2 unusable input
(one line on stderr, never a traceback).
"""

from __future__ import annotations

from collections.abc import Sequence

from stream_harness.cli import main as harness_main


def main(argv: Sequence[str] | None = None) -> int:
    return harness_main(argv, prog="python -m analysis", only=("report", "compare"), error_prefix="analysis")


if __name__ == "__main__":
    raise SystemExit(main())
