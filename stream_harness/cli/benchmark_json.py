"""``benchmark.json`` for benchmark dashboards (github-action-benchmark's
``customSmallerIsBetter`` tool format).

Teams that already chart their benchmarks with such a dashboard can feed it
every run of the harness: a flat list of ``{name, unit, value, extra?}`` objects,
one per (transport, metric), all of them "smaller is better". Metrics without
data in a run (e.g. staleness against a backend that sends no emit times) are
left out rather than written as 0, which a dashboard would chart as a great
result.

Capacity: when the run directory holds a capacity search (``make sweep
SWEEP_ARGS="--out RUN_DIR/capacity"``, as the nightly job does), one more point
per transport, ``<transport> capacity under the SLO``: the most concurrent
streams that met the SLO (unit ``streams``).  That one is the exception to
"smaller is better" (its name and tooltip say so): charted beside the
latencies at a fixed load, it shows a change that costs capacity even when
latency at that load did not move.

Usage: ``stream-harness benchmark-json RUN_DIR [--output FILE] [--capacity FILE]``
(``make bench`` already writes ``RUN_DIR/benchmark.json`` at the end of every
run; ``make benchmark-json RUN=DIR`` writes it again, e.g. after a sweep).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from stream_harness.cli.errors import CommandError

BENCHMARK_FILE = "benchmark.json"
#: Where a run directory keeps its capacity search (``--out RUN_DIR/capacity``).
CAPACITY_JSON = Path("capacity") / "capacity.json"

#: (summary.json latency key, percentile key, display name), in display order.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("ttfc_ms", "p50", "TTFC p50"),
    ("ttfc_ms", "p95", "TTFC p95"),
    ("ttfc_ms", "p99", "TTFC p99"),
    ("gap_ms", "p99", "chunk gap p99"),
    ("staleness_ms", "p99", "staleness p99"),
)


class _Required(TypedDict):
    name: str
    unit: str
    value: float


class BenchmarkEntry(_Required, total=False):
    """One point of github-action-benchmark's custom JSON format."""

    range: str
    extra: str


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _extra(summary: Mapping[str, Any], transport: Mapping[str, Any]) -> str:
    """What a dashboard tooltip should say about the run behind the point."""
    run = summary.get("run", {})
    streams = transport.get("streams", {})
    verdict = transport.get("buffering", {}).get("verdict", "?")
    parts = [
        f"run {run.get('id', '?')}",
        f"{streams.get('completed', 0)} streams ok, {streams.get('failed', 0)} failed",
        f"buffering: {verdict}",
    ]
    if run.get("harness", {}).get("saturated"):
        parts.append("load generator saturated: numbers not trustworthy")
    return "; ".join(parts)


def benchmark_entries(summary: Mapping[str, Any]) -> list[BenchmarkEntry]:
    """The dashboard points of one ``summary.json`` (schema 1)."""
    entries: list[BenchmarkEntry] = []
    for transport_name, transport in summary.get("transports", {}).items():
        extra = _extra(summary, transport)
        for key, percentile, label in METRICS:
            value = _number((transport.get(key) or {}).get(percentile))
            if value is None:
                continue
            entries.append(
                BenchmarkEntry(name=f"{transport_name} {label}", unit="ms", value=round(value, 3), extra=extra)
            )
    return entries


def capacity_entries(capacity: Mapping[str, Any]) -> list[BenchmarkEntry]:
    """One point per transport of a ``capacity.json``: the most streams that met the SLO (bigger is better)."""
    slo = capacity.get("slo", {})
    terms = (
        f"TTFC p99 <= {slo.get('ttfc_p99_ms', '?')} ms, gap p99 <= {slo.get('gap_p99_ms', '?')} ms, "
        f"failures <= {slo.get('failure_rate', '?')}"
    )
    entries: list[BenchmarkEntry] = []
    for transport, result in capacity.get("transports", {}).items():
        value = _number(result.get("max_streams_meeting_slo"))
        if value is None:
            continue
        extra = f"bigger is better; {result.get('summary', '')}; SLO {terms}"
        entries.append(
            BenchmarkEntry(name=f"{transport} capacity under the SLO", unit="streams", value=value, extra=extra)
        )
    return entries


def write_benchmark_json(run_dir: Path, output: Path | None = None, capacity: Path | None = None) -> Path:
    """Read ``run_dir/summary.json`` (and the capacity search, when there is one),
    write the dashboard file (atomically), return its path."""
    summary = json.loads((run_dir / "summary.json").read_text())
    entries = benchmark_entries(summary)
    capacity = capacity or run_dir / CAPACITY_JSON
    if capacity.is_file():
        entries += capacity_entries(json.loads(capacity.read_text()))
    output = output or run_dir / BENCHMARK_FILE
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n")
    os.replace(tmp, output)
    return output


SUMMARY = "write benchmark.json (github-action-benchmark's customSmallerIsBetter) for a run"
EXAMPLES = """\
  stream-harness benchmark-json results/latest
  stream-harness benchmark-json results/latest --output /tmp/bench.json
  stream-harness benchmark-json results/latest --capacity results/sweep-latest/capacity.json
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a results directory with summary.json")
    p.add_argument("--output", type=Path, default=None, help=f"default: RUN_DIR/{BENCHMARK_FILE}")
    p.add_argument(
        "--capacity", type=Path, default=None, help=f"a capacity.json to add (default: RUN_DIR/{CAPACITY_JSON} if any)"
    )


def execute(args: argparse.Namespace) -> int:
    if args.capacity is not None and not args.capacity.is_file():
        raise CommandError(f"{args.capacity}: no such capacity.json")
    try:
        path = write_benchmark_json(args.run_dir, args.output, args.capacity)
    except (OSError, ValueError) as exc:  # missing/unreadable/corrupt summary.json or capacity.json
        raise CommandError(f"cannot read {args.run_dir / 'summary.json'}: {exc}") from None
    print(path)
    return 0
