"""`python -m bench.client_capacity`: how many concurrent streams one load process sustains.

Runs the real load users (``loadtests/locustfile.py``, one headless Locust
process, both transports mixed NDJSON : Socket.io = 10 : 3 like the documented
target of 100 + 30) against the fake backend on the same machine, in steps of
more and more concurrent streams, every stream at ``--rate`` chunks/s.  Each
step reads the run's own harness self-check (``run.json`` ``harness``: CPU,
gevent loop lag, ``saturated``) and how many chunks/s actually arrived, so the
table shows where the load process, not the backend, becomes the limit.  The
highest step that is not saturated is the capacity.

The machine is shared: a step can be marked saturated because the machine was
short of CPU (the reason then says so); run it when the machine is quiet, and
read the steps side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.perfdoc import write_section
from fake_backend.process import start_backend

REPO = Path(__file__).resolve().parent.parent
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
SECTION = "## Load process capacity (make bench-client)"
NDJSON_WEIGHT, SOCKETIO_WEIGHT = 10, 3


@dataclass(frozen=True)
class Step:
    users: int
    run: dict[str, Any]
    summary: dict[str, Any]
    offered_chunks_per_s: float

    @property
    def harness(self) -> dict[str, Any]:
        return self.run.get("harness", {})

    @property
    def delivered_chunks_per_s(self) -> float:
        return sum(float(t.get("events_per_s") or 0.0) for t in self.summary.get("transports", {}).values())


def split_users(total: int) -> tuple[int, int]:
    """NDJSON and Socket.io users Locust's weights give for ``total`` users."""
    sio = round(total * SOCKETIO_WEIGHT / (NDJSON_WEIGHT + SOCKETIO_WEIGHT))
    return total - sio, sio


def run_step(url: str, users: int, args: argparse.Namespace, work: Path) -> Step:
    results = work / f"step-{users}"
    chunks = max(1, round(args.rate * args.stream_seconds))
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(min(users, 100)),
        "-t",
        f"{args.seconds:g}s",
        "--stop-timeout",
        f"{args.stream_seconds + 10:g}",
        "--host",
        url,
        "--transport",
        "both",
        "--ndjson-weight",
        str(NDJSON_WEIGHT),
        "--socketio-weight",
        str(SOCKETIO_WEIGHT),
        "--chunks",
        str(chunks),
        "--stream-seconds",
        f"{args.stream_seconds:g}",
        "--backend-options",
        json.dumps({"events": False, "pacing": "steady"}),
        "--results-dir",
        str(results),
        "--only-summary",
        "--loglevel",
        "ERROR",
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=args.seconds + args.stream_seconds + 120
    )
    if not (results / "summary.json").is_file():
        raise SystemExit(
            f"bench.client_capacity: step {users} wrote no results (exit {done.returncode}): "
            f"{done.stderr.strip().splitlines()[-1:] or ''}"
        )
    return Step(
        users=users,
        run=json.loads((results / "run.json").read_text()),
        summary=json.loads((results / "summary.json").read_text()),
        offered_chunks_per_s=users * chunks / args.stream_seconds,
    )


def _num(value: Any, fmt: str = ".0f") -> str:
    return "-" if value is None else format(float(value), fmt)


def table(steps: list[Step], args: argparse.Namespace) -> str:
    ok = [s.users for s in steps if not s.harness.get("saturated")]
    lines = [
        SECTION,
        "",
        f"One Locust process, both users mixed NDJSON : Socket.io = {NDJSON_WEIGHT} : {SOCKETIO_WEIGHT}, "
        f"every stream {args.rate:g} chunks/s ({args.stream_seconds:g} s streams), "
        f"{args.seconds:g} s per step, fake backend on the same machine.  "
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end).",
        "",
        "| concurrent streams (ndjson + socketio) | offered chunks/s | arrived chunks/s | arrived / offered "
        "| harness CPU mean / max % | loop lag p50 / p99 ms | saturated |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in steps:
        h = s.harness
        n, sio = split_users(s.users)
        verdict = "yes: " + "; ".join(h.get("reasons", [])) if h.get("saturated") else "no"
        lines.append(
            f"| {s.users} ({n} + {sio}) | {s.offered_chunks_per_s:,.0f} | {s.delivered_chunks_per_s:,.0f} "
            f"| {s.delivered_chunks_per_s / s.offered_chunks_per_s:.2f} "
            f"| {_num(h.get('cpu_percent_mean'))} / {_num(h.get('cpu_percent_max'))} "
            f"| {_num(h.get('loop_lag_ms_p50'), '.1f')} / {_num(h.get('loop_lag_ms_p99'), '.1f')} | {verdict} |"
        )
    lines += [
        "",
        f"Capacity (highest step not saturated): {max(ok) if ok else 'below the first step'} concurrent streams.",
        "arrived / offered below 1 with the harness not saturated means the backend "
        "(same two cores) could not keep the pace.",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.client_capacity", description=__doc__.splitlines()[0])
    p.add_argument(
        "--steps",
        default="26,65,130",
        help="concurrent streams per step, comma-separated (default 26,65,130 = 20+6, 50+15, 100+30)",
    )
    p.add_argument("--seconds", type=float, default=25.0, help="load time per step (default 25)")
    p.add_argument("--rate", type=float, default=333.0, help="chunks/s of every stream (default 333)")
    p.add_argument("--stream-seconds", type=float, default=10.0, help="length of one stream (default 10)")
    p.add_argument("--no-doc", action="store_true", help="print only, do not touch PERFORMANCE.md")
    args = p.parse_args(argv)
    try:
        args.steps = [int(x) for x in args.steps.split(",") if x.strip()]
    except ValueError:
        p.error("--steps must be comma-separated integers")
    if not args.steps or min(args.steps) < 1 or args.seconds <= 0 or args.rate <= 0 or args.stream_seconds <= 0:
        p.error("--steps, --seconds, --rate and --stream-seconds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    steps: list[Step] = []
    with start_backend() as backend, tempfile.TemporaryDirectory(prefix="capacity-") as work:
        for users in args.steps:
            step = run_step(backend.url, users, args, Path(work))
            steps.append(step)
            print(
                f"{users} streams: saturated={step.harness.get('saturated')} "
                f"cpu max {_num(step.harness.get('cpu_percent_max'))}% "
                f"lag p99 {_num(step.harness.get('loop_lag_ms_p99'), '.1f')} ms",
                flush=True,
            )
    text = table(steps, args)
    print("\n" + text)
    if not args.no_doc:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
