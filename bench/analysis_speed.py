"""How long `python -m analysis report` takes on 10 million chunks, and how much memory.

Simulates a run (tests.support.synthetic: both transports, ~6,700 chunks per
stream), writes its raw files, then times the real command as a subprocess
and reads that child's peak RSS (``os.wait4``).  Side by side in the same
run: the same report on a 10x smaller run (does the cost scale linearly?)
and a plain ``pandas.read_parquet`` of the events file (the floor any
analysis pays).  Also replays the buffering detector's calibration on
simulated series and prints its margins.  Results replace the "Analysis"
section of docs/PERFORMANCE.md.

    python -m bench.analysis_speed [--chunks 10000000] [--streams 1500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.perfdoc import PERFORMANCE_DOC as DOC
from bench.perfdoc import write_section

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Analysis (make bench-analysis)"
TARGET_S = 15.0
TARGET_MB = 2048.0


@dataclass(frozen=True)
class Timed:
    seconds: float
    peak_mb: float
    stages: str = ""


def run_child(args: Sequence[str]) -> Timed:
    """Run ``python args...`` and return its wall time and its own peak RSS."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"bench-analysis: {' '.join(args)} failed: {stderr.strip()}")
    stages = next((line.removeprefix("timings: ") for line in stderr.splitlines() if line.startswith("timings: ")), "")
    return Timed(seconds, usage.ru_maxrss / 1024.0, stages)


def make_run(directory: Path, chunks: int, streams: int, seed: int) -> int:
    """Write a synthetic run of about ``chunks`` chunks; returns the exact count."""
    from analysis.results import write_raw_results
    from tests.support.synthetic import SyntheticSpec, synthetic_run

    per_transport = max(1, streams // 2)
    mean = chunks / (2 * per_transport)
    spec = SyntheticSpec(
        streams=per_transport,
        chunks=(int(mean * 0.9), int(mean * 1.1)),
        endpoints=("chat", "agent", "tool"),
        users=100,
        seed=seed,
    )
    run, frame_streams, events = synthetic_run(spec)
    write_raw_results(directory, run, frame_streams, events)
    return int(frame_streams["n_chunks"].sum())


def measure(directory: Path) -> tuple[Timed, Timed]:
    report = run_child(["-m", "analysis", "report", str(directory), "--timings"])
    read = run_child(["-c", "import sys, pandas; pandas.read_parquet(sys.argv[1])", str(directory / "events.parquet")])
    return report, read


def calibration_rows() -> list[tuple[str, str, str]]:
    """Detector verdicts and margins on simulated series (same generator as the tests)."""
    from analysis.buffering import BURST_LEAD_MIN_MS, COALESCED_SHARE_MIN, STALE_SHARE_MIN
    from analysis.metrics import analyse
    from tests.support.synthetic import SyntheticSpec, synthetic_run

    base = SyntheticSpec(streams=8, chunks=(500, 700), rate=333.0)

    def evidence(spec: SyntheticSpec) -> list[dict]:
        run, streams, events = synthetic_run(spec)
        summary = analyse(run, streams, events).summary
        return [item["buffering"] for item in summary["transports"].values()]

    rows = []
    clean = [
        b
        for pacing in ("steady", "poisson", "llm")
        for noise in ("loaded", "heavy")
        for seed in range(10)
        for b in evidence(replace(base, pacing=pacing, noise=noise, seed=seed))
    ]
    alarms = sum(b["verdict"] != "clean" for b in clean)
    worst_coalesced = max(b["evidence"]["coalesced_share"] for b in clean)
    worst_stale = max(b["evidence"]["stale_share"] for b in clean)
    rows.append(
        (
            f"clean: 3 pacings x 2 noise levels x 10 seeds x 2 transports ({len(clean)} verdicts)",
            f"{len(clean) - alarms} clean, {alarms} false alarms",
            f"max coalesced share {worst_coalesced:.2f} (rule: >= {COALESCED_SHARE_MIN}); "
            f"max stale share {worst_stale:.3f} (rule: >= {STALE_SHARE_MIN})",
        )
    )
    modes = {
        "window 50 ms, emit times": dict(buffer_ms=50),
        "window 50 ms, no emit times, bursty, heavy noise": dict(
            buffer_ms=50, emit_times=False, pacing="llm", noise="heavy"
        ),
        "window 50 ms at 67 chunks/s, no emit times": dict(buffer_ms=50, rate=67.0, emit_times=False),
        "every 10 chunks (30 ms), no emit times": dict(buffer_chunks=10, emit_times=False),
        "gzip 32 KB blocks, no emit times": dict(gzip_block_bytes=32768, emit_times=False),
        "proxy 8 KB buffer, no emit times": dict(proxy_buffer_bytes=8192, emit_times=False),
    }
    for name, extra in modes.items():
        found = [
            b for seed in range(5) for b in evidence(replace(base, seed=100 + seed, transports=("ndjson",), **extra))
        ]
        caught = sum(b["verdict"] == "buffered" for b in found)
        coalesced = min(b["evidence"]["coalesced_share"] for b in found)
        leads = [b["evidence"]["burst_lead_ms"] for b in found]
        stale = [b["evidence"]["stale_share"] for b in found if b["evidence"]["stale_share"] is not None]
        margin = (
            f"min coalesced share {coalesced:.2f}, min burst lead "
            f"{min(leads):.0f} ms (rule: >= {BURST_LEAD_MIN_MS:.0f} ms)"
        )
        if stale:
            margin += f"; min stale share {min(stale):.2f}"
        rows.append((name, f"{caught}/{len(found)} buffered", margin))
    return rows


def section(rows: list[tuple[str, int, int, Timed, Timed]], calibration: list[tuple[str, str, str]]) -> str:
    lines = [
        SECTION,
        "",
        "`python -m analysis report DIR` (summary.json + report.md + 4 PNG charts) as a "
        "subprocess on a synthetic run (both transports, 3 endpoints, ~6,700 chunks per "
        "stream); peak RSS is that process's own (`os.wait4`). Reference in the same run: "
        "`pandas.read_parquet(events.parquet)` alone.",
        "",
        "| run | chunks | streams | report wall | stages | peak RSS | read_parquet wall, RSS | report / read |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, chunks, streams, report, read in rows:
        lines.append(
            f"| {label} | {chunks:,} | {streams:,} | {report.seconds:.1f} s | {report.stages} "
            f"| {report.peak_mb:,.0f} MB | {read.seconds:.1f} s, {read.peak_mb:,.0f} MB "
            f"| {report.seconds / read.seconds:.1f}x |"
        )
    if len(rows) == 2:
        small, big = rows[0], rows[1]
        scale = big[1] / small[1]
        lines += [
            "",
            f"10x the chunks costs {big[3].seconds / small[3].seconds:.1f}x the time "
            f"and {big[3].peak_mb / small[3].peak_mb:.1f}x the memory "
            f"(chunks ratio {scale:.1f}).",
        ]
    big = rows[-1][3]
    verdict = "meets" if big.seconds < TARGET_S and big.peak_mb < TARGET_MB else "MISSES"
    lines += [
        "",
        f"Target: < {TARGET_S:.0f} s and < {TARGET_MB / 1024:.0f} GB for 10 million "
        f"chunks: **{verdict}** ({big.seconds:.1f} s, {big.peak_mb:,.0f} MB).",
        "",
        "Buffering detector on simulated series (analysis/synthetic.py; thresholds in analysis/buffering.py):",
        "",
        "| series | verdicts | margin to the thresholds |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {verdicts} | {margin} |" for name, verdicts, margin in calibration]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench-analysis", description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000_000)
    parser.add_argument("--streams", type=int, default=1500)
    parser.add_argument("--keep", type=Path, help="write the runs here and keep them")
    parser.add_argument("--no-doc", action="store_true", help="do not touch PERFORMANCE.md")
    args = parser.parse_args(argv)
    if args.chunks < 10_000 or args.streams < 2:
        parser.error("--chunks must be >= 10000 and --streams >= 2")
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    rows = []
    try:
        for label, factor in (("1/10 size", 10), ("full size", 1)):
            chunks = args.chunks // factor
            streams = max(2, args.streams // factor)
            directory = root / f"run-{chunks}"
            print(f"simulating {chunks:,} chunks in {streams:,} streams ...", flush=True)
            exact = make_run(directory, chunks, streams, seed=factor)
            report, read = measure(directory)
            print(
                f"  report {report.seconds:.1f} s, peak {report.peak_mb:,.0f} MB "
                f"({report.stages}); read_parquet {read.seconds:.1f} s",
                flush=True,
            )
            rows.append((label, exact, streams, report, read))
            if args.keep is None:
                shutil.rmtree(directory, ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print("replaying the detector calibration ...", flush=True)
    calibration = calibration_rows()
    text = section(rows, calibration)
    print(text)
    if not args.no_doc:
        write_section(SECTION, text)
        print(f"wrote {DOC.relative_to(REPO)}")
    big = rows[-1][3]
    return 0 if big.seconds < TARGET_S and big.peak_mb < TARGET_MB and not math.isnan(big.seconds) else 1


if __name__ == "__main__":
    sys.exit(main())
