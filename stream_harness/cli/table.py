"""The short plain-text table `make bench` prints: the parity line, then one row per transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analysis.parity import headline

COLUMNS = ("transport", "streams ok/failed", "TTFC p50", "TTFC p99", "gap p99", "staleness p99", "chunks/s", "verdict")


def _ms(latency: Mapping[str, Any] | None, key: str) -> str:
    value = None if latency is None else latency.get(key)
    return "-" if value is None else f"{value:.1f} ms"


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """One row of display strings per transport in ``summary.json``."""
    rows: list[tuple[str, ...]] = []
    for name, t in summary.get("transports", {}).items():
        streams = t.get("streams", {})
        rate = t.get("events_per_s")
        rows.append(
            (
                str(name),
                f"{streams.get('completed', 0)}/{streams.get('failed', 0)}",
                _ms(t.get("ttfc_ms"), "p50"),
                _ms(t.get("ttfc_ms"), "p99"),
                _ms(t.get("gap_ms"), "p99"),
                _ms(t.get("staleness_ms"), "p99"),
                "-" if rate is None else f"{rate:.0f}",
                str(t.get("buffering", {}).get("verdict", "?")),
            )
        )
    return rows


def format_summary_table(summary: Mapping[str, Any]) -> str:
    """Aligned columns; a saturation warning line first when the harness was the limit."""
    rows = [COLUMNS, *summary_rows(summary)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if len(summary.get("transports", {})) > 1:
        lines.insert(0, headline(summary.get("parity")) + "\n")
    harness = summary.get("run", {}).get("harness", {})
    if harness.get("saturated"):
        lines.insert(0, "WARNING: the load generator was saturated; latency numbers are not trustworthy.")
    return "\n".join(lines)
