"""Memory of every harness process over a long run: does anything grow with the events?

``make bench-memory`` (150 s, 40 users, both transports, 333 chunks/s per
stream; local, then master + 2 workers), ``make soak-capacity`` (60 minutes
at the load process's capacity, 100 NDJSON + 30 Socket.io users) and ``make
soak-distributed`` (10 minutes, master + 2 workers, 80 users) run a headless
Locust load against the fake backend and sample, once a second, the RSS of
every process of the harness: the load process (or each worker), the master,
and the result writer.  Afterwards:

- growth: RSS at the end of the load minus RSS at ``--from-s`` (20 s: start-up
  and the first streams are done), both read off the least-squares line through
  the samples in between, divided by the events received in between
  (from the result set itself; a worker's growth by the events of the worker
  that received fewest);
- writing: the peak RSS after the load stopped, against the steady level
  (median over the last 30 s of load);
- a chart of RSS over time per process (``docs/memory-<name>.png``).

Targets: growth <= 1 byte per event (<= 2 in the
150 s check), peak while writing <= 1.2 x steady.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil

from bench.perfdoc import PERFORMANCE_DOC, write_section
from fake_backend.process import start_backend
from loadtests.clock import least_squares_slope
from stream_harness.allocator import locust_env, running_allocator
from stream_harness.paths import LOCUSTFILE, PACKAGES_ROOT
from tests.support.loopback import free_port

SAMPLE_S = 1.0
NDJSON_WEIGHT, SOCKETIO_WEIGHT = 10, 3


@dataclass
class Trace:
    """RSS samples of one role's processes (summed per sample) over time."""

    role: str
    t: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    allocator: str = ""  # the C allocator its process runs on (stream_harness.allocator)


@dataclass
class Outcome:
    name: str
    seconds: float
    users: int
    traces: dict[str, Trace]
    load_end_s: float
    events_between: int
    events_total: int
    worker_events_between: list[int]  # per worker, fewest first (distributed runs)
    saturated: bool
    chunks_per_s: float


def role_of(process: psutil.Process, mode: str) -> str | None:
    """Which harness role a process plays (None: not ours to measure)."""
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return None
    if "loadtests.results.writer" in cmdline:
        return "result writer"
    if "--worker" in cmdline:
        return "worker"
    if "locust" in cmdline:
        return "master" if mode == "distributed" else "load process"
    return None


def locust_command(mode: str, url: str, args: argparse.Namespace, results: Path, port: int) -> list[str]:
    chunks = max(1, round(args.rate * args.stream_seconds))
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(args.users), "-r", str(min(args.users, 20)), "-t", f"{args.seconds:g}s",
        "--stop-timeout", f"{args.stream_seconds + 5:g}", "--host", url, "--transport", "both",
        "--ndjson-weight", str(NDJSON_WEIGHT), "--socketio-weight", str(SOCKETIO_WEIGHT),
        "--chunks", str(chunks), "--stream-seconds", f"{args.stream_seconds:g}",
        "--backend-options", json.dumps({"events": False, "pacing": "steady"}),
        "--results-dir", str(results), "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    if mode == "distributed":
        command += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                    "--expect-workers", "2"]  # fmt: skip
    return command


def run_mode(mode: str, args: argparse.Namespace, work: Path) -> Outcome:
    results = work / f"results-{mode}"
    port = free_port()
    traces: dict[str, Trace] = {}
    env = locust_env()
    with start_backend() as backend:
        master = subprocess.Popen(locust_command(mode, backend.url, args, results, port), cwd=PACKAGES_ROOT,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        workers = []
        if mode == "distributed":
            for _ in range(2):
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1",
                     "--master-port", str(port), "--loglevel", "WARNING"],
                    cwd=PACKAGES_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        started, spawned_at = time.monotonic(), time.time()
        stop = threading.Event()
        sampler = threading.Thread(target=sample_all, args=(master, workers, mode, traces, started, stop))
        sampler.start()
        try:
            _, stderr = master.communicate(timeout=args.seconds + args.stream_seconds + 600)
        finally:
            stop.set()
            sampler.join()
            for worker in workers:
                worker.wait(timeout=60)
    if not (results / "summary.json").is_file():
        said = [line for line in stderr.splitlines() if "stream harness" in line] or stderr.strip().splitlines()[-3:]
        raise SystemExit(f"bench.memory: the {mode} run wrote no results: {said[-3:]}")
    summary = json.loads((results / "summary.json").read_text())
    run = json.loads((results / "run.json").read_text())
    # RSS samples and events on one clock, the run's: its start is when the load
    # starts, after the workers (if any) have connected, a few seconds after the spawn.
    on_run_clock(traces, datetime.fromisoformat(run["started_at"]).timestamp() - spawned_at)
    load_end = args.seconds
    between, total, per_worker = events_between(results, args.from_s, load_end)
    rate = sum(float(t.get("events_per_s") or 0.0) for t in summary["transports"].values())
    return Outcome(mode, args.seconds, args.users, traces, load_end, between, total, per_worker,
                   bool(run.get("harness", {}).get("saturated")), rate)  # fmt: skip


def on_run_clock(traces: dict[str, Trace], run_started_s: float) -> None:
    """Shift sample times (seconds since the spawn) to seconds since the run started."""
    for trace in traces.values():
        trace.t = [t - run_started_s for t in trace.t]


def sample_all(master: subprocess.Popen[str], workers: list[subprocess.Popen[bytes]], mode: str,
               traces: dict[str, Trace], started: float, stop: threading.Event) -> None:  # fmt: skip
    """Sample the master's family and every worker's family together."""
    roots = [psutil.Process(master.pid), *(psutil.Process(w.pid) for w in workers)]
    while not stop.is_set():
        now = time.monotonic() - started
        per_role: dict[str, list[float]] = {}
        pids: dict[str, int] = {}
        for index, root in enumerate(roots):
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for process in family:
                role = role_of(process, mode)
                if role is None:
                    continue
                if role == "worker":
                    role = f"worker {index}"
                try:
                    per_role.setdefault(role, []).append(process.memory_info().rss / 2**20)
                    pids[role] = process.pid
                except psutil.Error:
                    continue
        for role, values in per_role.items():
            trace = traces.setdefault(role, Trace(role))
            if not trace.allocator:
                trace.allocator = str(running_allocator(Path(f"/proc/{pids[role]}/maps")))
            trace.t.append(now)
            trace.rss_mb.append(max(values))
        stop.wait(SAMPLE_S)


def events_between(results: Path, from_s: float, to_s: float) -> tuple[int, int, list[int]]:
    """Events that arrived between ``from_s`` and ``to_s`` after the run started, all events, and the
    events in between per worker (fewest first; empty for a local run)."""
    from analysis.results import iter_event_batches, read_run, read_streams

    streams = read_streams(results)
    run = read_run(results)
    origin = datetime.fromisoformat(run["started_at"]).timestamp()
    started = streams["started_at"].to_numpy(dtype=np.float64)
    workers, worker_of = np.unique(streams["worker"].astype(str).to_numpy(), return_inverse=True)
    per_worker = np.zeros(len(workers), dtype=np.int64)
    between = total = 0
    for events in iter_event_batches(results):
        keys = events["stream_key"].to_numpy()
        arrival = started[keys] + events["t_ms"].to_numpy() / 1000.0 - origin
        inside = (arrival >= from_s) & (arrival <= to_s)
        between += int(inside.sum())
        per_worker += np.bincount(worker_of[keys[inside]], minlength=len(workers))
        total += len(events)
    local = len(workers) == 1 and workers[0] == "local"
    return between, total, [] if local else sorted(int(n) for n in per_worker)


def growth(trace: Trace, from_s: float, to_s: float) -> tuple[float, float, float, float]:
    """(RSS at from_s, RSS at to_s, steady level, peak after to_s), MB.

    The RSS at ``from_s`` and ``to_s`` is read off the least-squares line through
    every sample in between: streams start and end every few seconds, a saw-tooth
    of 1-2 MB that two single points would read as growth or shrinkage.
    """
    t = np.asarray(trace.t)
    rss = np.asarray(trace.rss_mb)
    between = (t >= from_s) & (t <= to_s)
    if between.sum() >= 2:
        slope = least_squares_slope(t[between], rss[between])
        middle, level = float(t[between].mean()), float(rss[between].mean())
        at_from, at_end = level + slope * (from_s - middle), level + slope * (to_s - middle)
    else:
        at_from = at_end = float("nan")
    steady_window = (t >= to_s - 30) & (t <= to_s)
    steady = float(statistics.median(rss[steady_window])) if steady_window.any() else float("nan")
    after = rss[t > to_s]
    peak_after = float(after.max()) if after.size else float("nan")
    return at_from, at_end, steady, peak_after


def chart(outcome: Outcome, path: Path, from_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.8))
    ax = figure.subplots()
    for role, trace in sorted(outcome.traces.items()):
        ax.plot(np.asarray(trace.t) / 60.0 if outcome.seconds > 600 else trace.t, trace.rss_mb, label=role)
    unit = "min" if outcome.seconds > 600 else "s"
    end = outcome.load_end_s / 60.0 if outcome.seconds > 600 else outcome.load_end_s
    ax.axvline(end, color="grey", linestyle="--", linewidth=0.8)
    ax.text(end, ax.get_ylim()[1] * 0.95, " load stops, results written", fontsize=8, va="top")
    ax.set(title=f"RSS per harness process: {outcome.name}, {outcome.users} users, "
                 f"{outcome.events_total / 1e6:.1f} M events", xlabel=f"time ({unit})", ylabel="RSS (MB)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.subplots_adjust(left=0.1, right=0.97, bottom=0.14, top=0.9)
    figure.savefig(path, dpi=100)


def section(heading: str, outcomes: list[Outcome], args: argparse.Namespace, charts: list[Path]) -> str:
    lines = [
        heading,
        "",
        f"`python -m bench.memory --seconds {args.seconds:g} --users {args.users} --rate {args.rate:g}`: headless "
        f"Locust against the fake backend on this 2-core machine, both transports ({NDJSON_WEIGHT}:{SOCKETIO_WEIGHT} "
        f"NDJSON:Socket.io users), {args.rate:g} chunks/s per stream; RSS of every harness process sampled "
        f"each second. Growth = RSS at the end of the load minus RSS {args.from_s:g} s after the load started "
        "(both on the least-squares "
        "line through every sample in between, which the saw-tooth of streams starting and ending does not tilt), "
        "per event received "
        "in between (by the whole run; for a worker, by the worker that received fewest); "
        "writing = peak RSS after the load stopped / median RSS over its last 30 s.",
        "",
        "| run | process | allocator | RSS at start mark | RSS at end of load | growth per event | "
        "peak while writing | writing / steady | events (chunks/s) | saturated |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        for role, trace in sorted(outcome.traces.items()):
            at_from, at_end, steady, peak = growth(trace, args.from_s, outcome.load_end_s)
            received = outcome.events_between
            if role.startswith("worker") and outcome.worker_events_between:
                received = outcome.worker_events_between[0]
            per_event = (at_end - at_from) * 2**20 / max(received, 1)
            lines.append(
                f"| {outcome.name} | {role} | {trace.allocator} | {at_from:.0f} MB | {at_end:.0f} MB "
                f"| {per_event:.2f} B | {peak:.0f} MB | {peak / steady:.2f} | {received / 1e6:.2f} M "
                f"({outcome.chunks_per_s:,.0f}) | {'yes' if outcome.saturated else 'no'} |"
            )
    for outcome in outcomes:
        lines += by_ten_minutes(outcome)
    lines += ["", *[f"![RSS over time]({path.name})" for path in charts]]
    return "\n".join(lines) + "\n"


def by_ten_minutes(outcome: Outcome) -> list[str]:
    """For a run of 20 minutes or more: each process's median RSS over the last minute of every
    ten, so a level that settles can be told from one that keeps climbing."""
    marks = [m for m in range(600, int(outcome.load_end_s) + 1, 600)]
    if len(marks) < 2:
        return []
    lines = [
        "",
        f"RSS ({outcome.name}), median over the minute before each mark:",
        "",
        "| process | " + " | ".join(f"min {m // 60}" for m in marks) + " |",
        "|---|" + "---|" * len(marks),
    ]
    for role, trace in sorted(outcome.traces.items()):
        t, rss = np.asarray(trace.t), np.asarray(trace.rss_mb)
        cells = []
        for mark in marks:
            window = rss[(t > mark - 60) & (t <= mark)]
            cells.append(f"{float(np.median(window)):.1f} MB" if window.size else "-")
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--rate", type=float, default=333.0, help="chunks/s per stream")
    parser.add_argument("--stream-seconds", type=float, default=10.0)
    parser.add_argument("--from-s", type=float, default=20.0, help="start of the growth interval")
    parser.add_argument("--modes", default="local,distributed")
    parser.add_argument("--section", default="## Memory over a run (make bench-memory)")
    parser.add_argument("--name", default="memory", help="chart file name stem under docs/")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    outcomes = []
    charts = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for mode in args.modes.split(","):
            outcome = run_mode(mode, args, Path(tmp))
            outcomes.append(outcome)
            path = PERFORMANCE_DOC.parent / f"{args.name}-{mode}.png"
            chart(outcome, path, args.from_s)
            charts.append(path)
    text = section(args.section, outcomes, args, charts)
    print(text)
    if not args.no_doc:
        write_section(args.section, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
