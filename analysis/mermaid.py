"""Mermaid ``xychart-beta`` blocks: charts GitHub renders inside a PR comment.

A PR comment cannot embed PNGs without image hosting, but GitHub renders
Mermaid fenced blocks.  ``xychart-beta`` has a categorical x-axis, one
numeric y-axis and ``bar`` / ``line`` series; it has no legend, so the
title says which series is which.  Every text value is quoted (no double
quotes inside), numbers are plain decimals (no exponent, no NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

SERIES_KINDS: Final = ("bar", "line")


def xychart(title: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], y_label: str) -> str:
    """A fenced ```` ```mermaid ```` block; ``series`` items are ``(kind, values)``.

    Missing values (NaN/None) are drawn as 0, since the syntax has no gaps.
    """
    if not categories:
        raise ValueError("an xychart needs at least one category")
    for kind, values in series:
        if kind not in SERIES_KINDS:
            raise ValueError(f"series kind must be bar or line, not {kind!r}")
        if len(values) != len(categories):
            raise ValueError("each series needs one value per category")
    numbers = [_clean(value) for _, values in series for value in values]
    top = _nice_ceiling(max(numbers, default=0.0))
    lines = [
        "```mermaid",
        "xychart-beta",
        f"    title {_quote(title)}",
        f"    x-axis [{', '.join(_quote(name) for name in categories)}]",
        f"    y-axis {_quote(y_label)} 0 --> {_number(top)}",
    ]
    for kind, values in series:
        lines.append(f"    {kind} [{', '.join(_number(_clean(v)) for v in values)}]")
    lines.append("```")
    return "\n".join(lines)


def _quote(text: str) -> str:
    return '"' + str(text).replace('"', "'").replace("\n", " ") + '"'


def _clean(value: float | None) -> float:
    if value is None or not math.isfinite(value):
        return 0.0
    return max(float(value), 0.0)


def _number(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _nice_ceiling(value: float) -> float:
    """A round axis maximum just above ``value`` (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value * 1.05 <= step * power:
            return float(step * power)
    return float(10.0 * power)
