"""`python -m bench.client_capacity`: how many concurrent streams one load process sustains.

Runs the real load users (``loadtests/locustfile.py``, one headless Locust
process, both transports mixed NDJSON : Socket.io = 10 : 3 like the documented
target of 100 + 30) against the fake backend on the same machine, for each chunk rate
of ``--rates`` in steps of more and more concurrent streams (``--steps``, or
doubling from ``--start``).  Each step reads the run's own harness self-check
(``run.json`` ``harness``: CPU, gevent loop lag, ``saturated``) and how many
chunks/s actually arrived, so the table shows where the load process, not the
backend, becomes the limit.  Doubling stops at the first step where the load
process saturated (its capacity is the step before) or the backend fell behind
(fewer than ``BACKEND_BEHIND`` of the offered chunks arrived: the load
process's capacity is then at least that step, and the table says so).

Writes docs/PERFORMANCE.md's "Load process capacity" section (every step) and
docs/SCALING.md's measured sizing table (one row per rate).

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
from stream_harness.allocator import locust_env
from stream_harness.paths import LOCUSTFILE

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Load process capacity (make bench-client)"
SIZING_SECTION = "## Sizing, measured (make bench-client)"
SCALING_DOC = REPO / "docs" / "SCALING.md"
NDJSON_WEIGHT, SOCKETIO_WEIGHT = 10, 3
#: A step whose arrived / offered chunks fall below this: the backend, not the load process, is the limit.
BACKEND_BEHIND = 0.9


@dataclass(frozen=True)
class Step:
    users: int
    rate: float
    run: dict[str, Any]
    summary: dict[str, Any]
    offered_chunks_per_s: float

    @property
    def harness(self) -> dict[str, Any]:
        return self.run.get("harness", {})

    @property
    def delivered_chunks_per_s(self) -> float:
        return sum(float(t.get("events_per_s") or 0.0) for t in self.summary.get("transports", {}).values())

    @property
    def saturated(self) -> bool:
        return bool(self.harness.get("saturated"))

    @property
    def backend_behind(self) -> bool:
        return self.delivered_chunks_per_s < BACKEND_BEHIND * self.offered_chunks_per_s


@dataclass(frozen=True)
class Capacity:
    """What the steps at one rate say about the load process."""

    rate: float
    streams: int | None  # the highest step not saturated (None: the first step already was)
    #: why the load process never saturated (its capacity is then at least ``streams``); None when it did
    unsaturated_because: str | None


def capacity_of(steps: Sequence[Step]) -> Capacity:
    """Steps of one rate, in order -> the load process's capacity at that rate."""
    rate = steps[0].rate
    ok = [s.users for s in steps if not s.saturated]
    first_saturated = next((s.users for s in steps if s.saturated), None)
    best = max((u for u in ok if first_saturated is None or u < first_saturated), default=None)
    if first_saturated is not None:
        return Capacity(rate, best, None)
    why = "the backend on the same cores fell behind first" if steps[-1].backend_behind else "the largest step tried"
    return Capacity(rate, best, why)


def next_step(steps: Sequence[Step], args: argparse.Namespace) -> int | None:
    """Streams of the next step at this rate (None: done)."""
    if args.steps:
        return args.steps[len(steps)] if len(steps) < len(args.steps) else None
    if not steps:
        return args.start
    last = steps[-1]
    if last.saturated or last.backend_behind or last.users * 2 > args.max_streams:
        return None
    return last.users * 2


def split_users(total: int) -> tuple[int, int]:
    """NDJSON and Socket.io users Locust's weights give for ``total`` users."""
    sio = round(total * SOCKETIO_WEIGHT / (NDJSON_WEIGHT + SOCKETIO_WEIGHT))
    return total - sio, sio


def run_step(url: str, users: int, rate: float, args: argparse.Namespace, work: Path) -> Step:
    results = work / f"step-{rate:g}-{users}"
    chunks = max(1, round(rate * args.stream_seconds))
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
    timeout = args.seconds + args.stream_seconds + 120
    done = subprocess.run(command, cwd=REPO, env=locust_env(), capture_output=True, text=True, timeout=timeout)
    if not (results / "summary.json").is_file():
        raise SystemExit(
            f"bench.client_capacity: step {users} wrote no results (exit {done.returncode}): "
            f"{done.stderr.strip().splitlines()[-1:] or ''}"
        )
    return Step(
        users=users,
        rate=rate,
        run=json.loads((results / "run.json").read_text()),
        summary=json.loads((results / "summary.json").read_text()),
        offered_chunks_per_s=users * chunks / args.stream_seconds,
    )


def _num(value: Any, fmt: str = ".0f") -> str:
    return "-" if value is None else format(float(value), fmt)


def machine_line() -> str:
    return (
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end)."
    )


def table(steps: list[Step], args: argparse.Namespace) -> str:
    lines = [
        SECTION,
        "",
        f"One Locust process, both users mixed NDJSON : Socket.io = {NDJSON_WEIGHT} : {SOCKETIO_WEIGHT}, "
        f"{args.stream_seconds:g} s streams, {args.seconds:g} s per step, fake backend on the same machine.  "
        + machine_line(),
        "",
        "| chunks/s per stream | concurrent streams (ndjson + socketio) | offered chunks/s | arrived chunks/s "
        "| arrived / offered | harness CPU mean / max % | loop lag p50 / p99 ms | saturated |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for s in steps:
        h = s.harness
        n, sio = split_users(s.users)
        verdict = "yes: " + "; ".join(h.get("reasons", [])) if s.saturated else "no"
        lines.append(
            f"| {s.rate:g} | {s.users} ({n} + {sio}) | {s.offered_chunks_per_s:,.0f} | {s.delivered_chunks_per_s:,.0f} "
            f"| {s.delivered_chunks_per_s / s.offered_chunks_per_s:.2f} "
            f"| {_num(h.get('cpu_percent_mean'))} / {_num(h.get('cpu_percent_max'))} "
            f"| {_num(h.get('loop_lag_ms_p50'), '.1f')} / {_num(h.get('loop_lag_ms_p99'), '.1f')} | {verdict} |"
        )
    lines += [
        "",
        "arrived / offered below 1 with the harness not saturated means the backend "
        "(same cores) could not keep the pace.",
    ]
    return "\n".join(lines)


def capacity_cell(c: Capacity) -> str:
    if c.streams is None:
        return "below the first step"
    return str(c.streams) if c.unsaturated_because is None else f"at least {c.streams} ({c.unsaturated_because})"


def sizing_table(capacities: list[Capacity]) -> str:
    lines = [
        SIZING_SECTION,
        "",
        "One load process (one core) against the fake backend on the same machine, NDJSON : Socket.io = "
        f"{NDJSON_WEIGHT} : {SOCKETIO_WEIGHT}; every step of the search is in docs/PERFORMANCE.md "
        '("Load process capacity").  ' + machine_line(),
        "",
        "| streams' chunk rate | concurrent streams one load process sustains (not saturated) |",
        "|---:|---|",
    ]
    lines += [f"| {c.rate:g} chunks/s | {capacity_cell(c)} |" for c in capacities]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.client_capacity", description=__doc__.splitlines()[0])
    p.add_argument(
        "--steps",
        default="",
        help="concurrent streams per step, comma-separated (default: doubling from --start)",
    )
    p.add_argument("--start", type=int, default=26, help="streams of the first doubling step (default 26 = 20 + 6)")
    p.add_argument("--max-streams", type=int, default=2000, help="no step above this (default 2000)")
    p.add_argument("--seconds", type=float, default=25.0, help="load time per step (default 25)")
    p.add_argument(
        "--rates", default="333,100,30", help="chunks/s of every stream, one search per rate (default 333,100,30)"
    )
    p.add_argument("--stream-seconds", type=float, default=10.0, help="length of one stream (default 10)")
    p.add_argument("--no-doc", action="store_true", help="print only, do not touch the docs")
    args = p.parse_args(argv)
    try:
        args.steps = [int(x) for x in args.steps.split(",") if x.strip()]
        args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    except ValueError:
        p.error("--steps and --rates must be comma-separated numbers")
    numbers = [*args.steps, *args.rates, args.start, args.max_streams, args.seconds, args.stream_seconds]
    if not args.rates or min(numbers) <= 0:
        p.error("--steps, --rates, --start, --max-streams, --seconds and --stream-seconds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    steps: list[Step] = []
    capacities: list[Capacity] = []
    with start_backend() as backend, tempfile.TemporaryDirectory(prefix="capacity-") as work:
        for rate in args.rates:
            at_rate: list[Step] = []
            while (users := next_step(at_rate, args)) is not None:
                step = run_step(backend.url, users, rate, args, Path(work))
                at_rate.append(step)
                print(
                    f"{rate:g} chunks/s, {users} streams: saturated={step.saturated} "
                    f"arrived/offered {step.delivered_chunks_per_s / step.offered_chunks_per_s:.2f} "
                    f"cpu max {_num(step.harness.get('cpu_percent_max'))}% "
                    f"lag p99 {_num(step.harness.get('loop_lag_ms_p99'), '.1f')} ms",
                    flush=True,
                )
            steps += at_rate
            capacities.append(capacity_of(at_rate))
    text, sizing = table(steps, args), sizing_table(capacities)
    print("\n" + text + "\n\n" + sizing)
    if not args.no_doc:
        write_section(SECTION, text)
        write_section(SIZING_SECTION, sizing, SCALING_DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
