"""Aggregates and the streams table -> ``summary.json`` (schema 1), typed.

Per transport, per endpoint of it and, when a run mixes protocol and browser
clients, per client (with the calibration of one against the other,
``analysis.calibration``): the contract's objects
(``stream_harness.contract.summary.TransportSummary``) with the buffering
verdict; with both transports, their parity (``analysis.parity``).
Per-stream quantities (TTFC, time to headers, first event) come exactly from
the streams table; chunk-pooled ones (gaps, staleness, jitter,
events per read) from the aggregates' 1% log histograms, and the object says
which keys are approximate.  The live Streams tab builds its rows with the
same :func:`transport_object`, from histograms alone.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import pandas as pd

from analysis.accumulate import GroupKey, merged
from analysis.aggregate import Aggregate
from analysis.buffering import Evidence, classify, evidence
from analysis.calibration import CalibrationThresholds, calibrate, load_calibration_thresholds
from analysis.compare import RegressionThresholds, configured_thresholds
from analysis.histogram import LogHistogram
from analysis.parity import judge_parity
from analysis.quantiles import optional_float, selected_percentiles
from stream_harness.contract.kinds import TRANSPORTS, Client
from stream_harness.contract.schema import SCHEMA_VERSION
from stream_harness.contract.summary import (
    LATENCY_KEYS,
    LATENCY_PERCENTILES,
    Harness,
    Latency,
    RunSummary,
    StreamCounts,
    Summary,
    TransportSummary,
)

#: Keys whose numbers are read from 1% log histograms (within 1% of exact).
APPROXIMATE_KEYS: Final = ("gap_ms", "staleness_ms", "jitter_ms", "events_per_read.p99")


def build_summary(
    run: Mapping[str, Any],
    streams: pd.DataFrame,
    aggregates: Mapping[GroupKey, Aggregate],
    thresholds: RegressionThresholds | None = None,
    calibration: CalibrationThresholds | None = None,
) -> Summary:
    """The run's summary: ``streams`` is the whole filled streams table.

    ``thresholds`` judge the parity of the transports (default: the
    configured ones, :func:`analysis.compare.configured_thresholds`).  A
    transport read by both kinds of client gets ``calibration``
    (``analysis.calibration``; thresholds from ./pyproject.toml unless given).
    """
    counted = streams[~streams["warmup"].to_numpy(dtype=bool)] if len(streams) else streams
    duration_s = run_duration_s(run, streams)
    harness = run_harness(run)
    clock = clock_uncertainty_ms(run)
    transports: dict[str, TransportSummary] = {}
    for transport in ordered_transports(key[0] for key in aggregates):
        mine = counted[(counted["transport"] == transport).to_numpy(dtype=bool)]

        def object_for(
            endpoint: str | None, client: str | None, rows: pd.DataFrame, transport: str = transport
        ) -> TransportSummary:
            agg = merged(dict(aggregates), (transport, endpoint, client))
            return transport_object(agg, rows, duration_s=duration_s, harness=harness, clock_uncertainty_ms=clock)

        item = object_for(None, None, mine)
        endpoints = sorted({key[1] for key in aggregates if key[0] == transport})
        item["endpoints"] = {
            endpoint: object_for(endpoint, None, mine[(mine["endpoint"] == endpoint).to_numpy(dtype=bool)])
            for endpoint in endpoints
        }
        clients = sorted({key[2] for key in aggregates if key[0] == transport})
        if clients != [Client.PROTOCOL]:
            item["by_client"] = {
                client: object_for(None, client, mine[(mine["client"] == client).to_numpy(dtype=bool)])
                for client in clients
            }
            if Client.PROTOCOL in clients and Client.BROWSER in clients:
                if calibration is None:
                    calibration = load_calibration_thresholds()
                found = calibrate(item["by_client"], calibration)
                if found is not None:
                    item["calibration"] = found
        transports[transport] = item
    summary: Summary = {"schema": SCHEMA_VERSION, "run": run_summary(run, streams), "transports": transports}
    parity = judge_parity(
        transports, streams, thresholds or configured_thresholds(), saturated=bool(harness["saturated"])
    )
    if parity is not None:
        summary["parity"] = parity
    return summary


def transport_object(
    agg: Aggregate,
    streams: pd.DataFrame | None = None,
    *,
    duration_s: float = 0.0,
    harness: Mapping[str, Any] | None = None,
    clock_uncertainty_ms: float | None = None,
) -> TransportSummary:
    """One group's object; per-stream latencies exact from ``streams`` when given."""
    counts = agg.counts
    chunks = counts["chunks"]
    staleness, jitter, note = _staleness(agg, clock_uncertainty_ms)
    found = evidence(agg, streams)
    if staleness is None:
        found = found.without_staleness()
    judged = classify(found, saturated=bool((harness or {}).get("saturated")), harness=harness)
    per_read = agg.hist["events_per_read"]
    stream_counts: StreamCounts = {
        "started": counts["started"],
        "completed": counts["completed"],
        "failed": counts["failed"],
        "cancelled": counts["cancelled"],
        "errors": dict(sorted(agg.errors.items())),
    }
    if counts["warmup"]:
        stream_counts["warmup"] = counts["warmup"]
    out: TransportSummary = {
        "streams": stream_counts,
        "events": {"total": counts["events"], "chunks": chunks, "malformed_lines": counts["malformed_lines"]},
        "time_to_headers_ms": _per_stream(streams, "time_to_headers_ms", agg.hist["headers"]),
        "ttfc_ms": _per_stream(streams, "ttfc_ms", agg.hist["ttfc"]),
        "first_event_ms": _per_stream(streams, "first_event_ms", agg.hist["first_event"]),
        "gap_ms": latency(agg.hist["gap"]),
        "staleness_ms": staleness,
        "jitter_ms": jitter,
        "events_per_read": {"mean": per_read.mean, "p99": per_read.quantile(0.99)},
        "events_per_s": chunks / duration_s if duration_s > 0 else None,
        "chunks_per_stream": {
            "mean": (counts["delivered_chunks"] / counts["delivered_streams"] if counts["delivered_streams"] else None),
            "delivered_share": (
                counts["delivered_promised"] / counts["promised_chunks"] if counts["promised_chunks"] else None
            ),
        },
        "buffering": judged.as_json(),
        "approximate": list(APPROXIMATE_KEYS),
    }
    if note:
        out["staleness_note"] = note
    return out


def latency(histogram: LogHistogram) -> Latency:
    """The contract's latency object from a histogram (max exact; the rest within 1%)."""
    values = histogram.summary()
    return {key: values[key] for key in LATENCY_KEYS}  # type: ignore[return-value]


def exact_latency(values: np.ndarray) -> Latency:
    """The contract's latency object of raw samples (numpy's linear percentiles; NaN ignored)."""
    row = selected_percentiles(np.array(values, dtype=np.float64), LATENCY_PERCENTILES)
    return dict(zip(LATENCY_KEYS, (optional_float(v) for v in row)))  # type: ignore[return-value]


def _per_stream(streams: pd.DataFrame | None, column: str, histogram: LogHistogram) -> Latency:
    if streams is None:
        return latency(histogram)
    return exact_latency(streams[column].to_numpy(dtype=np.float64))


def _staleness(agg: Aggregate, clock_uncertainty_ms: float | None) -> tuple[Latency | None, Latency | None, str]:
    """Staleness and jitter objects, or None (no emit times, or clocks too uncertain), and why."""
    histogram = agg.hist["staleness"]
    if histogram.count == 0:
        return None, None, ""
    staleness = latency(histogram)
    p99 = staleness["p99"] or 0.0
    if clock_uncertainty_ms is not None and clock_uncertainty_ms > p99:
        return (
            None,
            None,
            (
                f"unreliable: the clocks of the load processes and the backend agree only within "
                f"{clock_uncertainty_ms:.1f} ms, more than the staleness p99 measured ({p99:.1f} ms)"
            ),
        )
    jitter = latency(agg.hist["jitter"]) if agg.hist["jitter"].count else None
    return staleness, jitter, ""


# --------------------------------------------------------------------------- run


def run_summary(run: Mapping[str, Any], streams: pd.DataFrame) -> RunSummary:
    """The summary's ``run`` object; what run.json lacks is derived from the streams."""
    started = run.get("started_at")
    if not started and len(streams) and np.isfinite(streams["started_at"].min()):
        started = dt.datetime.fromtimestamp(float(streams["started_at"].min()), tz=dt.UTC).isoformat()
    out: RunSummary = {
        "id": str(run.get("id") or ""),
        "started_at": str(started or ""),
        "duration_s": float(run_duration_s(run, streams)),
        "host": str(run.get("host") or ""),
        "users": int(run.get("users") or 0),
        "workers": int(run.get("workers") or 0),
        "harness": run_harness(run),
        # extensions: a run that lost a worker or was cut short says so in its summary
        "worker_problems": list(run.get("worker_problems") or []),
        "stopped_early": bool(run.get("stopped_early", False)),
    }
    warmup = (run.get("options") or {}).get("warmup_s")
    if isinstance(warmup, (int, float)) and warmup > 0:
        out["warmup_s"] = float(warmup)
    return out


def run_harness(run: Mapping[str, Any]) -> Harness:
    harness = dict(run.get("harness") or {})
    return {
        **harness,  # extra self-check keys (e.g. reasons) pass through
        "saturated": bool(harness.get("saturated", False)),
        "cpu_percent_max": _number_or_none(harness.get("cpu_percent_max")),
        "loop_lag_ms_p99": _number_or_none(harness.get("loop_lag_ms_p99")),
    }


def run_duration_s(run: Mapping[str, Any], streams: pd.DataFrame) -> float:
    """run.json's ``duration_s`` when set, else first request sent -> last stream ended."""
    value = run.get("duration_s")
    if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
        return float(value)
    if len(streams) == 0:
        return 0.0
    start = streams["started_at"].to_numpy(dtype=np.float64)
    end = start + np.nan_to_num(streams["duration_ms"].to_numpy(dtype=np.float64)) / 1000.0
    if not np.isfinite(start).any():
        return 0.0
    return float(np.nanmax(end) - np.nanmin(start))


def clock_uncertainty_ms(run: Mapping[str, Any]) -> float | None:
    """The largest clock-offset uncertainty of the run's load processes (None: not measured)."""
    clocks = run.get("clock") or {}
    values = [
        float(c["uncertainty_ms"])
        for c in clocks.values()
        if isinstance(c, Mapping) and isinstance(c.get("uncertainty_ms"), (int, float))
    ]
    return max(values) if values else None


def ordered_transports(names: Any) -> list[str]:
    """Transports present, known ones first in their contract order."""
    present = {str(name) for name in names if name is not None and not (isinstance(name, float) and name != name)}
    known = [str(t) for t in TRANSPORTS if str(t) in present]
    return known + sorted(present.difference(known))


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return optional_float(float(value))


__all__ = [
    "APPROXIMATE_KEYS",
    "Evidence",
    "build_summary",
    "clock_uncertainty_ms",
    "exact_latency",
    "latency",
    "ordered_transports",
    "run_duration_s",
    "run_summary",
    "transport_object",
]
