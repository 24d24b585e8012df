"""``make bench-sweep``: ``make sweep`` twice on the embedded fake backend, how long, and whether they agree.

The issue's targets: a sweep of both transports finishes in <= 10 minutes on
this machine, and two sweeps give capacities within 15 % of each other.  Each
sweep is ``stream-harness sweep`` with its defaults (``make sweep``), run as a
subprocess; the machine's load average is taken before and after each, since
other jobs on the 2 shared cores move both the time and (through the
load generator's self-check) the answer.  Writes the "Capacity sweep" section
of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.perfdoc import write_section

SECTION = "## Capacity sweep (make bench-sweep)"
TARGET_MINUTES = 10.0
TARGET_AGREEMENT = 0.15


def one_sweep(out: Path, extra: list[str]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "stream_harness", "sweep", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"bench.sweep: the sweep failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    capacity = json.loads((out / "capacity.json").read_text())
    return {"seconds": seconds, "load": (load_before, os.getloadavg()[0]), "capacity": capacity}


def agreement(a: int, b: int) -> float:
    """|a - b| as a share of the larger (0 when both are 0)."""
    return abs(a - b) / max(a, b) if max(a, b) else 0.0


def section(runs: list[dict[str, Any]], extra: list[str]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "stream-harness sweep" + (" " + " ".join(extra) if extra else "")
    search = runs[0]["capacity"]["search"]
    steps = f"steps of {search['step_s']:g}..{search['max_step_s']:g} s"
    machine = f"{platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()})"
    lines = [
        SECTION,
        "",
        f"`{command}` twice, one after the other: both transports, the default SLO "
        f"(`[tool.stream_harness.slo]`), doubling from {search['start']} streams up to {search['max_streams']}, "
        f"{steps} of 2 s streams (100 chunks), bisection to {search['tolerance']:.0%}; fake backend and load "
        f"generator on the same machine.  Measured {when} on {machine}.",
        "",
        "| sweep | wall time | load average before / after | transport | capacity (streams meeting the SLO) "
        "| steps | why it stopped |",
        "|---|---:|---|---|---|---:|---|",
    ]
    for number, run in enumerate(runs, 1):
        for transport, result in run["capacity"]["transports"].items():
            bound = "at least " if result["lower_bound"] else ""
            load = f"{run['load'][0]:.1f} / {run['load'][1]:.1f}"
            lines.append(
                f"| {number} | {run['seconds'] / 60:.1f} min | {load} | {transport} "
                f"| {bound}{result['max_streams_meeting_slo']} | {len(result['steps'])} | {result['summary']} |"
            )
    lines.append("")
    slowest = max(run["seconds"] for run in runs) / 60
    verdict = "meets" if slowest <= TARGET_MINUTES else "misses"
    lines.append(f"- Time: the slower sweep took {slowest:.1f} min (target <= {TARGET_MINUTES:g} min): **{verdict}**.")
    first, second = (run["capacity"]["transports"] for run in runs)
    for transport in first:
        if transport not in second:
            continue
        a, b = first[transport]["max_streams_meeting_slo"], second[transport]["max_streams_meeting_slo"]
        share = agreement(a, b)
        verdict = "meets" if share <= TARGET_AGREEMENT else "misses"
        lines.append(
            f"- {transport}: {a} and {b} streams, {share:.0%} apart (target <= {TARGET_AGREEMENT:.0%}): **{verdict}**."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-doc", action="store_true", help="print the section instead of writing PERFORMANCE.md")
    parser.add_argument("sweep_args", nargs="*", help="extra stream-harness sweep arguments (after --)")
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        for number in range(args.repeats):
            run = one_sweep(Path(tmp) / f"sweep-{number + 1}", args.sweep_args)
            print(
                f"sweep {number + 1}: {run['seconds'] / 60:.1f} min; "
                + "; ".join(f"{t}: {r['summary']}" for t, r in run["capacity"]["transports"].items()),
                flush=True,
            )
            runs.append(run)
    text = section(runs, args.sweep_args)
    if args.no_doc:
        print(text)
    else:
        write_section(SECTION, text)
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
