"""`make bench-live`: what the live Streams tab costs the load process.

The tab's tracker runs inside the process that timestamps every chunk, so its
CPU is taken from the measurement.  This replays the load target
(100 NDJSON + 30 Socket.io concurrent streams at 333 chunks/s each) into
stream records, and measures in the same run, per chunk:

- the reference: ``StreamRecord.add_event``, what recording a chunk costs
  the load users anyway;
- the tracker's share: in-flight polls (every POLL_S, as a local run does)
  plus the end-of-stream pass;
- per worker report: the delta's wire size (msgpack, as Locust ships it);
- on the UI side: one ``LiveStats.view()`` (verdicts, percentiles, series).

Clean streams (one chunk per socket read) and buffered ones (a flush every
100 ms) are both measured: they exercise the burst and read bookkeeping
differently.  Results go to docs/PERFORMANCE.md ("Live Streams tab").
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import msgpack

from loadtests.live.stats import LiveStats
from loadtests.live.tracker import POLL_S, StreamTracker
from loadtests.results.record import StreamRecord
from stream_harness.contract.schema import CHUNK

NDJSON_STREAMS = 100
SIO_STREAMS = 30
CHUNKS_PER_S = 333


def replay(seconds: int, buffered: bool) -> dict[str, float]:
    """Fill records second by second, polling the tracker like a local run does."""
    now = time.time()
    records = [
        StreamRecord(
            transport="ndjson" if i < NDJSON_STREAMS else "socketio",
            endpoint="chat",
            stream_id=f"s{i}",
            started_at=now,
            time_to_headers_ms=2.0,
            status="completed",
            n_reads=0,
        )
        for i in range(NDJSON_STREAMS + SIO_STREAMS)
    ]
    tracker = StreamTracker()
    for record in records:
        tracker.started(record)
    spacing_ms = 1000.0 / CHUNKS_PER_S
    record_s = track_s = 0.0
    wire_bytes: list[int] = []
    live = LiveStats()
    for second in range(seconds):
        started = time.perf_counter()
        for record in records:
            base = second * CHUNKS_PER_S
            for j in range(CHUNKS_PER_S):
                index = base + j
                emit = index * spacing_ms
                arrival = (emit // 100.0 + 1) * 100.0 if buffered else emit + 0.3
                read = int(arrival // 100.0) if buffered else index
                record.add_event(CHUNK, arrival, read, index, emit)
        record_s += time.perf_counter() - started
        if (second + 1) % POLL_S == 0:
            started = time.perf_counter()
            tracker.poll()
            track_s += time.perf_counter() - started
        if second % 3 == 2:  # a worker report every 3 s
            delta = tracker.take()
            wire_bytes.append(len(msgpack.packb(delta.to_list())))
            live.absorb("w1", delta)
    started = time.perf_counter()
    for record in records:
        record.n_reads = record.reads[-1] + 1
        tracker.finished(record)
    track_s += time.perf_counter() - started
    live.absorb("w1", tracker.take())
    started = time.perf_counter()
    report = live.view()
    report_s = time.perf_counter() - started
    chunks = len(records) * seconds * CHUNKS_PER_S
    verdicts = sorted({row["buffering"]["verdict"] for row in report["rows"]})
    return {
        "record_us": record_s / chunks * 1e6,
        "track_us": track_s / chunks * 1e6,
        "wire_kb": max(wire_bytes) / 1024 if wire_bytes else 0.0,
        "report_ms": report_s * 1000,
        "verdicts": ",".join(verdicts),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make bench-live", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=10, help="simulated seconds of load (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; medians are shown (default 3)")
    args = p.parse_args(argv)
    if args.seconds < 3 or args.rounds < 1:
        p.error("--seconds must be at least 3 (one worker report), --rounds at least 1")
    print(
        f"{NDJSON_STREAMS} NDJSON + {SIO_STREAMS} Socket.io streams x {CHUNKS_PER_S} chunks/s, "
        f"{args.seconds} s simulated, median of {args.rounds} rounds\n"
    )
    print(
        "| streams | record a chunk (µs, reference) | live tracker per chunk (µs) | ratio "
        "| worker report delta (KiB / 3 s) | report() (ms) | verdicts |"
    )
    print("|---|---|---|---|---|---|---|")
    for buffered in (False, True):
        rounds = [replay(args.seconds, buffered) for _ in range(args.rounds)]
        r = {
            key: (
                statistics.median(x[key] for x in rounds)
                if key != "verdicts"
                else ",".join(sorted({x[key] for x in rounds}))
            )
            for key in rounds[0]
        }
        r["ratio"] = statistics.median(x["track_us"] / x["record_us"] for x in rounds)
        print(
            f"| {'buffered 100 ms' if buffered else 'clean'} | {r['record_us']:.2f} | "
            f"{r['track_us']:.2f} | {r['ratio']:.2f}x | {r['wire_kb']:.0f} | "
            f"{r['report_ms']:.1f} | {r['verdicts']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
