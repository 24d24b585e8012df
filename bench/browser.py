"""`make bench-browser`: what browser users cost, and how many one machine runs beside the fake backend.

1. **Page CPU per 1,000 chunks**, per transport: ``--pages`` Chromium pages
   (one Chromium, as the browser users run it: helper process, bridge,
   Playwright) each read ``--streams`` streams from the fake backend at once;
   the CPU time of the browser's whole process tree (Chromium's browser,
   network service and renderers, Playwright's driver, the helper) over the
   chunks they read; beside it the load process's own share (the bridge
   turning stamp batches into records).
2. **Capacity**: headless Locust runs with only browser users
   (``-u N --browser-users N``) on one transport, for each stream shape
   (``--shapes``: the ``make bench`` shape, 3,000 chunks in 10 s, and an
   LLM-paced one, 1,000 chunks in 20 s), N stepping up until the harness
   self-check (load process and pages) says saturated.  The table has each
   step's self-check numbers; the answer is the last unsaturated N.

Everything runs on this machine beside the fake backend; the machine is
shared, so the load average before and after is written with the numbers.
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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.perfdoc import PERFORMANCE_DOC as DOC
from bench.perfdoc import write_section
from stream_harness.allocator import locust_env

REPO = Path(__file__).resolve().parent.parent
SECTION = "## Browser users (make bench-browser)"
TRANSPORTS = ("ndjson", "socketio")


# =========================================================================== 1. page CPU


@dataclass
class CpuSample:
    transport: str
    chunks: int
    browser_s: float
    load_s: float
    failed: int

    @property
    def browser_per_1000(self) -> float:
        return self.browser_s / self.chunks * 1000

    @property
    def load_per_1000(self) -> float:
        return self.load_s / self.chunks * 1000


def page_cpu(url: str, transport: str, pages: int, streams: int, chunks: int, seconds: float) -> CpuSample:
    """Run ``streams`` rounds of one stream per page, all pages at once; CPU of the browser and of us."""
    import gevent

    from loadtests.browser.channel import conclude
    from loadtests.browser.fleet import BrowserFleet
    from loadtests.browser.orders import ndjson_order, socketio_order
    from loadtests.options import RunOptions
    from loadtests.protocol.http1 import parse_base_url
    from loadtests.results.record import StreamRecord
    from stream_harness.contract.schema import CHUNK

    fleet = BrowserFleet()
    try:
        channels = [fleet.open_page(url) for _ in range(pages)]
        origin = parse_base_url(url)
        options = RunOptions(stream_timeout=seconds * 4 + 30)
        harness = {"chunks": chunks, "duration_s": seconds, "pacing": "steady", "events": False}
        request = {"messages": [{"role": "user", "content": "bench"}], "harness": harness}
        records: list[StreamRecord] = []

        def one(channel: Any, index: int) -> None:
            for n in range(streams):
                record = StreamRecord(transport, "chat", f"p{index}-s{n}", client="browser")
                if transport == "ndjson":
                    order = ndjson_order(record.stream_id, origin, options, request, {"X-Fingerprint-ID": "bench"})
                else:
                    order = socketio_order(record.stream_id, origin, options, request)
                stream = channel.run(record, order, transport, options.stream_timeout + 40)
                conclude(stream, gave_up_after_s=options.stream_timeout + 40)
                records.append(record)

        one(channels[0], -1)  # warm: connections open, pages' code compiled
        records.clear()
        gevent.sleep(1.0)
        fleet.monitor.reset()
        fleet.monitor.sample()
        load0 = time.process_time()
        gevent.joinall([gevent.spawn(one, channel, i) for i, channel in enumerate(channels)])
        load_s = time.process_time() - load0
        browser_s = fleet.monitor.cpu_time_s()
        got = sum(sum(1 for kind in r.kinds if kind == CHUNK) for r in records)
        return CpuSample(transport, got, browser_s, load_s, sum(r.status != "completed" for r in records))
    finally:
        fleet.stop()


# =========================================================================== 2. capacity


@dataclass
class Step:
    transport: str
    shape: str
    users: int
    saturated: bool
    reasons: list[str]
    cpu_max: float | None
    lag_p99: float | None
    page_lag_p99: float | None
    paint_p99: float | None
    browser_cpu_mean: float | None
    streams: int
    failed: int


def capacity_step(url: str, transport: str, shape: tuple[int, float], users: int, seconds: int) -> Step:
    results = Path(tempfile.mkdtemp(prefix=f"bench-browser-{transport}-{users}-"))
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(REPO / "loadtests" / "locustfile.py"),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--host",
        url,
        "--transport",
        transport,
        "--browser-users",
        str(users),
        "--chunks",
        str(shape[0]),
        "--stream-seconds",
        f"{shape[1]:g}",
        "--warmup",
        "5",
        "--stop-timeout",
        str(int(shape[1] * 2 + 5)),
        "--results-dir",
        str(results),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    timeout = seconds + shape[1] * 2 + 120
    subprocess.run(cmd, cwd=REPO, env=locust_env(), capture_output=True, text=True, timeout=timeout)
    summary = json.loads((results / "summary.json").read_text())
    harness = summary["run"]["harness"]
    pages = harness.get("pages") or {}
    item = summary["transports"].get(transport, {})
    counts = item.get("streams", {})
    return Step(
        transport,
        shape_name(shape),
        users,
        bool(harness["saturated"]),
        list(harness.get("reasons") or []),
        harness.get("cpu_percent_max"),
        harness.get("loop_lag_ms_p99"),
        pages.get("page_lag_ms_p99"),
        pages.get("paint_lag_ms_p99"),
        pages.get("tree_cpu_percent_mean"),
        int(counts.get("started", 0)),
        int(counts.get("failed", 0)),
    )


def shape_name(shape: tuple[int, float]) -> str:
    return f"{shape[0]} chunks / {shape[1]:g} s"


# =========================================================================== report


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render(cpu: list[CpuSample], steps: list[Step], args: argparse.Namespace, note: str) -> str:
    lines = [
        SECTION,
        "",
        f"**Page CPU per 1,000 chunks** ({args.pages} pages at once, {args.streams} streams each of "
        f"{args.chunks} chunks in {args.seconds:g} s; CPU seconds of the whole browser process tree, and of "
        "the load process that takes the pages' stamps):",
        "",
        "| transport | chunks | browser CPU s / 1,000 chunks | load process CPU s / 1,000 chunks | failed streams |",
        "|---|---:|---:|---:|---:|",
    ]
    for sample in cpu:
        lines.append(
            f"| {sample.transport} | {sample.chunks} | {sample.browser_per_1000:.3f} | "
            f"{sample.load_per_1000:.3f} | {sample.failed} |"
        )
    lines += [
        "",
        f"**Capacity**: only browser users (`-u N --browser-users N`) of one transport, {args.capacity_seconds} s "
        "runs (5 s warm-up), fake backend on the same machine; the largest N whose run was not saturated:",
        "",
    ]
    for shape in dict.fromkeys(s.shape for s in steps):
        for transport in TRANSPORTS:
            mine = [s for s in steps if s.transport == transport and s.shape == shape]
            if mine:
                ok = [s.users for s in mine if not s.saturated]
                lines.append(f"- {shape} per stream, **{transport}: {max(ok) if ok else 'none'}**")
    lines += [
        "",
        "| shape | transport | browser users | saturated | load CPU max % | loop lag p99 ms | page lag p99 ms "
        "| paint lag p99 ms | browser CPU mean % | streams (failed) | why |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in steps:
        lines.append(
            f"| {s.shape} | {s.transport} | {s.users} | {'yes' if s.saturated else 'no'} | {_num(s.cpu_max, 0)} | "
            f"{_num(s.lag_p99)} | {_num(s.page_lag_p99)} | {_num(s.paint_p99)} | {_num(s.browser_cpu_mean, 0)} | "
            f"{s.streams} ({s.failed}) | {'; '.join(s.reasons)[:160]} |"
        )
    lines += ["", note, ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make bench-browser", description=__doc__.splitlines()[0])
    p.add_argument("--pages", type=int, default=4)
    p.add_argument("--streams", type=int, default=2, help="streams per page in the CPU part")
    p.add_argument("--chunks", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--steps", default="1,2,3,4,6,8", help="browser-user counts of the capacity part")
    p.add_argument("--capacity-seconds", type=int, default=30)
    p.add_argument("--shapes", default="3000/10,1000/20", help="capacity stream shapes, chunks/seconds")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    from fake_backend.process import start_backend

    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    cpu: list[CpuSample] = []
    steps: list[Step] = []
    with start_backend() as backend:
        for transport in TRANSPORTS:
            sample = page_cpu(backend.url, transport, args.pages, args.streams, args.chunks, args.seconds)
            cpu.append(sample)
            print(f"{transport}: browser {sample.browser_per_1000:.3f} s, load {sample.load_per_1000:.3f} s per 1,000")
        shapes = [(int(c), float(d)) for c, d in (item.split("/") for item in args.shapes.split(","))]
        for shape in shapes:
            for transport in TRANSPORTS:
                for users in (int(n) for n in args.steps.split(",")):
                    step = capacity_step(backend.url, transport, shape, users, args.capacity_seconds)
                    steps.append(step)
                    print(f"{step.shape} {transport} x{users}: saturated={step.saturated} {step.reasons}", flush=True)
                    if step.saturated:
                        break
    note = (
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs shared with other jobs (load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after), Debian's Chromium, Python "
        f"{platform.python_version()}."
    )
    text = render(cpu, steps, args, note)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)
        print(f"written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
