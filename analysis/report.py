"""report.md for one run and the PR-comment markdown for a comparison.

Both put the verdict first, in a few lines a reviewer reads in ten seconds,
then the tables.  The report links PNGs sitting next to it; the PR comment
inlines its charts as Mermaid blocks (GitHub renders them without image
hosting) and links the PNG artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from analysis.charts import COMPARE_FILE, draw_compare_chart, draw_report_charts
from analysis.mermaid import xychart
from analysis.metrics import Analysis, analyse_directory
from analysis.results import SUMMARY_FILE, write_json_atomic, write_text_atomic
from stream_harness.contract.capacity import Capacity
from stream_harness.contract.summary import Parity, ParityJudgement, RunSummary, TransportSummary

if TYPE_CHECKING:  # compare imports scipy: keep it out of `report`
    from analysis.compare import Comparison

REPORT_FILE: Final = "report.md"
_LATENCY_ROWS: Final = (
    ("time_to_headers_ms", "time to headers / ack"),
    ("first_event_ms", "first event (any kind)"),
    ("ttfc_ms", "TTFC"),
    ("gap_ms", "chunk gap"),
    ("staleness_ms", "staleness"),
    ("jitter_ms", "jitter"),
)
_LATENCY_COLUMNS: Final = ("p50", "p90", "p95", "p99", "p999", "max")
#: Per-stream quantiles drawn in the PR comment's Mermaid charts.
_CHART_QUANTILES: Final = (10, 25, 50, 75, 90, 99)


@dataclass(frozen=True)
class ReportOutput:
    analysis: Analysis
    summary_path: Path
    report_path: Path
    charts: dict[str, Path]
    timings_s: dict[str, float]  # seconds per stage: analyse, charts, write


def build_report(directory: str | Path, *, charts: bool = True) -> ReportOutput:
    """Rebuild ``summary.json`` from the raw files and write report.md (+ PNG charts)."""
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    analysis = analyse_directory(directory)
    lap("analyse")
    directory = Path(directory)
    chart_paths = draw_report_charts(analysis, directory) if charts else {}
    lap("charts")
    summary_path = directory / SUMMARY_FILE
    write_json_atomic(summary_path, analysis.summary)
    report_path = directory / REPORT_FILE
    write_text_atomic(report_path, render_report(analysis, chart_paths))
    lap("write")
    return ReportOutput(analysis, summary_path, report_path, chart_paths, timings)


def render_report(analysis: Analysis, charts: Mapping[str, Path] | None = None) -> str:
    """Markdown of one run: verdicts and headline numbers first, then tables."""
    summary = analysis.summary
    transports = summary["transports"]
    run = summary["run"]
    lines = [f"# Stream latency report: {run['id'] or 'run'}", "", _parity_line(summary.get("parity"), transports), ""]
    if not transports:
        lines += ["**No streams in this run.**", ""]
    else:
        lines += ["**" + " · ".join(f"{name}: {_verdict_word(item)}" for name, item in transports.items()) + "**", ""]
    for name, item in transports.items():
        buffering = item["buffering"]
        if buffering["verdict"] != "clean" and buffering["reasons"]:
            lines.append(f"- **{name} {buffering['verdict']}**: " + "; ".join(buffering["reasons"][:2]))
    for name, item in transports.items():
        lines.append(f"- {name}: {_headline(item)}")
    lines += calibration_lines(transports)
    lines.append(f"- {_harness_line(run)}")
    for name, item in transports.items():
        note = item.get("staleness_note")
        if note:
            lines.append(f"- {name} staleness and jitter: {note}")
    if transports:
        lines.append(
            "- Chunk gap, staleness and jitter percentiles pool every chunk of a run and come from 1% "
            "log buckets (within 1% of the exact value); per-stream numbers (TTFC, headers) are exact."
        )
    if run.get("warmup_s"):
        lines.append(
            f"- Streams that started in the first {run['warmup_s']:g} s (warm-up) are left out of every number."
        )
    lines.append("")
    parity = summary.get("parity")
    if parity:
        lines += _parity_section(parity)
    for name, item in transports.items():
        lines += _transport_section(name, item)
    if charts:
        lines += ["## Charts", ""]
        titles = {
            "ttfc_cdf": "TTFC per stream (CDF)",
            "gap_distribution": "Chunk gap distribution",
            "staleness_worst": "Worst streams over time",
            "chunks_per_s": "Chunks per second",
            "drift": "Drift over the run (TTFC and gap per window)",
        }
        for name, path in charts.items():
            lines += [f"### {titles.get(name, name)}", "", f"![{name}]({Path(path).name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_compare_markdown(
    comparison: Comparison, base: Analysis, current: Analysis, *, artifact_links: Mapping[str, str] | None = None
) -> str:
    """PR-comment markdown: verdict, table, findings, Mermaid charts, artifact links."""
    verdict = ":x: **Regression**" if comparison.regression else ":white_check_mark: **No regression**"
    base_t = base.summary["transports"]
    current_t = current.summary["transports"]
    lines = [
        f"## Stream latency: {verdict}",
        "",
        _parity_change(base.summary.get("parity"), current.summary.get("parity")),
        "",
        f"Baseline `{base.summary['run']['id']}` vs current `{current.summary['run']['id']}`.",
        "",
    ]
    calibrated = calibration_lines(current_t)
    if calibrated:
        lines += [*calibrated, ""]
    for finding in comparison.regressions:
        lines.append(f"- :x: {finding.line}")
    improvements = [f for f in comparison.findings if f.status == "improvement"]
    for finding in improvements:
        lines.append(f"- :white_check_mark: {finding.line}")
    if comparison.regressions or improvements:
        lines.append("")
    lines += [
        "| transport | buffering | TTFC p50 | gap p99 | staleness p99 | failed | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for transport in dict.fromkeys([*base_t, *current_t]):
        before, after = base_t.get(transport), current_t.get(transport)
        bad = any(f.transport == transport for f in comparison.regressions)
        lines.append(
            "| "
            + " | ".join(
                [
                    transport,
                    f"{_verdict_of(before)} → {_verdict_of(after)}",
                    _change(before, after, "ttfc_ms", "p50"),
                    _change(before, after, "gap_ms", "p99"),
                    _change(before, after, "staleness_ms", "p99"),
                    f"{_failed(before)} → {_failed(after)}",
                    ":x: regression" if bad else ":white_check_mark: ok",
                ]
            )
            + " |"
        )
    lines.append("")
    for transport in current_t:
        if transport not in base_t:
            continue
        for column, label in (("ttfc_ms", "TTFC"), ("gap_p99_ms", "p99 chunk gap")):
            chart = _quantile_chart(base, current, transport, column, label)
            if chart:
                lines += [chart, ""]
    others = [f for f in comparison.findings if f.status in ("ok", "note")]
    if others:
        lines += ["<details><summary>All checks</summary>", ""]
        lines += [f"- {f.status}: {f.line}" for f in others]
        lines += ["", "</details>", ""]
    if artifact_links:
        lines.append(
            "Charts (PNG artifacts): " + " · ".join(f"[{name}]({url})" for name, url in artifact_links.items())
        )
    return "\n".join(lines).rstrip() + "\n"


def render_capacity_markdown(capacity: Capacity, chart: str | None = "capacity.png") -> str:
    """capacity.md: the answer per transport first, then every step of each search."""
    slo = capacity["slo"]
    terms = (
        f"TTFC p99 <= {slo['ttfc_p99_ms']:g} ms, p99 of the streams' own p99 gap <= {slo['gap_p99_ms']:g} ms, "
        f"failures <= {slo['failure_rate']:.1%}" + (", buffering clean" if slo.get("clean") else "")
    )
    lines = ["## Capacity under the SLO", "", f"SLO: {terms} (Wilson {slo['confidence']:.0%} intervals).", ""]
    transports = capacity.get("transports") or {}
    lines += [f"- **{name}**: {result['summary']}" for name, result in transports.items()] or ["- no step ran"]
    lines.append("")
    if chart:
        lines += [f"![capacity]({chart})", ""]
    for name, result in transports.items():
        lines += [
            f"### {name}: {result['stop_reason']}",
            "",
            "| streams | decision | resolved | streams judged | TTFC p99 (ms) | gap p99 (ms) | failed | buffering "
            "| why |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for step in result["steps"]:
            metrics = step["metrics"]
            failed = metrics.get("failure_rate")
            reason = step["reasons"][0] if step["reasons"] and step["decision"] != "holds" else ""
            lines.append(
                f"| {step['streams']} | {step['decision']} | {'yes' if step['resolved'] else 'no'} "
                f"| {metrics['streams']} | {_ms(metrics.get('ttfc_p99_ms'))} | {_ms(metrics.get('gap_p99_ms'))} "
                f"| {'n/a' if failed is None else f'{failed:.1%}'} | {metrics['verdict']} | {reason} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_compare_outputs(
    comparison: Comparison, base: Analysis, current: Analysis, markdown_path: Path, *, artifact_url: str | None = None
) -> Path:
    """Draw the overlay PNG next to ``markdown_path`` and write the markdown; returns it."""
    chart = draw_compare_chart(base, current, markdown_path.parent / COMPARE_FILE)
    prefix = (artifact_url.rstrip("/") + "/") if artifact_url else ""
    links = {"baseline vs current": prefix + chart.name}
    write_text_atomic(markdown_path, render_compare_markdown(comparison, base, current, artifact_links=links))
    return markdown_path


def _quantile_chart(base: Analysis, current: Analysis, transport: str, column: str, label: str) -> str | None:
    values = [_column(analysis, transport, column) for analysis in (base, current)]
    if any(v.size == 0 for v in values):
        return None
    rows = [np.percentile(v, _CHART_QUANTILES).tolist() for v in values]
    return xychart(
        f"{transport} {label} per stream (ms): bars baseline, line current",
        [f"p{q}" for q in _CHART_QUANTILES],
        [("bar", rows[0]), ("line", rows[1])],
        "ms",
    )


def _column(analysis: Analysis, transport: str, column: str) -> np.ndarray:
    streams = analysis.streams
    mask = (streams["transport"] == transport).fillna(False).to_numpy(dtype=bool)
    mask &= ~streams["warmup"].to_numpy(dtype=bool)
    values = streams[column].to_numpy(dtype=np.float64)[mask]
    return np.asarray(values[np.isfinite(values)])


#: Parity metric keys -> labels, in the report's order.
_PARITY_METRICS: Final = {"ttfc": "TTFC", "gap_p99": "p99 chunk gap", "staleness_p99": "staleness p99"}


def _parity_line(parity: Parity | None, transports: Mapping[str, TransportSummary]) -> str:
    """The report's first line: NDJSON against Socket.io in this run, and why."""
    if not parity:
        ran = " and ".join(transports) or "no transport"
        return f"**Parity (NDJSON vs Socket.io): not judged** ({ran} ran; parity needs both)"
    return f"**Parity (NDJSON vs Socket.io): {parity['verdict']}**" + _because(parity)


def _parity_change(base: Parity | None, current: Parity | None) -> str:
    """The PR comment's first line: the current run's parity, and the baseline's."""
    if not current:
        return "**Parity (NDJSON vs Socket.io): not judged** (the current run did not drive both transports)"
    before = base["verdict"] if base else "not judged"
    return f"**Parity (NDJSON vs Socket.io): {current['verdict']}** (baseline: {before})" + _because(current)


def _because(parity: ParityJudgement) -> str:
    reasons = list(parity.get("reasons") or [])
    return (": " + "; ".join(reasons[:2])) if reasons else ""


def _parity_section(parity: Parity) -> list[str]:
    """Per endpoint, per metric: the two medians, the difference with its interval, the tests."""
    lines = [
        "## Parity: NDJSON vs Socket.io",
        "",
        f"Verdict: **{parity['verdict']}**",
        "",
        "| endpoint | metric | NDJSON median | Socket.io median | difference (95% CI) | p | significant "
        "| practical | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for endpoint, item in (parity.get("endpoints") or {"all": parity}).items():
        for key, label in _PARITY_METRICS.items():
            metric = item["metrics"].get(key)
            if metric is None:
                continue
            low, high = metric["ci"]
            lines.append(
                f"| {endpoint} | {label} | {_ms(metric['ndjson_median'])} | {_ms(metric['socketio_median'])} "
                f"| {metric['difference']:+.1f} ms ({low:+.1f}..{high:+.1f}) | {metric['p_value']:.2g} "
                f"| {'yes' if metric['significant'] else 'no'} | {'yes' if metric['practical'] else 'no'} "
                f"| {metric['result']} |"
            )
        failures = item["failures"]
        lines.append(
            f"| {endpoint} | failed share | {failures['ndjson_rate']:.1%} | {failures['socketio_rate']:.1%} "
            f"| {failures['difference']:+.1%} (tolerance {failures['tolerance']:.1%}) | | | | {failures['result']} |"
        )
        buffering = item["buffering"]
        lines.append(
            f"| {endpoint} | buffering | {buffering['ndjson']} | {buffering['socketio']} | | | | "
            f"| {buffering['result']} |"
        )
    lines.append("")
    lines += [f"- {reason}" for reason in parity.get("reasons") or []]
    lines += [f"- not judged: {what}" for what in parity.get("inconclusive") or [] if what not in parity["reasons"]]
    return [*lines, ""]


def calibration_lines(transports: Mapping[str, TransportSummary]) -> list[str]:
    """One line per transport read by both kinds of client: do the protocol clients agree with the browser?"""
    lines = []
    for name, item in transports.items():
        found = item.get("calibration")
        if not isinstance(found, Mapping):
            continue
        ttfc = found["ttfc_ms"]["p50"]
        numbers = (
            f" (TTFC p50 browser {_ms(ttfc['browser'])} ms vs protocol {_ms(ttfc['protocol'])} ms; "
            f"verdicts {found['verdicts'].get('browser')} / {found['verdicts'].get('protocol')})"
        )
        mark = ":white_check_mark:" if found["agree"] else ":warning:"
        notes = "".join(f"; {note}" for note in found.get("notes", []))  # (summaries before notes have none)
        lines.append(f"- {mark} {name}: {found['line']}" + (numbers if found["agree"] else "") + notes)
    return lines


def _transport_section(name: str, item: TransportSummary) -> list[str]:
    streams = item["streams"]
    events = item["events"]
    errors = ", ".join(f"{kind} {count}" for kind, count in streams["errors"].items()) or "none"
    lines = [f"## {name}", "", f"Buffering: **{item['buffering']['verdict']}**", ""]
    lines += [f"- {reason}" for reason in item["buffering"]["reasons"]]
    lines += ["", "| ms | " + " | ".join(_LATENCY_COLUMNS) + " |", "|---|" + "---|" * len(_LATENCY_COLUMNS)]
    for key, label in _LATENCY_ROWS:
        cells = [_ms(_get(item, key, column)) for column in _LATENCY_COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    per_read = item["events_per_read"]
    rate = item.get("events_per_s")
    lines += [
        "",
        "| streams started | completed | failed | cancelled | errors | events | chunks "
        "| malformed lines | events/read mean, p99 | chunks/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {streams['started']} | {streams['completed']} | {streams['failed']} "
        f"| {streams.get('cancelled', 0)} | {errors} | {events['total']} | {events['chunks']} "
        f"| {events['malformed_lines']} | {_num(per_read['mean'])}, {_num(per_read['p99'])} "
        f"| {_num(rate, 0)} |",
        "",
    ]
    endpoints = item.get("endpoints") or {}
    if endpoints:
        lines += [
            "| endpoint | streams | failed | TTFC p50 | TTFC p99 | gap p99 | staleness p99 | buffering |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for endpoint, sub in endpoints.items():
            lines.append(
                f"| {endpoint} | {sub['streams']['started']} | {sub['streams']['failed']} "
                f"| {_ms(_get(sub, 'ttfc_ms', 'p50'))} | {_ms(_get(sub, 'ttfc_ms', 'p99'))} "
                f"| {_ms(_get(sub, 'gap_ms', 'p99'))} "
                f"| {_ms(_get(sub, 'staleness_ms', 'p99'))} "
                f"| {sub['buffering']['verdict']} |"
            )
        lines.append("")
    return lines


def _headline(item: TransportSummary) -> str:
    streams = item["streams"]
    errors = ", ".join(f"{kind} {count}" for kind, count in streams["errors"].items())
    failed = f"{streams['failed']} failed" + (f" ({errors})" if errors else "")
    parts = [
        f"{streams['started']} streams, {failed}",
        f"TTFC p50 {_ms(_get(item, 'ttfc_ms', 'p50'))} ms, p99 {_ms(_get(item, 'ttfc_ms', 'p99'))} ms",
        f"gap p99 {_ms(_get(item, 'gap_ms', 'p99'))} ms",
    ]
    staleness = _get(item, "staleness_ms", "p99")
    if staleness is not None:
        parts.append(f"staleness p99 {_ms(staleness)} ms")
    return " · ".join(parts)


def _harness_line(run: RunSummary) -> str:
    harness = run["harness"]
    state = "**saturated**" if harness["saturated"] else "not saturated"
    details = []
    if harness.get("cpu_percent_max") is not None:
        details.append(f"CPU max {harness['cpu_percent_max']:.0f}%")
    if harness.get("loop_lag_ms_p99") is not None:
        details.append(f"loop lag p99 {harness['loop_lag_ms_p99']:.1f} ms")
    reasons = harness.get("reasons")
    if harness["saturated"] and isinstance(reasons, list) and reasons:
        details += [str(reason) for reason in reasons]
    extra = f" ({', '.join(details)})" if details else ""
    return (
        f"load generator {state}{extra} · run {run['duration_s']:.1f} s · "
        f"users: {run['users']} · workers: {run['workers']}"
    )


def _verdict_word(item: TransportSummary) -> str:
    verdict = item["buffering"]["verdict"]
    return str(verdict).upper() if verdict == "buffered" else str(verdict)


def _verdict_of(item: TransportSummary | None) -> str:
    return item["buffering"]["verdict"] if item else "absent"


def _failed(item: TransportSummary | None) -> str:
    if not item:
        return "n/a"
    return f"{item['streams']['failed']}/{item['streams']['started']}"


def _change(before: TransportSummary | None, after: TransportSummary | None, key: str, column: str) -> str:
    old = _get(before, key, column) if before else None
    new = _get(after, key, column) if after else None
    return f"{_ms(old)} → {_ms(new)} ms"


def _get(item: Mapping[str, object], key: str, column: str) -> float | None:
    """``item[key][column]`` of a summary object, None where either is missing."""
    value = item.get(key)
    found = value.get(column) if isinstance(value, Mapping) else None
    return float(found) if isinstance(found, (int, float)) else None


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
