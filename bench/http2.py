"""`make bench-http2`: CPU per chunk of the HTTP/2 NDJSON client beside the HTTP/1.1 one, one run.

Target (issue 11): the HTTP/2 client costs at most 2x the HTTP/1.1 client's
CPU per chunk.  Both pull the same streams from one fake backend served by
Hypercorn (``--http2``: HTTP/1.1 and h2c on one port, so the server side is
the same for both), each client in a fresh subprocess of its own
(``python -m bench.client --child ...``, ``time.process_time()`` from
request to stream end), rounds interleaved, medians reported.  Shapes as in
``make bench-client``: ``burst`` (as fast as the server sends), ``paced``
(one stream, about one line per read) and ``concurrent`` (many streams at
once: over HTTP/2 they share connections, six streams to one).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from bench.client import Sample, Shape, run_child, shapes_of
from bench.perfdoc import PERFORMANCE_DOC as DOC
from bench.perfdoc import write_section

SECTION = "## HTTP/2 NDJSON client (make bench-http2)"
CLIENTS = ("ndjson", "ndjson-h2")
TARGET_RATIO = 2.0


def render(samples: list[Sample], shapes: list[Shape], rounds: int, note: str) -> str:
    lines = [
        SECTION,
        "",
        f"NDJSON client CPU per chunk (µs, median of {rounds} interleaved rounds), HTTP/1.1 "
        "(`NdjsonClient`) and HTTP/2 (`H2NdjsonClient`) side by side against one Hypercorn fake "
        f"backend; target: HTTP/2 ≤ {TARGET_RATIO:g}× HTTP/1.1.",
        "",
        "| shape | HTTP/1.1 µs/chunk | HTTP/2 µs/chunk | HTTP/2 ÷ HTTP/1.1 | target "
        "| HTTP/1.1 chunks/read | HTTP/2 chunks/read |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for shape in shapes:
        cost, per_read = {}, {}
        for client in CLIENTS:
            mine = [s for s in samples if s.client == client and s.shape == shape.name]
            if not mine:
                continue
            cost[client] = statistics.median(s.cpu_us_per_chunk for s in mine)
            reads = [s.chunks / s.reads for s in mine if s.reads]
            per_read[client] = statistics.median(reads) if reads else None
        if len(cost) < 2:
            continue
        ratio = cost["ndjson-h2"] / cost["ndjson"]
        lines.append(
            f"| {shape.name} | {cost['ndjson']:.1f} | {cost['ndjson-h2']:.1f} | {ratio:.2f}× | "
            f"{'met' if ratio <= TARGET_RATIO else 'MISSED'} | {_num(per_read['ndjson'])} | "
            f"{_num(per_read['ndjson-h2'])} |"
        )
    describe = "; ".join(
        f"**{s.name}** = {s.streams} × {s.chunks} chunks "
        + ("as fast as the server sends" if s.duration_s == 0 else f"in {s.duration_s:g} s")
        for s in shapes
    )
    lines += [
        "",
        f"Shapes: {describe}.  Hypercorn coalesces a burst into few large writes, so *burst* is mostly the "
        "per-line parsing; *paced* and *concurrent* pay one read per line, where HTTP/2's framing (h2's "
        "frame parsing, flow-control bookkeeping, one reader per connection dispatching to its streams) "
        "shows.",
        "",
        note,
        "",
    ]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make bench-http2", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--chunks", type=int, default=20000, help="burst stream chunks")
    p.add_argument("--paced-chunks", type=int, default=2000)
    p.add_argument("--paced-seconds", type=float, default=4.0)
    p.add_argument("--concurrent-streams", type=int, default=24)
    p.add_argument("--concurrent-chunks", type=int, default=1000)
    p.add_argument("--concurrent-seconds", type=float, default=5.0)
    p.add_argument("--no-write", action="store_true", help="print the table, leave docs/ alone")
    args = p.parse_args(argv)
    from fake_backend.process import start_backend

    shapes = shapes_of(args)
    samples: list[Sample] = []
    failures: list[str] = []
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    with start_backend("--http2") as backend:
        for rnd in range(args.rounds):
            for shape in shapes:
                for client in CLIENTS:
                    try:
                        sample = run_child(client, backend.url, shape, 120 + shape.duration_s * 3)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        failures.append(str(exc).splitlines()[0])
                        print(f"round {rnd + 1}: {failures[-1]}", file=sys.stderr)
                        continue
                    samples.append(sample)
                    print(f"round {rnd + 1} {shape.name:10} {client:9} {sample.cpu_us_per_chunk:7.1f} µs/chunk")
    note = (
        f"Measured {started:%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs shared with other jobs "
        f"(load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after), "
        f"Python {platform.python_version()}."
    )
    if failures:
        note += f"  {len(failures)} measurement(s) failed: " + "; ".join(failures[:3])
    text = render(samples, shapes, args.rounds, note)
    print(text)
    if not args.no_write and samples:
        write_section(SECTION, text)
        print(f"written to {DOC}")
    return 0 if samples and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
