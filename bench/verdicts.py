"""Does the buffering detector cry wolf on real clean runs, and catch real faults?

Runs `make bench`'s own pipeline (`stream_harness.cli.run`: fake backend + headless Locust,
both transports) N times on a clean profile and once per fault on a faulty
one, and counts the verdicts per transport.  A clean run called `buffered` is
a false alarm; a faulty run called anything but `buffered` is a miss.  Runs the
harness marked saturated are counted apart (their verdict is `inconclusive`
by design).  Writes the table to docs/PERFORMANCE.md.

    python -m bench.verdicts [--clean-runs 20] [--seconds 12] [--users 20] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.perfdoc import write_section
from stream_harness.cli import main as harness

SECTION = "## Buffering verdicts on real runs (make bench-verdicts)"
#: Faults the detector must call `buffered` (fake-backend harness fields).
FAULTS = {
    "buffer 50 ms": {"buffer_ms": 50},
    "buffer 20 chunks": {"buffer_chunks": 20},
    "gzip, blocks flushed when full": {"gzip": True},
}


def one_run(root: Path, name: str, args: argparse.Namespace, backend_options: dict) -> dict:
    """Verdict and saturation per transport of one `stream-harness run`."""
    argv = [
        "run",
        "--seconds",
        f"{args.seconds:g}",
        "--users",
        str(args.users),
        "--chunks",
        str(args.chunks),
        "--stream-seconds",
        f"{args.stream_seconds:g}",
        "--results-root",
        str(root),
        "--run-id",
        name,
        "--no-report",
    ]
    if backend_options:
        argv += ["--backend-options", json.dumps(backend_options)]
    if harness(argv) != 0:
        return {"error": "run failed"}
    summary = json.loads((root / name / "summary.json").read_text())
    saturated = bool(summary["run"]["harness"].get("saturated"))
    return {
        t: ("saturated" if saturated else body["buffering"]["verdict"]) for t, body in summary["transports"].items()
    }


def tally(results: list[dict]) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for result in results:
        for transport, verdict in result.items():
            counts.setdefault(transport, Counter())[verdict] += 1
    return counts


def render(args: argparse.Namespace, clean: dict[str, Counter], faults: dict[str, dict[str, Counter]]) -> str:
    def cell(c: Counter) -> str:
        return ", ".join(f"{v} {k}" for k, v in sorted(c.items())) or "-"

    lines = [
        SECTION,
        "",
        f"Profile: {args.users} users over both transports, {args.seconds:g} s of load, streams of "
        f"{args.chunks} chunks over {args.stream_seconds:g} s (about "
        f"{args.chunks / max(args.stream_seconds, 1e-9):.0f} chunks/s each), fake backend on the "
        "same 2 cores.  `saturated` = the harness flagged itself, so the verdict is "
        "`inconclusive` by design.",
        "",
        "| profile | runs | ndjson | socketio |",
        "|---|---:|---|---|",
    ]
    lines.append(
        f"| clean | {args.clean_runs} | {cell(clean.get('ndjson', Counter()))} | "
        f"{cell(clean.get('socketio', Counter()))} |"
    )
    for name, counts in faults.items():
        lines.append(
            f"| {name} | {args.fault_runs} | {cell(counts.get('ndjson', Counter()))} | "
            f"{cell(counts.get('socketio', Counter()))} |"
        )
    false_alarms = sum(c["buffered"] for c in clean.values())
    lines += [
        "",
        f"False alarms on clean runs: **{false_alarms}**.  (gzip applies to NDJSON only: "
        "Socket.io frames are not gzipped by the fault, so its `clean` there is right.)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.verdicts", description=__doc__.splitlines()[0])
    p.add_argument("--clean-runs", type=int, default=20)
    p.add_argument("--fault-runs", type=int, default=1)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--chunks", type=int, default=1000)
    p.add_argument("--stream-seconds", type=float, default=3.0)
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args(argv)
    if min(args.clean_runs, args.fault_runs, args.users) < 1 or args.seconds <= 0:
        p.error("run counts, --users and --seconds must be positive")
    with tempfile.TemporaryDirectory(prefix="bench-verdicts-") as tmp:
        root = Path(tmp)
        clean_results = [one_run(root, f"clean-{i}", args, {}) for i in range(args.clean_runs)]
        fault_results = {
            name: [one_run(root, f"{name.split()[0]}-{i}", args, options) for i in range(args.fault_runs)]
            for name, options in FAULTS.items()
        }
    clean = tally([r for r in clean_results if "error" not in r])
    faults = {name: tally([r for r in rs if "error" not in r]) for name, rs in fault_results.items()}
    text = render(args, clean, faults)
    print(text)
    if not args.no_doc:
        write_section(SECTION, text)
    failed_runs = sum("error" in r for r in clean_results) + sum(
        "error" in r for rs in fault_results.values() for r in rs
    )
    if failed_runs:
        print(f"bench.verdicts: {failed_runs} run(s) failed to produce results", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
