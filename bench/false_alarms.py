"""How often does `make bench-compare` cry wolf? Compare identical code N times.

The base is a copy of this checkout (same code, another directory, like the
PR job's worktree); every comparison that does not exit 0 is a false alarm.
Prints one line per repeat and a closing line for docs/PERFORMANCE.md.

    python -m bench.false_alarms [--repeats 10] [stream_harness.cli.compare_refs flags, e.g. --rounds 2 --seconds 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from stream_harness.cli.compare_refs import REPO, tree_env

COPY_IGNORE = shutil.ignore_patterns(
    ".venv", ".git", "results", "node_modules", "__pycache__", ".pytest_cache", "*.egg-info", ".bench"
)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.false_alarms", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=REPO / "results" / "false-alarms")
    args, compare_args = p.parse_known_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    flagged, unusable, rows = 0, 0, []
    with tempfile.TemporaryDirectory(prefix="bench-false-alarms-") as tmp:
        base = Path(shutil.copytree(REPO, Path(tmp) / "base", symlinks=True, ignore=COPY_IGNORE))
        for i in range(1, args.repeats + 1):
            out = args.out / f"repeat-{i:02d}"
            started = time.monotonic()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "stream_harness.cli.compare_refs",
                    "--base",
                    str(base),
                    "--out",
                    str(out),
                    *compare_args,
                ],
                cwd=REPO,
                env=tree_env(REPO),
                capture_output=True,
                text=True,
            )
            regressions = [line for line in done.stdout.splitlines() if line.startswith("REGRESSION")]
            flagged += done.returncode == 1
            unusable += done.returncode not in (0, 1)
            rows.append(
                {
                    "repeat": i,
                    "exit_code": done.returncode,
                    "seconds": round(time.monotonic() - started),
                    "regressions": regressions,
                }
            )
            print(
                f"repeat {i:2d}: exit {done.returncode} in {time.monotonic() - started:.0f} s"
                + "".join(f"\n    {line}" for line in regressions),
                flush=True,
            )
    (args.out / "false_alarms.json").write_text(
        json.dumps(
            {
                "repeats": args.repeats,
                "flagged": flagged,
                "unusable": unusable,
                "compare_args": compare_args,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"{flagged} of {args.repeats} comparisons of identical code flagged a regression ({unusable} unusable)")
    return 0 if flagged == 0 and unusable == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
