"""PNG charts for report.md and the compare comment (matplotlib, Agg, no pyplot state).

Charts are drawn from reduced data, never from all events at once: CDFs from
per-stream values, the gap distribution from the aggregates' log histograms,
the worst streams from their own events (read back by stream key) reduced to
a max envelope of at most ``MAX_POINTS`` points, throughput from per-second
arrival counts, drift from per-window histograms; the capacity chart from
capacity.json's steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.accumulate import merged
from analysis.chunks import BURST_GAP_MS, chunk_series
from analysis.histogram import ZERO_BELOW, LogHistogram
from analysis.metrics import Analysis
from analysis.results import write_atomic
from analysis.summary import ordered_transports

MAX_POINTS: Final = 2000
WORST_STREAMS: Final = 5
CHART_FILES: Final[dict[str, str]] = {
    "ttfc_cdf": "ttfc_cdf.png",
    "gap_distribution": "gap_distribution.png",
    "staleness_worst": "staleness_worst_streams.png",
    "chunks_per_s": "chunks_per_s.png",
    "drift": "drift.png",
}
COMPARE_FILE: Final = "compare_overlay.png"
_COLORS: Final = {"ndjson": "tab:blue", "socketio": "tab:orange"}


def draw_report_charts(analysis: Analysis, directory: str | Path) -> dict[str, Path]:
    """Draw every report chart into ``directory``; returns ``{name: path}``."""
    directory = Path(directory)
    drawn = {
        "ttfc_cdf": _ttfc_cdf(analysis),
        "gap_distribution": _gap_distribution(analysis),
        "staleness_worst": _worst_streams(analysis),
        "chunks_per_s": _chunks_per_second(analysis),
        "drift": _drift(analysis),
    }
    paths = {}
    for name, figure in drawn.items():
        path = directory / CHART_FILES[name]
        _save(figure, path)
        paths[name] = path
    return paths


def draw_compare_chart(base: Analysis, current: Analysis, path: str | Path) -> Path:
    """Baseline vs current CDFs of the per-stream samples the gate tests."""
    metrics = (
        ("ttfc_ms", "TTFC (ms)"),
        ("gap_p99_ms", "per-stream p99 gap (ms)"),
        ("staleness_p99_ms", "per-stream staleness p99 (ms)"),
    )
    transports = [
        t for t in ordered_transports(current.streams["transport"]) if t in set(base.streams["transport"].dropna())
    ] or ["ndjson"]
    figure = Figure(figsize=(4.2 * len(metrics), 3.2 * len(transports)))
    axes = figure.subplots(len(transports), len(metrics), squeeze=False)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.93, wspace=0.3, hspace=0.45)
    for row, transport in enumerate(transports):
        for column, (name, label) in enumerate(metrics):
            ax = axes[row][column]
            for analysis, tag, style in ((base, "baseline", "--"), (current, "current", "-")):
                values = _stream_values(_counted(analysis.streams), transport, name)
                if values.size:
                    x, y = cdf_points(values)
                    ax.plot(x, y, style, label=f"{tag} (n={values.size})")
            ax.set_title(f"{transport}: {label}", fontsize=9)
            ax.set_ylabel("share of streams")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
    path = Path(path)
    _save(figure, path)
    return path


#: capacity.png panels: (step metric, axis label, SLO key, scale of the SLO value to the axis).
_CAPACITY_PANELS: Final = (
    ("ttfc_p99_ms", "TTFC p99 (ms)", "ttfc_p99_ms", 1.0),
    ("gap_p99_ms", "p99 of streams' own p99 gap (ms)", "gap_p99_ms", 1.0),
    ("failure_rate", "failed streams (%)", "failure_rate", 100.0),
)
_DECISION_MARKERS: Final = {"holds": "o", "breaks": "X", "saturated": "^"}


def draw_capacity_chart(capacity: Mapping[str, Any], path: str | Path) -> Path:
    """Each SLO metric against concurrent streams, per transport, with the SLO line and the capacity."""
    figure = Figure(figsize=(4.4 * len(_CAPACITY_PANELS), 4.0))
    axes = figure.subplots(1, len(_CAPACITY_PANELS))
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.8, wspace=0.3)
    slo = capacity["slo"]
    lines = []
    for transport, result in capacity["transports"].items():
        steps = sorted(result["steps"], key=lambda step: step["streams"])
        color = _COLORS.get(transport)
        best = result["max_streams_meeting_slo"]
        bound = "at least " if result["lower_bound"] else ""
        lines.append(f"{transport}: {bound}{best} streams")
        for ax, (key, label, _slo_key, scale) in zip(axes, _CAPACITY_PANELS):
            x = np.array([step["streams"] for step in steps], dtype=np.float64)
            y = np.array([_scaled(step["metrics"].get(key), scale) for step in steps], dtype=np.float64)
            ax.plot(x, y, "-", color=color, alpha=0.6, label=transport)
            for decision, marker in _DECISION_MARKERS.items():
                mine = np.array([step["decision"] == decision for step in steps], dtype=bool)
                if mine.any():
                    ax.plot(x[mine], y[mine], marker, color=color, linestyle="none")
            if best:
                ax.axvline(best, color=color, linestyle=":", linewidth=1)
            ax.set(xlabel="concurrent streams", ylabel=label)
    levels = sorted({step["streams"] for result in capacity["transports"].values() for step in result["steps"]})
    for ax, (_key, _label, slo_key, scale) in zip(axes, _CAPACITY_PANELS):
        ax.axhline(float(slo[slo_key]) * scale, color="tab:red", linestyle="--", linewidth=1, label="SLO")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
        if levels:
            ax.set_xlim(min(levels) / 1.2, max(levels) * 1.2)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8, loc="upper left")
    figure.suptitle(
        "Capacity under the SLO: " + (" · ".join(lines) or "no step")
        + "\n(o holds, X breaks, ^ load generator saturated; dotted: capacity)",
        fontsize=10,
    )  # fmt: skip
    path = Path(path)
    _save(figure, path)
    return path


def _scaled(value: Any, scale: float) -> float:
    return float(value) * scale if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def cdf_points(values: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(x, cumulative share) of ``values``, at most ``max_points`` points."""
    values = np.sort(values[np.isfinite(values)])
    n = values.size
    if n == 0:
        return values, values
    if n <= max_points:
        return values, np.arange(1, n + 1) / n
    share = np.linspace(0.0, 1.0, max_points)
    return np.quantile(values, share), share


def _ttfc_cdf(analysis: Analysis) -> Figure:
    figure, ax = _figure(7, 4)
    for transport in _transports(analysis):
        values = _stream_values(_counted(analysis.streams), transport, "ttfc_ms")
        if values.size:
            x, y = cdf_points(values)
            ax.plot(x, y, label=f"{transport} (n={values.size})", color=_COLORS.get(transport))
    _log_x_if_wide(ax)
    ax.set(title="Time to first chunk per stream (CDF)", xlabel="TTFC (ms)", ylabel="share of streams")
    _finish(ax)
    return figure


def _gap_distribution(analysis: Analysis) -> Figure:
    figure, ax = _figure(7, 4)
    notes = []
    for transport in _transports(analysis):
        histogram = merged(analysis.aggregates, (transport, None, None)).hist["gap"]
        zero, edges, counts = histogram_bins(histogram)
        total = zero + counts.sum()
        if total == 0:
            continue
        # first bin: gaps of ~0 ms (chunks that arrived in the same read)
        edges = np.r_[BURST_GAP_MS / 10, edges]
        counts = np.r_[zero, counts]
        ax.stairs(counts / total, edges, label=transport, color=_COLORS.get(transport))
        notes.append(f"{transport}: {zero / total:.0%} of gaps ~0 ms (same read, first bin)")
    ax.set_xscale("log")
    ax.set_yscale("log")  # the tail (rare long gaps) is what matters
    ax.set(title="Chunk gap distribution (log axes)", xlabel="gap between chunks (ms)", ylabel="share of gaps")
    if notes:
        ax.text(
            0.99,
            0.97,
            "\n".join(notes),
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"},
        )
    _finish(ax)
    return figure


def histogram_bins(histogram: LogHistogram, bins_per_decade: int = 20) -> tuple[int, np.ndarray, np.ndarray]:
    """(values ~0, log-spaced edges, counts per bin) from a 1% log histogram.

    Values at or below ``BURST_GAP_MS`` count as ~0 (chunks of one read).
    Without larger values the edges are just that bound (no bins).
    """
    floor = max(BURST_GAP_MS, ZERO_BELOW)
    if not histogram.count:
        return 0, np.array([floor]), np.empty(0, dtype=np.int64)
    keys = np.fromiter(histogram.buckets, dtype=np.int64, count=len(histogram.buckets))
    counts = np.fromiter(histogram.buckets.values(), dtype=np.int64, count=len(keys))
    sums = np.fromiter((histogram.sums[k] for k in histogram.buckets), dtype=np.float64, count=len(keys))
    means = sums / np.maximum(counts, 1)
    zero = histogram.zeros + int(counts[means <= floor].sum())
    keep = means > floor
    if not keep.any():
        return zero, np.array([floor]), np.empty(0, dtype=np.int64)
    values, weights = means[keep], counts[keep]
    low = math.floor(np.log10(values.min()))
    high = math.ceil(np.log10(values.max()) + 1e-9)
    n_bins = max(1, (high - low) * bins_per_decade)
    index = ((np.log10(values) - low) * bins_per_decade).astype(np.int64)
    binned = np.bincount(np.clip(index, 0, n_bins - 1), weights=weights, minlength=n_bins).astype(np.int64)
    return zero, np.logspace(low, high, n_bins + 1), binned


def _worst_streams(analysis: Analysis) -> Figure:
    """Staleness over time of the worst streams (gap over time without emit times)."""
    streams = analysis.streams[~analysis.streams["warmup"].to_numpy(dtype=bool)]
    use_staleness = bool(np.isfinite(streams["staleness_p99_ms"]).any())
    column = "staleness_p99_ms" if use_staleness else "gap_p99_ms"
    ranked = streams[np.isfinite(streams[column])].nlargest(WORST_STREAMS, column)
    figure, ax = _figure(8, 4)
    if len(ranked) and analysis.events_of is not None:
        keys = ranked["stream_key"].to_numpy(dtype=np.int64)
        events = analysis.events_of(keys.tolist())
        subset = analysis.streams.iloc[np.sort(keys)].reset_index(drop=True)
        local = np.searchsorted(subset["stream_key"].to_numpy(), events["stream_key"].to_numpy())
        series = chunk_series(subset, events.assign(stream_key=local))
        values = series.staleness_ms if use_staleness else series.gap_ms
        segment_ends = np.r_[series.stream_starts[1:], series.n_chunks]
        position = {int(k): i for i, k in enumerate(subset["stream_key"])}
        for key, stream_id, transport, worst in zip(
            ranked["stream_key"], ranked["stream_id"], ranked["transport"], ranked[column]
        ):
            segment = int(np.searchsorted(series.stream_keys, position[int(key)]))
            if segment >= series.stream_keys.size:
                continue
            begin, end = series.stream_starts[segment], segment_ends[segment]
            x, y = envelope(series.t_ms[begin:end] / 1000.0, values[begin:end])
            ax.plot(x, y, linewidth=0.8, label=f"{stream_id} ({transport}, p99 {worst:.0f} ms)")
    what = "staleness" if use_staleness else "gap since previous chunk"
    ax.set(
        title=f"Worst {len(ranked)} streams: {what} over time", xlabel="time since request (s)", ylabel=f"{what} (ms)"
    )
    if not use_staleness:
        ax.text(0.01, 0.97, "no server emit times: showing chunk gaps", transform=ax.transAxes, va="top", fontsize=8)
    _finish(ax)
    return figure


def _chunks_per_second(analysis: Analysis) -> Figure:
    figure, ax = _figure(8, 3.5)
    seconds = [s for counts in analysis.arrivals.values() for s in counts]
    if seconds:
        origin = min(seconds)
        span = max(seconds) - origin + 1
        width = max(1, math.ceil(span / MAX_POINTS))
        n_bins = math.ceil(span / width)
        for transport in _transports(analysis):
            counts = analysis.arrivals.get(transport)
            if not counts:
                continue
            at = (np.fromiter(counts.keys(), dtype=np.int64, count=len(counts)) - origin) // width
            per_bin = (
                np.bincount(
                    at, weights=np.fromiter(counts.values(), dtype=np.float64, count=len(counts)), minlength=n_bins
                )
                / width
            )
            ax.plot(
                np.arange(n_bins) * width,
                per_bin,
                label=transport,
                color=_COLORS.get(transport),
                drawstyle="steps-post",
            )
    ax.set(title="Chunks received per second, all streams", xlabel="time since run start (s)", ylabel="chunks/s")
    _finish(ax)
    return figure


def _drift(analysis: Analysis) -> Figure:
    """TTFC and gap p50/p99 per time window, per transport: a backend that degrades shows as a slope."""
    figure = Figure(figsize=(8, 5))
    ax_ttfc, ax_gap = figure.subplots(2, 1, sharex=True)
    figure.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.92, hspace=0.15)
    starts = [s for bins in analysis.drift.values() for s in bins]
    origin = min(starts) if starts else 0
    for transport in _transports(analysis):
        bins = analysis.drift.get(transport) or {}
        if not bins:
            continue
        order = sorted(bins)
        x = (np.asarray(order, dtype=np.float64) - origin) / 1.0
        for ax, name in ((ax_ttfc, "ttfc"), (ax_gap, "gap")):
            for q, style in ((0.5, "-"), (0.99, "--")):
                y = [getattr(bins[s], name).quantile(q) for s in order]
                ax.plot(
                    x,
                    [np.nan if v is None else v for v in y],
                    style,
                    color=_COLORS.get(transport),
                    label=f"{transport} p{int(q * 100)}",
                    drawstyle="steps-post",
                )
    ax_ttfc.set(title=f"Drift: per {analysis.drift_window_s:g} s window", ylabel="TTFC (ms)")
    ax_gap.set(xlabel="time since run start (s)", ylabel="chunk gap (ms)")
    for ax in (ax_ttfc, ax_gap):
        _finish(ax)
    return figure


def _transports(analysis: Analysis) -> list[str]:
    return ordered_transports(key[0] for key in analysis.aggregates)


def envelope(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points keeping each bucket's maximum (peaks stay visible)."""
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size <= max_points:
        return x, y
    edges = np.linspace(0, x.size, max_points + 1).astype(np.int64)[:-1]
    return x[edges], np.maximum.reduceat(y, edges)


def _counted(streams: pd.DataFrame) -> pd.DataFrame:
    """Streams that count for statistics (not warm-up)."""
    return streams[~streams["warmup"].to_numpy(dtype=bool)]


def _stream_values(streams: pd.DataFrame, transport: str, column: str) -> np.ndarray:
    mask = (streams["transport"] == transport).fillna(False).to_numpy(dtype=bool)
    values = streams[column].to_numpy(dtype=np.float64)[mask]
    return np.asarray(values[np.isfinite(values)])


def _log_x_if_wide(ax: Axes) -> None:
    lines = ax.lines
    xs = np.concatenate([line.get_xdata() for line in lines]) if lines else np.empty(0)
    xs = xs[xs > 0]
    if xs.size and xs.max() / max(xs.min(), 1e-9) > 50:
        ax.set_xscale("log")


def _finish(ax: Axes) -> None:
    ax.grid(alpha=0.3)
    if ax.lines or ax.patches:
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    """One-axes figure with fixed margins (constrained layout would double drawing time)."""
    figure = Figure(figsize=(width, height))
    ax = figure.subplots()
    figure.subplots_adjust(left=0.1, right=0.97, bottom=0.14, top=0.9)
    return figure, ax


def _save(figure: Figure, path: Path) -> None:
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
