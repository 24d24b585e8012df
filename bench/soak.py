"""`make soak`: minutes of mixed faults at moderate load; nothing may leak or go missing.

Starts the fake backend (``--send-timeout``, so slow consumers are cut) and a
headless Locust run of ``loadtests/soak_locustfile.py`` (the harness's own users,
a random fault per stream), while a background thread abuses the same backend
(connections opened and dropped half-way, slow consumers, oversized bodies;
``bench/abuse.py``).  Every few seconds it samples the RSS of both processes
and the backend's active-stream counters.  At the end it prints a table and
checks:

- every stream the load users started is accounted for:
  started == completed + failed + cancelled, in summary.json and streams.parquet;
- the backend ends every stream: nothing active after the run, and
  started == the sum of its outcome counters;
- the two sides agree: the streams the backend started are the ones the users
  saw start, plus the abuse's own, within the streams cut by the stop;
- no unbounded growth: from the end of the warm-up to the end, the backend's
  RSS grows by less than ``BACKEND_GROWTH_LIMIT_MB``, and Locust's by less than
  ``LOCUST_GROWTH_LIMIT_MB`` (finished streams leave it for the result writer).

Exit status 0 when all checks pass, 1 otherwise, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
import pandas as pd
import psutil

from fake_backend.emit_log import EmitLog
from fake_backend.process import BackendProcess, start_backend
from stream_harness.allocator import locust_env
from stream_harness.contract.schema import ERROR_KINDS
from tests.support import abuse

REPO: Final = Path(__file__).resolve().parent.parent
LOCUSTFILE: Final = REPO / "loadtests" / "soak_locustfile.py"
SAMPLE_EVERY_S: Final = 5.0
BACKEND_GROWTH_LIMIT_MB: Final = 64.0
LOCUST_GROWTH_LIMIT_MB: Final = 64.0
CHURN_CONNECTIONS: Final = 100
#: Streams the churned connections ask for (dropped long before they end).
CHURN_HARNESS: Final = {"chunks": 2000, "duration_s": 20.0, "events": False}
#: What a slow consumer asks for: ~2 MB/s, so the socket buffers fill within a second or two.
FLOOD_HARNESS: Final = {"chunks": 100_000, "duration_s": 10.0, "chunk_chars": 200, "events": False}


@dataclass
class Sample:
    t: float  # seconds since the load started
    backend_rss_mb: float
    locust_rss_mb: float | None
    active: dict[str, int]


@dataclass
class AbuseCounts:
    rounds: int = 0
    churned: int = 0
    churn_stream_requests: int = 0
    slow_consumer_streams: dict[str, int] = field(default_factory=lambda: {"ndjson": 0, "socketio": 0})
    slow_consumers_held: int = 0  # ... of which held for the whole 2 x send timeout
    oversized_sent: int = 0
    oversized_refused: int = 0
    errors: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make soak", description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="load duration (default 10)")
    p.add_argument("--users", type=int, default=20, help="concurrent users, half per transport (default 20)")
    p.add_argument(
        "--send-timeout", type=float, default=5.0, help="the backend's slow-consumer timeout in seconds (default 5)"
    )
    p.add_argument(
        "--abuse-every",
        type=float,
        default=10.0,
        help="seconds between rounds of raw-socket abuse (default 10; 0 = none)",
    )
    p.add_argument("--results-root", type=Path, default=REPO / "results")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.users < 2 or args.send_timeout <= 0 or args.abuse_every < 0:
        p.error("--minutes and --send-timeout must be > 0, --users >= 2, --abuse-every >= 0")
    return args


# --------------------------------------------------------------------------- the run


def locust_command(args: argparse.Namespace, host: str, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(args.users),
        "-r",
        str(args.users),
        "-t",
        f"{args.minutes * 60:g}s",
        "--host",
        host,
        "--transport",
        "both",
        "--first-chunk-timeout",
        "3",
        "--stream-timeout",
        "20",
        "--results-dir",
        str(run_dir),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]


def backend_stats(backend: BackendProcess) -> dict[str, Any]:
    return httpx.get(f"{backend.url}/api/_harness/stats", timeout=10).json()


def rss_mb(pid: int) -> float | None:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return None


def sample_loop(
    backend: BackendProcess, locust: subprocess.Popen, started: float, samples: list[Sample], stop: threading.Event
) -> None:
    while not stop.is_set():
        try:
            active = backend_stats(backend)["active"]
        except httpx.HTTPError:
            active = {}
        backend_rss = rss_mb(backend.pid)
        if backend_rss is not None:
            samples.append(
                Sample(
                    time.monotonic() - started,
                    backend_rss,
                    rss_mb(locust.pid) if locust.poll() is None else None,
                    active,
                )
            )
        stop.wait(SAMPLE_EVERY_S)


def abuse_loop(addr: abuse.Address, every: float, hold: float, counts: AbuseCounts, stop: threading.Event) -> None:
    """One round every ``every`` s: churn, slow consumers (held ``hold`` s), an oversized body."""
    ways = len(abuse.churn_ways(addr, CHURN_HARNESS))
    while not stop.wait(every):
        counts.rounds += 1
        try:
            socks = abuse.open_connections(addr, CHURN_CONNECTIONS, CHURN_HARNESS)
            counts.churned += len(socks)
            counts.churn_stream_requests += sum(1 for i in range(len(socks)) if i % ways == abuse.STREAM_WAY)
            time.sleep(0.2)
            abuse.drop_connections(socks)
            slow = abuse.slow_consumers(addr, FLOOD_HARNESS, count=1)
            counts.slow_consumer_streams["ndjson"] += 1
            counts.slow_consumer_streams["socketio"] += 1
            try:
                head, _ = abuse.oversized_body(addr, declared_bytes=50 * 2**20, send_mb=10)
                counts.oversized_sent += 1
                counts.oversized_refused += head.startswith(b"HTTP/1.1 413")
                if not stop.wait(hold):
                    counts.slow_consumers_held += len(slow)
            finally:
                for sock in slow:
                    sock.close()
        except OSError as exc:
            counts.errors.append(f"{type(exc).__name__}: {exc}")


def wait_settled(backend: BackendProcess, timeout: float = 60.0) -> dict[str, Any]:
    """Stats once the backend runs nothing and every stream has an outcome (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        now = backend_stats(backend)
        settled = sum(now["active"].values()) == 0 and sum(now["started"].values()) == sum(now["outcomes"].values())
        if settled or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


# --------------------------------------------------------------------------- checks and table


@dataclass
class Check:
    ok: bool
    text: str


def client_counts(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    summary = json.loads((run_dir / "summary.json").read_text())
    streams = pd.read_parquet(run_dir / "streams.parquet")
    streams["error"] = streams["error"].fillna("").astype(str)  # "" = no error
    return summary, streams


def reached_backend(streams: pd.DataFrame, transport: str) -> int:
    """Streams the backend must have started: NDJSON with a 200 head, Socket.io tasks acked with listeners."""
    mine = streams[streams["transport"] == transport]
    if transport == "ndjson":
        return int((mine["http_status"] == 200).sum())
    acked = np.isfinite(mine["time_to_headers_ms"].to_numpy(dtype=float))
    return int((acked & (mine["error"] != "ack").to_numpy()).sum())


@dataclass
class Memory:
    """RSS in MB: at start, after the warm-up, at the end, and the peak.

    Locust's "end" is its last sample while the load ran: after the run time
    it turns every record into DataFrames and parquet files, a one-off peak
    (shown as its peak) that says nothing about growth during the run.
    """

    backend: tuple[float, float, float, float]
    locust: tuple[float, float, float, float] | None
    events_since_warmup: int

    @classmethod
    def of(
        cls, samples: list[Sample], backend_end_mb: float, warmup_s: float, load_s: float, streams: pd.DataFrame
    ) -> Memory:
        warm = next((s for s in samples if s.t >= warmup_s), samples[0])
        backend = (
            samples[0].backend_rss_mb,
            warm.backend_rss_mb,
            backend_end_mb,
            max(s.backend_rss_mb for s in samples),
        )
        during = [s for s in samples if s.locust_rss_mb is not None and s.t <= load_s]
        locust = None
        if during:
            lwarm = next((s for s in during if s.t >= warmup_s), during[0])
            locust = (
                during[0].locust_rss_mb,
                lwarm.locust_rss_mb,
                during[-1].locust_rss_mb,
                max(s.locust_rss_mb for s in samples if s.locust_rss_mb is not None),
            )
        since = streams["started_at"] >= streams["started_at"].min() + warmup_s
        return cls(backend, locust, int(streams.loc[since, "n_events"].sum()))  # type: ignore[arg-type]


def checks(
    summary: dict[str, Any], streams: pd.DataFrame, final: dict[str, Any], counts: AbuseCounts, memory: Memory
) -> list[Check]:
    out: list[Check] = []
    for transport, part in summary["transports"].items():
        c = part["streams"]
        rows = int((streams["transport"] == transport).sum())
        total = c["completed"] + c["failed"] + c.get("cancelled", 0)
        out.append(
            Check(
                c["started"] == total == rows,
                f"{transport}: started {c['started']} = completed {c['completed']} + failed "
                f"{c['failed']} + cancelled {c.get('cancelled', 0)} = {rows} rows in streams.parquet",
            )
        )
    unknown = sorted(set(streams["error"]) - {""} - set(ERROR_KINDS))
    out.append(Check(not unknown, f"every failure has a known kind{f' (unknown: {unknown})' if unknown else ''}"))
    active = final["active"]
    out.append(
        Check(
            sum(active.values()) == 0 and sum(final["started"].values()) == sum(final["outcomes"].values()),
            f"backend: {sum(final['started'].values())} streams started = "
            f"{sum(final['outcomes'].values())} ended, {sum(active.values())} still active",
        )
    )
    stopped = streams[streams["error"] == "stopped"]
    for transport in ("ndjson", "socketio"):
        backend_started = final["started"].get(transport, 0)
        users = reached_backend(streams, transport)
        extra_min = counts.slow_consumer_streams[transport]
        extra_max = extra_min + (counts.churn_stream_requests if transport == "ndjson" else 0)
        slack = int((stopped["transport"] == transport).sum())
        ok = users + extra_min - slack <= backend_started <= users + extra_max + slack
        out.append(
            Check(
                ok,
                f"{transport}: backend started {backend_started} = users' {users} + abuse "
                f"{extra_min}..{extra_max} (± {slack} cut by the stop)",
            )
        )
    cut = final["outcomes"].get("slow_consumer", 0)
    out.append(
        Check(
            cut >= counts.slow_consumers_held,
            f"backend: {cut} streams ended as slow_consumer; {counts.slow_consumers_held} slow "
            f"consumers held their sockets open, reading nothing, for twice the send timeout",
        )
    )
    _, warm, end, _ = memory.backend
    out.append(
        Check(
            end - warm < BACKEND_GROWTH_LIMIT_MB,
            f"backend RSS {warm:.0f} MB after warm-up -> {end:.0f} MB at the end "
            f"(+{end - warm:.1f} MB, limit {BACKEND_GROWTH_LIMIT_MB:g})",
        )
    )
    if memory.locust is not None:
        _, warm, end, _ = memory.locust
        per_event = (end - warm) * 2**20 / max(memory.events_since_warmup, 1)
        out.append(
            Check(
                end - warm < LOCUST_GROWTH_LIMIT_MB,
                f"locust RSS {warm:.0f} MB after warm-up -> {end:.0f} MB at the end of the load "
                f"(+{end - warm:.1f} MB, {per_event:.2f} B per event received since; limit "
                f"{LOCUST_GROWTH_LIMIT_MB:g} MB: finished streams go to the result writer, nothing is kept)",
            )
        )
    return out


def table(
    args: argparse.Namespace,
    summary: dict[str, Any],
    streams: pd.DataFrame,
    final: dict[str, Any],
    counts: AbuseCounts,
    samples: list[Sample],
    memory: Memory,
    results: list[Check],
    run_dir: Path,
) -> str:
    lines = [
        f"soak: {args.minutes:g} min, {args.users} users (both transports), backend --send-timeout "
        f"{args.send_timeout:g} s, abuse every {args.abuse_every:g} s; results in {run_dir}",
        "",
    ]
    lines.append(f"{'memory (RSS, MB)':<24}{'start':>8}{'warm-up':>9}{'end':>8}{'peak':>8}")
    lines.append(f"{'backend':<24}" + "".join(f"{v:>{w}.1f}" for v, w in zip(memory.backend, (8, 9, 8, 8))))
    if memory.locust is not None:
        lines.append(
            f"{'locust':<24}"
            + "".join(f"{v:>{w}.1f}" for v, w in zip(memory.locust, (8, 9, 8, 8)))
            + "  (end: last sample under load; peak: writing the results)"
        )
    peak = {t: max((s.active.get(t, 0) for s in samples), default=0) for t in ("ndjson", "socketio")}
    lines += [
        "",
        f"backend active streams: peak ndjson {peak['ndjson']}, socketio {peak['socketio']}; "
        f"at the end ndjson {final['active']['ndjson']}, socketio {final['active']['socketio']}",
        "backend outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(final["outcomes"].items())),
        f"backend emit-time log (an LRU bounded at {EmitLog().max_tasks} tasks): "
        f"{final['emit_log']['tasks']} tasks, "
        f"{final['emit_log']['timestamps']:,} timestamps "
        f"(~{final['emit_log']['timestamps'] * 8 / 2**20:.1f} MB of the backend's growth)",
        "",
    ]
    kinds = [k for k in ERROR_KINDS if (streams["error"] == k).any()]
    head = f"{'streams (load users)':<22}{'started':>8}{'done':>7}{'failed':>7}{'cancel':>7}" + "".join(
        f"{k:>{max(len(k), 6) + 1}}" for k in kinds
    )
    lines.append(head)
    for transport, part in summary["transports"].items():
        c = part["streams"]
        mine = streams[streams["transport"] == transport]
        row = f"{transport:<22}{c['started']:>8}{c['completed']:>7}{c['failed']:>7}{c.get('cancelled', 0):>7}"
        row += "".join(f"{int((mine['error'] == k).sum()):>{max(len(k), 6) + 1}}" for k in kinds)
        lines.append(row)
    lines += [
        "",
        f"abuse: {counts.rounds} rounds, {counts.churned} connections opened and dropped, "
        f"{counts.slow_consumer_streams['ndjson'] + counts.slow_consumer_streams['socketio']} slow consumers "
        f"(backend ended {final['outcomes'].get('slow_consumer', 0)} as slow_consumer), "
        f"oversized bodies refused {counts.oversized_refused}/{counts.oversized_sent}"
        + (f"; abuse errors: {len(counts.errors)} (first: {counts.errors[0]})" if counts.errors else ""),
        "",
    ]
    lines += [f"[{'ok' if c.ok else 'FAIL'}] {c.text}" for c in results]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> int:
    run_dir = args.results_root / ("soak-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{os.getpid()}")
    run_dir.mkdir(parents=True, exist_ok=True)
    warmup_s = max(30.0, args.minutes * 60 * 0.1)
    samples: list[Sample] = []
    counts = AbuseCounts()
    stop = threading.Event()
    with start_backend("--send-timeout", f"{args.send_timeout:g}") as backend:
        print(f"soak: fake backend on {backend.url} (pid {backend.pid}); {args.minutes:g} min of load ...", flush=True)
        log = (run_dir / "locust.log").open("w")
        locust = subprocess.Popen(
            locust_command(args, backend.url, run_dir), cwd=REPO, env=locust_env(), stdout=log, stderr=subprocess.STDOUT
        )
        started = time.monotonic()
        threads = [threading.Thread(target=sample_loop, args=(backend, locust, started, samples, stop), daemon=True)]
        if args.abuse_every > 0:
            threads.append(
                threading.Thread(
                    target=abuse_loop,
                    daemon=True,
                    args=(abuse.address(backend.url), args.abuse_every, 2 * args.send_timeout, counts, stop),
                )
            )
        for thread in threads:
            thread.start()
        try:
            locust_rc = locust.wait(timeout=args.minutes * 60 + 180)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            locust.terminate()  # SIGTERM: Locust still writes what it measured
            locust_rc = locust.wait(timeout=120)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            log.close()
        final = wait_settled(backend)
        backend_end_mb = rss_mb(backend.pid) or float("nan")
        backend_stderr = backend.stderr_text()
    if not (run_dir / "summary.json").is_file() or not samples:
        print(f"soak: Locust exited {locust_rc} without results; see {run_dir / 'locust.log'}", file=sys.stderr)
        return 2
    summary, streams = client_counts(run_dir)
    memory = Memory.of(samples, backend_end_mb, warmup_s, args.minutes * 60, streams)
    results = checks(summary, streams, final, counts, memory)
    if "Traceback" in backend_stderr:
        results.append(Check(False, "the backend logged a traceback (see its stderr below)"))
        print(backend_stderr[-3000:], file=sys.stderr)
    pd.DataFrame([vars(s) | {"active": json.dumps(s.active)} for s in samples]).to_csv(
        run_dir / "soak_samples.csv", index=False
    )
    text = table(args, summary, streams, final, counts, samples, memory, results, run_dir)
    (run_dir / "soak.txt").write_text(text + "\n")
    print(text)
    return 0 if all(c.ok for c in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
